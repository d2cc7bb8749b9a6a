"""X cursor images (XFixes: premultiplied ARGB) as SPICE cursors; pure, for the desktop source."""

from __future__ import annotations

from typing import Any

import numpy as np

from spiceserver.protocol.messages import CursorShape

__all__ = ["cursor_from_argb"]


def cursor_from_argb(
    argb: Any, width: int, height: int, hot_x: int, hot_y: int, unique: int
) -> CursorShape | None:
    """A SPICE ALPHA cursor from XFixes pixels; None if the image is fully transparent.

    XFixes hands out 32-bit ARGB with premultiplied colour (the Render convention); SPICE
    ALPHA cursors are straight B,G,R,A, so colour is divided by alpha.
    """
    pixels = np.asarray(argb, dtype=np.uint64).astype(np.uint32).reshape(height, width)
    alpha = (pixels >> 24).astype(np.uint32)
    if not alpha.any():
        return None
    out = np.empty((height, width, 4), dtype=np.uint8)
    safe = np.maximum(alpha, 1)
    for index, shift in enumerate((0, 8, 16)):  # B, G, R
        channel = (pixels >> shift) & 0xFF
        straight = (channel * 255 + safe // 2) // safe
        out[..., index] = np.where(alpha > 0, np.minimum(straight, 255), 0)
    out[..., 3] = alpha
    return CursorShape(
        unique=unique,
        width=width,
        height=height,
        hot_x=hot_x,
        hot_y=hot_y,
        pixels=out.tobytes(),
    )
