"""The bands of one damaged rectangle go out as one image (``encode.stacks``): GLZ, QUIC, LZ."""

from __future__ import annotations

import numpy as np
import pytest

from encoders import quic_encode
from encoders.glz import GlzDictionary
from spiceserver.protocol.enums import ImageCompression
from spiceserver.region import split_rows
from spiceserver.server.channels.display.encode import glz_stacks, stacks
from spiceserver.server.codecs import ImageEncoder, encode_stack
from spiceserver.sources.base import Rect
from tests.reference.glz_decode import GlzWindow
from tests.reference.lz_decode import lz_decode


def test_stacks_follow_the_rectangles_and_the_window() -> None:
    a = split_rows(Rect(0, 0, 100, 50), 1000)  # 5 bands of 10 rows
    b = split_rows(Rect(10, 60, 30, 20), 300)  # 2 bands of 10 rows, another rectangle
    bands = [*a, *b]
    codecs = ["glz", "glz", "quic", "glz", "glz", "glz", "glz"]
    assert glz_stacks(bands, codecs, lambda w, h: True) == [[0, 1], [3, 4], [5, 6]]
    # the window takes at most 2,000 pixels: stacks stop growing there
    assert glz_stacks(a, ["glz"] * 5, lambda w, h: w * h <= 2000) == [[0, 1], [2, 3], [4]]
    assert glz_stacks(a, ["lz"] * 5, lambda w, h: True) == []


def test_a_full_update_is_one_glz_image_the_client_decodes() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 4, size=(64, 48, 4), dtype=np.uint8) * 60
    frame[..., 3] = 0
    rects = split_rows(Rect(0, 0, 48, 64), 48 * 16)
    encoder = ImageEncoder(ImageCompression.AUTO_GLZ, GlzDictionary(100_000))
    stacks = glz_stacks(rects, ["glz"] * len(rects), encoder.glz_fits)
    assert stacks == [[0, 1, 2, 3]]
    image, codec = encoder.encode_glz_stack([frame[r.y : r.bottom].copy() for r in rects])
    assert codec == "glz" and (image.width, image.height) == (48, 64)
    stream = bytes(image.body[1])
    decoded = GlzWindow().decode(stream)
    assert np.array_equal(decoded.pixels[..., :3], frame[..., :3])
    # the dictionary gone (the session ended meanwhile): the same stack as one LZ image
    encoder.glz = None
    image, codec = encoder.encode_glz_stack([frame[:20], frame[20:]])
    assert codec == "lz" and (image.width, image.height) == (48, 64)


def test_quic_and_lz_bands_of_one_area_are_one_image() -> None:
    a = split_rows(Rect(0, 0, 100, 50), 1000)  # 5 bands of 10 rows
    b = split_rows(Rect(10, 60, 30, 20), 300)  # 2 bands, another rectangle
    codecs: list[str | None] = ["lz", "lz", "quic", "quic", None, "raw", "raw"]
    fits = lambda codec, w, h: True  # noqa: E731
    # runs of one stacked codec; raw bands stay one image each; None is left out
    assert stacks([*a, *b], codecs, fits) == [[0, 1], [2, 3], [5], [6]]
    assert stacks(a, ["glz", "lz", "lz", "glz", "glz"], fits) == [[0], [1, 2], [3, 4]]
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 3, size=(40, 24, 4), dtype=np.uint8) * 90
    parts = [frame[:13].copy(), frame[13:14].copy(), frame[14:].copy()]
    for codec in ("quic", "lz"):
        image = encode_stack(parts, codec)
        assert (image.width, image.height) == (24, 40)
        if codec == "quic":  # QUIC: the very stream of the whole image
            assert bytes(image.body[1]) == quic_encode(frame)
        else:  # LZ: matches end at band boundaries; the same pixels decode
            decoded = lz_decode(bytes(image.body[1]))
            assert np.array_equal(decoded.pixels[..., :3], frame[..., :3])
    with pytest.raises(ValueError, match="not stacked"):
        encode_stack(parts, "raw")


def test_bands_are_views_of_one_read_of_their_area() -> None:
    """A lone display reads each damaged area once and encodes views of its bands (one
    allocation: numpy gives 4 MiB and more transparent huge pages), same pixels as reads of
    each band."""
    from spiceserver.server.channels.display.update_loop import read_in_areas

    frame = np.random.default_rng(4).integers(0, 256, (90, 120, 4), dtype=np.uint8)
    reads: list[Rect] = []

    def read(rect: Rect) -> np.ndarray:
        reads.append(rect)
        return frame[rect.y : rect.bottom, rect.x : rect.right].copy()

    areas = [(area, split_rows(area, 1000)) for area in (Rect(0, 0, 120, 50), Rect(7, 60, 30, 30))]
    snapshots = read_in_areas(read, areas)
    assert reads == [area for area, _ in areas]
    assert [band for band, _ in snapshots] == [band for _, bands in areas for band in bands]
    for band, pixels in snapshots:
        assert pixels.flags.c_contiguous
        assert np.array_equal(pixels, frame[band.y : band.bottom, band.x : band.right])
    first = snapshots[0][1]
    assert all(np.shares_memory(first.base, p) for _, p in snapshots[: len(areas[0][1])])
