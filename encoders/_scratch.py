"""Per-thread output buffers that the encoders write into and reuse from call to call.

Why: a stream's worst case is 3 B/pixel (LZ, GLZ) or 12 B/pixel (QUIC), so a fresh worst-case
array per call is a fresh ``mmap``, and every page the kernel writes is a page fault.  On the
2-vCPU KVM guests this project is measured on, faulting 6 MiB in costs ~0.9 ms, about half of
what the C encoder needs for a whole 1080p text frame, and it is slower still from worker threads
(faults of two threads serialise on the process's memory map).  A buffer that stays committed
costs nothing after the first call; the caller copies the exact stream out (``tobytes()``), so no
result ever aliases a buffer that the next call overwrites.

Each thread owns its buffers (``threading.local``), so two worker threads never share one.
Memory: the largest stream each thread has produced, rounded up to whole pages (only pages that
were written are resident; the reservation itself is virtual).
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["buffer"]


class _Buffers(threading.local):
    def __init__(self) -> None:
        self.by_key: dict[tuple[str, type], np.ndarray] = {}


_local = _Buffers()


def buffer(key: str, size: int, dtype: type = np.uint8) -> np.ndarray:
    """This thread's buffer ``key`` with room for at least ``size`` elements of ``dtype``.

    The contents are whatever the previous call left: callers write before they read.  A larger
    request replaces the buffer (grown by 1/4 more, so slowly growing requests do not
    reallocate every time).
    """
    # Keyed by the type itself: ``np.dtype(dtype).name`` is numpy Python code that cost ~90 µs
    # of a cold CPU, on the path of every small update (a typed glyph's GLZ image).
    buffers = _local.by_key
    buf = buffers.get((key, dtype))
    if buf is None or buf.shape[0] < size:
        buf = np.empty(size + size // 4, dtype=dtype)
        buffers[(key, dtype)] = buf
    return buf
