"""What a client receives before its first frame of a desktop: the frame and the net test.

``python -m tests.interop.bench_desktop`` showed 141,586 bytes down to spice-gtk's first frame
of a 1920x1080 X desktop (a flat background and an xterm) against 10,444 before the link
estimate: the image itself was 8,261 bytes of GLZ both times, the rest was the net test's
128 KiB PING (spiceserver/bandwidth.py).  That PING stays: a small probe slips through a
token-bucket shaper's burst at line rate and calls a 2 Mbit/s link fast (``tc tbf ... burst
32kb``: tests.interop.bench_slowlink then sent its photo as 2.4 MB of QUIC, shown after 12 s
instead of 0.7 s), and libspice sends 250 KiB for the same reason.  Here, in memory: the frame
is one small GLZ image, and the display channel sends hardly more than it.
"""

from __future__ import annotations

import struct

import numpy as np

from spiceserver import ImageCompression, NumpySource, SpiceServer
from spiceserver.bandwidth import NET_TEST_BYTES
from spiceserver.protocol.enums import (
    BaseClientMsg,
    BaseServerMsg,
    ChannelType,
    DisplayServerMsg,
    ImageType,
    MainServerMsg,
)
from tests.conftest import run
from tests.fakeclient import frame
from tests.memory import PASSWORD, linked, ready, session_id, turns

#: Mini header of every message the server writes.
HEADER = 6


def desktop_frame() -> np.ndarray:
    """1920x1080 BGRX: the benchmark's flat ``xsetroot`` background and an 80x24 xterm of
    text-like strokes (black on white, 6x13 cells)."""
    frame_ = np.zeros((1080, 1920, 4), np.uint8)
    frame_[..., :3] = (0x60, 0x50, 0x40)  # #405060, BGR
    top, left, rows, cols = 40, 40, 24, 80
    term = np.full((rows * 13, cols * 6, 3), 255, np.uint8)
    rng = np.random.default_rng(3)
    glyphs = rng.integers(0, 2, (64, 13, 6), dtype=np.uint8).astype(bool)
    glyphs[:, :, 5] = glyphs[:, 11:, :] = False  # spacing between cells and lines
    text = rng.integers(0, len(glyphs), (rows, cols))
    text[:, rng.integers(20, cols, rows)[0] :] = 0
    glyphs[0] = False  # blank
    for row in range(rows):
        for col in range(cols):
            cell = term[row * 13 : (row + 1) * 13, col * 6 : (col + 1) * 6]
            cell[glyphs[text[row, col]]] = 0
    frame_[top : top + rows * 13, left : left + cols * 6, :3] = term
    return frame_


def test_a_desktops_first_frame_is_mostly_the_frame() -> None:
    pixels = desktop_frame()

    async def scenario() -> None:
        server = await ready(
            SpiceServer(
                NumpySource(frame=pixels),
                password=PASSWORD,
                warmup_encoders=False,
                port=0,
                image_compression=ImageCompression.AUTO_GLZ,
            )
        )
        main = await linked(server, ChannelType.MAIN, PASSWORD)
        received = {"main": 0, "display": 0}
        pending = main.messages()
        sid = session_id(next(body for type_, body in pending if type_ == MainServerMsg.INIT))
        display = await linked(server, ChannelType.DISPLAY, PASSWORD, connection_id=sid)
        display.send(frame(BaseClientMsg.ACK_SYNC, struct.pack("<I", 1)))
        display.send(frame(101, struct.pack("<BqBi", 1, 1 << 20, 1, 3 << 20)))  # GLZ window
        images: list[tuple[int, int]] = []
        marks = 0

        def pump() -> bool:
            nonlocal marks, pending
            for name, client in (("main", main), ("display", display)):
                messages = pending if name == "main" else []
                pending = []
                for type_, body in messages + client.messages():
                    received[name] += HEADER + len(body)
                    if type_ == BaseServerMsg.PING:  # the net test's among them
                        client.send(frame(BaseClientMsg.PONG, body[:12]))
                    elif name == "display" and type_ == DisplayServerMsg.DRAW_COPY:
                        (size,) = struct.unpack_from("<I", body, 75)
                        images.append((body[57 + 8], size))
                    elif name == "display" and type_ == DisplayServerMsg.MARK:
                        marks += 1
            return marks > 0

        await turns(pump, timeout=60)  # the GLZ kernels may compile first
        # One image of the whole surface, as GLZ: flat UI and text are neither QUIC nor JPEG.
        assert [t for t, _ in images] == [ImageType.GLZ_RGB], images
        assert images[0][1] < 60_000, images
        # The frame and a few KiB of set-up; the main channel: its messages and the net test.
        assert received["display"] < images[0][1] + 8_000, received
        assert received["main"] < NET_TEST_BYTES + 8_000, received
        await server.close()

    run(scenario())
