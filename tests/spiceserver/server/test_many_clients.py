"""Several clients on one source: separate sessions, ``max_clients``, shared encodings."""

from __future__ import annotations

import logging
import struct

import pytest

from spiceserver import ImageCompression, NumpySource, Rect, SpiceServer
from spiceserver.protocol.enums import ChannelType, ImageType, LinkError
from tests.conftest import run
from tests.fakeclient import LoopbackClient
from tests.reference.lz_decode import lz_decode
from tests.spiceserver.server.test_loopback import (
    PASSWORD,
    Canvas,
    open_display,
    open_session,
    random_frame,
    raw_server,
    receive_until,
)


class LzCanvas(Canvas):
    """Applies DRAW_COPYs of LZ_RGB images, decoded by the pure-Python reference decoder."""

    def apply(self, body: bytes) -> None:
        top, left, bottom, right = struct.unpack_from("<4i", body, 4)
        _id, image_type, _flags, width, height = struct.unpack_from("<QBBII", body, 57)
        if image_type == ImageType.BITMAP:  # under 54 bytes: sent raw
            super().apply(body)
            return
        assert image_type == ImageType.LZ_RGB
        (size,) = struct.unpack_from("<I", body, 75)
        image = lz_decode(body[79 : 79 + size])
        assert (image.width, image.height) == (right - left, bottom - top) == (width, height)
        self.pixels[top:bottom, left:right] = image.pixels


def test_each_client_gets_its_own_session_on_one_source(event_loop_name: str) -> None:
    async def scenario() -> None:
        source = NumpySource(frame=random_frame(96, 64, 10))
        async with raw_server(source) as server:
            clients = []
            for _ in range(3):
                main, session_id = await open_session(server.port)
                display = await open_display(server.port, session_id)
                canvas = Canvas(96, 64)
                await receive_until(display, canvas, source.frame)
                clients.append((main, display, canvas, session_id))
            assert len({session_id for *_, session_id in clients}) == 3
            assert {s.id for s in server.sessions()} == {session_id for *_, session_id in clients}
            source.update(random_frame(20, 10, 11), Rect(30, 40, 20, 10))
            for _, display, canvas, _ in clients:
                await receive_until(display, canvas, source.frame)
            # One client leaving ends its session only; the others keep receiving.
            gone_main, gone_display, _, gone_id = clients.pop(0)
            await gone_main.close()
            assert await gone_display.closed_by_server()
            source.update(random_frame(96, 64, 12))
            for _, display, canvas, _ in clients:
                await receive_until(display, canvas, source.frame)
            assert gone_id not in {s.id for s in server.sessions()} and len(server.sessions()) == 2
            for main, display, _, _ in clients:
                await display.close()
                await main.close()

    run(scenario(), loop=event_loop_name)


def test_max_clients_refuses_further_main_links(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        source = NumpySource(frame=random_frame(64, 48, 20))
        async with raw_server(source, max_clients=2) as server:
            first_main, first_id = await open_session(server.port)
            second_main, second_id = await open_session(server.port)
            first_display = await open_display(server.port, first_id)
            first_canvas = Canvas(64, 48)
            await receive_until(first_display, first_canvas, source.frame)

            refused = await LoopbackClient.open(server.port)
            assert await refused.link(ChannelType.MAIN, PASSWORD) == LinkError.ERROR
            assert await refused.closed_by_server()
            assert {s.id for s in server.sessions()} == {first_id, second_id}

            # The established sessions are untouched: updates flow, channels still link.
            second_display = await open_display(server.port, second_id)
            second_canvas = Canvas(64, 48)
            source.update(random_frame(64, 48, 21))
            await receive_until(first_display, first_canvas, source.frame)
            await receive_until(second_display, second_canvas, source.frame)

            # A session that ends frees its place.
            await first_main.close()
            assert await first_display.closed_by_server()  # closed when its session ended
            assert {s.id for s in server.sessions()} == {second_id}
            third_main, _ = await open_session(server.port)
            for client in (second_display, second_main, third_main):
                await client.close()

    with caplog.at_level(logging.WARNING, logger="spiceserver"):
        run(scenario())
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].startswith("127.0.0.1:") and " main: refused ERROR: " in refusals[0]
    assert refusals[0].endswith("2 clients already (max_clients)")


def test_clients_at_the_same_version_share_lz_encodings() -> None:
    async def scenario() -> None:
        source = NumpySource(frame=random_frame(96, 64, 30))
        async with SpiceServer(
            source, password=PASSWORD, port=0, image_compression=ImageCompression.LZ
        ) as server:
            clients = []
            for _ in range(2):  # the source is still: both full frames are at one version
                main, session_id = await open_session(server.port)
                display = await open_display(server.port, session_id)
                canvas = LzCanvas(96, 64)
                await receive_until(display, canvas, source.frame)
                clients.append((main, display, canvas))
            source.update(random_frame(40, 30, 31), Rect(50, 30, 40, 30))
            for _, display, canvas in clients:
                await receive_until(display, canvas, source.frame)
            stats = server.context.encode_cache.stats
            # The first full frame went out while its client was alone, so nothing was cached
            # (a lone display skips the cache): the second client encoded it; the patch, with
            # two displays, was encoded once and shared.
            assert stats.encodes == 2 and stats.hits == 1
            shared = [s.metrics.shared_draws for s in server.sessions()]
            assert sorted(shared) == [0, 1]
            for main, display, _ in clients:
                await display.close()
                await main.close()

    run(scenario())
