"""The compiled compare and scroll detection (``sources/_tiles_kernel.py``) against numpy's.

``tiles.changed_rects``, ``tiles.changed_rects_moved`` and ``scroll.detect_scroll`` each
have a numpy form (what runs until ``tiles.load_kernel`` has loaded the kernels, and under
``NUMBA_DISABLE_JIT``) and a compiled one; both must give the very same rectangles and
moves.  The kernels are called here directly, so the checks also run (smaller) without the
JIT, where they are plain Python.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from encoders._jit import JIT_ENABLED
from spiceserver import scroll
from spiceserver.scroll import MIN_FRACTION, MIN_ROWS, Scroll, detect_scroll
from spiceserver.sources import _tiles_kernel, tiles
from spiceserver.sources.base import Rect
from spiceserver.sources.image import load_image
from spiceserver.sources.tiles import TILE, changed_rects, changed_rects_moved
from tests.conftest import CORPUS

#: Without the JIT the row hashes wrap as numpy scalars, which warn (the JIT and numpy's
#: arrays wrap silently): the same uint64 sums either way.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

#: Without the JIT the kernels are Python loops: smaller areas, fewer of them.
SIZE, CASES = ((200, 300), 250) if JIT_ENABLED else ((96, 64), 50)


@pytest.fixture(autouse=True)
def numpy_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module hooks empty: the public functions give numpy's answers."""
    monkeypatch.setattr(tiles, "_changed_box", None)
    monkeypatch.setattr(tiles, "_changed_boxes", None)
    monkeypatch.setattr(scroll, "_find_scroll", None)


def terminal() -> np.ndarray:
    return np.ascontiguousarray(load_image(CORPUS / "terminal_manpage_1920x1080.png"))


def compiled_rects(old: np.ndarray, new: np.ndarray, move: Scroll | None = None) -> list[Rect]:
    found = tiles._tiled(old, new, TILE, _tiles_kernel.changed_boxes, move)
    assert found is not None
    return found


def compiled_scroll(old: np.ndarray, new: np.ndarray) -> Scroll | None:
    height = old.shape[0]
    need = max(MIN_ROWS, int(np.ceil(MIN_FRACTION * height)))
    if height < need + 1:
        return None
    found = scroll._compiled_scroll(old, new, need, _tiles_kernel.find_scroll)
    assert found is not None
    dy, top, rows = found
    if not rows:
        return None
    return Scroll(Rect(0, min(top, top - dy), old.shape[1], rows + abs(dy)), dy)


def cases(seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Areas of a terminal frame (views: strided rows), some moved up or down by a few rows,
    with edits: B, G, R and padding bytes, lines, blocks."""
    rng = np.random.default_rng(seed)
    source = terminal()
    for _ in range(CASES):
        height, width = int(rng.integers(1, SIZE[0])), int(rng.integers(1, SIZE[1]))
        y, x = int(rng.integers(0, 1080 - height)), int(rng.integers(0, 1920 - width))
        old = source[y : y + height, x : x + width]
        new = old.copy()
        if rng.random() < 0.5 and height > 20:
            dy = int(rng.integers(-height // 2, height // 2)) or 1
            if dy > 0:
                new[dy:] = old[:-dy]
            else:
                new[:dy] = old[-dy:]
        for _ in range(int(rng.integers(0, 5))):
            ey, ex = int(rng.integers(0, height)), int(rng.integers(0, width))
            eh, ew = int(rng.integers(1, 20)), int(rng.integers(1, 60))
            new[ey : ey + eh, ex : ex + ew, int(rng.integers(0, 4))] ^= 0x41
        yield old, new


@pytest.mark.parametrize("seed", [1, 2])
def test_compiled_compare_gives_numpys_rectangles(seed: int) -> None:
    for old, new in cases(seed):
        if old.shape[0] * old.shape[1] <= tiles.SMALL_PIXELS:
            continue  # numpy's small form is one tight box; the tiled form is for the rest
        assert compiled_rects(old, new) == changed_rects(old, new)
        assert compiled_rects(new, old) == changed_rects(new, old)  # contiguous against a view


@pytest.mark.parametrize("seed", [3, 4])
def test_compiled_scroll_detection_and_what_it_leaves_match_numpy(seed: int) -> None:
    moves = 0
    for old, new in cases(seed):
        found = detect_scroll(old, new)
        assert compiled_scroll(old, new) == found
        if found is None:
            continue
        moves += 1
        moved = old.copy()
        scroll.apply_scroll(moved, found)
        left = tiles.changed_rects(moved, new)  # numpy, the area moved in a copy
        assert changed_rects_moved(old, new, found) == left
        if old.shape[0] * old.shape[1] > tiles.SMALL_PIXELS:
            assert compiled_rects(old, new, found) == left
    assert moves >= CASES // 12  # the cases do hold scrolls


def test_a_scrolled_terminal_page() -> None:
    """A pager's line scroll over real text: the move found, the new line left to send."""
    height, width = (352, 512) if JIT_ENABLED else (96, 128)
    page = terminal()
    old = page[32 : 32 + height, 32 : 32 + width]
    new = np.empty_like(old)
    new[:-13] = old[13:]
    new[-13:] = page[400:413, 32 : 32 + width]
    expected = detect_scroll(old, new)
    assert expected is not None and expected.dy == -13
    assert compiled_scroll(old, new) == expected
    moved = old.copy()
    scroll.apply_scroll(moved, expected)
    assert compiled_rects(old, new, expected) == changed_rects(moved, new)
    assert compiled_rects(old, new) == changed_rects(old, new)


@pytest.mark.skipif(not JIT_ENABLED, reason="kernels load only with the JIT")
def test_loaded_kernels_answer_and_never_compile_on_a_change() -> None:
    """Once loaded, the public functions take the kernels; memory of a kind they were not
    compiled for (read-only) gets numpy's answer, never a compile (seconds, on the loop)."""
    tiles.load_kernel()
    assert tiles._changed_boxes is not None and scroll._find_scroll is not None
    counts = [len(k.signatures) for k in (tiles._changed_boxes, scroll._find_scroll)]
    page = terminal()
    old = page[100:400, 100:600]
    new = old.copy()
    new[:-13] = old[13:]
    new[-13:] = 0
    found = detect_scroll(old, new)
    assert found is not None and found.dy == -13
    left = changed_rects_moved(old, new, found)
    frozen = new.copy()
    frozen.flags.writeable = False
    assert detect_scroll(old, frozen) == found
    assert changed_rects_moved(old, frozen, found) == left
    assert changed_rects(old, frozen) == changed_rects(old, new)
    assert [len(k.signatures) for k in (tiles._changed_boxes, scroll._find_scroll)] == counts
