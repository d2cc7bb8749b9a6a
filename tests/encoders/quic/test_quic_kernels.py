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
