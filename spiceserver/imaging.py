"""Pixels → :class:`~spiceserver.protocol.display.EncodedImage`: the one place codecs are chosen.

Runs in worker threads: everything here takes numpy snapshots and returns wire-ready images.
"""

from __future__ import annotations

import struct

import numpy as np

from spiceserver.protocol.display import EncodedImage
from spiceserver.protocol.enums import (
    BITMAP_FLAG_TOP_DOWN,
    BitmapFormat,
    ImageCompression,
    ImageType,
)

__all__ = ["ImageEncoder", "encode_bitmap"]

_BITMAP = struct.Struct("<BBIIII")  # format, flags, x, y, stride, Palette* (0 = none)


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


class ImageEncoder:
    """Per-client codec choice; one instance per display channel."""

    def __init__(self, compression: ImageCompression = ImageCompression.OFF) -> None:
        self.compression = compression

    def encode(self, pixels: np.ndarray) -> tuple[EncodedImage, str]:
        """Encode one region; returns the image and the codec name (for metrics)."""
        return encode_bitmap(pixels), "raw"
