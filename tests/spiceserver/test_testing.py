"""The test toolkit's server (the engine of the pytest plugin), driven by the fake client."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from spiceserver import NumpySource
from spiceserver.protocol.enums import ChannelType
from spiceserver.testing import RunningServer
from tests.fakeclient import LoopbackClient
from tests.spiceserver.server.test_loopback import Canvas, random_frame


async def open_display(spice: RunningServer) -> tuple[LoopbackClient, LoopbackClient]:
    assert spice.password is not None
    main = await LoopbackClient.open(spice.port)
    assert await main.link(ChannelType.MAIN, spice.password) == 0
    session_id = struct.unpack_from("<I", await main.receive(103))[0]
    display = await LoopbackClient.open(spice.port)
    assert await display.link(ChannelType.DISPLAY, spice.password, connection_id=session_id) == 0
    generation, _ = struct.unpack("<II", await display.receive(3))
    display.send(1, struct.pack("<I", generation))  # ACK_SYNC
    display.send(101, struct.pack("<BqBi", 1, 1 << 20, 1, 1 << 20))  # DISPLAY_INIT
    return main, display


async def draw_until_ping(display: LoopbackClient, canvas: Canvas) -> None:
    """Apply DRAW_COPYs and answer PINGs, in order, as a client does; return after answering
    the first PING that followed a drawing (the display's start-up PING comes before any)."""
    drawn = False
    while True:
        while display.pending:  # in order, as a client handles them
            type_, body = display.pending.pop(0)
            if type_ == 304:  # DRAW_COPY
                canvas.apply(body)
                drawn = True
            elif type_ == 4:  # PING
                display.send(3, body[:12])  # PONG: id and timestamp echoed
                if drawn:
                    return
        data = await display.reader.read(65536)
        if not data:
            raise ConnectionError("closed")
        display.pending.extend(display.splitter.feed(data))


def test_wait_client_frame_returns_once_the_client_handled_the_frame() -> None:
    first, second = random_frame(64, 48, 1), random_frame(64, 48, 2)
    with RunningServer(NumpySource(frame=first.copy()), image_compression="off") as spice:

        async def client_side() -> None:
            main, display = await open_display(spice)
            canvas = Canvas(64, 48)
            waiting = asyncio.create_task(spice.wait_client_frame_async(timeout=10))
            await draw_until_ping(display, canvas)
            await waiting
            assert np.array_equal(canvas.pixels[..., :3], first[..., :3])

            version = spice.push(second)
            waiting = asyncio.create_task(spice.wait_client_frame_async(version, timeout=10))
            await draw_until_ping(display, canvas)
            await waiting
            assert np.array_equal(canvas.pixels[..., :3], second[..., :3])
            link = await spice.wait_for_event_async("link", channel="display", timeout=5)
            assert link["result"] == "ok"
            await asyncio.to_thread(spice.disconnect_clients)  # every channel, main included
            assert await main.closed_by_server() and await display.closed_by_server()

        asyncio.run(asyncio.wait_for(client_side(), 30))
        spice.wait_for_event("disconnect", channel="display", timeout=10)
        spice.wait_for_event("disconnect", channel="main", timeout=10)


def test_waits_are_bounded_and_options_apply() -> None:
    with RunningServer("pattern:320x200", disable_ticketing=True, max_fps=5) as spice:
        assert spice.password is None and spice.uri_with_password == spice.uri
        assert spice.server is not None and spice.server.config.max_fps == 5
        with pytest.raises(TimeoutError):
            spice.wait_client_frame(timeout=0.2)  # nobody connected
        with pytest.raises(TimeoutError):
            spice.wait_for_event("key", timeout=0.2)
