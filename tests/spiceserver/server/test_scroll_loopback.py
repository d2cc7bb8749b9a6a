"""Scrolls over real loopback sockets: COPY_BITS plus strips, applied by a fake client's canvas.

The canvas applies raw DRAW_COPYs and COPY_BITS in the order they arrive, the way spice-gtk's
canvas does (``canvas_copy_bits``: the box is the destination, ``src_pos`` the source's
top-left corner, overlapping copies as if the source were read first).  Every test ends with the
canvas equal to the source's frame, pixel for pixel.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import numpy as np
import pytest

from spiceserver import ChannelLimits, NumpySource, Rect, SpiceServer
from spiceserver.protocol.enums import ChannelType
from spiceserver.session import Session
from tests.conftest import run
from tests.fakeclient import LoopbackClient
from tests.spiceserver.server.test_loopback import PASSWORD, open_session, raw_server
from tests.spiceserver.test_scroll import terminal

COPY_BITS, DRAW_COPY, SET_ACK, MARK = 104, 304, 3, 102


class Canvas:
    """A client surface: raw-bitmap DRAW_COPY and COPY_BITS, applied in arrival order."""

    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.zeros((height, width, 4), dtype=np.uint8)
        self.copy_bits = 0
        self.image_bytes = 0

    def apply(self, type_: int, body: bytes) -> None:
        if type_ == DRAW_COPY:
            self._draw_copy(body)
        elif type_ == COPY_BITS:
            self._copy_bits(body)

    def _draw_copy(self, body: bytes) -> None:
        top, left, bottom, right = struct.unpack_from("<4i", body, 4)
        _id, image_type, _flags, width, height = struct.unpack_from("<QBBII", body, 57)
        assert image_type == 0  # BITMAP
        assert (right - left, bottom - top) == (width, height)
        data = np.frombuffer(body, np.uint8, width * height * 4, 93).reshape(height, width, 4)
        self.pixels[top:bottom, left:right] = data
        self.image_bytes += len(body)

    def _copy_bits(self, body: bytes) -> None:
        assert len(body) == 29  # DisplayBase with clip NONE + Point src_pos
        surface, top, left, bottom, right, clip, src_x, src_y = struct.unpack("<I4iBii", body)
        assert (surface, clip) == (0, 0)
        height, width = self.pixels.shape[:2]
        h, w = bottom - top, right - left
        # The server never names pixels outside the surface (spice-common would clip them).
        assert min(left, top, src_x, src_y) >= 0 and w > 0 and h > 0
        assert max(right, src_x + w) <= width and max(bottom, src_y + h) <= height
        source = self.pixels[src_y : src_y + h, src_x : src_x + w].copy()
        self.pixels[top:bottom, left:right] = source
        self.copy_bits += 1

    def equals(self, frame: np.ndarray) -> bool:
        return np.array_equal(self.pixels[..., :3], frame[..., :3])


class Display:
    """A display channel client that reads messages in order and ACKs like spice-gtk."""

    def __init__(self, client: LoopbackClient, window: int, canvas: Canvas) -> None:
        self.client = client
        self.window = window
        self.canvas = canvas
        self.received = 0

    @classmethod
    async def open(cls, port: int, session_id: int, canvas: Canvas) -> Display:
        client = await LoopbackClient.open(port)
        assert await client.link(ChannelType.DISPLAY, PASSWORD, connection_id=session_id) == 0
        generation, window = struct.unpack("<II", await client.receive(SET_ACK))
        client.send(1, struct.pack("<I", generation))  # ACK_SYNC
        client.send(101, struct.pack("<BqBi", 1, 1 << 20, 1, 1 << 20))  # DISPLAY_INIT
        return cls(client, window, canvas)

    async def next_message(self, timeout: float = 10.0) -> tuple[int, bytes]:
        client = self.client
        async with asyncio.timeout(timeout):
            while not client.pending:
                data = await client.reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                client.pending.extend(client.splitter.feed(data))
        type_, body = client.pending.pop(0)
        self.received += 1
        if self.received % self.window == 0:
            client.send(2)  # ACK
        return type_, body

    async def until_equal(self, frame: np.ndarray, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.canvas.equals(frame):
                self.canvas.apply(*await self.next_message())


def display_session(server: SpiceServer) -> Session:
    (session,) = server.context.sessions.sessions.values()
    return session


def test_terminal_scrolls_arrive_as_copy_bits_and_strips(event_loop_name: str) -> None:
    """A terminal printing lines: each update is one COPY_BITS and the new line's image."""

    async def scenario() -> None:
        width, height, line = 320, 240, 16
        page = terminal(height + 64 * line, width, seed=11, line=line)
        source = NumpySource(frame=page[:height].copy())
        text = Rect(0, line, width, height - 2 * line)  # a title line above, a prompt below
        async with raw_server(source, max_fps=200) as server:
            main, session_id = await open_session(server.port)
            canvas = Canvas(width, height)
            display = await Display.open(server.port, session_id, canvas)
            await display.until_equal(source.frame)
            first_bytes = canvas.image_bytes
            for step in range(1, 41):
                down = step % 10 == 0  # now and then back up one line
                dy = line if down else -line
                frame = source.frame
                frame[text.y : text.bottom] = np.roll(frame[text.y : text.bottom], dy, axis=0)
                new = page[height + step * line : height + (step + 1) * line]
                strip = Rect(0, text.y if down else text.bottom - line, width, line)
                frame[strip.y : strip.bottom] = new
                source.scroll(text, dy, [strip])
                await display.until_equal(source.frame)
            assert canvas.copy_bits >= 30  # some updates may merge; most are moves
            metrics = display_session(server).metrics
            assert metrics.copy_bits == canvas.copy_bits
            # Forty screens' worth of text for the price of about forty lines.
            assert canvas.image_bytes - first_bytes < 60 * (width * line * 4 + 200)
            await display.client.close()
            await main.close()

    run(scenario(), loop=event_loop_name)


@pytest.mark.parametrize("seed", range(6))
def test_lagging_client_mixing_scrolls_and_damage_ends_exact(seed: int) -> None:
    """A client whose ACKs lag (window 2) while scrolls, damage and resizes pour in."""

    async def scenario() -> None:
        rng = np.random.default_rng(seed)
        width, height = 160, 120
        source = NumpySource(frame=rng.integers(0, 256, (height, width, 4), dtype=np.uint8))
        limits = ChannelLimits(ack_window=2)
        async with raw_server(source, channel_limits=limits, max_fps=1000) as server:
            main, session_id = await open_session(server.port)
            canvas = Canvas(width, height)
            display = await Display.open(server.port, session_id, canvas)
            await display.until_equal(source.frame)
            for _ in range(150):
                frame = source.frame
                x, y = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
                w = int(rng.integers(8, width - x + 1))
                h = int(rng.integers(8, height - y + 1))
                rect = Rect(x, y, w, h)
                if rng.random() < 0.6:
                    dy = int(rng.integers(1, h)) * int(rng.choice([-1, 1]))
                    band = frame[y : y + h, x : x + w]
                    moved = band.copy()
                    if dy > 0:
                        moved[dy:] = band[:-dy]
                    else:
                        moved[:dy] = band[-dy:]
                    band[...] = moved
                    strip = Rect(x, y if dy > 0 else y + h + dy, w, abs(dy))
                    frame[strip.y : strip.bottom, x : x + w] = rng.integers(
                        0, 256, (abs(dy), w, 4), dtype=np.uint8
                    )
                    source.scroll(rect, dy, [strip])
                else:
                    frame[y : y + h, x : x + w] = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
                    source.damage([rect])
                pause = rng.random()
                if pause < 0.3:
                    await asyncio.sleep(0.002)  # the server gets to send
                elif pause < 0.5:  # the client reads a little (and ACKs)
                    for _ in range(int(rng.integers(1, 4))):
                        try:
                            canvas.apply(*await display.next_message(timeout=0.05))
                        except TimeoutError:
                            break
            await display.until_equal(source.frame)
            assert display_session(server).metrics.copy_bits == canvas.copy_bits
            await display.client.close()
            await main.close()

    run(scenario())


def test_scroll_with_capture_keeps_the_video_canvas_exact(tmp_path: Path) -> None:
    """Capture mode paints its video from what was sent: COPY_BITS included."""
    pytest.importorskip("av")

    async def scenario() -> None:
        width, height = 128, 96
        page = terminal(height + 400, width, seed=5)
        source = NumpySource(frame=page[:height].copy())
        async with raw_server(source, capture_dir=str(tmp_path), max_fps=200) as server:
            main, session_id = await open_session(server.port)
            canvas = Canvas(width, height)
            display = await Display.open(server.port, session_id, canvas)
            await display.until_equal(source.frame)
            for step in range(1, 8):
                source.frame[:] = page[step * 16 : step * 16 + height]
                source.scroll(Rect(0, 0, width, height), -16, [Rect(0, height - 16, width, 16)])
                await display.until_equal(source.frame)
            assert canvas.copy_bits > 0
            session = display_session(server)
            connection = session.channels[(ChannelType.DISPLAY, 0)]
            video = connection.capture._video
            assert video is not None
            assert np.array_equal(video.canvas[..., :3], source.frame[..., :3])
            await display.client.close()
            await main.close()

    run(scenario())
