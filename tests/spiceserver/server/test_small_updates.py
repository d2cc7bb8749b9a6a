"""A small change goes out in the fewest steps (``DisplayHandler._send_small``): one GLZ
image straight from the damage callback, decoding to the very pixels; anything more takes
the general update path."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from spiceserver import ImageCompression, NumpySource, Rect, SpiceServer
from spiceserver.protocol.enums import ImageType
from spiceserver.server.channels.display import update_loop
from tests.conftest import run
from tests.reference.glz_decode import GlzWindow
from tests.spiceserver.server.test_loopback import (
    PASSWORD,
    open_display,
    open_session,
    random_frame,
)

DRAW_COPY = 304


class GlzCanvas:
    """Applies DRAW_COPYs of GLZ images (and raw bitmaps), in order, through one window."""

    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.zeros((height, width, 4), dtype=np.uint8)
        self.window = GlzWindow()
        self.types: list[int] = []

    def apply(self, body: bytes) -> Rect:
        top, left, bottom, right = struct.unpack_from("<4i", body, 4)
        _id, image_type, _flags, width, height = struct.unpack_from("<QBBII", body, 57)
        assert (right - left, bottom - top) == (width, height)
        self.types.append(image_type)
        if image_type == ImageType.GLZ_RGB:
            (size,) = struct.unpack_from("<I", body, 75)
            pixels = self.window.decode(body[79 : 79 + size]).pixels
        else:
            assert image_type == ImageType.BITMAP
            pixels = np.frombuffer(body, np.uint8, width * height * 4, 93)
            pixels = pixels.reshape(height, width, 4)
        self.pixels[top:bottom, left:right, :3] = pixels[..., :3]
        return Rect(left, top, width, height)


def text_like_frame(width: int, height: int, seed: int) -> np.ndarray:
    """Few colours in runs: what GLZ takes (a random frame would go as QUIC)."""
    rng = np.random.default_rng(seed)
    frame = (rng.integers(0, 3, (height, width // 4, 1, 4), dtype=np.uint8) * 100).repeat(4, 2)
    frame = frame.reshape(height, width, 4)
    frame[..., 3] = 0
    return frame


def test_a_small_change_is_one_glz_image_sent_from_the_damage_callback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    general: list[int] = []
    begin = update_loop.DisplayHandler._begin_update

    def counted(self: update_loop.DisplayHandler) -> object:
        general.append(1)
        return begin(self)

    monkeypatch.setattr(update_loop.DisplayHandler, "_begin_update", counted)

    async def scenario() -> None:
        source = NumpySource(frame=text_like_frame(96, 64, 1))
        async with SpiceServer(
            source, password=PASSWORD, port=0, image_compression=ImageCompression.AUTO_GLZ,
            max_fps=1000,
        ) as server:  # fmt: skip
            main, session_id = await open_session(server.port)
            display = await open_display(server.port, session_id)
            canvas = GlzCanvas(96, 64)
            while not np.array_equal(canvas.pixels[..., :3], source.frame[..., :3]):
                canvas.apply(await display.receive(DRAW_COPY))
            await display.receive(102)  # MARK
            general.clear()
            for seed, rect in enumerate([Rect(8, 4, 12, 10), Rect(40, 30, 32, 24)], 2):
                # damage reported on the loop: drawn and written before update() returns
                source.update(text_like_frame(rect.width, rect.height, seed), rect)
                assert canvas.apply(await display.receive(DRAW_COPY)) == rect
                assert canvas.types[-1] == ImageType.GLZ_RGB
                assert np.array_equal(canvas.pixels[..., :3], source.frame[..., :3])
            assert general == []
            # two rectangles far apart (or one too big to be small): the general path
            source.frame[0:4, 0:4, :3] = 7
            source.frame[60:64, 90:96, :3] = 9
            source.damage([Rect(0, 0, 4, 4), Rect(90, 60, 6, 4)])
            while not np.array_equal(canvas.pixels[..., :3], source.frame[..., :3]):
                canvas.apply(await display.receive(DRAW_COPY))
            assert general
            await display.close()
            await main.close()

    run(scenario())


def test_small_images_of_every_mode_decode() -> None:
    """``ImageEncoder.encode_small`` picks what ``choose`` picks: raw below 54 bytes, GLZ
    in the GLZ modes (LZ once the dictionary is gone), the mode's codec otherwise."""
    from encoders.glz import GlzDictionary
    from spiceserver.server.codecs import ImageEncoder

    frame = text_like_frame(32, 16, 5)
    for mode, glz, expected in [
        (ImageCompression.AUTO_GLZ, GlzDictionary(1 << 20), "glz"),
        (ImageCompression.GLZ, GlzDictionary(1 << 20), "glz"),
        (ImageCompression.AUTO_GLZ, None, "lz"),
        (ImageCompression.AUTO_LZ, None, "lz"),
        (ImageCompression.OFF, None, "raw"),
    ]:
        encoder = ImageEncoder(mode, glz)
        assert encoder.choose(frame) == expected
        image, codec = encoder.encode_small(frame.copy())
        assert codec == expected, mode
        if codec == "glz":
            assert glz is not None
            (size,) = struct.unpack_from("<I", image.body[0])
            pixels = GlzWindow().decode(bytes(image.body[1])[:size]).pixels
            assert np.array_equal(pixels[..., :3], frame[..., :3])
    tiny = frame[:2, :3].copy()  # 24 bytes: raw, as spice-server sends it
    encoder = ImageEncoder(ImageCompression.AUTO_GLZ, GlzDictionary(1 << 20))
    assert encoder.encode_small(tiny)[1] == "raw"
    with pytest.raises(ValueError, match="not a small region"):
        ImageEncoder(ImageCompression.AUTO_GLZ).encode_small(random_frame(64, 64, 1))
