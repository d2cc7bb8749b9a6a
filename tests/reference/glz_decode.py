"""Pure-Python GLZ_RGB (RGB32) decoder with spice-gtk's window: the oracle for :mod:`encoders.glz`.

Written from ``spice-gtk:src/decode-glz.c`` (``decode_header()``, ``decode()``,
``glz_decoder_window_add()``, ``glz_decoder_window_bits()``, ``glz_decoder_window_release()``)
and ``src/decode-glz-tmpl.c`` (``decode()``).  Conditions under which spice-gtk fails, hangs or
reads memory it should not all raise :class:`GlzDecodeError`:

* bad magic/version, a type other than RGB32, stride != width * 4, not top-down;
* a literal run or match past the last pixel; an in-image match before the first pixel;
* a reference to an image that is not in the window (spice-gtk waits forever for it);
* a reference whose offset + length passes the referenced image's end (spice-gtk only checks
  ``offset <= gross_pixels`` and then reads beyond the image);
* bytes missing, or (stricter than spice-gtk, which ignores them) bytes after the last pixel.

The oracle is also stricter about ids: it requires consecutive ids from 0 (the contract of
:class:`encoders.glz.GlzDictionary`), which makes spice-gtk's ``tail_gap`` equal to ``id + 1``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from tests.reference.lz_decode import _copy_back

__all__ = ["GlzDecodeError", "GlzImage", "GlzWindow", "glz_decode"]

LZ_MAGIC = 0x20205A4C
LZ_VERSION = 0x00010001
LZ_IMAGE_TYPE_RGB32 = 8
_HEADER = struct.Struct(">IIBIIIQI")


class GlzDecodeError(ValueError):
    """The stream would make spice-gtk fail, hang or read outside an image."""


@dataclass(frozen=True)
class GlzImage:
    """A decoded image: ``pixels`` (height, width, 4) B,G,R,X with X = 0, plus stream facts."""

    id: int
    width: int
    height: int
    win_head_dist: int
    pixels: np.ndarray
    cross_refs: int  # matches into older images
    max_image_dist: int


@dataclass
class GlzWindow:
    """spice-gtk's ``SpiceGlzDecoderWindow``: decoded images by GLZ id, released by head dist."""

    images: dict[int, bytearray] = field(default_factory=dict)
    oldest: int = 0
    next_id: int = 0

    def decode(self, data: bytes) -> GlzImage:
        """Decode one GLZ_RGB stream and add it to the window, as spice-gtk's ``decode()``."""
        if len(data) < _HEADER.size:
            raise GlzDecodeError("truncated header")
        magic, version, tbyte, width, height, stride, image_id, whd = _HEADER.unpack_from(data)
        if magic != LZ_MAGIC:
            raise GlzDecodeError(f"bad magic {magic:#x}")
        if version != LZ_VERSION:
            raise GlzDecodeError(f"bad version {version:#x}")
        if tbyte & 0x0F != LZ_IMAGE_TYPE_RGB32:
            raise GlzDecodeError(f"unsupported type {tbyte & 0x0F}")
        if tbyte >> 4 != 1:
            raise GlzDecodeError("not top-down")
        if stride != 4 * width:
            raise GlzDecodeError(f"stride {stride} != width*4")
        if image_id != self.next_id:
            raise GlzDecodeError(f"id {image_id}, expected {self.next_id} (ids are consecutive)")
        if whd > image_id:
            raise GlzDecodeError(f"win_head_dist {whd} > id {image_id}")
        npixels = width * height
        if npixels == 0:
            raise GlzDecodeError("empty image")
        out, cross, max_dist = self._tokens(data, _HEADER.size, npixels, image_id)
        self.images[image_id] = out
        self.next_id = image_id + 1
        # release: every image with id < T.id - T.win_head_dist (tail_gap == id + 1 here)
        oldest = image_id - whd
        while self.oldest < oldest:
            self.images.pop(self.oldest, None)
            self.oldest += 1
        pixels = np.frombuffer(bytes(out), dtype=np.uint8).reshape(height, width, 4)
        return GlzImage(image_id, width, height, whd, pixels, cross, max_dist)

    def _tokens(
        self, data: bytes, ip: int, npixels: int, image_id: int
    ) -> tuple[bytearray, int, int]:
        out = bytearray(4 * npixels)
        end = len(data)
        op = 0
        cross = 0
        max_dist = 0

        def byte() -> int:
            nonlocal ip
            if ip >= end:
                raise GlzDecodeError("no more bytes")
            value = data[ip]
            ip += 1
            return value

        while op < npixels:
            ctrl = byte()
            if ctrl >= 32:
                length = ctrl >> 5
                pixel_flag = (ctrl >> 4) & 1
                ofs = ctrl & 0x0F
                if length == 7:
                    while True:
                        code = byte()
                        length += code
                        if code != 255:
                            break
                ofs += byte() << 4
                code = byte()
                image_flag = (code >> 6) & 3
                if not pixel_flag:
                    image_dist = code & 0x3F
                    for k in range(image_flag):
                        image_dist += byte() << (6 + 8 * k)
                else:
                    long_flag = (code >> 5) & 1
                    ofs += (code & 0x1F) << 12
                    image_dist = 0
                    for k in range(image_flag):
                        image_dist += byte() << (8 * k)
                    if long_flag:
                        ofs += byte() << 17
                if op + length > npixels:
                    raise GlzDecodeError(f"match past the end: {op} + {length} > {npixels}")
                if image_dist == 0:
                    distance = ofs + 1
                    if op - distance < 0:
                        raise GlzDecodeError(f"match before the start: op {op} dist {distance}")
                    _copy_back(out, op, distance, length)
                else:
                    ref_id = image_id - image_dist
                    ref = self.images.get(ref_id)
                    if ref_id < 0 or ref is None:
                        raise GlzDecodeError(f"image {ref_id} not in the window (client hangs)")
                    ref_pixels = len(ref) // 4
                    if ofs > ref_pixels:
                        raise GlzDecodeError(f"offset {ofs} > {ref_pixels} pixels of {ref_id}")
                    if ofs + length > ref_pixels:
                        raise GlzDecodeError(
                            f"reference past the end of image {ref_id}: {ofs}+{length}"
                            f" > {ref_pixels}"
                        )
                    out[4 * op : 4 * (op + length)] = ref[4 * ofs : 4 * (ofs + length)]
                    cross += 1
                    max_dist = max(max_dist, image_dist)
                op += length
            else:
                count = ctrl + 1
                if op + count > npixels:
                    raise GlzDecodeError(f"literals past the end: {op} + {count} > {npixels}")
                if ip + 3 * count > end:
                    raise GlzDecodeError("no more bytes (literals)")
                chunk = data[ip : ip + 3 * count]
                base = 4 * op
                out[base : base + 4 * count : 4] = chunk[0::3]
                out[base + 1 : base + 4 * count : 4] = chunk[1::3]
                out[base + 2 : base + 4 * count : 4] = chunk[2::3]
                ip += 3 * count
                op += count
        if ip != end:
            raise GlzDecodeError(f"{end - ip} trailing bytes after the last pixel")
        return out, cross, max_dist


def glz_decode(data: bytes) -> GlzImage:
    """Decode one stream in a fresh window (it may not reference other images)."""
    return GlzWindow().decode(data)
