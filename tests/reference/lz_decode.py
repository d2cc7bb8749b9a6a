"""Pure-Python LZ_RGB (RGB32) decoder: the test oracle for :mod:`encoders.lz`.

Written from ``spice-common:common/lz.c`` (``lz_decode_begin()``, ``lz_set_sizes()``,
``lz_decode()``) and ``common/lz_decompress_tmpl.c`` (``decompress()``).  Every condition that
makes the C decoder ``spice_assert``/error out (and so abort a spice-gtk client) raises
:class:`LzDecodeError` here: bad magic/version/type, stride != width * 4, a match reaching before
the first pixel or past the last, a literal run past the last pixel, bytes missing, bytes left
over after the last pixel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["LzDecodeError", "LzImage", "decode_lz_tokens", "lz_decode"]

LZ_MAGIC = 0x20205A4C
LZ_VERSION = 0x00010001
LZ_IMAGE_TYPE_RGB32 = 8
MAX_IMAGE_BYTES = 1024 * 1024 * 1024 - 1


class LzDecodeError(ValueError):
    """The stream would make the C decoder fail (assert, error or hang)."""


@dataclass(frozen=True)
class LzImage:
    """A decoded image: ``pixels`` is (height, width, 4) B,G,R,X with X = 0, stream order."""

    width: int
    height: int
    top_down: bool
    pixels: np.ndarray
    tokens: int


def lz_decode(data: bytes) -> LzImage:
    """Decode a complete LZ_RGB stream (header + tokens) of type RGB32."""
    if len(data) < 28:
        raise LzDecodeError("truncated header")
    magic, version, typ, width, height, stride, top_down = struct.unpack_from(">7I", data, 0)
    if magic != LZ_MAGIC:
        raise LzDecodeError(f"bad magic {magic:#x}")
    if version != LZ_VERSION:
        raise LzDecodeError(f"bad version {version:#x}")
    if typ != LZ_IMAGE_TYPE_RGB32:
        raise LzDecodeError(f"unsupported type {typ} (oracle handles RGB32 only)")
    if width >= 1 << 31 or height >= 1 << 31 or stride >= 1 << 31:
        raise LzDecodeError("negative size")
    if stride != width * 4:
        raise LzDecodeError(f"stride {stride} != width*4")
    if stride * height > MAX_IMAGE_BYTES:
        raise LzDecodeError("image too large")
    if top_down not in (0, 1):
        raise LzDecodeError(f"top_down {top_down} (encoder writes 0/1)")
    npixels = width * height
    raw, tokens = decode_lz_tokens(data, 28, npixels)
    pixels = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(height, width, 4)
    return LzImage(width, height, bool(top_down), pixels, tokens)


def decode_lz_tokens(data: bytes, start: int, npixels: int) -> tuple[bytearray, int]:
    """Run ``decompress()`` for RGB32 over ``data[start:]``; return (B,G,R,0 bytes, tokens).

    The stream must end exactly at the last byte (``is_io_to_decode_end()``).
    """
    out = bytearray(4 * npixels)
    ip = start
    end = len(data)
    op = 0
    tokens = 0

    def byte() -> int:
        nonlocal ip
        if ip >= end:
            raise LzDecodeError("no more bytes")
        value = data[ip]
        ip += 1
        return value

    if npixels == 0:
        raise LzDecodeError("empty image")
    while op < npixels:
        ctrl = byte()
        tokens += 1
        if ctrl >= 32:
            length = (ctrl >> 5) - 1
            ofs = (ctrl & 31) << 8
            if length == 6:
                while True:
                    code = byte()
                    length += code
                    if code != 255:
                        break
            code = byte()
            ofs += code
            if code == 255 and ofs - code == 31 << 8:
                ofs = (byte() << 8) + byte() + 8191
            length += 1
            ofs += 1
            ref = op - ofs
            if op + length > npixels:
                raise LzDecodeError(f"match past the end: op {op} + len {length} > {npixels}")
            if ref < 0:
                raise LzDecodeError(f"match before the start: op {op} distance {ofs}")
            _copy_back(out, op, ofs, length)
            op += length
        else:
            count = ctrl + 1
            if op + count > npixels:
                raise LzDecodeError(f"literals past the end: op {op} + {count} > {npixels}")
            if ip + 3 * count > end:
                raise LzDecodeError("no more bytes (literals)")
            chunk = data[ip : ip + 3 * count]
            base = 4 * op
            out[base : base + 4 * count : 4] = chunk[0::3]
            out[base + 1 : base + 4 * count : 4] = chunk[1::3]
            out[base + 2 : base + 4 * count : 4] = chunk[2::3]
            ip += 3 * count
            op += count
    if ip != end:
        raise LzDecodeError(f"{end - ip} trailing bytes after the last pixel")
    return out, tokens


def _copy_back(out: bytearray, op: int, distance: int, length: int) -> None:
    """Copy ``length`` pixels from ``distance`` back, sequentially (overlap repeats)."""
    src = 4 * (op - distance)
    dst = 4 * op
    nbytes = 4 * length
    if distance >= length:
        out[dst : dst + nbytes] = out[src : src + nbytes]
        return
    pattern = bytes(out[src : src + 4 * distance])
    reps = -(-length // distance)
    out[dst : dst + nbytes] = (pattern * reps)[:nbytes]
