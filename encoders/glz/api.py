"""``glz_encode()``: one image as a self-contained GLZ_RGB stream (a fresh dictionary).

The stream is what ``GlzDictionary(...).encode()`` would produce as the first image of a new
session: id 0, ``win_head_dist`` 0, matches only inside the image.  The benchmark's "GLZ fresh"
figure and callers that want GLZ's longer in-image offsets without a session use it.

To stay cheap it does not build a :class:`~encoders.glz.dictionary.GlzDictionary` (whose arena
copy and 8 MiB table would dominate small images): each thread keeps one hash table and a
virtual position counter that advances by the image size per call, so entries left by earlier
calls are below the new image's start and ignored (output never depends on earlier calls).
"""

from __future__ import annotations

import threading

import numpy as np

from encoders._lzbase import as_pixel_rows, literal_bound
from encoders.errors import EncoderError
from encoders.glz._kernels import MAX_PIXEL_LONG_DISTANCE, glz_rgb32_compress
from encoders.glz.dictionary import (
    _HEADER,
    DEFAULT_HASH_BITS,
    GLZ_HEADER_SIZE,
    LONG_TABLE_SHRINK,
    LZ_IMAGE_TYPE_RGB32,
    LZ_MAGIC,
    LZ_VERSION,
    GlzDictionary,
)

__all__ = ["glz_encode", "warmup"]

_EMPTY_U32 = np.zeros(1, dtype=np.uint32)
_EMPTY_RING = np.zeros(1, dtype=np.int64)


class _Scratch(threading.local):
    """Per-thread hash tables and virtual counter of :func:`glz_encode`."""

    def __init__(self) -> None:
        self.htab = np.full(1 << DEFAULT_HASH_BITS, -1, dtype=np.int64)
        self.ltab = np.full(1 << (DEFAULT_HASH_BITS - LONG_TABLE_SHRINK), -1, dtype=np.int64)
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
    out = np.empty(GLZ_HEADER_SIZE + literal_bound(npixels) + 16, dtype=np.uint8)
    _HEADER.pack_into(
        out.data,
        0,
        LZ_MAGIC,
        LZ_VERSION,
        LZ_IMAGE_TYPE_RGB32 | (1 << 4),
        width,
        height,
        4 * width,
        0,
        0,
    )
    scratch = _scratch
    virt = scratch.next_virt
    scratch.next_virt = virt + npixels
    try:
        end = glz_rgb32_compress(
            src,
            virt,
            0,
            _EMPTY_U32,
            scratch.htab,
            scratch.ltab,
            _EMPTY_RING,
            _EMPTY_RING,
            _EMPTY_RING,
            0,
            out,
            GLZ_HEADER_SIZE,
        )
    except ValueError as exc:  # a kernel bounds check: a bug, never expected
        raise EncoderError(f"glz: {exc}") from exc
    return out[:end].tobytes()


def warmup() -> None:
    """Compile (or load from cache) the kernels with the argument types production uses."""
    frame = np.zeros((4, 8, 4), dtype=np.uint8)
    frame[1:3, 2:6, 1] = 90
    glz_encode(frame)
    glz_encode(frame[1:3, 1:5])
    frame.flags.writeable = False  # read-only input (np.frombuffer, mmap): its own signature
    glz_encode(frame)
    dictionary = GlzDictionary(1000, max_pixels=64, hash_bits=10)
    dictionary.encode(frame)
    dictionary.encode(frame[1:3, 1:5])
