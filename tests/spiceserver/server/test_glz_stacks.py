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
    from spiceserver.server.channels.display.encode import read_in_areas

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


def _encode_update(
    encoder: ImageEncoder, frame: np.ndarray
) -> tuple[list[tuple[Rect, np.ndarray]], list[tuple[Rect, object, str]], bool]:
    """A full update of ``frame`` read and encoded as a lone display does (read_for_encode,
    then encode_bands on a two-thread pool)."""
    import asyncio
    import types
    from concurrent.futures import ThreadPoolExecutor

    from spiceserver.server.channels.display.encode import encode_bands, read_for_encode
    from spiceserver.server.encode_cache import EncodeCache
    from spiceserver.session import SessionMetrics

    height, width = frame.shape[:2]
    area = Rect(0, 0, width, height)
    areas = [(area, split_rows(area, 256 * 256))]

    def read_into(rect: Rect, out: np.ndarray) -> None:
        out[...] = frame[rect.y : rect.bottom, rect.x : rect.right]

    snapshots, staged = read_for_encode(
        lambda rect: frame[rect.y : rect.bottom, rect.x : rect.right].copy(),
        read_into,
        encoder,
        areas,
    )
    with ThreadPoolExecutor(2) as pool:
        context = types.SimpleNamespace(
            displays=1,
            executor=pool,
            encode_cache=EncodeCache(0),
            config=types.SimpleNamespace(encoder_threads=2),
        )
        encoded = asyncio.run(
            encode_bands(context, encoder, snapshots, 1, SessionMetrics(), staged=staged)  # type: ignore[arg-type]
        )
    encoder.unstage_glz()  # as the update loop does when the encode is over
    return snapshots, encoded, staged


def test_a_big_area_is_read_into_the_glz_room_and_sent_uncopied() -> None:
    """One GLZ image of the whole area: read into the dictionary's room and encoded there;
    with a photographic part (QUIC) the bands are copied out before anything is written
    there, and every image decodes to the frame."""
    from tests.reference.quic_decode import quic_decode

    text = np.tile(text_like_block(), (6, 8, 1))  # 320 wide, 384 rows: a staged area
    first_band = 256 * 256 // text.shape[1]  # photographic in the mixed frame
    photo = photo_like(*text.shape[:2])
    glz = GlzDictionary(3_145_728)
    encoder = ImageEncoder(ImageCompression.AUTO_GLZ, glz)
    window = GlzWindow()
    mixed = np.concatenate([photo[:first_band], text[first_band:]])
    for frame, whole in ((text, True), (mixed, False)):
        frame = np.ascontiguousarray(frame)
        stagings = glz.stagings
        snapshots, encoded, staged = _encode_update(encoder, frame)
        assert staged and glz.stagings == stagings + 1 and not glz.staged
        assert [codec for _, _, codec in encoded] == (["glz"] if whole else ["quic", "glz"])
        room = glz._arena.ctypes.data
        in_room = [room <= p.ctypes.data < room + glz._arena.nbytes for _, p in snapshots]
        assert all(in_room) if whole else not any(in_room)  # copied out when mixed
        for band, pixels in snapshots:  # what the capture (video) reads after the encode
            assert np.array_equal(pixels, frame[band.y : band.bottom, band.x : band.right])
        for rect, image, codec in encoded:
            body = bytes(image.body[1])  # type: ignore[attr-defined]
            pixels = window.decode(body).pixels if codec == "glz" else quic_decode(body)[1]
            want = frame[rect.y : rect.bottom, rect.x : rect.right]
            assert np.array_equal(pixels[..., :3], want[..., :3])


def text_like_block() -> np.ndarray:
    from tests.encoders.lz.lz_helpers import text_like

    return text_like(64, 40, seed=9)


def photo_like(height: int, width: int) -> np.ndarray:
    """A smooth gradient with a little noise: what classify calls gradual (QUIC)."""
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(5).integers(-6, 7, size=(height, width, 4))
    base = np.stack([x // 3, y // 2, (x + y) // 5, np.zeros_like(x)], axis=-1) + 64
    return np.clip(base + noise, 0, 255).astype(np.uint8)
