"""The display channel's MONITORS_CONFIG carries the source's heads (several on one surface).

The whole stack in memory (``tests.memory``): a pattern source with two heads, a display
channel that has the MONITORS_CONFIG cap, then a layout applied to the source (directly, and
as a client's request through ``context.layout``) and heads changed without a new size.
"""

from __future__ import annotations

import struct

from spiceserver import ImageCompression, PatternSource, SpiceServer
from spiceserver.protocol.enums import ChannelType, DisplayCap, DisplayServerMsg
from spiceserver.server.layout import MAX_HEADS
from spiceserver.sources.base import Head
from tests.conftest import run
from tests.fakeclient import frame
from tests.memory import PASSWORD, MemoryClient, init_session_id, linked, main_at, ready, turns

TWO_HEADS = (Head(0, 0, 640, 480), Head(640, 0, 400, 300))
Monitors = tuple[int, list[tuple[int, ...]]]


def monitors(body: bytes) -> Monitors:
    """(max_allowed, heads as (id, surface, width, height, x, y, flags)) of a MONITORS_CONFIG."""
    count, max_allowed = struct.unpack_from("<HH", body)
    heads = [struct.unpack_from("<7I", body, 4 + 28 * i) for i in range(count)]
    assert len(body) == 4 + 28 * count
    return max_allowed, heads


class Display:
    """A linked display channel that collects what the server sends."""

    def __init__(self, client: MemoryClient) -> None:
        self.client = client
        self.got: list[tuple[int, bytes]] = []

    def take(self) -> list[tuple[int, bytes]]:
        self.got += self.client.messages()
        return self.got

    async def until(self, msg_type: int, count: int = 1) -> list[tuple[int, bytes]]:
        await turns(lambda: sum(t == msg_type for t, _ in self.take()) >= count, timeout=10)
        return self.got

    def of(self, msg_type: int) -> list[bytes]:
        return [body for t, body in self.take() if t == msg_type]


async def served(source: PatternSource, **options: object) -> tuple[SpiceServer, Display, int]:
    server = await ready(
        SpiceServer(
            source,
            password=PASSWORD,
            warmup_encoders=False,
            port=0,
            image_compression=ImageCompression.OFF,
            **options,  # type: ignore[arg-type]
        )
    )
    await source.start()
    main = await main_at(server)
    sid = init_session_id(main)
    client = await linked(
        server,
        ChannelType.DISPLAY,
        PASSWORD,
        connection_id=sid,
        peer=("127.0.0.7", 40001),
        channel_caps=[DisplayCap.MONITORS_CONFIG],
    )
    client.send(frame(1, struct.pack("<I", 1)))  # ACK_SYNC
    client.send(frame(101, struct.pack("<BqBi", 1, 1 << 20, 0, 0)))  # DISPLAY_INIT, no GLZ
    display = Display(client)
    await display.until(DisplayServerMsg.MARK)
    return server, display, sid


def test_two_heads_on_one_surface_then_a_new_layout_then_new_heads_of_the_same_size() -> None:
    async def scenario() -> None:
        source = PatternSource(heads=TWO_HEADS, fps=0)
        server, display, _ = await served(source)
        create = display.of(DisplayServerMsg.SURFACE_CREATE)
        assert [struct.unpack_from("<5I", body)[:3] for body in create] == [(0, 1040, 480)]
        types = [t for t, _ in display.take()]
        # The heads follow the surface they describe, before its first picture.
        assert types.index(DisplayServerMsg.MONITORS_CONFIG) == (
            types.index(DisplayServerMsg.SURFACE_CREATE) + 1
        )
        (first,) = display.of(DisplayServerMsg.MONITORS_CONFIG)
        assert monitors(first) == (
            MAX_HEADS,  # the pattern follows layouts: clients may ask for up to 16
            [(0, 0, 640, 480, 0, 0, 0), (1, 0, 400, 300, 640, 0, 0)],
        )
        display.got.clear()

        # A new layout of another size: a new surface, then its heads.
        stacked = (Head(0, 0, 800, 600), Head(0, 600, 800, 600))
        assert await source.apply_layout(stacked)
        await display.until(DisplayServerMsg.MARK)
        types = [t for t, _ in display.take()]
        assert types[:3] == [
            DisplayServerMsg.SURFACE_DESTROY,
            DisplayServerMsg.SURFACE_CREATE,
            DisplayServerMsg.MONITORS_CONFIG,
        ]
        (create,) = display.of(DisplayServerMsg.SURFACE_CREATE)
        assert struct.unpack_from("<3I", create) == (0, 800, 1200)
        (config,) = display.of(DisplayServerMsg.MONITORS_CONFIG)
        assert monitors(config)[1] == [(0, 0, 800, 600, 0, 0, 0), (1, 0, 800, 600, 0, 600, 0)]
        display.got.clear()

        # The same bounding box cut differently: heads only, no new surface.
        assert await source.apply_layout((Head(0, 0, 800, 1200),))
        await display.until(DisplayServerMsg.MONITORS_CONFIG)
        assert display.of(DisplayServerMsg.SURFACE_CREATE) == []
        (config,) = display.of(DisplayServerMsg.MONITORS_CONFIG)
        assert monitors(config)[1] == [(0, 0, 800, 1200, 0, 0, 0)]
        await server.close()

    run(scenario())


def test_a_clients_request_reaches_the_source_and_comes_back_as_a_surface() -> None:
    async def scenario() -> None:
        source = PatternSource(640, 480, fps=0)
        server, display, sid = await served(source, resize_debounce=0.0)
        (first,) = display.of(DisplayServerMsg.MONITORS_CONFIG)
        assert monitors(first)[1] == [(0, 0, 640, 480, 0, 0, 0)]
        display.got.clear()
        session = server.context.sessions.sessions[sid]
        # What the agent passes for spice-gtk's two windows (display ids 0 and 1).
        server.context.layout.request(session, (Head(0, 0, 1024, 768), Head(1024, 0, 800, 600)))
        await display.until(DisplayServerMsg.MARK)
        (create,) = display.of(DisplayServerMsg.SURFACE_CREATE)
        assert struct.unpack_from("<3I", create) == (0, 1824, 768)
        (config,) = display.of(DisplayServerMsg.MONITORS_CONFIG)
        assert monitors(config)[1] == [(0, 0, 1024, 768, 0, 0, 0), (1, 0, 800, 600, 1024, 0, 0)]
        # The session ends: the pattern goes back to its own layout.
        session.main.close("test")
        await turns(lambda: source.size == (640, 480), timeout=10)
        assert source.heads() == (Head(0, 0, 640, 480),)
        await server.close()

    run(scenario())


def test_resize_off_keeps_the_source_and_offers_one_monitor() -> None:
    async def scenario() -> None:
        source = PatternSource(640, 480, fps=0)
        server, display, sid = await served(source, resize="off", resize_debounce=0.0)
        (first,) = display.of(DisplayServerMsg.MONITORS_CONFIG)
        assert monitors(first) == (1, [(0, 0, 640, 480, 0, 0, 0)])
        session = server.context.sessions.sessions[sid]
        server.context.layout.request(session, (Head(0, 0, 1024, 768),))
        assert server.context.layout._pending is None  # ignored at once: nothing scheduled
        assert source.size == (640, 480)
        assert len(display.of(DisplayServerMsg.SURFACE_CREATE)) == 1
        await server.close()

    run(scenario())
