"""Scroll detection, COPY_BITS geometry and the display's move bookkeeping (pure parts).

The bookkeeping is checked against a model of a display channel and its client: random
interleavings of damage, scrolls, reads, in-flight encodes and sends must always leave the
client's surface equal to the source's frame.  Over sockets: ``server/test_scroll_loopback``;
with spice-gtk on Xvfb: ``interop/test_scroll_gtk``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver import NumpySource
from spiceserver.region import DirtyRegion
from spiceserver.scroll import (
    HASH_COLUMNS,
    MIN_FRACTION,
    MIN_ROWS,
    MISS_GAP,
    MISSES_TO_SKIP,
    PendingMoves,
    Scroll,
    ScrollMisses,
    apply_scroll,
    detect_scroll,
    intersect,
    moved_damage,
    row_hashes,
)
from spiceserver.sources.base import Rect
from spiceserver.sources.tiles import changed_rects


def terminal(rows: int, width: int, seed: int, line: int = 16) -> np.ndarray:
    """A light page of dark random "glyphs", ``line`` pixels per text line (B, G, R, X)."""
    rng = np.random.default_rng(seed)
    frame = np.full((rows, width, 4), 250, dtype=np.uint8)
    frame[..., 3] = 0
    for top in range(0, rows - line + 1, line):
        used = int(rng.integers(0, width // 8 + 1)) * 8
        ink = rng.random((line - 6, used)) < 0.3
        frame[top + 3 : top + line - 3, :used, :3][ink] = 20
    return frame


def scrolled_pair(height: int, width: int, dy: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(old, new): a window onto a long page, before and after the page moved ``dy`` down."""
    page = terminal(height + 2 * abs(dy) + 64, width, seed)
    top = abs(dy) + 32
    return page[top : top + height].copy(), page[top - dy : top - dy + height].copy()


def naive_move(frame: np.ndarray, scroll: Scroll) -> np.ndarray:
    """The oracle: every destination row read from a copy of the old frame."""
    out = frame.copy()
    r = scroll.rect
    for y in range(r.y, r.bottom):
        if r.y <= y - scroll.dy < r.bottom:
            out[y, r.x : r.right] = frame[y - scroll.dy, r.x : r.right]
    return out


# ------------------------------------------------------------------------------- geometry


def test_move_down_geometry() -> None:
    scroll = Scroll(Rect(10, 20, 100, 50), 8)
    assert scroll.dest == Rect(10, 28, 100, 42)
    assert scroll.source == Rect(10, 20, 100, 42)
    assert scroll.strip == Rect(10, 20, 100, 8)


def test_move_up_geometry() -> None:
    scroll = Scroll(Rect(10, 20, 100, 50), -8)
    assert scroll.dest == Rect(10, 20, 100, 42)
    assert scroll.source == Rect(10, 28, 100, 42)
    assert scroll.strip == Rect(10, 62, 100, 8)


@pytest.mark.parametrize("dy", [0, 50, -50, 51])
def test_no_move_is_refused(dy: int) -> None:
    with pytest.raises(ValueError, match="no move"):
        Scroll(Rect(0, 0, 10, 50), dy)


@pytest.mark.parametrize("dy", [1, 7, 31, -1, -7, -31])
def test_apply_scroll_overlaps_like_memmove(dy: int) -> None:
    frame = np.random.default_rng(abs(dy)).integers(0, 256, (40, 30, 4), dtype=np.uint8)
    scroll = Scroll(Rect(3, 2, 20, 34), dy)
    expected = naive_move(frame, scroll)
    apply_scroll(frame, scroll)
    assert np.array_equal(frame, expected)


def test_intersect_and_moved_damage() -> None:
    assert intersect(Rect(0, 0, 10, 10), Rect(5, 5, 10, 10)) == Rect(5, 5, 5, 5)
    assert intersect(Rect(0, 0, 10, 10), Rect(10, 0, 5, 5)) is None
    scroll = Scroll(Rect(0, 0, 100, 100), -10)  # source rows 10..99 land on 0..89
    pending = [Rect(20, 95, 10, 5), Rect(0, 0, 5, 5), Rect(200, 50, 5, 5)]
    # The stale rows 95..99 are copied to 85..89; rows 0..4 are not read by the move.
    assert moved_damage(pending, scroll) == [Rect(20, 85, 10, 5)]


# ------------------------------------------------------------------------------ detection


@pytest.mark.parametrize("dy", [16, -16, 1, -1, 5, -7, 160, -160, 300, -300])
def test_detects_moves_both_ways(dy: int) -> None:
    old, new = scrolled_pair(640, 700, dy)
    scroll = detect_scroll(old, new)
    assert scroll is not None
    assert scroll.dy == dy
    assert scroll.rect == Rect(0, 0, 700, 640)  # the whole window moved
    moved = old.copy()
    apply_scroll(moved, scroll)
    assert np.array_equal(
        moved[scroll.dest.y : scroll.dest.bottom], new[scroll.dest.y : scroll.dest.bottom]
    )


def test_band_inside_a_larger_rect() -> None:
    """A status line above and a prompt below stay; the text between moves up one line."""
    old, new = scrolled_pair(480, 320, -16)
    old[:40] = terminal(40, 320, 90)
    new[:40] = old[:40]
    new[440:] = terminal(40, 320, 91)
    scroll = detect_scroll(old, new)
    assert scroll is not None and scroll.dy == -16
    d = scroll.dest
    assert d.y >= 40 and d.bottom <= 440 and d.height >= 350
    moved = old.copy()
    apply_scroll(moved, scroll)
    assert np.array_equal(moved[d.y : d.bottom], new[d.y : d.bottom])
    residual = changed_rects(moved, new)
    assert sum(r.area for r in residual) < new.shape[0] * new.shape[1] // 3


def test_unrelated_or_small_moves_are_not_scrolls() -> None:
    assert detect_scroll(terminal(480, 320, 1), terminal(480, 320, 2)) is None
    old, new = scrolled_pair(480, 320, 300)  # only 180 rows survive: under MIN_FRACTION
    assert detect_scroll(old, new) is None
    old, new = scrolled_pair(MIN_ROWS, 320, 4)  # too short to bother
    assert detect_scroll(old, new) is None
    assert detect_scroll(old[:, :0], new[:, :0]) is None
    with pytest.raises(ValueError, match="shapes differ"):
        detect_scroll(old, new[1:])


def test_an_area_playing_like_a_video_is_no_longer_checked() -> None:
    """ScrollMisses: after MISSES_TO_SKIP misses in a row at a video's pace the area is not
    checked (a real scroll then goes by as damage), until it pauses; a hit starts over."""
    misses = ScrollMisses()
    frames = [terminal(240, 320, seed) for seed in range(MISSES_TO_SKIP + 2)]
    old, new = scrolled_pair(240, 320, 16)
    video, elsewhere = "video", "elsewhere"
    now = 0.0
    for k in range(MISSES_TO_SKIP):
        now += MISS_GAP / 2
        assert misses.detect(frames[k], frames[k + 1], video, now) is None
    now += MISS_GAP / 2
    assert misses.detect(old, new, video, now) is None  # skipped: the video keeps playing
    assert misses.detect(old, new, elsewhere, now) is not None  # other areas are checked
    now += 2 * MISS_GAP  # a pause
    assert misses.detect(old, new, video, now) is not None
    for k in range(MISSES_TO_SKIP - 1):  # the hit started the count over
        now += MISS_GAP / 2
        assert misses.detect(frames[k], frames[k + 1], video, now) is None
    assert misses.detect(old, new, video, now + MISS_GAP / 2) is not None
    # Misses far apart (a pager paging by hand) never add up to a skip.
    slow = ScrollMisses()
    for k in range(2 * MISSES_TO_SKIP):
        slow.detect(frames[k % 4], frames[k % 4 + 1], video, k * 2 * MISS_GAP)
    assert slow.detect(old, new, video, 2 * MISSES_TO_SKIP * 2 * MISS_GAP) is not None


def test_hash_collisions_never_make_a_wrong_move() -> None:
    """Rows that differ only in columns the hashes skip: found by the exact check."""
    width = HASH_COLUMNS * 3
    old, new = scrolled_pair(256, width, -16)
    sampled = set(np.linspace(0, width - 1, HASH_COLUMNS).astype(int).tolist())
    hidden = next(x for x in range(width) if x not in sampled)
    new[100:110, hidden, 0] ^= 0xFF  # invisible to the hashes
    assert np.array_equal(row_hashes(old)[116:126], row_hashes(new)[100:110])
    scroll = detect_scroll(old, new)
    assert scroll is not None and scroll.dy == -16
    assert not (scroll.dest.y <= 105 < scroll.dest.bottom)  # the changed rows are not in it
    moved = old.copy()
    apply_scroll(moved, scroll)
    assert np.array_equal(
        moved[scroll.dest.y : scroll.dest.bottom], new[scroll.dest.y : scroll.dest.bottom]
    )


def test_padding_differences_only_cost_the_move() -> None:
    old, new = scrolled_pair(256, 200, 32)
    new[..., 3] = 0xFF  # same colours, other padding: no exact row match
    assert detect_scroll(old, new) is None


def test_flat_content_does_not_vote() -> None:
    old = np.zeros((300, 100, 4), np.uint8)
    new = old.copy()
    new[:10] = 7  # blank rows everywhere else: every shift would look equally good
    assert detect_scroll(old, new) is None


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(MIN_ROWS + 2, 200),
    width=st.integers(1, 90),
    dy=st.integers(-150, 150),
    seed=st.integers(0, 2**16),
    noise=st.integers(0, 5),
)
def test_detected_moves_are_always_exact(
    height: int, width: int, dy: int, seed: int, noise: int
) -> None:
    """Whatever is found holds byte for byte, and move + residual damage rebuild ``new``."""
    rng = np.random.default_rng(seed)
    old, new = scrolled_pair(height, width, dy, seed)
    for _ in range(noise):
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        new[y, x, int(rng.integers(0, 3))] ^= 0x40
    scroll = detect_scroll(old, new)
    if scroll is None:
        return
    d = scroll.dest
    moved = old.copy()
    apply_scroll(moved, scroll)
    assert np.array_equal(moved[d.y : d.bottom], new[d.y : d.bottom])
    assert d.height >= max(MIN_ROWS, MIN_FRACTION * height)
    for rect in changed_rects(moved, new):
        moved[rect.y : rect.bottom, rect.x : rect.right] = new[
            rect.y : rect.bottom, rect.x : rect.right
        ]
    assert np.array_equal(moved[..., :3], new[..., :3])


# ------------------------------------------------------------------- the move bookkeeping


class Model:
    """A display channel and its client, step by step: what :class:`DisplayHandler` does
    with :class:`PendingMoves`, :class:`DirtyRegion` and an encode in flight."""

    def __init__(self, rng: np.random.Generator, width: int = 96, height: int = 80) -> None:
        self.rng = rng
        self.frame = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        self.version = 0
        self.dirty = DirtyRegion(max_rects=4)  # small, so it often merges into a bbox
        self.moves = PendingMoves(max_moves=3)
        self.client = np.zeros_like(self.frame)
        self.in_flight: list[tuple[Rect, np.ndarray]] | None = None
        self.copy_bits = 0
        self.need_surface = True
        self.start_update()
        self.finish_update()

    def rect(self) -> Rect:
        height, width = self.frame.shape[:2]
        x, y = int(self.rng.integers(0, width - 1)), int(self.rng.integers(0, height - 1))
        w = int(self.rng.integers(1, width - x + 1))
        h = int(self.rng.integers(1, height - y + 1))
        return Rect(x, y, w, h)

    def noise(self, r: Rect) -> np.ndarray:
        return self.rng.integers(0, 256, (r.height, r.width, 4), dtype=np.uint8)

    def damage(self) -> None:
        r = self.rect()
        self.frame[r.y : r.bottom, r.x : r.right] = self.noise(r)
        self.version += 1
        self.moves.damaged(self.version)
        self.dirty.add([r])

    def scroll(self) -> None:
        r = self.rect()
        if r.height < 2:
            return self.damage()
        scroll = Scroll(r, int(self.rng.integers(1, r.height)) * int(self.rng.choice([-1, 1])))
        apply_scroll(self.frame, scroll)
        damage = []
        if self.rng.random() < 0.8:  # the uncovered strip is redrawn, usually
            s = scroll.strip
            self.frame[s.y : s.bottom, s.x : s.right] = self.noise(s)
            damage.append(s)
        self.version += 1
        self.dirty.add(self.moves.scrolled(scroll, damage, self.version, self.dirty.rects()))

    def resize(self) -> None:
        """A new frame (same size here): the surface is re-created and drawn in full."""
        self.frame = self.rng.integers(0, 256, self.frame.shape, dtype=np.uint8)
        self.version += 1
        self.moves.reset()
        self.need_surface = True
        self.dirty.clear()

    def start_update(self) -> None:
        assert self.in_flight is None
        if self.need_surface:
            self.need_surface = False
            self.client = np.zeros_like(self.frame)  # SURFACE_DESTROY + SURFACE_CREATE
            self.moves.reset()
            self.dirty.clear()
            self.dirty.add([Rect(0, 0, self.frame.shape[1], self.frame.shape[0])])
        for move in self.moves.take():  # sent at once, after the previous update's draws
            d, s = move.dest, move.source
            self.client[d.y : d.bottom, d.x : d.right] = self.client[s.y : s.bottom, s.x : s.right]
            self.copy_bits += 1
        rects = self.dirty.take()
        self.in_flight = [(r, self.frame[r.y : r.bottom, r.x : r.right].copy()) for r in rects]
        self.moves.read(self.version)

    def finish_update(self) -> None:
        assert self.in_flight is not None
        for r, pixels in self.in_flight:
            self.client[r.y : r.bottom, r.x : r.right] = pixels
        self.in_flight = None

    def settle(self) -> None:
        if self.in_flight is not None:
            self.finish_update()
        self.start_update()
        self.finish_update()

    def client_is_exact(self) -> bool:
        return np.array_equal(self.client[..., :3], self.frame[..., :3])


@pytest.mark.parametrize("seed", range(40))
def test_moves_keep_the_client_exact_under_any_interleaving(seed: int) -> None:
    rng = np.random.default_rng(seed)
    model = Model(rng)
    for _ in range(300):
        step = rng.random()
        if step < 0.02:
            model.resize()
        elif step < 0.3:
            model.damage()
        elif step < 0.7:
            model.scroll()
        elif model.in_flight is None:
            model.start_update()
        else:
            model.finish_update()
            # The invariant itself: exact outside the dirty region once all is sent.
            if not model.moves and not model.dirty and not model.need_surface:
                assert model.client_is_exact()
    model.settle()
    assert model.client_is_exact()
    assert model.copy_bits > 0


def test_a_display_behind_falls_back_to_damage() -> None:
    moves = PendingMoves()
    scroll = Scroll(Rect(0, 0, 50, 50), 10)
    # Before the first read nothing is known: damage of the whole rect.
    assert moves.scrolled(scroll, [], 1, []) == [scroll.rect]
    moves.read(1)
    assert moves.scrolled(scroll, [Rect(0, 0, 50, 10)], 2, []) == [Rect(0, 0, 50, 10)]
    assert len(moves) == 1
    # Version 3 was never seen (a missed notification): version 4 cannot be a move.
    assert moves.scrolled(scroll, [], 4, []) == [scroll.rect]
    assert len(moves) == 1 and moves.version == 2
    # Mostly stale pixels under the move's source: not worth it.
    moves.read(4)
    assert moves.scrolled(scroll, [], 5, [Rect(0, 0, 50, 40)]) == [scroll.rect]
    moves.read(5)
    assert moves.scrolled(scroll, [], 6, [Rect(0, 0, 50, 2)]) == [Rect(0, 10, 50, 2)]
    moves.reset()
    assert len(moves) == 0 and moves.version == -1


def test_queue_is_bounded() -> None:
    moves = PendingMoves(max_moves=2)
    moves.read(0)
    scroll = Scroll(Rect(0, 0, 50, 50), -1)
    for version in (1, 2):
        assert moves.scrolled(scroll, [], version, []) == []
    assert moves.scrolled(scroll, [], 3, []) == [scroll.rect]
    assert len(moves.take()) == 2


# ------------------------------------------------------------------ the source notification


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def on_damage(self, rects: list[Rect]) -> None:
        self.calls.append(("damage", rects))

    def on_resize(self, width: int, height: int) -> None: ...

    def on_cursor(self, shape: object) -> None: ...

    def on_cursor_move(self, x: int, y: int) -> None: ...


class ScrollListener(Listener):
    def on_scroll(self, rect: Rect, dy: int, damage: list[Rect]) -> None:
        self.calls.append(("scroll", (rect, dy, damage)))


def test_scroll_notification_and_fallbacks() -> None:
    source = NumpySource(100, 80)
    old, new = Listener(), ScrollListener()
    source.add_listener(old)
    source.add_listener(new)
    strip = Rect(0, 70, 100, 10)
    source.scroll(Rect(0, 0, 100, 80), -10, [strip, Rect(90, 75, 50, 50)])
    assert source.version == 1
    clipped = [strip, Rect(90, 75, 10, 5)]
    assert new.calls == [("scroll", (Rect(0, 0, 100, 80), -10, clipped))]
    assert old.calls == [("damage", [Rect(0, 0, 100, 80), *clipped])]  # no on_scroll: damage
    # A move that leaves the frame, or none at all: damage for everyone.
    new.calls.clear()
    source.scroll(Rect(0, 10, 100, 80), 5)
    source.scroll(Rect(0, 0, 10, 10), 0)
    assert new.calls == [("damage", [Rect(0, 10, 100, 70)]), ("damage", [Rect(0, 0, 10, 10)])]
    assert source.version == 3


def test_scroll_from_another_thread_is_damage() -> None:
    import asyncio

    async def scenario() -> None:
        source = NumpySource(100, 80)
        await source.start()
        listener = ScrollListener()
        source.add_listener(listener)
        thread = threading.Thread(target=source.scroll, args=(Rect(0, 0, 100, 80), 4))
        thread.start()
        thread.join()
        await asyncio.sleep(0.05)
        assert listener.calls == [("damage", [Rect(0, 0, 100, 80)])]

    asyncio.run(scenario())
