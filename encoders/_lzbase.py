"""Pieces shared by the LZ and GLZ encoders: input validation, hashing, literal runs.

Both formats (``spice-common:common/lz_common.h``; encoder ``lz_compress_tmpl.c`` /
``spice:server/glz-encode.tmpl.c``; decoders ``lz_decompress_tmpl.c`` ``decompress()`` and
``spice-gtk:src/decode-glz-tmpl.c`` ``decode()``) share the literal token: a control byte
``ctrl < 32`` announcing ``ctrl + 1`` literal pixels, each written as the three bytes B, G, R of
an RGB32 pixel (the X byte is never sent).  They differ only in how a back-reference is written,
which lives in each codec's own ``_kernels.py``.

Pixels reach the kernels as ``uint32`` words read from the B, G, R, X bytes on a little-endian
host, so ``p & 0xFFFFFF`` is the colour and ``p >> 24`` is the ignored X byte.  Every comparison
masks X off: RGB32 pixels that differ only in X are the same pixel to the decoder.
"""

from __future__ import annotations

import sys

import numpy as np

from encoders._jit import kernel
from encoders.errors import EncoderError

__all__ = [
    "MASK24",
    "MAX_COPY",
    "as_pixel_rows",
    "flush_literals",
    "hash3",
    "literal_bound",
]

#: Colour bits of an RGB32 pixel word (B | G << 8 | R << 16); X is bits 24..31.
MASK24 = 0xFFFFFF
#: Longest literal run one control byte can announce (``MAX_COPY`` in ``lz_common.h``).
MAX_COPY = 32

if sys.byteorder != "little":  # pragma: no cover - every supported host is little-endian
    raise ImportError("encoders.lz/glz read B,G,R,X bytes as little-endian uint32 words")


def as_pixel_rows(pixels: object, codec: str) -> np.ndarray:
    """Validate an (H, W, 4) B,G,R,X uint8 image and view it as (H, W) uint32 words, no copy.

    A region view ``frame[y0:y1, x0:x1]`` keeps its row stride: the result is a strided 2D view
    of the same memory.  Only layouts that cannot be viewed as whole 32-bit pixels (channel or
    pixel axis not contiguous, odd row strides) are copied.

    Raises:
        EncoderError: not a uint8 ndarray of shape (H, W, 4), or empty.
    """
    if not isinstance(pixels, np.ndarray):
        raise EncoderError(f"{codec}: pixels must be a numpy array, got {type(pixels).__name__}")
    if pixels.dtype != np.uint8:
        raise EncoderError(f"{codec}: pixels must have dtype uint8, got {pixels.dtype}")
    if pixels.ndim != 3 or pixels.shape[2] != 4:
        raise EncoderError(
            f"{codec}: pixels must have shape (height, width, 4) B,G,R,X, got {pixels.shape}"
        )
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    if height == 0 or width == 0:
        raise EncoderError(f"{codec}: empty image ({width}x{height})")
    s0, s1, s2 = pixels.strides
    if not (s2 == 1 and s1 == 4 and s0 > 0 and s0 % 4 == 0 and s0 >= 4 * width):
        pixels = np.ascontiguousarray(pixels)
    rows = pixels.view(np.uint32).reshape(height, width)
    if not rows.flags.aligned:
        rows = rows.copy()  # numba's fast path wants aligned 32-bit words
    return rows


def literal_bound(npixels: int) -> int:
    """Worst-case bytes of a stream made only of literal runs (3 bytes a pixel + 1 per 32)."""
    return 3 * npixels + (npixels + MAX_COPY - 1) // MAX_COPY


@kernel
def hash3(a: int, b: int, c: int, shift: int) -> int:
    """Hash of three masked pixels into ``32 - shift`` bits (multiplicative, not DJB2).

    The reference encoders hash the same three pixels with DJB2 over nine bytes; any function
    works since a hash hit is only a hint that is verified pixel by pixel.
    """
    x = (a * 0x9E3779B1 + b * 0x85EBCA77 + c * 0xC2B2AE3D) & 0xFFFFFFFF
    return x >> shift


@kernel
def flush_literals(src: np.ndarray, start: int, end: int, out: np.ndarray, pos: int) -> int:
    """Write ``src[start:end]`` as literal runs of at most 32 pixels; return the new ``pos``.

    Token: ``ctrl = count - 1`` then B, G, R per pixel (``decompress()`` copy branch).
    """
    cap = out.shape[0]
    i = start
    while i < end:
        count = end - i
        if count > MAX_COPY:
            count = MAX_COPY
        if pos + 1 + 3 * count > cap:
            raise ValueError("output buffer overflow (literals)")
        out[pos] = count - 1
        pos += 1
        for k in range(i, i + count):
            p = int(src[k])
            out[pos] = p & 0xFF
            out[pos + 1] = (p >> 8) & 0xFF
            out[pos + 2] = (p >> 16) & 0xFF
            pos += 3
        i += count
    return pos
