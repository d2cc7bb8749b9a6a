"""Which pixels changed: tile comparison of two frames, and grab boxes from damage.

Pure numpy helpers shared by the screen sources that compare what they grabbed with what
they hold (the X desktop, GNOME's screen cast): an application repainting the same pixels
costs nothing, and what is reported is tightened to the pixels that really changed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from spiceserver.scroll import as_u32
from spiceserver.sources.base import Rect

__all__ = ["MAX_GRAB_BOXES", "TILE", "changed_rects", "damage_boxes", "load_kernel", "tile_boxes"]

#: Tile edge for change detection and grab planning (pixels).
TILE = 32
#: More separate grab boxes than this in one update, and one bounding box is grabbed instead
#: (each box is a round trip to the X server).
MAX_GRAB_BOXES = 8


#: :func:`load_kernel`'s compiled comparison of small boxes; None: numpy's.
_changed_box: Callable[[np.ndarray, np.ndarray], tuple[int, int, int, int]] | None = None
_load_lock = threading.Lock()


def load_kernel() -> None:
    """Compile (or load from numba's cache) the kernel comparing small boxes, and use it from
    now on.  Seconds on a cold cache: call it on a thread of its own, never the loop.

    On the path of every small change: 36 µs where numpy's eight calls take 237 µs, each
    150 ms apart as the latency probe's changes come (a cold CPU).  Not under
    ``NUMBA_DISABLE_JIT`` (pure Python: slower than numpy)."""
    global _changed_box
    from encoders._jit import JIT_ENABLED

    if not JIT_ENABLED:
        return
    # One thread at a time (each desktop source starts one): a call that finds its
    # signature not compiled yet waits for numba's compile lock, and numba then refuses it
    # once the first thread has disabled compiling, even though the signature exists by then.
    with _load_lock:
        if _changed_box is not None:
            return
        from spiceserver.sources._tiles_kernel import changed_box

        probe = np.zeros((2, 2, 4), np.uint8)
        part = probe[:, :1]  # a box of a frame (strided), and one grabbed (contiguous)
        for old, new in ((part, part.copy()), (probe, probe)):  # compiled here, not on a change
            changed_box(old, new)
        cast(Any, changed_box).disable_compile()  # any other kind: TypeError, never a compile
        _changed_box = changed_box


def changed_rects(old: np.ndarray, new: np.ndarray, tile: int = TILE) -> list[Rect]:
    """Rectangles covering every pixel whose B, G or R differs between two (H, W, 4) arrays.

    Tiles of ``tile`` pixels are marked changed; runs of changed tiles in a tile row become
    a rectangle, identical runs in consecutive tile rows merge, and each rectangle is then
    shrunk to the changed pixels it holds.  The padding byte (X of B,G,R,X) is ignored.
    """
    if old.shape != new.shape:
        raise ValueError(f"shapes differ: {old.shape} and {new.shape}")
    height, width = old.shape[:2]
    small = height * width <= 16 * tile * tile  # a glyph, a clock face: one tight box
    if small and _changed_box is not None:
        try:
            x0, y0, x1, y1 = _changed_box(old, new)
        except TypeError:  # arrays of a kind not compiled by load_kernel: numpy's way
            pass
        else:
            return [] if x1 < x0 else [Rect(x0, y0, x1 + 1 - x0, y1 + 1 - y0)]
    a = as_u32(old)
    b = as_u32(new)
    if small:
        # The fewest numpy calls: on the path of every small change, where each costs
        # tens of microseconds after an idle spell.
        changed = (a ^ b) & 0x00FF_FFFF
        rows = np.flatnonzero(changed.any(axis=1))
        if not rows.size:
            return []
        cols = np.flatnonzero(changed.any(axis=0))
        top, left = int(rows[0]), int(cols[0])
        return [Rect(left, top, int(cols[-1]) + 1 - left, int(rows[-1]) + 1 - top)]
    diff = ((a ^ b) & 0x00FF_FFFF) != 0
    if not diff.any():
        return []
    tiles = np.logical_or.reduceat(
        np.logical_or.reduceat(diff, np.arange(0, height, tile), axis=0),
        np.arange(0, width, tile),
        axis=1,
    )
    return [_tighten(diff, box) for box in tile_boxes(tiles, tile, width, height)]


def _tighten(diff: np.ndarray, box: Rect) -> Rect:
    """``box`` shrunk to the true cells of ``diff`` inside it (there is at least one)."""
    sub = diff[box.y : box.bottom, box.x : box.right]
    rows = np.flatnonzero(sub.any(axis=1))
    cols = np.flatnonzero(sub.any(axis=0))
    return Rect(
        box.x + int(cols[0]),
        box.y + int(rows[0]),
        int(cols[-1] - cols[0]) + 1,
        int(rows[-1] - rows[0]) + 1,
    )


def tile_boxes(tiles: np.ndarray, tile: int, width: int, height: int) -> list[Rect]:
    """Boxes (in pixels, clipped to ``width`` × ``height``) covering the true cells of a grid.

    Each tile row's runs of true cells become boxes; a run spanning the same columns as one
    in the tile row just above extends it downwards (a window, a scrolled band).
    """
    boxes: list[list[int]] = []  # [col0, col1, row0, row1] in tiles, exclusive ends
    open_runs: dict[tuple[int, int], list[int]] = {}
    for row in range(tiles.shape[0]):
        cells = tiles[row]
        if not cells.any():
            open_runs = {}
            continue
        padded = np.concatenate(([False], cells, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        next_runs: dict[tuple[int, int], list[int]] = {}
        for start, stop in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            box = open_runs.get((start, stop))
            if box is None:
                box = [start, stop, row, row + 1]
                boxes.append(box)
            else:
                box[3] = row + 1
            next_runs[(start, stop)] = box
        open_runs = next_runs
    out = []
    for c0, c1, r0, r1 in boxes:
        x0, y0 = c0 * tile, r0 * tile
        x1, y1 = min(c1 * tile, width), min(r1 * tile, height)
        out.append(Rect(x0, y0, x1 - x0, y1 - y0))
    return out


def damage_boxes(rects: list[Rect], width: int, height: int, tile: int = TILE) -> list[Rect]:
    """The few tile-aligned boxes to grab for a list of damage rectangles.

    More than :data:`MAX_GRAB_BOXES` boxes become their bounding box: each grab is a round
    trip, and XShm copies a big box about as fast as it answers a small one.
    """
    snapped = []
    for rect in rects:
        clipped = rect.clip(width, height)
        if clipped is not None:
            x0, y0 = clipped.x // tile * tile, clipped.y // tile * tile
            x1 = min(-(-clipped.right // tile) * tile, width)
            y1 = min(-(-clipped.bottom // tile) * tile, height)
            snapped.append(Rect(x0, y0, x1 - x0, y1 - y0))
    if len(snapped) <= 2:  # the usual case (a key echoed, a clock ticking): no grid
        if len(snapped) == 2 and snapped[0].touches(snapped[1]):
            return [snapped[0].union(snapped[1])]
        return snapped
    grid = np.zeros(((height + tile - 1) // tile, (width + tile - 1) // tile), dtype=bool)
    for rect in rects:
        clipped = rect.clip(width, height)
        if clipped is not None:
            grid[
                clipped.y // tile : (clipped.bottom - 1) // tile + 1,
                clipped.x // tile : (clipped.right - 1) // tile + 1,
            ] = True
    boxes = tile_boxes(grid, tile, width, height)
    if len(boxes) > MAX_GRAB_BOXES:
        bbox = boxes[0]
        for box in boxes[1:]:
            bbox = bbox.union(box)
        return [bbox]
    return boxes
