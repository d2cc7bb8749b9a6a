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

from encoders._jit import ctz64, inline_kernel, kernel
from encoders.errors import EncoderError

__all__ = [
    "MASK24",
    "MAX_COPY",
    "SAME_BLOCK",
    "as_pixel_rows",
    "flush_literals",
    "hash3",
    "literal_bound",
    "put_token",
    "run_end",
    "same_end",
]

#: Colour bits of an RGB32 pixel word (B | G << 8 | R << 16); X is bits 24..31.
MASK24 = 0xFFFFFF
#: Longest literal run one control byte can announce (``MAX_COPY`` in ``lz_common.h``).
MAX_COPY = 32
#: Pixels compared per step by :func:`same_end` / :func:`run_end` (one bit each of a uint64
#: mask).
SAME_BLOCK = 64

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


@inline_kernel
def flush_literals(src: np.ndarray, start: int, end: int, out: np.ndarray, pos: int) -> int:
    """Write ``src[start:end]`` as literal runs of at most 32 pixels; return the new ``pos``
    (-1: ``out`` is too short, nothing written past it).

    Token: ``ctrl = count - 1`` then B, G, R per pixel (``decompress()`` copy branch).
    One exit and no raise: inlined, a helper that can leave early keeps ``out``
    reference-counted per call (see :func:`encoders._jit.inline_kernel`).
    """
    i = start
    npixels = end - start
    if pos + 3 * npixels + (npixels + MAX_COPY - 1) // MAX_COPY > out.shape[0]:  # literal_bound
        i = end
        pos = -1
    while i < end:
        count = end - i
        if count > MAX_COPY:
            count = MAX_COPY
        # uint64 indices: no negative-index wrap-around code (see same_end())
        out[np.uint64(pos)] = count - 1
        o = np.uint64(pos + 1)
        for k in range(i, i + count):
            p = int(src[np.uint64(k)])
            out[o] = p & 0xFF
            out[o + np.uint64(1)] = (p >> 8) & 0xFF
            out[o + np.uint64(2)] = (p >> 16) & 0xFF
            o += np.uint64(3)
        pos += 1 + 3 * count
        i += count
    return pos


@inline_kernel
def same_end(a: np.ndarray, i: int, b: np.ndarray, r: int, n: int) -> int:
    """First ``j`` in ``[i, n]`` where ``a[j]`` and ``b[r + j - i]`` differ in colour (or ``n``).

    Why this shape: most of a desktop frame is covered by matches and runs, so this comparison
    is the encoders' inner loop; on text frames most matches are short (a 1080p terminal frame:
    27K tokens, median 8 pixels) and the pixel where one ends is unpredictable.  A loop that
    stops at the first difference mispredicts its exit on every match; an earlier version (4
    pixels one by one, OR-reduced blocks of 64, then 16, then one by one) paid up to four such
    exits, 26-30 ns a call when the GLZ encoder's calls on the terminal and web frames of the
    corpus were replayed.  So: blocks of ``SAME_BLOCK`` pixels, each giving a 64-bit mask of the
    pixels that differ (LLVM's loop vectorizer turns the loop into vector compares into mask
    registers; numba leaves the SLP vectorizer off, so a shorter, fully unrolled block stays
    scalar), and the first difference is the mask's lowest set bit: one branch per block, 9-12
    ns a call in that replay, and the GLZ encoder 1.15-1.25x faster on text frames.  The last
    ``< SAME_BLOCK`` pixels before ``n`` go one by one.  Indices are ``uint64``: numba wraps
    negative signed indices around with a compare and select per access, which made this loop
    5x slower.  The ranges may overlap (``r < i`` in the same array): both
    are only read.
    """
    j = np.uint64(i)
    rb = np.uint64(r)
    end = np.uint64(n)
    mask = np.uint32(MASK24)
    while j + np.uint64(SAME_BLOCK) <= end:
        m = np.uint64(0)
        for k in range(SAME_BLOCK):
            d = (a[j + np.uint64(k)] ^ b[rb + np.uint64(k)]) & mask
            m |= np.uint64(d != 0) << np.uint64(k)
        if m != 0:
            return int(j) + int(ctz64(m))
        j += np.uint64(SAME_BLOCK)
        rb += np.uint64(SAME_BLOCK)
    while j < end and ((a[j] ^ b[rb]) & mask) == 0:
        j += np.uint64(1)
        rb += np.uint64(1)
    return int(j)


@inline_kernel
def same_start(a: np.ndarray, i: int, r: int, lo: int) -> int:
    """How many pixels before ``a[i]`` (not below ``lo``) equal those before ``a[r]`` (``r < i``):
    how far a copy of ``a[r:]`` to ``a[i:]`` can start earlier, over literals not yet written
    (their hashes pointed elsewhere).  Fewer literals, never more bytes."""
    k = 0
    while (
        i - k > lo
        and r - k > 0
        and (int(a[np.uint64(i - k - 1)]) & MASK24) == (int(a[np.uint64(r - k - 1)]) & MASK24)
    ):
        k += 1
    return k


@inline_kernel
def run_end(a: np.ndarray, i: int, n: int, colour: int) -> int:
    """First ``j`` in ``[i, n]`` where ``a[j]`` is not ``colour`` (masked), or ``n``; shaped
    like :func:`same_end`."""
    j = np.uint64(i)
    end = np.uint64(n)
    mask = np.uint32(MASK24)
    c = np.uint32(colour) & mask
    while j + np.uint64(SAME_BLOCK) <= end:
        m = np.uint64(0)
        for k in range(SAME_BLOCK):
            d = (a[j + np.uint64(k)] & mask) ^ c
            m |= np.uint64(d != 0) << np.uint64(k)
        if m != 0:
            return int(j) + int(ctz64(m))
        j += np.uint64(SAME_BLOCK)
    while j < end and ((a[j] ^ c) & mask) == 0:
        j += np.uint64(1)
    return int(j)


@inline_kernel
def put_token(out: np.ndarray, pos: int, ctrl: int, length: int, tail: int, ntail: int) -> int:
    """Write a match token: ``ctrl``, then (``length >= 7``) the length extension (bytes 255,
    then the rest below 255), then the ``ntail`` bytes of ``tail``, least significant first;
    return the new ``pos``.  The layout both formats share (``lz_decompress_tmpl.c``,
    ``decode-glz-tmpl.c``); each codec's ``match_code()`` gives ``ctrl`` and ``tail``.

    The caller checks for room (``ntail + 2 + length // 255`` bytes): one exit and no raise, so
    that inlined it leaves ``out`` alone (see :func:`encoders._jit.inline_kernel`).
    """
    out[pos] = ctrl
    pos += 1
    if length >= 7:
        rest = length - 7
        while rest >= 255:
            out[pos] = 255
            pos += 1
            rest -= 255
        out[pos] = rest
        pos += 1
    for k in range(ntail):
        out[pos + k] = (tail >> (8 * k)) & 0xFF
    return pos + ntail
