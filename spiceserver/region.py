"""Damage bookkeeping: a small set of rectangles that only ever grows until taken.

Screen updates are latest-wins: while a client cannot take an update (ACK window full,
transport paused), new damage merges into what is already pending instead of queueing frames.
The pixels are read when the update is finally sent, so the client gets the newest state.
"""

from __future__ import annotations

from spiceserver.sources.base import Rect

__all__ = ["DirtyRegion", "split_rows"]

#: Merge two touching rectangles when their bounding box is at most this much larger than
#: both together (overlapping damage, adjacent glyphs).
_MERGE_SLACK = 1.25


class DirtyRegion:
    """Pending damage, kept as at most ``max_rects`` rectangles."""

    def __init__(self, max_rects: int = 16) -> None:
        self.max_rects = max_rects
        self._rects: list[Rect] = []

    def __bool__(self) -> bool:
        return bool(self._rects)

    def add(self, rects: list[Rect]) -> None:
        for rect in rects:
            self._add(rect)
        if len(self._rects) > self.max_rects:
            bbox = self._rects[0]
            for rect in self._rects[1:]:
                bbox = bbox.union(rect)
            self._rects = [bbox]

    def _add(self, rect: Rect) -> None:
        # Absorb pending rectangles while the union costs little more than the two apart,
        # so a text line grows into one rectangle but a band and a far-off box stay two.
        merged = True
        while merged:
            merged = False
            for i, other in enumerate(self._rects):
                union = rect.union(other)
                if rect.touches(other) and union.area <= _MERGE_SLACK * (rect.area + other.area):
                    rect = union
                    del self._rects[i]
                    merged = True
                    break
        self._rects.append(rect)

    def rects(self) -> list[Rect]:
        """The pending rectangles (a copy)."""
        return list(self._rects)

    def take(self) -> list[Rect]:
        rects, self._rects = self._rects, []
        return rects

    def clear(self) -> None:
        self._rects = []


def split_rows(rect: Rect, max_pixels: int) -> list[Rect]:
    """Cut ``rect`` into horizontal bands of at most ``max_pixels`` pixels (≥ 1 row each)."""
    rows = max(1, max_pixels // max(1, rect.width))
    return [
        Rect(rect.x, y, rect.width, min(rows, rect.bottom - y))
        for y in range(rect.y, rect.bottom, rows)
    ]
