"""Kernel-level contracts: output-buffer bounds and exact sizing."""

from __future__ import annotations

import numpy as np
import pytest

from encoders._jit import py_func
from encoders.quic import _kernels, quic_encode
from encoders.quic.api import _word_view
from tests.encoders.quic.quic_images import make_image

SENTINEL = 0xDEADBEEF


@pytest.mark.parametrize("alpha", [0, 1])
@pytest.mark.parametrize("jit", [True, False], ids=["jit", "python"])
def test_short_buffer_reports_overflow_without_writing_past_it(alpha: int, jit: bool) -> None:
    img = make_image("noise", 6, 20, seed=9)
    needed = len(quic_encode(img, alpha=bool(alpha))) // 4
    px, off, rstride, height, width = _word_view(img)
    encode = _kernels.encode_image if jit else py_func(_kernels.encode_image)
    for size in (6, needed // 2, needed - 1):
        backing = np.full(needed + 16, SENTINEL, dtype=np.uint32)
        out = backing[:size]
        assert encode(px, off, rstride, width, height, alpha, out) == -1
        assert (backing[size:] == SENTINEL).all()
    exact = np.zeros(needed, dtype=np.uint32)
    exact[:5] = (0x43495551, 0, 5 if alpha else 4, width, height)
    assert encode(px, off, rstride, width, height, alpha, exact) == needed
    assert exact.astype("<u4").tobytes() == quic_encode(img, alpha=bool(alpha))


def test_large_readonly_view_is_copied_and_matches() -> None:
    frame = make_image("palette", 200, 150, seed=10)
    frame.flags.writeable = False
    view = frame[10:190, 5:145]  # > 16384 pixels, read-only: the copy path
    assert quic_encode(view) == quic_encode(np.ascontiguousarray(view))


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "python"])
def test_residual_words_are_the_per_channel_formula(jit: bool) -> None:
    """``_residuals`` computes the three residuals at once (a per-byte average and a per-byte
    subtraction with no carries or borrows between bytes) and the run test: checked against
    the per-channel formula of quic_tmpl.c ``compress_row_seg``, on noise (every carry and
    borrow case) and on few colours (runs), with the X byte set to garbage."""
    rng = np.random.default_rng(11)
    residuals = _kernels._residuals if jit else py_func(_kernels._residuals)
    for levels in (256, 2):
        rows = rng.integers(0, levels, (2, 300, 4), dtype=np.uint8) * (255 // (levels - 1))
        rows[..., 3] = rng.integers(0, 256, (2, 300), dtype=np.uint8)
        px = rows.reshape(-1).view(np.uint32)
        res = np.zeros(300, dtype=np.uint32)
        residuals(px, 0, 300, 1, 300, res)
        cur, above = rows[1].astype(int), rows[0].astype(int)
        for i in range(1, 300):
            c, a, b = cur[i], cur[i - 1], above[i]
            want = [(c[ch] - (a[ch] + b[ch]) // 2) & 0xFF for ch in (2, 1, 0)]  # r, g, b
            got = [(int(res[i]) >> shift) & 0xFF for shift in (16, 8, 0)]
            assert got == want, i
            if i >= 2:
                run = (above[i - 1, :3] == b[:3]).all() and (a[:3] == cur[i - 2, :3]).all()
                assert (int(res[i]) >> 24) == int(run), i
