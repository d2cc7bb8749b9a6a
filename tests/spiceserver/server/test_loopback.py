"""The server over real loopback sockets, driven by the fake client."""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import numpy as np
import pytest

from spiceserver import ChannelLimits, ImageCompression, NumpySource, Rect, SpiceServer
from spiceserver.protocol.enums import ChannelType, LinkError
from tests.conftest import run
from tests.fakeclient import LoopbackClient

PASSWORD = "s3cret"


def raw_server(source: NumpySource, **options: Any) -> SpiceServer:
    """A server on a free port sending raw bitmaps, which :class:`Canvas` can apply."""
    options.setdefault("image_compression", ImageCompression.OFF)
    return SpiceServer(source, password=PASSWORD, port=0, **options)


def random_frame(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    frame[..., 3] = 0
    return frame


async def open_session(port: int) -> tuple[LoopbackClient, int]:
    main = await LoopbackClient.open(port)
    assert await main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
    init = await main.receive(103)
    session_id = struct.unpack_from("<I", init)[0]
    main.send(104)  # ATTACH_CHANNELS
    channels = await main.receive(104)
    assert channels == struct.pack("<I", 3) + bytes([2, 0, 3, 0, 4, 0])
    return main, session_id


async def open_display(port: int, session_id: int) -> LoopbackClient:
    display = await LoopbackClient.open(port)
    assert await display.link(ChannelType.DISPLAY, PASSWORD, connection_id=session_id) == 0
    set_ack = await display.receive(3)
    ping = await display.receive(
        4
    )  # the start-up PING, answered after the set-up as spice-gtk does
    generation, _window = struct.unpack("<II", set_ack)
    display.send(101, struct.pack("<BqBi", 1, 1 << 20, 1, 1 << 20))  # DISPLAY_INIT
    display.send(1, struct.pack("<I", generation))  # ACK_SYNC
    display.send(3, ping[:12])  # PONG
    return display


class Canvas:
    """Applies raw-bitmap DRAW_COPYs the way a client's canvas does."""

    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.zeros((height, width, 4), dtype=np.uint8)

    def apply(self, body: bytes) -> None:
        top, left, bottom, right = struct.unpack_from("<4i", body, 4)
        _id, image_type, _flags, width, height = struct.unpack_from("<QBBII", body, 57)
        assert image_type == 0  # BITMAP
        fmt, flags, x, y, stride, palette = struct.unpack_from("<BBIIII", body, 75)
        assert (fmt, flags & 4, x, y, stride, palette) == (8, 4, width, height, width * 4, 0)
        assert (right - left, bottom - top) == (width, height)
        data = np.frombuffer(body, np.uint8, width * height * 4, 93).reshape(height, width, 4)
        self.pixels[top:bottom, left:right] = data


async def receive_until(display: LoopbackClient, canvas: Canvas, expected: np.ndarray) -> None:
    while not np.array_equal(canvas.pixels[..., :3], expected[..., :3]):
        canvas.apply(await display.receive(304))


def test_session_receives_pixel_exact_frames(event_loop_name: str) -> None:
    async def scenario() -> None:
        source = NumpySource(frame=random_frame(320, 200, 1))
        async with raw_server(source) as server:
            main, session_id = await open_session(server.port)
            display = await open_display(server.port, session_id)
            create = await display.receive(314)
            assert struct.unpack("<5I", create) == (0, 320, 200, 32, 1)
            canvas = Canvas(320, 200)
            await receive_until(display, canvas, source.frame)
            await display.receive(102)  # MARK after the first full frame
            # A partial update arrives as a DRAW_COPY of just that rectangle.
            source.update(random_frame(50, 40, 2), Rect(10, 20, 50, 40))
            body = await display.receive(304)
            assert struct.unpack_from("<4i", body, 4) == (20, 10, 60, 60)
            canvas.apply(body)
            assert np.array_equal(canvas.pixels[..., :3], source.frame[..., :3])
            await display.close()
            await main.close()

    run(scenario(), loop=event_loop_name)


def test_wrong_ticket_gets_permission_denied(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with raw_server(NumpySource(64, 64)) as server:
            client = await LoopbackClient.open(server.port)
            assert await client.link(ChannelType.MAIN, "guess") == LinkError.PERMISSION_DENIED
            assert await client.closed_by_server()

    with caplog.at_level(logging.WARNING):
        run(scenario())
    assert "refused PERMISSION_DENIED: wrong ticket" in caplog.text
    assert "guess" not in caplog.text and PASSWORD not in caplog.text


def test_secondary_channel_needs_a_live_session() -> None:
    async def scenario() -> None:
        async with raw_server(NumpySource(64, 64)) as server:
            client = await LoopbackClient.open(server.port)
            code = await client.link(ChannelType.DISPLAY, PASSWORD, connection_id=1234)
            assert code == LinkError.BAD_CONNECTION_ID
            main, session_id = await open_session(server.port)
            other = await LoopbackClient.open(server.port)
            code = await other.link(ChannelType.PLAYBACK, PASSWORD, connection_id=session_id)
            assert code == LinkError.CHANNEL_NOT_AVAILABLE
            # When main goes, the session's other channels go with it.
            display = await open_display(server.port, session_id)
            await display.receive(314)
            await main.close()
            assert await display.closed_by_server()

    run(scenario())


def test_malformed_message_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture, event_loop_name: str
) -> None:
    async def scenario() -> None:
        source = NumpySource(frame=random_frame(64, 48, 3))
        async with raw_server(source) as server:
            good_main, good_id = await open_session(server.port)
            good_display = await open_display(server.port, good_id)
            canvas = Canvas(64, 48)
            await receive_until(good_display, canvas, source.frame)

            bad_main, bad_id = await open_session(server.port)
            bad_inputs = await LoopbackClient.open(server.port)
            assert await bad_inputs.link(ChannelType.INPUTS, PASSWORD, connection_id=bad_id) == 0
            bad_inputs.send(101, b"\x01")  # KEY_DOWN with a 1-byte body
            assert await bad_inputs.closed_by_server()

            source.update(random_frame(64, 48, 4))
            await receive_until(good_display, canvas, source.frame)
            for client in (good_main, good_display, bad_main):
                await client.close()

    with caplog.at_level(logging.WARNING):
        run(scenario(), loop=event_loop_name)
    assert "inputs: protocol error, closing" in caplog.text


def test_idle_half_open_connections_are_closed() -> None:
    async def scenario() -> None:
        async with raw_server(NumpySource(64, 64), handshake_timeout=0.2) as server:
            idle = await LoopbackClient.open(server.port)
            idle.writer.write(b"REDQ")  # a header that never completes
            assert await idle.closed_by_server(timeout=5)

    run(scenario())


def test_slow_client_gets_latest_frame_not_a_queue() -> None:
    """With the ACK window full, damage merges; after ACKs the newest pixels arrive."""

    async def scenario() -> None:
        source = NumpySource(frame=random_frame(64, 64, 5))
        limits = ChannelLimits(ack_window=2)
        async with raw_server(source, channel_limits=limits, max_fps=1000) as server:
            main, session_id = await open_session(server.port)
            display = await open_display(server.port, session_id)
            canvas = Canvas(64, 64)
            await receive_until(display, canvas, source.frame)
            for seed in range(100, 160):  # 60 full-frame updates while we never ACK
                source.update(random_frame(64, 64, seed))
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.2)
            received = 0
            display.pending = [(t, b) for t, b in display.pending if t == 304]
            while True:  # what was sent before the window closed
                try:
                    canvas.apply(await display.receive(304, timeout=0.3))
                    received += 1
                except TimeoutError:
                    break
            assert received <= 5  # at most 2 × window + 1 messages beyond the last ACK
            for _ in range(4):
                display.send(2)  # ACK
            await receive_until(display, canvas, source.frame)
            await display.close()
            await main.close()

    run(scenario())
