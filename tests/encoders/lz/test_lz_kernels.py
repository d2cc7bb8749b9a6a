"""Same-process differential test: each LZ kernel under numba vs its pure-Python body."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings

from encoders._jit import py_func
from encoders._lzbase import flush_literals, hash3
from encoders.lz import _kernels
from encoders.lz._kernels import HASH_BITS, lz_prime, lz_rgb32_compress, match_code
from tests.encoders.lz.lz_helpers import images


def _run(kernel: object, prime: object, img: np.ndarray, split: int | None = None) -> bytes:
    """The whole image in one lane, or (``split``) two lanes, the second one primed."""
    src = np.ascontiguousarray(img).view(np.uint32).reshape(-1)
    n = src.shape[0]
    width = img.shape[1]
    out = np.zeros(4 * n + 64, dtype=np.uint8)
    # slots left by an "earlier image" (below base 1000) must be ignored
    htab = np.full(1 << HASH_BITS, 999, dtype=np.int32)
    stop = n if split is None else split
    end = kernel(src, 0, stop, 1000, htab, out, 0, width)  # type: ignore[operator]
    if split is not None:
        htab = np.full(1 << HASH_BITS, -1, dtype=np.int32)
        prime(src, split - 100, split, 1000, htab)  # type: ignore[operator]
        end = kernel(src, split, n, 1000, htab, out, end, width)  # type: ignore[operator]
    return out[:end].tobytes()


def _python_compress(
    src: np.ndarray,
    start: int,
    stop: int,
    base: int,
    htab: np.ndarray,
    out: np.ndarray,
    pos: int,
    width: int,
) -> int:
    """``lz_rgb32_compress`` with its body (``_kernels._compress``) as plain Python."""
    body = py_func(_kernels._compress)
    return int(body(src[:0], src, 0, start, stop, base, htab, out, pos, width, False))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images(max_width=32, max_height=12))
def test_compress_jit_equals_python(img: np.ndarray) -> None:
    py = (_python_compress, py_func(lz_prime))
    assert _run(lz_rgb32_compress, lz_prime, img) == _run(*py, img)
    split = img.shape[0] * img.shape[1] // 2
    assert _run(lz_rgb32_compress, lz_prime, img, split) == _run(*py, img, split)


def test_helpers_jit_equal_python() -> None:
    for a, b, c in [(0, 0, 0), (0xFFFFFF, 0x123456, 0xABCDEF), (1, 2, 3)]:
        assert hash3(a, b, c, 16) == py_func(hash3)(a, b, c, 16)
    for length, distance in [(1, 1), (6, 8191), (7, 8192), (300, 73727), (1000, 5)]:
        code = match_code(length, distance)
        assert code == py_func(match_code)(length, distance)
        ctrl, tail, ntail = code
        assert ctrl >> 5 == min(length, 7) and ntail == (1 if distance <= 8191 else 3)
        assert 0 <= tail < 1 << (8 * ntail)
    src = np.arange(70, dtype=np.uint32) * 0x01010101
    a = np.zeros(300, dtype=np.uint8)
    b = np.zeros(300, dtype=np.uint8)
    assert flush_literals(src, 3, 70, a, 0) == py_func(flush_literals)(src, 3, 70, b, 0)
    assert a.tobytes() == b.tobytes()


def test_output_overflow_is_reported() -> None:
    src = np.arange(100, dtype=np.uint32)
    for kernel in (lz_rgb32_compress, py_func(lz_rgb32_compress)):
        out = np.zeros(60, dtype=np.uint8)
        htab = np.full(1 << HASH_BITS, -1, dtype=np.int32)
        assert kernel(src, 0, 100, 0, htab, out[:50], 0, 10) == -1
        assert not out[50:].any()  # nothing written past the end


def test_warmup_covers_production_signatures() -> None:
    """After warmup(), no input layout makes numba compile again (a stall mid-session)."""
    import pytest

    from encoders._jit import JIT_ENABLED
    from encoders.lz import lz_encode, warmup

    if not JIT_ENABLED:
        pytest.skip("JIT disabled")
    warmup()
    before = len(lz_rgb32_compress.signatures)
    frame = np.arange(20 * 30 * 4, dtype=np.uint8).reshape(20, 30, 4)
    lz_encode(frame)
    lz_encode(frame[3:9, 4:17])
    ro = frame.copy()
    ro.flags.writeable = False
    lz_encode(ro)
    lz_encode(np.frombuffer(frame.tobytes(), dtype=np.uint8).reshape(20, 30, 4))
    assert len(lz_rgb32_compress.signatures) == before
