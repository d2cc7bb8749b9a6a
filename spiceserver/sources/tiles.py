"""Which pixels changed: tile comparison of two frames, and grab boxes from damage.

Pure numpy helpers shared by the screen sources that compare what they grabbed with what
they hold (the X desktop, GNOME's screen cast): an application repainting the same pixels
costs nothing, and what is reported is tightened to the pixels that really changed.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from spiceserver.scroll import Scroll, apply_scroll, as_u32, pixel_words
from spiceserver.sources.base import Rect

__all__ = [
    "MAX_GRAB_BOXES",
    "SMALL_PIXELS",
    "TILE",
    "changed_rects",
    "changed_rects_moved",
    "damage_boxes",
    "load_kernel",
    "tile_boxes",
]

#: Tile edge for change detection and grab planning (pixels).
TILE = 32
#: Areas of at most this many tiles are reported as one tight box (a glyph, a clock face).
SMALL_TILES = 16
SMALL_PIXELS = SMALL_TILES * TILE * TILE
#: More separate grab boxes than this in one update, and one bounding box is grabbed instead
#: (each box is a round trip to the X server).
MAX_GRAB_BOXES = 8


#: :func:`load_kernel`'s compiled comparison of small boxes; None: numpy's.
_changed_box: Callable[[np.ndarray, np.ndarray], tuple[int, int, int, int]] | None = None
#: ... and of bigger ones, tile by tile (``_tiles_kernel.changed_boxes``); None: numpy's.
_changed_boxes: Callable[..., int] | None = None
_load_lock = threading.Lock()


def load_kernel() -> None:
    """Compile (or load from numba's cache) the kernels comparing boxes and detecting
    scrolls (``_tiles_kernel``), and use them from now on.  Seconds on a cold cache, 0.3 s
    from the cache after numba's import: call it on a thread of its own, never the loop.

    On the path of every small change: 36 µs where numpy's eight calls take 237 µs, each
    150 ms apart as the latency probe's changes come (a cold CPU).  Not under
    ``NUMBA_DISABLE_JIT`` (pure Python: slower than numpy)."""
    global _changed_box, _changed_boxes
    from encoders._jit import JIT_ENABLED

    if not JIT_ENABLED:
        return
    # One thread at a time (each desktop source starts one): a call that finds its
    # signature not compiled yet waits for numba's compile lock, and numba then refuses it
    # once the first thread has disabled compiling, even though the signature exists by then.
    with _load_lock:
        if _changed_box is not None:
            return
        from spiceserver import scroll
        from spiceserver.sources._tiles_kernel import changed_box, changed_boxes, find_scroll

        probe = np.zeros((2, 2, 4), np.uint8)
        part = probe[:, :1]  # a box of a frame (strided), and one grabbed (contiguous)
        for old, new in ((part, part.copy()), (probe, probe)):  # compiled here, not on a change
            changed_box(old, new)
        image = (np.zeros(1, np.uint32), 1)
        cells = np.zeros((1, 1, 4), np.int32)
        changed_boxes(image, image, 1, 1, TILE, cells, cells[0], (0, 0, 0, 0, 0))
        find_scroll(image, image, 1, 1, np.zeros(1, np.intp), np.ones(1, np.uint64), 1, 1, 1)
        for compiled in (changed_box, changed_boxes, find_scroll):
            cast(Any, compiled).disable_compile()  # other kinds: TypeError, never a compile
        _changed_box = changed_box
        _changed_boxes = changed_boxes
        scroll._find_scroll = find_scroll


def changed_rects(old: np.ndarray, new: np.ndarray, tile: int = TILE) -> list[Rect]:
    """Rectangles covering every pixel whose B, G or R differs between two (H, W, 4) arrays.

    Tiles of ``tile`` pixels are marked changed; runs of changed tiles in a tile row become
    a rectangle, identical runs in consecutive tile rows merge, and each rectangle is then
    shrunk to the changed pixels it holds.  The padding byte (X of B,G,R,X) is ignored.
    """
    if old.shape != new.shape:
        raise ValueError(f"shapes differ: {old.shape} and {new.shape}")
    height, width = old.shape[:2]
    small = height * width <= SMALL_TILES * tile * tile
    if small and _changed_box is not None:
        try:
            x0, y0, x1, y1 = _changed_box(old, new)
        except TypeError:  # arrays of a kind not compiled by load_kernel: numpy's way
            pass
        else:
            return [] if x1 < x0 else [Rect(x0, y0, x1 + 1 - x0, y1 + 1 - y0)]
    elif not small and _changed_boxes is not None:
        found = _tiled(old, new, tile, _changed_boxes, None)
        if found is not None:
            return found
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


def changed_rects_moved(old: np.ndarray, new: np.ndarray, scroll: Scroll) -> list[Rect]:
    """:func:`changed_rects` of ``new`` against ``old`` moved by ``scroll`` (as
    :func:`~spiceserver.scroll.apply_scroll` would move a copy of it; ``old`` is not written).

    Why: the desktop checks what a scroll leaves to send on every scrolled key in a pager;
    the compiled compare reads the moved rows where they are, where numpy copies the area
    and moves its rows first (0.5 ms warm, 1.3 ms after 150 ms idle for a 512×352 terminal).
    """
    if old.shape != new.shape:
        raise ValueError(f"shapes differ: {old.shape} and {new.shape}")
    if _changed_boxes is not None:
        found = _tiled(old, new, TILE, _changed_boxes, scroll)
        if found is not None:
            if len(found) > 1 and old.shape[0] * old.shape[1] <= SMALL_PIXELS:
                return [functools.reduce(Rect.union, found)]  # one tight box, as for small
            return found
    moved = old.copy()
    apply_scroll(moved, scroll)
    return changed_rects(moved, new)


def _tiled(
    old: np.ndarray,
    new: np.ndarray,
    tile: int,
    changed_boxes: Callable[..., int],
    move: Scroll | None,
) -> list[Rect] | None:
    """:func:`changed_rects` (of ``new`` against ``old`` moved by ``move``) in one compiled
    call (each tile's bounds in one pass, then :func:`tile_boxes`' boxes of them, tight);
    None for arrays it takes no flat view of, or of a kind not compiled (numpy's way then).

    Why: numpy's way is a dozen calls plus a few per box, each several times its warm cost
    after an idle spell (1.1 ms for a 512×352 terminal 150 ms after the last, on the
    capture thread's path of every scrolled line in a pager)."""
    a, b = pixel_words(old), pixel_words(new)
    if a is None or b is None:
        return None
    height, width = old.shape[:2]
    rows, cols = (height + tile - 1) // tile, (width + tile - 1) // tile
    bounds = np.empty((rows, cols, 4), np.int32)
    boxes = np.empty((rows * cols, 4), np.int32)
    d = move.dest if move is not None else Rect(0, 0, 0, 0)
    shift = (d.x, d.y, d.right, d.bottom, move.dy if move is not None else 0)
    try:
        count = changed_boxes(a, b, height, width, tile, bounds, boxes, shift)
    except TypeError:  # read-only memory, say: not a kind load_kernel compiled
        return None
    return [Rect(x0, y0, x1 + 1 - x0, y1 + 1 - y0) for x0, y0, x1, y1 in boxes[:count].tolist()]


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
    # The grid spans the damage's tiles only: tile_boxes costs a few numpy calls per tile row,
    # on the loop (a scroll in a terminal: 0.5-0.7 ms for the screen's 34 rows, ~20 damage
    # rectangles), and rows without damage only end runs, which the grid's edge does too.
    left = min(r.x for r in snapped) // tile
    top = min(r.y for r in snapped) // tile
    right = -(-max(r.right for r in snapped) // tile)
    bottom = -(-max(r.bottom for r in snapped) // tile)
    grid = np.zeros((bottom - top, right - left), dtype=bool)
    for r in snapped:
        grid[
            r.y // tile - top : -(-r.bottom // tile) - top,
            r.x // tile - left : -(-r.right // tile) - left,
        ] = True
    boxes = [
        Rect(box.x + left * tile, box.y + top * tile, box.width, box.height)
        for box in tile_boxes(grid, tile, width - left * tile, height - top * tile)
    ]
    if len(boxes) > MAX_GRAB_BOXES:
        bbox = boxes[0]
        for box in boxes[1:]:
            bbox = bbox.union(box)
        return [bbox]
    return boxes
