from __future__ import annotations

from spiceserver.region import DirtyRegion, split_rows
from spiceserver.sources.base import Rect


def test_adjacent_and_overlapping_rects_merge() -> None:
    region = DirtyRegion()
    region.add([Rect(0, 0, 10, 10), Rect(10, 0, 10, 10), Rect(5, 5, 10, 10)])
    assert region.take() == [Rect(0, 0, 20, 15)]
    assert not region


def test_far_apart_or_wasteful_unions_stay_separate() -> None:
    region = DirtyRegion()
    band, box = Rect(0, 300, 1024, 48), Rect(500, 348, 64, 64)  # touching, union is wasteful
    region.add([band, box, Rect(900, 700, 5, 5)])
    assert sorted(region.take(), key=lambda r: r.y) == [band, box, Rect(900, 700, 5, 5)]


def test_too_many_rects_collapse_to_their_bounding_box() -> None:
    region = DirtyRegion(max_rects=4)
    region.add([Rect(i * 20, i * 20, 2, 2) for i in range(6)])
    assert region.take() == [Rect(0, 0, 102, 102)]


def test_split_rows() -> None:
    assert split_rows(Rect(1, 2, 10, 5), 20) == [
        Rect(1, 2, 10, 2),
        Rect(1, 4, 10, 2),
        Rect(1, 6, 10, 1),
    ]
    assert split_rows(Rect(0, 0, 100, 3), 10) == [Rect(0, y, 100, 1) for y in range(3)]
