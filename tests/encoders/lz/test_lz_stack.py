"""``lz_encode_stack``: bands coded one after another, each reaching into the band above, decode
(with the reference decoder) to the stacked image."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders import EncoderError, _lanes
from encoders._jit import py_func
from encoders.bench_bytes import grain_frame
from encoders.lz import _kernels, lz_encode, lz_encode_stack
from encoders.lz import api as lz_api
from encoders.lz._kernels import HASH_BITS, lz_rgb32_compress_after
from tests.encoders.lz.lz_helpers import (
    C_GRAIN,
    C_SIZES,
    images,
    load_frame,
    needs_jit,
    rgb,
    text_like,
)
from tests.reference.lz_decode import lz_decode


def _check(parts: list[np.ndarray]) -> bytes:
    data = lz_encode_stack(parts)
    whole = np.concatenate(parts)
    decoded = lz_decode(data)
    assert (decoded.width, decoded.height) == (whole.shape[1], whole.shape[0])
    assert np.array_equal(decoded.pixels[..., :3], rgb(whole))
    return data


def _cut(img: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    edges = [0, *sorted(set(cuts)), img.shape[0]]
    return [img[a:b].copy() for a, b in itertools.pairwise(edges) if b > a]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images(max_width=40, max_height=16), data=st.data())
def test_any_cut_decodes(img: np.ndarray, data: st.DataObject) -> None:
    height = img.shape[0]
    cuts = data.draw(st.lists(st.integers(1, max(1, height - 1)), max_size=4))
    _check(_cut(img, [c for c in cuts if c < height]))


def test_runs_and_matches_cross_the_band_boundaries() -> None:
    img = text_like(60, 50, seed=3)
    img[20:40] = img[0:20]  # a band that repeats the one above: copies from prev
    img[41:, :] = 7  # a run that starts in one band and goes on in the next
    for cuts in ([20], [20, 40], [41], [21, 42]):
        data = _check(_cut(img, cuts))
        assert len(data) <= len(lz_encode(img)) + 8 * len(cuts)
    # bands of one row: what lies above the band above is out of reach, and still decodes
    _check(_cut(img, [1, 2, 3, 59]))


def test_one_part_is_lz_encode_and_bad_parts_are_refused() -> None:
    img = text_like(10, 30, seed=1)
    assert lz_encode_stack([img]) == lz_encode(img)
    with pytest.raises(EncoderError):
        lz_encode_stack([])
    with pytest.raises(EncoderError):
        lz_encode_stack([img, img[:, :20]])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images(max_width=32, max_height=12), data=st.data())
def test_kernel_jit_equals_python(img: np.ndarray, data: st.DataObject) -> None:
    src = np.ascontiguousarray(img).view(np.uint32).reshape(-1)
    split = data.draw(st.integers(0, src.shape[0] - 1))
    prev, cur = src[:split], src[split:]
    width = img.shape[1]
    body = py_func(_kernels._compress)  # the kernel's body as plain Python

    def python(*args: object) -> int:
        return int(body(*args, True))

    results = []
    for kernel in (lz_rgb32_compress_after, python):
        out = np.zeros(4 * src.shape[0] + 64, dtype=np.uint8)
        htab = np.full(1 << HASH_BITS, 999, dtype=np.int32)  # stale: below base 1000
        # prev's pixels in the table, as encoding it before would have left them
        end = kernel(src[:0], prev, 0, 0, split, 1000, htab, out, 0, width)
        end = kernel(prev, cur, split, 0, cur.shape[0], 1000, htab, out, end, width)
        results.append(out[:end].tobytes())
    assert results[0] == results[1]


@pytest.mark.parametrize("name", sorted(C_SIZES))
@needs_jit
def test_corpus_in_server_bands(name: str) -> None:
    frame = load_frame(name)
    rows = max(1, 262_144 // frame.shape[1])  # MAX_BAND_PIXELS bands
    data = _check(_cut(frame, list(range(rows, frame.shape[0], rows))))
    assert len(data) <= C_SIZES[name][0]


@needs_jit
def test_near_noise_in_bands_stays_below_c() -> None:
    assert len(_check(_cut(grain_frame(300, 400, 6, 1), [100, 200]))) <= C_GRAIN[0]


class _Always(_lanes.Pacer):
    """Two lanes on every call (the real pacer backs off when they do not pay)."""

    def wanted(self) -> bool:
        return True


@pytest.mark.parametrize("parallel", [True, False])
def test_two_lanes_split_at_a_band_and_decode(
    monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    """A stack big enough for two lanes: the second lane starts at a band boundary with its
    table primed from the band above, so its matches still reach across; the bytes are the
    same whether the helper thread or the caller runs it (no timing in them)."""
    monkeypatch.setattr(lz_api, "STACK_LANE_MIN_PIXELS", 64)
    monkeypatch.setattr(lz_api, "_stack_pacer", _Always())
    monkeypatch.setattr(_lanes, "PARALLEL", parallel)
    img = text_like(48, 60, seed=5)
    img[30:45] = img[14:29]  # lane B's first band repeats rows of lane A: copies reach across
    parts = _cut(img, [15, 30, 45])
    data = _check(parts)
    monkeypatch.setattr(lz_api, "STACK_LANE_MIN_PIXELS", 1 << 40)
    one = _check(parts)
    assert len(data) <= len(one) + 16


def test_pacer_backs_off_when_pairs_do_not_pay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lanes, "PARALLEL", True)
    outcomes = iter([False, False, True])
    monkeypatch.setattr(_lanes, "run_pair", lambda first, second: next(outcomes))
    pacer = _lanes.Pacer()
    assert pacer.wanted()
    pacer.run(lambda: None, lambda: None)  # did not pay: 4 images in one lane
    assert [pacer.wanted() for _ in range(5)] == [False] * 4 + [True]
    pacer.run(lambda: None, lambda: None)  # again: 8
    assert [pacer.wanted() for _ in range(9)] == [False] * 8 + [True]
    pacer.run(lambda: None, lambda: None)  # paid: no back-off
    assert pacer.wanted() and pacer.wanted()
    monkeypatch.setattr(_lanes, "PARALLEL", False)
    assert not _lanes.Pacer().wanted()  # one CPU: never two lanes
