"""``glz_encode()``: one image as a self-contained GLZ_RGB stream (a fresh dictionary).

The stream is what ``GlzDictionary(...).encode()`` would produce as the first image of a new
session: id 0, ``win_head_dist`` 0, matches only inside the image.  The benchmark's "GLZ fresh"
figure and callers that want GLZ's longer in-image offsets without a session use it.

To stay cheap it does not build a :class:`~encoders.glz.dictionary.GlzDictionary` (whose arena
copy would dominate small images): each thread keeps one set of lane tables and a virtual
position counter that advances by the image size per call, so entries left by earlier calls are
below the new image's start and ignored (output never depends on earlier calls).  The stream is
the one a reset dictionary gives for the same image (same lanes, same table sizes).
"""

from __future__ import annotations

import threading

import numpy as np

from encoders._lzbase import as_pixel_rows
from encoders.errors import EncoderError
from encoders.glz._kernels import MAX_PIXEL_LONG_DISTANCE, glz_prime, glz_rebase
from encoders.glz.dictionary import (
    DEFAULT_HASH_BITS,
    GlzDictionary,
    LaneTables,
    encode_lanes,
)

__all__ = ["glz_encode", "warmup"]

_EMPTY_U32 = np.zeros(1, dtype=np.uint32)
_EMPTY_RING = np.zeros(1, dtype=np.int64)


class _Scratch(threading.local):
    """Per-thread lane tables and virtual counter of :func:`glz_encode`."""

    def __init__(self) -> None:
        self.tables = LaneTables(DEFAULT_HASH_BITS)
        self.next_virt = 0


_scratch = _Scratch()


def glz_encode(pixels: np.ndarray, /) -> bytes:
    """Encode B,G,R,X pixels (H, W, 4) as a GLZ_RGB stream with id 0 and no references.

    Raises:
        EncoderError: wrong dtype or shape, empty image, 2**25 pixels or more.
    """
    rows = as_pixel_rows(pixels, "glz")
    height, width = rows.shape
    npixels = height * width
    if npixels >= MAX_PIXEL_LONG_DISTANCE:
        raise EncoderError(f"glz: image too large ({width}x{height}); offsets need < 2**25")
    src = rows.reshape(-1) if rows.flags.c_contiguous else np.ascontiguousarray(rows).reshape(-1)
    scratch = _scratch
    virt = scratch.next_virt
    scratch.next_virt = virt + npixels
    return encode_lanes(
        src,
        virt,
        0,
        _EMPTY_U32,
        scratch.tables,
        _EMPTY_RING,
        _EMPTY_RING,
        _EMPTY_RING,
        0,
        (width, height, 0, 0),
    )


def warmup() -> None:
    """Compile (or load from cache) the kernels with the argument types production uses."""
    frame = np.zeros((4, 8, 4), dtype=np.uint8)
    frame[1:3, 2:6, 1] = 90
    glz_encode(frame)
    glz_encode(frame[1:3, 1:5])
    frame.flags.writeable = False  # read-only input (np.frombuffer, mmap): its own signature
    glz_encode(frame)
    dictionary = GlzDictionary(1000, max_pixels=64, hash_bits=10)
    dictionary.encode(frame)  # read-only: the general path
    dictionary.encode(frame[1:3, 1:5])
    dictionary.encode(frame.copy())  # small, writable, contiguous: glz_encode_small_placed
    # ... and glz_encode_small, which takes a small image whose arena is sized first
    GlzDictionary(1000, max_pixels=64, hash_bits=10).encode(frame.copy())
    # the second lane's priming kernel (used only when LANE_MIN_PIXELS lets images split)
    table = np.full(1 << 10, -1, dtype=np.int32)
    glz_prime(frame.view(np.uint32).reshape(-1), 0, 8, 0, 0, table)
    glz_prime(np.zeros(8, dtype=np.uint32), 0, 8, 0, 0, table)
    glz_rebase(table, 1)
