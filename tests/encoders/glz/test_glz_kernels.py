"""Same-process differential tests: GLZ kernels under numba vs their pure-Python bodies."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders._jit import py_func
from encoders._lzbase import put_token, run_end, same_end
from encoders.glz._kernels import (
    glz_prime,
    glz_rebase,
    glz_rgb32_compress,
    hash_long,
    match_code,
    match_cost,
)
from tests.encoders.lz.lz_helpers import images
from tests.reference.glz_decode import GlzWindow

_E64 = np.zeros(1, dtype=np.int64)
_E32 = np.zeros(1, dtype=np.uint32)


def _run(kernel: object, prime: object, img: np.ndarray, split: int | None = None) -> bytes:
    """The whole image in one lane, or (``split``) two lanes, the second one primed."""
    src = np.ascontiguousarray(img).view(np.uint32).reshape(-1)
    n = src.shape[0]
    width = img.shape[1]
    out = np.zeros(4 * n + 64, dtype=np.uint8)
    htab = np.full(1 << 10, -1, dtype=np.int32)
    ltab = np.full(1 << 8, -1, dtype=np.int32)
    stop = n if split is None else split
    # virtual start 5, table origin 3: slots hold position - 3
    end = kernel(src, 0, stop, 5, 3, 0, _E32, htab, ltab, _E64, _E64, _E64, 0, out, 0, width)  # type: ignore[operator]
    if split is not None:
        htab = np.full(1 << 10, -1, dtype=np.int32)
        ltab = np.full(1 << 8, -1, dtype=np.int32)
        prime(src, 0, split, 5, 3, htab)  # type: ignore[operator]
        end = kernel(src, split, n, 5, 3, 0, _E32, htab, ltab, _E64, _E64, _E64, 0, out, end, width)  # type: ignore[operator]
    return out[:end].tobytes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images(max_width=32, max_height=12))
def test_compress_jit_equals_python(img: np.ndarray) -> None:
    py = (py_func(glz_rgb32_compress), py_func(glz_prime))
    assert _run(glz_rgb32_compress, glz_prime, img) == _run(*py, img)
    split = img.shape[0] * img.shape[1] // 2
    two = _run(glz_rgb32_compress, glz_prime, img, split)
    assert two == _run(*py, img, split)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images(max_width=32, max_height=12))
def test_two_lanes_decode(img: np.ndarray) -> None:
    """Two lanes' tokens, concatenated, decode to the image (the split is any pixel)."""
    import struct

    h, w = img.shape[:2]
    for split in {0, (h * w) // 3, (h * w) // 2, h * w - 1}:
        body = _run(glz_rgb32_compress, glz_prime, img, split)
        head = struct.pack(">IIBIIIQI", 0x20205A4C, 0x00010001, 24, w, h, 4 * w, 0, 0)
        got = GlzWindow().decode(head + body).pixels
        assert np.array_equal(got[..., :3], img[..., :3])


def test_token_writer_all_forms() -> None:
    """Every offset / image-distance form: JIT == Python, the token's size is what match_cost()
    charges, and a token the kernel writes decodes (the oracle follows every form below)."""
    for offset in (0, 15, 4095, 4096, 131_071, 131_072, (1 << 25) - 1):
        for idist in (0, 1, 63, 64, 255, 256, 16_383, 16_384, 65_535, 65_536, (1 << 24) - 1):
            if idist == 0 and offset > 100:
                continue
            for length in (1, 6, 7, 261, 262, 700):
                code = match_code(length, offset, idist)
                assert code == py_func(match_code)(length, offset, idist)
                ctrl, tail, ntail = code
                assert ctrl >> 5 == min(length, 7) and 0 <= tail < 1 << (8 * ntail)
                assert 1 + ntail == match_cost(offset, idist)
                a = np.zeros(32, dtype=np.uint8)
                b = np.zeros(32, dtype=np.uint8)
                end = put_token(a, 0, ctrl, length, tail, ntail)
                assert end == py_func(put_token)(b, 0, ctrl, length, tail, ntail)
                assert a.tobytes() == b.tobytes()
                assert end == 1 + ntail + (length >= 7) * (1 + (length - 7) // 255)
    assert hash_long(1, 2, 3, 4, 5, 17) == py_func(hash_long)(1, 2, 3, 4, 5, 17)


def test_rebase_drops_only_slots_below_the_new_origin() -> None:
    for rebase in (glz_rebase, py_func(glz_rebase)):
        table = np.array([-1, 0, 6, 7, 100, 2**31 - 1], dtype=np.int32)
        rebase(table, 7)
        assert table.tolist() == [-1, -1, -1, 0, 93, 2**31 - 8]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(length=st.integers(0, 300), cut=st.integers(0, 300), start=st.integers(0, 40))
def test_same_end_and_run_end_find_the_first_difference(length: int, cut: int, start: int) -> None:
    """Both comparison loops, in every block / chunk / one-by-one phase, JIT == Python, and
    the X byte never counts."""
    a = np.full(400, 0x5A123456, dtype=np.uint32)
    a[::3] = 0x00123456  # X differs: the same pixel
    b = np.full(400, 0xFF123456, dtype=np.uint32)
    n = min(400, start + length)
    if start + cut < n:
        b[start + cut] = 0x00123457

    def first(x: np.ndarray, i: int, y: np.ndarray, r: int) -> int:
        while i < n and (int(x[i]) ^ int(y[r])) & 0xFFFFFF == 0:
            i, r = i + 1, r + 1
        return i

    for same, run in ((same_end, run_end), (py_func(same_end), py_func(run_end))):
        assert same(a, start, b, start, n) == first(a, start, b, start)
        assert run(b, start, n, 0x123456) == first(b, start, a, start)
        if start + 1 <= n:  # overlapping ranges of one array (a run is a match at distance 1)
            assert same(b, start + 1, b, start, n) == first(b, start + 1, b, start)
