"""The numba kernels behind :func:`spiceserver.sources.tiles.changed_rects` and the checks of
:func:`spiceserver.scroll.detect_scroll`.

Imported only through :func:`spiceserver.sources.tiles.load_kernel` (it imports numba)."""

from __future__ import annotations

import numpy as np

from encoders._jit import kernel

__all__ = ["changed_box", "changed_boxes", "find_scroll"]


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


@kernel
def merge_tiles(bounds: np.ndarray, boxes: np.ndarray) -> int:
    """``tiles.tile_boxes`` of the changed tiles in ``bounds`` (from :func:`changed_boxes`),
    each box shrunk to its changed pixels: into ``boxes`` (n, 4) as (x0, y0, x1, y1),
    inclusive, in ``tile_boxes``'s order; returns n.  A tile row's runs of changed tiles are
    boxes; a run with the same columns as one in the row just above extends its box."""
    rows, cols = bounds.shape[0], bounds.shape[1]
    prev = np.empty((cols, 3), np.int64)  # runs of the row above: start, stop, box
    cur = np.empty((cols, 3), np.int64)
    nprev = 0
    n = 0
    for ty in range(rows):
        ncur = 0
        tx = 0
        while tx < cols:
            if bounds[ty, tx, 2] < 0:
                tx += 1
                continue
            start = tx
            while tx < cols and bounds[ty, tx, 2] >= 0:
                tx += 1
            box = -1
            for k in range(nprev):
                if prev[k, 0] == start and prev[k, 1] == tx:
                    box = prev[k, 2]
                    break
            if box < 0:
                box = n
                n += 1
                boxes[box, 0] = bounds[ty, start, 0]
                boxes[box, 1] = bounds[ty, start, 1]
                boxes[box, 2] = bounds[ty, start, 2]
                boxes[box, 3] = bounds[ty, start, 3]
            for c in range(start, tx):
                boxes[box, 0] = min(boxes[box, 0], bounds[ty, c, 0])
                boxes[box, 1] = min(boxes[box, 1], bounds[ty, c, 1])
                boxes[box, 2] = max(boxes[box, 2], bounds[ty, c, 2])
                boxes[box, 3] = max(boxes[box, 3], bounds[ty, c, 3])
            cur[ncur, 0] = start
            cur[ncur, 1] = tx
            cur[ncur, 2] = box
            ncur += 1
        prev, cur = cur, prev
        nprev = ncur
    return n


@kernel
def changed_boxes(
    old: tuple[np.ndarray, int],
    new: tuple[np.ndarray, int],
    height: int,
    width: int,
    tile: int,
    bounds: np.ndarray,
    boxes: np.ndarray,
    move: tuple[int, int, int, int, int],
) -> int:
    """``tiles.changed_rects`` of two ``height`` × ``width`` images, as tight boxes in
    ``boxes`` (n, 4: x0, y0, x1, y1, inclusive, in ``tiles.tile_boxes``' order); returns n.

    Images are (1-D uint32 pixel words, row stride), pixel (y, x) at ``y * stride + x``
    (``scroll.pixel_words``): one compiled signature for frames and their views, and inner
    loops over contiguous words, which LLVM vectorises.  First each ``tile`` × ``tile``
    tile's bounds of the pixels whose B, G or R differ go into ``bounds`` (rows of tiles,
    columns of tiles, 4; an unchanged tile gets (W, H, -1, -1), so tiles merge by min and
    max), then :func:`merge_tiles` makes the boxes.

    ``move`` = (left, top, right, bottom, dy): inside that rectangle (exclusive ends) pixel
    (y, x) of ``new`` is compared with old pixel (y - dy, x), as ``old`` would be after a
    COPY_BITS of those rows, without making that copy (dy = 0: no move).  The caller keeps
    ``y - dy`` inside ``old``.
    """
    old_words, old_stride = old
    new_words, new_stride = new
    left, top, right, bottom, dy = move
    rows, cols = bounds.shape[0], bounds.shape[1]
    for ty in range(rows):
        for tx in range(cols):
            bounds[ty, tx, 0] = width
            bounds[ty, tx, 1] = height
            bounds[ty, tx, 2] = -1
            bounds[ty, tx, 3] = -1
    for y in range(height):
        ty = y // tile
        moved = dy != 0 and top <= y < bottom
        nrow = y * new_stride
        for tx in range(cols):
            xs = tx * tile
            xe = min(xs + tile, width)
            first = width
            last = -1
            # up to three runs of one source row each: left of, inside, right of the move
            for part in range(3):
                if part == 0:
                    a0, a1, orow = xs, (min(xe, left) if moved else xe), y * old_stride
                elif part == 1:
                    if not moved:
                        break
                    a0, a1, orow = max(xs, left), min(xe, right), (y - dy) * old_stride
                else:
                    a0, a1, orow = max(xs, right), xe, y * old_stride
                if a0 >= a1:
                    continue
                # unsigned indices: numba adds no negative-index wrap-around, which kept
                # LLVM from vectorising the loop
                o = old_words[np.uint64(orow + a0) : np.uint64(orow + a1)]
                n = new_words[np.uint64(nrow + a0) : np.uint64(nrow + a1)]
                acc = np.uint32(0)
                for k in range(n.size):  # no early exit: vectorised
                    acc |= o[np.uint64(k)] ^ n[np.uint64(k)]
                if acc & 0xFFFFFF == 0:
                    continue
                k = 0
                while (o[np.uint64(k)] ^ n[np.uint64(k)]) & 0xFFFFFF == 0:
                    k += 1
                if a0 + k < first:
                    first = a0 + k
                k = n.size - 1
                while (o[np.uint64(k)] ^ n[np.uint64(k)]) & 0xFFFFFF == 0:
                    k -= 1
                if a0 + k > last:
                    last = a0 + k
            if last >= 0:
                if bounds[ty, tx, 0] > first:
                    bounds[ty, tx, 0] = first
                if bounds[ty, tx, 1] > y:
                    bounds[ty, tx, 1] = y
                if bounds[ty, tx, 2] < last:
                    bounds[ty, tx, 2] = last
                bounds[ty, tx, 3] = y
    if bounds[:, :, 2].max() < 0:
        return 0
    return merge_tiles(bounds, boxes)


@kernel
def _row_hashes(
    pixels: np.ndarray,
    stride: int,
    height: int,
    width: int,
    columns: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """``scroll.row_hashes``: per row the wrapping uint64 sum of its sampled pixels times
    ``weights``.  Every column sampled (``columns`` is 0..width-1): contiguous loads, which
    LLVM vectorises, instead of a gather."""
    hashes = np.empty(height, np.uint64)
    every = columns.size == width
    for y in range(height):
        row = pixels[np.uint64(y * stride) : np.uint64(y * stride + width)]
        acc = np.uint64(0)
        if every:
            for k in range(width):
                acc += np.uint64(row[np.uint64(k)]) * weights[np.uint64(k)]
        else:
            for k in range(columns.size):
                acc += np.uint64(row[np.uint64(columns[k])]) * weights[np.uint64(k)]
        hashes[y] = acc
    return hashes


@kernel
def find_scroll(
    old: tuple[np.ndarray, int],
    new: tuple[np.ndarray, int],
    height: int,
    width: int,
    columns: np.ndarray,
    weights: np.ndarray,
    need: int,
    max_repeats: int,
    candidates: int,
) -> tuple[int, int, int]:
    """``scroll.detect_scroll`` in one call: (dy, first destination row, rows) of the longest
    band of rows moved by one shift, or rows = 0.  The same steps and answers as its numpy
    form: row hashes over ``columns`` with ``weights`` (uint64, wrapping), each new row's
    equal-hash old rows (those hashed at most ``max_repeats`` times) voting for their shift,
    the ``candidates`` best-voted shifts (ties: the larger shift first) checked row by row,
    the longest band of at least ``need`` rows winning (ties: the first checked)."""
    max_shift = height - need
    if max_shift < 1:
        return 0, 0, 0
    old_hash = _row_hashes(old[0], old[1], height, width, columns, weights)
    new_hash = _row_hashes(new[0], new[1], height, width, columns, weights)
    order = np.argsort(old_hash, kind="mergesort")
    ranked = old_hash[order]
    lo = np.searchsorted(ranked, new_hash, side="left")
    hi = np.searchsorted(ranked, new_hash, side="right")
    votes = np.zeros(2 * max_shift + 1, np.int64)
    for i in range(height):
        repeats = hi[i] - lo[i]
        if 0 < repeats <= max_repeats:
            for k in range(repeats):
                shift = i - order[lo[i] + k]
                if shift != 0 and abs(shift) <= max_shift:
                    votes[shift + max_shift] += 1
    best_dy, best_top, best_len = 0, 0, 0
    for _ in range(candidates):
        pick, most = -1, 0
        for i in range(votes.size - 1, -1, -1):
            if votes[i] > most:
                pick, most = i, votes[i]
        if pick < 0:
            break
        votes[pick] = -1
        dy = pick - max_shift
        start, length = equal_run(old, new, height, width, dy)
        if length >= need and length > best_len:
            best_dy, best_top, best_len = dy, start + max(0, dy), length
    return best_dy, best_top, best_len


@kernel
def equal_run(
    old: tuple[np.ndarray, int], new: tuple[np.ndarray, int], height: int, width: int, dy: int
) -> tuple[int, int]:
    """(first row, length) of the longest run of rows ``i`` where new row ``i + max(0, dy)``
    equals old row ``i + max(0, -dy)`` in all four bytes of every pixel, as
    ``scroll.detect_scroll`` checks a shift (``i`` from 0; (0, 0) if none).  Images as in
    :func:`changed_boxes`; a row stops at its first different pixel."""
    old_words, old_stride = old
    new_words, new_stride = new
    down = max(0, dy)
    up = max(0, -dy)
    best_start, best_len = 0, 0
    start, length = 0, 0
    for i in range(height - down - up):
        orow = (i + up) * old_stride
        nrow = (i + down) * new_stride
        # a wrong shift shows in a row's first pixels: checked one by one; the rest of a
        # row that may match in one vectorised pass
        head = min(8, width)
        same = True
        for x in range(head):
            if old_words[np.uint64(orow + x)] != new_words[np.uint64(nrow + x)]:
                same = False
                break
        if same:
            o = old_words[np.uint64(orow + head) : np.uint64(orow + width)]
            n = new_words[np.uint64(nrow + head) : np.uint64(nrow + width)]
            acc = np.uint32(0)
            for k in range(n.size):
                acc |= o[np.uint64(k)] ^ n[np.uint64(k)]
            same = acc == 0
        if same:
            if length == 0:
                start = i
            length += 1
            if length > best_len:
                best_start, best_len = start, length
        else:
            length = 0
    return best_start, best_len
