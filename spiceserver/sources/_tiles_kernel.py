"""The numba kernel behind :func:`spiceserver.sources.tiles.changed_rects` for small boxes.

Imported only through :func:`spiceserver.sources.tiles.load_kernel` (it imports numba)."""

from __future__ import annotations

import numpy as np

from encoders._jit import kernel

__all__ = ["changed_box"]


@kernel
def changed_box(old: np.ndarray, new: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), inclusive, of the pixels whose B, G or R differ between two
    (H, W, 4) uint8 arrays; x1 < x0 when none does."""
    height, width = old.shape[0], old.shape[1]
    x0, y0, x1, y1 = width, height, -1, -1
    for y in range(height):
        for x in range(width):
            if (
                old[y, x, 0] != new[y, x, 0]
                or old[y, x, 1] != new[y, x, 1]
                or (old[y, x, 2] != new[y, x, 2])
            ):
                if y0 > y:
                    y0 = y
                y1 = y
                if x0 > x:
                    x0 = x
                if x1 < x:
                    x1 = x
    return x0, y0, x1, y1
