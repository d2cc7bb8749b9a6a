"""``lz_encode``: encode -> reference decode == input; format edges; sizes; misuse."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from encoders import EncoderError
from encoders.bench_bytes import grain_frame
from encoders.lz import lz_encode
from tests.encoders.lz.lz_helpers import (
    C_GRAIN,
    C_SIZES,
    images,
    load_frame,
    needs_jit,
    rgb,
    text_like,
)
from tests.reference.lz_decode import LzDecodeError, lz_decode


def _roundtrip(img: np.ndarray) -> bytes:
    data = lz_encode(img)
    decoded = lz_decode(data)
    assert (decoded.width, decoded.height, decoded.top_down) == (img.shape[1], img.shape[0], True)
    assert np.array_equal(decoded.pixels[..., :3], rgb(img))
    assert not decoded.pixels[..., 3].any()
    return data


def test_header() -> None:
    img = np.zeros((3, 5, 4), dtype=np.uint8)
    data = lz_encode(img)
    assert struct.unpack_from(">7I", data) == (0x20205A4C, 0x00010001, 8, 5, 3, 20, 1)


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


def test_x_byte_ignored() -> None:
    img = text_like(40, 64, seed=1)
    clean = img.copy()
    clean[..., 3] = 0
    assert lz_encode(img) == lz_encode(clean)


def test_region_views_match_copies() -> None:
    frame = text_like(60, 90, seed=2)
    for y0, y1, x0, x1 in [(0, 60, 0, 90), (5, 50, 3, 80), (10, 11, 0, 90), (0, 60, 89, 90)]:
        view = frame[y0:y1, x0:x1]
        data = _roundtrip(view)
        assert data == lz_encode(np.ascontiguousarray(view))


def test_odd_layouts_are_accepted() -> None:
    frame = text_like(20, 30, seed=3)
    flipped = frame[::-1]
    assert lz_decode(lz_encode(flipped)).pixels[..., :3].tolist() == rgb(flipped).tolist()
    fortran = np.asfortranarray(frame)
    assert lz_encode(fortran) == lz_encode(frame)
    raw = bytearray(frame.nbytes + 1)
    unaligned = np.frombuffer(raw, dtype=np.uint8, offset=1).reshape(frame.shape)
    unaligned[...] = frame
    assert lz_encode(unaligned) == lz_encode(frame)


def test_long_runs_and_length_extension() -> None:
    img = np.zeros((50, 100, 4), dtype=np.uint8)  # one run of 4999 pixels: many 255 bytes
    data = _roundtrip(img)
    assert len(data) < 28 + 4 + 3 + 4999 // 255 + 4
    for length in (5, 6, 7, 8, 261, 262, 263, 517):  # around 7 and 7 + 255 * k
        row = np.zeros((1, length + 4, 4), dtype=np.uint8)
        row[0, 0, 0] = 9
        row[0, -1, 2] = 7
        _roundtrip(row)


@pytest.mark.parametrize("period", [8190, 8191, 8192, 8193, 40_000, 73_726, 73_727, 73_728, 80_000])
@needs_jit
def test_near_and_far_distances(period: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A noise block repeated after ``period`` pixels: near form, escape, far form, no match.

    With a table large enough to remember the block across ``period`` unique pixels (the
    encoder's own, 2**14 slots, forgets it sooner, as lz.c's 2**13 does): this is about the
    distance forms, not the table."""
    from encoders.lz import api

    monkeypatch.setattr(api, "HASH_BITS", 20)
    monkeypatch.setattr(api, "_tables", api._Tables())
    rng = np.random.default_rng(period)
    block = rng.integers(0, 256, size=(64, 4), dtype=np.uint8)
    flat = np.full((period + 64, 4), 17, dtype=np.uint8)
    flat[:64] = block
    flat[period : period + 64] = block
    unique = np.arange(period - 64) + 0x800000  # all different: no accidental matches
    flat[64:period, 0] = unique & 0xFF
    flat[64:period, 1] = (unique >> 8) & 0xFF
    flat[64:period, 2] = (unique >> 16) & 0xFF
    img = flat.reshape(1, -1, 4)
    data = _roundtrip(img)
    literal_size = 28 + 3 * (period + 64) + (period + 64 + 31) // 32
    if period <= 73_727:
        assert len(data) < literal_size - 150  # the repeat was found
    else:
        assert len(data) >= literal_size - 8


@pytest.mark.parametrize("name", sorted(C_SIZES))
@needs_jit
def test_corpus_roundtrip_and_size(name: str) -> None:
    frame = load_frame(name)
    data = _roundtrip(frame)
    assert len(data) <= 1.10 * C_SIZES[name][0]


@needs_jit
def test_near_noise_stays_below_c() -> None:
    assert len(_roundtrip(grain_frame(300, 400, 6, 1))) <= C_GRAIN[0]


def test_one_pixel_copies_never_cost_bytes() -> None:
    """Pixels that repeat only singly (here every other one of a row repeats the row above)
    become 2-byte copies between 1-pixel literal runs: never more than all literals."""
    rng = np.random.default_rng(5)
    img = np.zeros((2, 64, 4), dtype=np.uint8)
    img[..., :3] = rng.integers(0, 256, (2, 64, 3))
    img[1, ::2] = img[0, ::2]
    literals = 28 + 3 * 128 + 128 // 32
    assert len(_roundtrip(img)) <= literals


@needs_jit
def test_corpus_region() -> None:
    frame = load_frame("desktop_xapps_1280x800")
    _roundtrip(frame[100:700, 333:1111])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4, 4), dtype=np.uint16),
        np.zeros((4, 4, 4), dtype=np.float32),
        np.zeros((4, 16), dtype=np.uint8),
        np.zeros((4, 4, 3), dtype=np.uint8),
        np.zeros((2, 4, 4, 4), dtype=np.uint8),
        np.zeros((0, 4, 4), dtype=np.uint8),
        np.zeros((4, 0, 4), dtype=np.uint8),
        [[[0, 0, 0, 0]]],
        b"\0\0\0\0",
    ],
    ids=["uint16", "float", "2d", "3ch", "4d", "no-rows", "no-cols", "list", "bytes"],
)
def test_misuse(bad: object) -> None:
    with pytest.raises(EncoderError):
        lz_encode(bad)  # type: ignore[arg-type]


def test_oracle_rejects_bad_streams() -> None:
    """The oracle enforces the C decoder's hard checks (so the tests above mean something)."""
    good = lz_encode(text_like(10, 20, seed=4))
    lz_decode(good)
    with pytest.raises(LzDecodeError):
        lz_decode(good + b"\0")  # trailing byte
    with pytest.raises(LzDecodeError):
        lz_decode(good[:-1])  # truncated
    header = good[:28]
    with pytest.raises(LzDecodeError):
        lz_decode(header[:20] + struct.pack(">I", 81) + header[24:] + good[28:])  # stride
    one = struct.pack(">7I", 0x20205A4C, 0x00010001, 8, 2, 1, 8, 1)
    with pytest.raises(LzDecodeError):
        lz_decode(one + bytes([0, 1, 2, 3]) + bytes([0x20, 1]))  # distance 2 at pixel 1
    with pytest.raises(LzDecodeError):
        lz_decode(one + bytes([0, 1, 2, 3]) + bytes([0x40, 0]))  # length 2 past the end
    with pytest.raises(LzDecodeError):
        lz_decode(one + bytes([2, 1, 2, 3, 4, 5, 6, 7, 8, 9]))  # 3 literals for 2 pixels
    lz_decode(one + bytes([0, 1, 2, 3]) + bytes([0x20, 0]))  # run of 1: fine


def test_two_lanes_are_one_stream_on_any_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image big enough for two lanes: the reference decoder reads it, and the bytes are the
    same whether the helper thread or the caller runs the second lane (no timing in them)."""
    from encoders import _lanes
    from encoders.lz import api

    monkeypatch.setattr(api, "LANE_MIN_PIXELS", 64)
    img = text_like(24, 40, seed=7)
    data = _roundtrip(img)
    monkeypatch.setattr(_lanes, "PARALLEL", False)
    assert lz_encode(img) == data
    monkeypatch.setattr(api, "LANE_MIN_PIXELS", 1 << 40)
    one = _roundtrip(img)
    assert abs(len(one) - len(data)) < len(one) // 10


def test_output_never_depends_on_earlier_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-thread tables are never cleared between calls (their origin moves instead), and
    every few calls (a tiny slot range here) they start afresh: same bytes either way."""
    import encoders.lz.api as api

    imgs = [text_like(20, 33, seed=s) for s in range(4)]
    first = [lz_encode(img) for img in imgs]
    monkeypatch.setattr(api, "_SLOT_LIMIT", 3000)
    assert [lz_encode(img) for img in imgs * 5] == first * 5
    assert api._tables.base <= 3000
