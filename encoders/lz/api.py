"""``lz_encode()``: an RGB32 image as an LZ_RGB stream (``SpiceImage`` type LZ_RGB, 101).

Stream = the 28-byte big-endian header written by ``spice-common:common/lz.c`` ``lz_encode()``
(magic, version, ``LzImageType``, width, height, stride, top_down) followed by the tokens, and
nothing after the last token: ``lz_decode()`` asserts that the input ends exactly there and that
exactly width x height pixels come out, and an assertion there aborts the client process
(SPICE-REFERENCE §7.2, pitfall 27).
"""

from __future__ import annotations

import struct

import numpy as np

from encoders._lzbase import as_pixel_rows, literal_bound
from encoders.errors import EncoderError
from encoders.lz._kernels import HASH_BITS, lz_rgb32_compress

__all__ = ["LZ_IMAGE_TYPE_RGB32", "LZ_MAGIC", "LZ_VERSION", "lz_encode", "warmup"]

LZ_MAGIC = 0x20205A4C  # "LZ  " (lz_common.h LZ_MAGIC)
LZ_VERSION = 0x00010001  # major 1, minor 1 (lz_common.h LZ_VERSION)
LZ_IMAGE_TYPE_RGB32 = 8  # lz_common.h LzImageType
#: ``lz_set_sizes()`` rejects stride * height above this (SPICE_MAX_IMAGE_SIZE).
MAX_IMAGE_BYTES = 1024 * 1024 * 1024 - 1

_HEADER = struct.Struct(">7I")


def lz_encode(pixels: np.ndarray, /) -> bytes:
    """Encode B,G,R,X pixels (H, W, 4) as an LZ_RGB stream of type RGB32, top-down.

    A strided region view is read in place when its rows are contiguous pixels; otherwise (and
    for views whose rows are not adjacent) the pixels are first gathered into one contiguous
    uint32 buffer, because LZ distances count pixels in stream order across rows.

    Raises:
        EncoderError: wrong dtype or shape, empty image, image over 1 GiB (``lz_set_sizes()``).
    """
    rows = as_pixel_rows(pixels, "lz")
    height, width = rows.shape
    if 4 * width * height > MAX_IMAGE_BYTES:
        raise EncoderError(f"lz: image too large ({width}x{height}), lz_set_sizes() limit 1 GiB")
    src = rows.reshape(-1) if rows.flags.c_contiguous else np.ascontiguousarray(rows).reshape(-1)
    npixels = src.shape[0]
    out = np.empty(_HEADER.size + literal_bound(npixels) + 16, dtype=np.uint8)
    _HEADER.pack_into(
        out.data, 0, LZ_MAGIC, LZ_VERSION, LZ_IMAGE_TYPE_RGB32, width, height, 4 * width, 1
    )
    htab = np.zeros(1 << HASH_BITS, dtype=np.int32)
    try:
        end = lz_rgb32_compress(src, htab, out, _HEADER.size)
    except ValueError as exc:  # a kernel bounds check: a bug, never expected
        raise EncoderError(f"lz: {exc}") from exc
    return out[:end].tobytes()


def warmup() -> None:
    """Compile (or load from cache) the kernel with the argument types ``lz_encode`` uses."""
    frame = np.zeros((4, 8, 4), dtype=np.uint8)
    frame[1:3, 2:6, 0] = 200
    lz_encode(frame)
    lz_encode(frame[1:3, 1:5])
    frame.flags.writeable = False  # read-only input (np.frombuffer, mmap): its own signature
    lz_encode(frame)
