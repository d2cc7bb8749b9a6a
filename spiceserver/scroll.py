"""Vertical scrolls: finding them between two frames, and moving pixels the way COPY_BITS does.

Theory of operation
-------------------
A terminal printing a line, a pager moving down, a browser scrolling: most of the changed
rectangle is the old content moved up or down.  Re-encoding it costs an image; SPICE's
COPY_BITS (``spice.proto`` ``CopyBits``: a DisplayBase whose ``box`` is the destination, and
the ``src_pos`` of its top-left corner) moves the pixels on the client for 29 bytes, and only
the uncovered strip and whatever else changed need an image.

* **Detection** (:func:`detect_scroll`) compares the held frame of a changed rectangle with the
  new grab.  Each row gets a hash of a fixed sample of its columns (numpy, a few milliseconds
  for a full HD rectangle); each pair of an old and a new row with the same hash votes for the
  shift between them (hashes repeated many times, blank lines, do not vote).  The best-voted
  shifts are then checked *exactly*, row by row over the whole width, and the longest run of
  equal rows is the moved band.  The hashes only propose: a move is reported only for rows
  that are equal byte for byte, so a collision costs a missed scroll, never a wrong pixel.
* **Cheaper than re-encoding** when the band is at least :data:`MIN_FRACTION` of the
  rectangle's rows and at least :data:`MIN_ROWS` rows: the move is then one small message and
  the rest (usually a strip of a line or two) is encoded as usual.  Measured on xterm + less
  at 1920x1080 (``tests/interop/bench_desktop.py``): line and half-page scrolling cost about
  an eighth of the bytes.
* **Geometry.**  A :class:`Scroll` says that within ``rect`` the rows moved ``dy`` down (up if
  negative): row ``y`` of the new frame is row ``y - dy`` of the old one wherever both lie in
  ``rect``.  The other rows (the uncovered *strip*) keep their old pixels, exactly as after a
  COPY_BITS on the client (spice-common ``canvas_copy_bits``: the destination is ``dest``,
  the source is ``dest`` shifted back by ``dy``; ``spice_pixman_copy_rect`` copies bottom-up
  when moving down and top-down when moving up, so an overlapping move behaves as if the
  source were copied out first — what :func:`apply_scroll` does with numpy).
* **Sending** a move is only right for a client that holds exactly the pixels it moves:
  :class:`PendingMoves` keeps that bookkeeping for a display channel (the argument is in its
  docstring).

Pure numpy, no I/O: used by the desktop source (detection) and the display handler.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from spiceserver.sources.base import Rect

__all__ = [
    "MAX_PENDING_MOVES",
    "MIN_FRACTION",
    "MIN_ROWS",
    "PendingMoves",
    "Scroll",
    "ScrollMisses",
    "apply_scroll",
    "detect_scroll",
    "intersect",
    "moved_damage",
    "row_hashes",
]

#: A move is worth a COPY_BITS when its band holds at least this many rows …
MIN_ROWS = 16
#: … and at least this fraction of the rectangle's rows (a half-page scroll in a terminal
#: with a status line keeps 48% of the text: measured with ``less`` in xterm).
MIN_FRACTION = 0.4
#: Columns sampled per row for the proposal hashes (all of them in narrower rectangles).
HASH_COLUMNS = 512
#: Shifts checked exactly, best-voted first.
CANDIDATES = 3
#: A row hash seen more often than this in the old rectangle does not vote.
MAX_REPEATS = 8
#: Moves a display queues while its client is not taking updates; later scrolls are damage.
MAX_PENDING_MOVES = 16
#: An area that changed without scrolling this many times in a row, each at most
#: :data:`MISS_GAP` seconds after the last, plays like a video: :class:`ScrollMisses` stops
#: checking it until it pauses for longer than that.
MISSES_TO_SKIP = 8
MISS_GAP = 0.25
#: Areas :class:`ScrollMisses` tracks (the oldest go first).
MAX_MISS_AREAS = 32
#: Fixed odd 64-bit multipliers, one per sampled column (deterministic across runs).
_WEIGHTS = np.random.default_rng(0x5C_0011).integers(1, 2**63, HASH_COLUMNS, dtype=np.uint64) | 1


@dataclass(frozen=True, slots=True)
class Scroll:
    """Within ``rect`` the rows moved ``dy`` down (up if negative); see the module doc."""

    rect: Rect
    dy: int

    def __post_init__(self) -> None:
        if self.dy == 0 or abs(self.dy) >= self.rect.height or self.rect.width <= 0:
            raise ValueError(
                f"no move: dy={self.dy} in a {self.rect.width}x{self.rect.height} rectangle"
            )

    @property
    def dest(self) -> Rect:
        """Where the moved rows land (COPY_BITS ``box``)."""
        r = self.rect
        return Rect(r.x, r.y + max(0, self.dy), r.width, r.height - abs(self.dy))

    @property
    def source(self) -> Rect:
        """Where they come from (COPY_BITS ``src_pos`` is its top-left corner)."""
        dest = self.dest
        return Rect(dest.x, dest.y - self.dy, dest.width, dest.height)

    @property
    def strip(self) -> Rect:
        """The rows of ``rect`` that nothing moves into (they keep their old pixels)."""
        r = self.rect
        top = r.y if self.dy > 0 else r.bottom + self.dy
        return Rect(r.x, top, r.width, abs(self.dy))

    def shifted(self, x: int, y: int) -> Scroll:
        """The same move with ``rect`` offset by (x, y)."""
        r = self.rect
        return Scroll(Rect(r.x + x, r.y + y, r.width, r.height), self.dy)


class PendingMoves:
    """A display channel's scroll bookkeeping: which moves may go out as COPY_BITS.

    Why it is right
    ---------------
    Notation: F(N) is the source's frame once notifications 1..N are applied (the source's
    ``version`` counts them; a scroll is one).  The display keeps ``dirty`` (the damage not
    yet read) and, here, :attr:`version` V.  The invariant, whenever V >= 0:

        (I) once every draw and move already decided has reached the client, the client's
        surface equals F(V) outside ``dirty``.

    * **Read.**  The update loop takes ``dirty`` (now empty) and reads those pixels at the
      source's current version R, with no await in between; the draws that come of them go
      out before anything decided later.  Every pixel outside the old ``dirty`` already was
      F(V) and did not change between V and R (a change would be in ``dirty``), so (I)
      holds with V = R (:meth:`read`).  Sources must make reads exact: F(R) and nothing of a
      later change (the desktop source applies its grabs on the loop thread for this).
    * **Damage N** with V = N - 1: its rectangles join ``dirty``, so (I) holds for N
      (:meth:`damaged`).  If V != N - 1 (a notification was missed, or the surface is being
      re-created) V stays behind and stays so until the next read: moves wait for that.
    * **Scroll N** (``rect``, ``dy``, ``damage``) with V = N - 1.  F(N) is F(N-1) with the
      band moved (``dest`` gets ``source``) except in ``damage``.  A COPY_BITS queued now goes
      out after every draw already decided (the update loop sends the queued moves when it
      next takes ``dirty``, after the previous update's draws) and before the draws of pixels
      read later; so on the client it applies to F(N-1) outside ``dirty``.  After it, a pixel
      p of ``dest`` holds the client's old p - dy: correct unless p - dy was in ``dirty``, so
      those parts of ``dirty`` are shifted by ``dy`` and added (:func:`moved_damage`; the
      originals stay dirty, harmlessly).  Pixels outside ``dest`` are untouched by the move,
      and F(N) = F(N-1) there outside ``damage``.  ``damage`` joins ``dirty``: (I) holds for
      N.  Otherwise (V != N - 1, too many queued, or the stale part is large) the whole
      ``rect`` joins ``dirty`` instead, which covers every pixel the scroll changed.
    * **Resize.**  The surface is re-created and drawn in full: :meth:`reset` drops the queued
      moves (they were for the old surface) and V until the first read.

    Overlap: source and destination of a move overlap; spice-gtk's canvas
    (``spice_pixman_copy_rect``) copies in the safe direction, as :func:`apply_scroll` does.
    """

    def __init__(self, max_moves: int = MAX_PENDING_MOVES) -> None:
        self.max_moves = max_moves
        #: V of the invariant above; -1 while unknown (before the first read).
        self.version = -1
        self._moves: list[Scroll] = []

    def __len__(self) -> int:
        return len(self._moves)

    def damaged(self, version: int) -> None:
        """Damage notification ``version`` was delivered (its rectangles joined ``dirty``)."""
        if self.version == version - 1:
            self.version = version

    def scrolled(
        self, scroll: Scroll, damage: list[Rect], version: int, dirty: list[Rect]
    ) -> list[Rect]:
        """Scroll notification ``version``; returns the rectangles that must join ``dirty``
        (the pending damage it carries along and ``damage``, or ``scroll.rect`` too when the
        move cannot be sent)."""
        queued, carried = False, []
        if self.version == version - 1 and len(self._moves) < self.max_moves:
            carried = moved_damage(dirty, scroll)
            if 2 * sum(r.area for r in carried) <= scroll.dest.area:
                self._moves.append(scroll)
                queued = True
        self.damaged(version)
        return [*carried, *damage] if queued else [scroll.rect, *damage]

    def read(self, version: int) -> None:
        """``dirty`` was just emptied and read at ``version``."""
        self.version = version

    def take(self) -> list[Scroll]:
        """The queued moves, oldest first, to be sent now (before any draw read later)."""
        moves, self._moves = self._moves, []
        return moves

    def reset(self) -> None:
        """The surface will be re-created: no move until the next read."""
        self._moves.clear()
        self.version = -1


def apply_scroll(frame: np.ndarray, scroll: Scroll) -> None:
    """Move ``frame``'s pixels in place as a client's COPY_BITS does (strip left as it was)."""
    d, s = scroll.dest, scroll.source
    # numpy copies an overlapping source out first (PyArray_AssignArray), like memmove.
    frame[d.y : d.bottom, d.x : d.right] = frame[s.y : s.bottom, s.x : s.right]


def intersect(a: Rect, b: Rect) -> Rect | None:
    """The overlap of two rectangles; None if they share no pixel."""
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.right, b.right), min(a.bottom, b.bottom)
    if x1 <= x0 or y1 <= y0:
        return None
    return Rect(x0, y0, x1 - x0, y1 - y0)


def moved_damage(rects: list[Rect], scroll: Scroll) -> list[Rect]:
    """Where pending damage travels when ``scroll`` is applied: each part of ``rects`` inside
    the move's source, shifted by ``dy`` (the stale pixels there are copied to it)."""
    source = scroll.source
    out = []
    for rect in rects:
        part = intersect(rect, source)
        if part is not None:
            out.append(Rect(part.x, part.y + scroll.dy, part.width, part.height))
    return out


def row_hashes(pixels: np.ndarray) -> np.ndarray:
    """One uint64 per row of an (H, W, 4) uint8 array, over a fixed sample of its columns.

    Only a proposal (see :func:`detect_scroll`): the padding byte is hashed too, and two
    different rows may share a hash.
    """
    u32 = as_u32(pixels)
    width = u32.shape[1]
    if width > HASH_COLUMNS:
        columns = np.linspace(0, width - 1, HASH_COLUMNS).astype(np.intp)
        u32 = u32[:, columns]
    # uint64 products and sums wrap modulo 2**64: a fine hash, and numpy does not warn.
    return (u32.astype(np.uint64) * _WEIGHTS[: u32.shape[1]]).sum(axis=1, dtype=np.uint64)


def detect_scroll(
    old: np.ndarray,
    new: np.ndarray,
    *,
    min_rows: int = MIN_ROWS,
    min_fraction: float = MIN_FRACTION,
) -> Scroll | None:
    """A vertical move that turns ``old`` into ``new`` over a large band, or None.

    Both are (H, W, 4) uint8 arrays of the same rectangle.  The returned scroll's ``rect`` is
    in their coordinates (full width) and spans the band's destination and source rows: for
    every row ``y`` of its ``dest``, ``new[y] == old[y - dy]`` byte for byte (padding
    included).  Returned only when the band has at least ``min_rows`` rows and at least
    ``min_fraction`` of H.
    """
    if old.shape != new.shape:
        raise ValueError(f"shapes differ: {old.shape} and {new.shape}")
    height = old.shape[0]
    need = max(min_rows, int(np.ceil(min_fraction * height)))
    if height < need + 1 or old.shape[1] == 0:
        return None
    if _find_scroll is not None:
        found = _compiled_scroll(old, new, need, _find_scroll)
        if found is not None:
            dy, top, length = found
            if not length:
                return None
            rows_top = min(top, top - dy)
            return Scroll(Rect(0, rows_top, old.shape[1], length + abs(dy)), dy)
    best: tuple[int, int, int] | None = None  # (rows, first dest row, dy)
    a, b = as_u32(old), as_u32(new)
    for dy in _candidate_shifts(row_hashes(old), row_hashes(new), height - need):
        # equal[i]: new row i + max(0, dy) is old row i + max(0, dy) - dy.
        down, up = max(0, dy), max(0, -dy)
        equal = (b[down : height - up] == a[up : height - down]).all(axis=1)
        start, length = _longest_run(equal)
        if length >= need and (best is None or length > best[0]):
            best = (length, start + max(0, dy), dy)
    if best is None:
        return None
    length, top, dy = best
    rows_top = min(top, top - dy)  # the band's destination and source rows together
    return Scroll(Rect(0, rows_top, old.shape[1], length + abs(dy)), dy)


def _candidate_shifts(old_hashes: np.ndarray, new_hashes: np.ndarray, max_shift: int) -> list[int]:
    """Shifts voted for by pairs of rows with the same hash, best first.

    A hash found more than :data:`MAX_REPEATS` times in the old rectangle (blank lines, flat
    fills) votes for nothing: it would vote for every shift.
    """
    if max_shift < 1:
        return []
    order = np.argsort(old_hashes, kind="stable")
    ranked = old_hashes[order]
    lo = np.searchsorted(ranked, new_hashes, side="left")
    hi = np.searchsorted(ranked, new_hashes, side="right")
    repeats = hi - lo
    voters = np.flatnonzero((repeats > 0) & (repeats <= MAX_REPEATS))
    shifts = []  # new row minus old row, for each equal-hash pair
    for k in range(MAX_REPEATS):
        voters = voters[repeats[voters] > k]
        if not len(voters):
            break
        shifts.append(voters - order[lo[voters] + k])
    if not shifts:
        return []
    pooled = np.concatenate(shifts)
    pooled = pooled[(pooled != 0) & (np.abs(pooled) <= max_shift)]
    if not len(pooled):
        return []
    votes = np.bincount(pooled + max_shift)
    best = np.argsort(votes, kind="stable")[::-1][:CANDIDATES]
    return [int(i) - max_shift for i in best if votes[i] > 0]


#: ``spiceserver.sources._tiles_kernel.find_scroll`` once ``tiles.load_kernel`` has loaded it.
_find_scroll: Callable[..., tuple[int, int, int]] | None = None
#: Sampled columns per rectangle width (:func:`row_hashes`), for the compiled detection.
_columns: dict[int, np.ndarray] = {}


def _compiled_scroll(
    old: np.ndarray, new: np.ndarray, need: int, find_scroll: Callable[..., tuple[int, int, int]]
) -> tuple[int, int, int] | None:
    """:func:`detect_scroll`'s (dy, first destination row, rows) in one compiled call, or
    None for arrays it takes no flat view of (numpy's way then).

    Why: numpy's way is ~20 calls (hashes, votes, a full compare per candidate), 1.7-2.1 ms
    for a 512×352 terminal 150 ms after the last, on the path of every scrolled line."""
    a, b = pixel_words(old), pixel_words(new)
    if a is None or b is None:
        return None
    height, width = old.shape[:2]
    columns = _columns.get(width)
    if columns is None:
        if width > HASH_COLUMNS:
            columns = np.linspace(0, width - 1, HASH_COLUMNS).astype(np.intp)
        else:
            columns = np.arange(width, dtype=np.intp)
        if len(_columns) < 64:  # a few widths in practice; never a growing table
            _columns[width] = columns
    weights = _WEIGHTS[: columns.size]
    try:
        return find_scroll(a, b, height, width, columns, weights, need, MAX_REPEATS, CANDIDATES)
    except TypeError:  # read-only memory, say: not a kind load_kernel compiled
        return None


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of True in a 1-D bool array; (0, 0) if none."""
    if not mask.any():
        return 0, 0
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, stops = edges[::2], edges[1::2]
    i = int(np.argmax(stops - starts))
    return int(starts[i]), int(stops[i] - starts[i])


def pixel_words(pixels: np.ndarray) -> tuple[np.ndarray, int] | None:
    """An (H, W, 4) uint8 or (H, W) uint32 image as 1-D uint32 words and a row stride (pixel
    (y, x) at ``y * stride + x``), without a copy: the layout the compiled compares take.
    None when its pixels are not 4-byte words in rows of a whole number of words."""
    if pixels.ndim == 3:
        if pixels.dtype != np.uint8 or pixels.shape[2] != 4 or pixels.strides[1:] != (4, 1):
            return None
    elif pixels.dtype != np.uint32 or pixels.strides[1:] != (4,):
        return None
    height, width = pixels.shape[:2]
    row = pixels.strides[0]
    if height == 0 or width == 0 or row % 4 or row < 4 * width or not pixels.flags.aligned:
        return None
    if pixels.flags.c_contiguous:
        return pixels.reshape(-1).view(np.uint32) if pixels.ndim == 3 else pixels.reshape(-1), width
    # the words from the first pixel to the last, all inside the parent's buffer
    span = (height - 1) * (row // 4) + width
    if pixels.ndim == 3:
        flat = np.lib.stride_tricks.as_strided(pixels, shape=(4 * span,), strides=(1,))
        return flat.view(np.uint32), row // 4
    return np.lib.stride_tricks.as_strided(pixels, shape=(span,), strides=(4,)), row // 4


def as_u32(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 as (H, W) uint32, copying only when rows are not contiguous."""
    if pixels.strides[1:] != (4, 1):
        pixels = np.ascontiguousarray(pixels)
    return pixels.view(np.uint32)[..., 0]


class ScrollMisses:
    """:func:`detect_scroll` for the desktop source, which stops looking for a scroll in an
    area that keeps changing without one.

    A video redraws the same rectangle every frame and never scrolls; checking each frame
    costs two row hashes of it, measured at 15–20 % of a core (more than H.264 encoding) for a
    640×480 clip at 25 fps (tests/interop/bench_video.py).  After :data:`MISSES_TO_SKIP`
    misses in a row, each within :data:`MISS_GAP` of the last, the area is skipped while it
    keeps changing that fast.  A skipped check only costs a COPY_BITS that might have been:
    the pixels are sent either way.
    """

    def __init__(self) -> None:
        self._areas: dict[Hashable, tuple[int, float]] = {}  # key → (misses in a row, last)

    def detect(self, old: np.ndarray, new: np.ndarray, key: Hashable, now: float) -> Scroll | None:
        """:func:`detect_scroll` of ``old`` and ``new``, unless the area named ``key`` (its
        place on the screen) has been playing like a video until ``now``."""
        misses, last = self._areas.pop(key, (0, -MISS_GAP))
        recent = now - last <= MISS_GAP
        if misses >= MISSES_TO_SKIP and recent:
            self._areas[key] = (misses, now)
            return None
        scroll = detect_scroll(old, new)
        if scroll is None:
            self._areas[key] = (misses + 1 if recent else 1, now)
            if len(self._areas) > MAX_MISS_AREAS:
                del self._areas[next(iter(self._areas))]  # the least recently checked
        return scroll
