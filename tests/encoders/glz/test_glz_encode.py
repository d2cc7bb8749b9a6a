"""``glz_encode`` (fresh dictionary): encode -> reference decode == input; sizes; misuse."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from encoders import EncoderError
from encoders.bench_bytes import grain_frame
from encoders.glz import GlzDictionary, glz_encode
from tests.encoders.lz.lz_helpers import (
    C_GRAIN,
    C_SIZES,
    images,
    load_frame,
    needs_jit,
    rgb,
    text_like,
)
from tests.reference.glz_decode import GlzDecodeError, GlzWindow, glz_decode


def _roundtrip(img: np.ndarray) -> bytes:
    data = glz_encode(img)
    decoded = glz_decode(data)
    assert (decoded.id, decoded.win_head_dist, decoded.cross_refs) == (0, 0, 0)
    assert (decoded.width, decoded.height) == (img.shape[1], img.shape[0])
    assert np.array_equal(decoded.pixels[..., :3], rgb(img))
    assert not decoded.pixels[..., 3].any()
    return data


def test_header() -> None:
    data = glz_encode(np.zeros((3, 5, 4), dtype=np.uint8))
    fields = struct.unpack_from(">IIBIIIQI", data)
    assert fields == (0x20205A4C, 0x00010001, 8 | 16, 5, 3, 20, 0, 0)


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 2), (1, 3), (1, 4), (2, 2), (1, 37), (37, 1), (3, 1), (1, 200), (200, 1)]
)
@pytest.mark.parametrize("fill", ["zeros", "noise", "stripes"])
def test_tiny_and_thin(shape: tuple[int, int], fill: str) -> None:
    rng = np.random.default_rng(sum(shape))
    if fill == "zeros":
        img = np.zeros((*shape, 4), dtype=np.uint8)
    elif fill == "noise":
        img = rng.integers(0, 256, size=(*shape, 4), dtype=np.uint8)
    else:
        img = np.zeros((*shape, 4), dtype=np.uint8)
        img.reshape(-1, 4)[::3, 1] = 200
    _roundtrip(img)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images())
def test_roundtrip_random(img: np.ndarray) -> None:
    _roundtrip(img)


def test_calls_are_independent() -> None:
    """Each call is a fresh dictionary: same input, same bytes, whatever came before."""
    a = text_like(30, 40, seed=5)
    b = text_like(30, 40, seed=6)
    first = glz_encode(a)
    glz_encode(b)
    assert glz_encode(a) == first


def test_x_byte_ignored_and_views() -> None:
    frame = text_like(60, 90, seed=7)
    clean = frame.copy()
    clean[..., 3] = 0
    assert glz_encode(frame) == glz_encode(clean)
    view = frame[5:50, 3:80]
    assert _roundtrip(view) == glz_encode(np.ascontiguousarray(view))


def test_long_matches_and_offsets() -> None:
    _roundtrip(np.zeros((50, 100, 4), dtype=np.uint8))
    rng = np.random.default_rng(8)
    for period in (100, 4095, 4096, 4097, 5000):  # short/long pixel-offset forms
        block = rng.integers(0, 256, size=(20, 4), dtype=np.uint8)
        flat = np.zeros((period + 20, 4), dtype=np.uint8)
        unique = np.arange(period + 20) + 0x400000
        flat[:, 0] = unique & 0xFF
        flat[:, 1] = (unique >> 8) & 0xFF
        flat[:, 2] = (unique >> 16) & 0xFF
        flat[:20] = block
        flat[period:] = block
        data = _roundtrip(flat.reshape(1, -1, 4))
        assert len(data) < 33 + 3 * (period + 20) + (period + 20 + 31) // 32 - 40


@needs_jit
def test_medium_and_long_offsets() -> None:
    """A noise block repeated ``period`` pixels later across a flat run (runs add no hashes)."""
    rng = np.random.default_rng(9)
    for period in (131_071, 131_072, 131_073, 300_000, 2_000_000):
        block = rng.integers(0, 256, size=(40, 4), dtype=np.uint8)
        flat = np.full((period + 40, 4), 17, dtype=np.uint8)
        flat[:40] = block
        flat[period:] = block
        data = _roundtrip(flat.reshape(1, -1, 4))
        assert len(data) < 33 + 3 * 40 + 1 + period // 255 + 40  # second block: one match


@pytest.mark.parametrize("name", sorted(C_SIZES))
@needs_jit
def test_corpus_roundtrip_and_size(name: str) -> None:
    data = _roundtrip(load_frame(name))
    assert len(data) <= C_SIZES[name][1]


@needs_jit
def test_near_noise_stays_below_c() -> None:
    assert len(_roundtrip(grain_frame(300, 400, 6, 1))) <= C_GRAIN[1]


@pytest.mark.parametrize("step", [1, -1])
def test_diagonal_repeats_are_copied(step: int) -> None:
    """Pairs of pixels that repeat only one row up and one pixel on or back (anti-aliased
    slopes) are copied, between pairs that repeat straight up and lone new pixels: so neither
    the repeat candidate nor a 3-pixel string finds them."""
    rng = np.random.default_rng(9)
    width = 4096
    img = np.zeros((2, width, 4), dtype=np.uint8)
    rows = img.reshape(2, -1).view(np.uint32)
    rows[:] = rng.permutation(1 << 24)[: 2 * width].reshape(2, width)
    j = np.arange(1, width - 1)
    diagonal, above = j % 6 < 2, (j % 6 == 3) | (j % 6 == 4)
    rows[1, 1:-1][diagonal] = rows[0, 1 + step : width - 1 + step][diagonal]
    rows[1, 1:-1][above] = rows[0, 1:-1][above]
    first_row = 3 * width + width // 32
    # per 6 pixels: two 3-byte copies and two 1-pixel literal runs (4 bytes each)
    assert len(_roundtrip(img)) <= 33 + first_row + 14 * (width // 6) + 64


#: The C encoder's bytes per frame of a sequence in one dictionary (window 8 Mi pixels): the
#: corpus frame, then four copies each with one W/8 x 24 rectangle's colours inverted, at
#: (k W / 5, k H / 5) for frame k + 1 (``../shared/refcodec`` ``seq_frames()``, measured with
#: its ``compare.py --codecs glzseq`` on spice server ee6c01a2).
C_SEQUENCE = {
    "desktop_xapps_1280x800": (76_191, 11_102, 12_274, 10_294, 7_891),
    "photo_dune_1920x1080": (4_667_135, 14_744, 23_246, 25_851, 1_274_959),
    "terminal_manpage_1920x1080": (133_001, 15_030, 11_584, 9_841, 38_369),
    "web_pydoc_tutorial_1920x1080": (162_830, 11_331, 9_306, 10_346, 38_947),
}


@pytest.mark.parametrize("name", sorted(C_SEQUENCE))
@needs_jit
def test_sequence_frames_decode_and_stay_below_c(name: str) -> None:
    """A repeated frame with a small change is found in the older frames (the same position in
    the last two images), not only through the hash table: each frame at most C's bytes."""
    frame = load_frame(name)
    height, width = frame.shape[:2]
    dictionary = GlzDictionary(8 << 20)
    window = GlzWindow()
    for k, c_bytes in enumerate(C_SEQUENCE[name]):
        image = frame.copy()
        if k:
            x = min(k * width // 5, width - width // 8)
            y = min(k * height // 5, height - 24)
            image[y : y + 24, x : x + width // 8, :3] ^= 0xFF
        data = dictionary.encode(image)
        assert np.array_equal(window.decode(data).pixels[..., :3], rgb(image))
        assert len(data) <= c_bytes, (k, len(data), c_bytes)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4, 4), dtype=np.int8),
        np.zeros((4, 16), dtype=np.uint8),
        np.zeros((4, 4, 5), dtype=np.uint8),
        np.zeros((0, 4, 4), dtype=np.uint8),
        np.zeros((4, 0, 4), dtype=np.uint8),
        None,
    ],
    ids=["int8", "2d", "5ch", "no-rows", "no-cols", "none"],
)
def test_misuse(bad: object) -> None:
    with pytest.raises(EncoderError):
        glz_encode(bad)  # type: ignore[arg-type]


def test_oracle_rejects_bad_streams() -> None:
    good = glz_encode(text_like(10, 20, seed=10))
    glz_decode(good)
    with pytest.raises(GlzDecodeError):
        glz_decode(good + b"\0")
    with pytest.raises(GlzDecodeError):
        glz_decode(good[:-1])
    head = struct.pack(">IIBIIIQI", 0x20205A4C, 0x00010001, 8 | 16, 2, 1, 8, 0, 0)
    with pytest.raises(GlzDecodeError):
        glz_decode(head + bytes([0, 1, 2, 3]) + bytes([0x21, 0, 0]))  # distance 2 at pixel 1
    with pytest.raises(GlzDecodeError):
        glz_decode(head + bytes([0, 1, 2, 3]) + bytes([0x20, 0, 1]))  # image 0 - 1 missing
    glz_decode(head + bytes([0, 1, 2, 3]) + bytes([0x20, 0, 0]))  # run of 1: fine
    window = GlzWindow()
    window.decode(head + bytes([1, 1, 2, 3, 4, 5, 6]))
    nxt = struct.pack(">IIBIIIQI", 0x20205A4C, 0x00010001, 8 | 16, 2, 1, 8, 1, 1)
    with pytest.raises(GlzDecodeError):
        window.decode(nxt + bytes([0x41, 0, 1]))  # offset 1 + length 2 > 2 pixels of image 0
    window = GlzWindow()
    window.decode(head + bytes([1, 1, 2, 3, 4, 5, 6]))
    window.decode(nxt + bytes([0x40, 0, 1]))
