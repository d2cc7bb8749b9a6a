"""Pixels → :class:`~spiceserver.protocol.display.EncodedImage`: the one place codecs are chosen.

Runs in worker threads: everything here takes numpy snapshots and returns wire-ready images.
The choice mirrors spice-server's ``get_compression_for_bitmap`` (dcc.cpp) in spirit:

* images under 54 bytes stay raw bitmaps, and QUIC needs at least 3×3 pixels;
* ``auto-glz`` / ``auto-lz`` send photographic regions ("high graduality") as QUIC and
  everything else as GLZ (when the client's window takes the image) or LZ;
* ``glz`` falls back to LZ when the image does not fit the client's GLZ window;
* a client's PREFERRED_COMPRESSION replaces the server's default for that client.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from spiceserver.protocol.display import EncodedImage
from spiceserver.protocol.enums import (
    BITMAP_FLAG_TOP_DOWN,
    BitmapFormat,
    ImageCompression,
    ImageType,
)

if TYPE_CHECKING:
    from encoders.glz import GlzDictionary

__all__ = [
    "CodecKey",
    "ImageEncoder",
    "encode_bitmap",
    "encode_shared",
    "is_photographic",
    "shared_codec_key",
]

logger = logging.getLogger("spiceserver.imaging")

_BITMAP = struct.Struct("<BBIIII")  # format, flags, x, y, stride, Palette* (0 = none)
_DATA_SIZE = struct.Struct("<I")
#: spice-server sends images smaller than this many bytes uncompressed.
MIN_COMPRESS_BYTES = 54
#: The modes we can serve; LZ4 (7) is not implemented, so a client asking for it keeps ours.
SUPPORTED = {
    ImageCompression.OFF,
    ImageCompression.AUTO_GLZ,
    ImageCompression.AUTO_LZ,
    ImageCompression.QUIC,
    ImageCompression.GLZ,
    ImageCompression.LZ,
}


#: A codec and the settings it encodes with: equal keys, equal pixels → equal bytes.
CodecKey = tuple[str, ...]
#: The codecs whose output depends on the pixels and settings only.  QUIC and LZ are always
#: RGB32 without alpha here; a new setting (QUIC alpha, an LZ4 level) must join its key.
_SHARED_CODECS: dict[str, CodecKey] = {
    "raw": ("raw", "32bit"),
    "quic": ("quic", "rgb32"),
    "lz": ("lz", "rgb32"),
}


def shared_codec_key(codec: str) -> CodecKey | None:
    """The key under which sessions may share images of ``codec``; None when they may not.

    GLZ never: a GLZ image carries the id the session's dictionary gave it and refers back
    to images that one client decoded (spice-gtk decode-glz.c), so its bytes are meaningless
    to any other client.
    """
    return _SHARED_CODECS.get(codec)


def encode_shared(pixels: np.ndarray, codec: str) -> EncodedImage:
    """Encode with a codec that keeps no per-client state (``raw``, ``quic`` or ``lz``)."""
    height, width = pixels.shape[:2]
    if codec == "raw":
        return encode_bitmap(pixels)
    if codec == "quic":
        from encoders import quic_encode

        return ImageEncoder._wrap(ImageType.QUIC, width, height, quic_encode(pixels))
    if codec == "lz":
        from encoders import lz_encode

        return ImageEncoder._wrap(ImageType.LZ_RGB, width, height, lz_encode(pixels))
    raise ValueError(f"{codec} images depend on the client: not shareable")


def encode_bitmap(pixels: np.ndarray) -> EncodedImage:
    """A raw 32BIT top-down bitmap (spice.proto ``BitmapData``)."""
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels)
    header = _BITMAP.pack(BitmapFormat.FMT_32BIT, BITMAP_FLAG_TOP_DOWN, width, height, width * 4, 0)
    return EncodedImage(
        type=ImageType.BITMAP,
        width=width,
        height=height,
        body=(header, memoryview(data).cast("B")),
    )


def is_photographic(pixels: np.ndarray, sample_rows: int = 16) -> bool:
    """Whether a region looks like a photo (smooth, noisy colour) rather than text or UI.

    Samples a few rows and looks at each pixel's largest channel step from its left
    neighbour: photos have few flat steps and many small ones; text, UI and flat colour have
    many flat steps and a few sharp edges.  (spice-server samples pixel segments for the same
    decision in ``bitmap_get_graduality_level``.)
    """
    height, width = pixels.shape[:2]
    if width < 8 or height < 8:
        return False
    rows = pixels[np.linspace(0, height - 1, min(sample_rows, height)).astype(np.intp), :, :3]
    steps = np.abs(np.diff(rows.astype(np.int16), axis=1)).max(axis=2)
    flat = float(np.mean(steps == 0))
    small = float(np.mean((steps > 0) & (steps <= 24)))
    return flat < 0.35 and small > 0.45


class ImageEncoder:
    """Per-client codec choice; one instance per display channel.

    ``glz`` is the session's GLZ dictionary (None when the client's window is 0, as with
    spice-html5).  Every image :meth:`encode` returns must be sent, in order: GLZ ids are
    consecutive and the client waits for each one.
    """

    def __init__(
        self,
        compression: ImageCompression = ImageCompression.OFF,
        glz: GlzDictionary | None = None,
    ) -> None:
        self.compression = compression
        self.glz = glz

    def prefer(self, compression: int) -> bool:
        """Apply a client's PREFERRED_COMPRESSION; False if we cannot serve that mode."""
        try:
            mode = ImageCompression(compression)
        except ValueError:
            return False
        if mode not in SUPPORTED:
            return False
        self.compression = mode
        return True

    def choose(
        self,
        pixels: np.ndarray,
        photographic: Callable[[np.ndarray], bool] = is_photographic,
    ) -> str:
        """The codec for one region: ``raw``, ``quic``, ``glz`` or ``lz`` (a sample, but not
        free: ``photographic`` may answer from a memo shared by sessions)."""
        height, width = pixels.shape[:2]
        mode = self.compression
        if mode is ImageCompression.OFF or width * height * 4 < MIN_COMPRESS_BYTES:
            return "raw"
        quic_ok = width >= 3 and height >= 3
        if mode is ImageCompression.QUIC and quic_ok:
            return "quic"
        auto = mode in (ImageCompression.AUTO_GLZ, ImageCompression.AUTO_LZ)
        if auto and quic_ok and photographic(pixels):
            return "quic"
        if mode in (ImageCompression.AUTO_GLZ, ImageCompression.GLZ):
            glz = self.glz
            if glz is not None and glz.fits(width, height):
                return "glz"
        return "lz"

    def encode(self, pixels: np.ndarray, codec: str | None = None) -> tuple[EncodedImage, str]:
        """Encode one region with ``codec`` (default: :meth:`choose`); returns image and codec.

        GLZ images must be encoded in the order they are sent (their ids are consecutive and
        a client blocks on a reference to an id it has not decoded yet); the other codecs may
        run in parallel.
        """
        codec = codec or self.choose(pixels)
        if codec == "glz":
            assert self.glz is not None
            height, width = pixels.shape[:2]
            return self._wrap(ImageType.GLZ_RGB, width, height, self.glz.encode(pixels)), codec
        return encode_shared(pixels, codec), codec

    @staticmethod
    def _wrap(image_type: ImageType, width: int, height: int, stream: bytes) -> EncodedImage:
        # QUIC, LZ_RGB and GLZ_RGB bodies: u32 data_size, then the stream (spice.proto).
        return EncodedImage(
            type=image_type,
            width=width,
            height=height,
            body=(_DATA_SIZE.pack(len(stream)), stream),
        )
