"""An animated, deterministic test pattern.

Frame ``n`` is a pure function of ``n`` (:meth:`PatternSource.render`): static colour bars, a
grey ramp and a checkerboard, plus three animated parts — a colour gradient band that scrolls
sideways, a box that bounces around the lower half, and a seven-segment frame counter.  The
animation advances ``fps`` times a second and reports only the rectangles that changed.

:class:`PatternClickSource` adds sound for A/V sync: a click at the instant every ``every``-th
frame (by its visible counter) is painted, both on the monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import numpy as np

from spiceserver.sources.audio import AudioSource, ClickTrack
from spiceserver.sources.base import FramebufferSource, Head, Rect, bounding_size

__all__ = ["PatternClickSource", "PatternSource"]

# 75% SMPTE-style bars as (B, G, R): white, yellow, cyan, green, magenta, red, blue, black.
_BARS = [
    (191, 191, 191), (0, 191, 191), (191, 191, 0), (0, 191, 0),
    (191, 0, 191), (0, 0, 191), (191, 0, 0), (0, 0, 0),
]  # fmt: skip

# Seven-segment digits: segments a, b, c, d, e, f, g.
_DIGITS = [
    "abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg", "abcdfg",
]  # fmt: skip
_DIGIT_W, _DIGIT_H, _SEG = 24, 40, 5
_COUNTER_DIGITS = 6
_BOX = 64


class _HeadPattern:
    """The pattern of one head, drawn into that head's part of the frame (a view)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.background = _render_background(width, height)
        band = Rect(0, height * 2 // 5, width, 48)
        self.band = band.clip(width, height)
        self.arena = Rect(0, band.bottom, width, height - band.bottom)
        self.counter = Rect(16, 16, _COUNTER_DIGITS * (_DIGIT_W + 8) + 8, _DIGIT_H + 16)

    def render(self, view: np.ndarray, n: int) -> None:
        view[...] = self.background
        self.draw(view, n)

    def draw(self, view: np.ndarray, n: int) -> None:
        _draw_band(view, self.band, n)
        _draw_box(view, self.box_rect(n), n)
        _draw_counter(view, self.counter, n)

    def box_rect(self, n: int) -> Rect:
        arena = self.arena
        x = _triangle(n * 7, arena.width - _BOX)
        y = _triangle(n * 5, arena.height - _BOX)
        return Rect(arena.x + x, arena.y + y, _BOX, _BOX)

    def advance(self, view: np.ndarray, n: int) -> list[Rect]:
        """Repaint frame ``n - 1`` into frame ``n``; the changed rectangles, in the head."""
        old_box = self.box_rect(n - 1)
        bg = self.background
        view[old_box.y : old_box.bottom, old_box.x : old_box.right] = bg[
            old_box.y : old_box.bottom, old_box.x : old_box.right
        ]
        c = self.counter
        view[c.y : c.bottom, c.x : c.right] = bg[c.y : c.bottom, c.x : c.right]
        self.draw(view, n)
        rects = [self.band, old_box.union(self.box_rect(n)), c]
        return [r for r in (rect.clip(self.width, self.height) for rect in rects if rect) if r]


class PatternSource(FramebufferSource):
    """Colour bars, gradients, a moving box and a frame counter, changing ``fps`` times/s.

    With ``heads`` (several monitors; positions in frame pixels) each head shows a pattern of
    its own size, the frame is their bounding box and the rest of it is black.  The source
    follows the layouts clients ask for (:meth:`apply_layout`), any size and head count.
    """

    kind = "pattern"

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        fps: float = 30.0,
        *,
        heads: Sequence[Head] | None = None,
    ) -> None:
        if heads is not None:
            if width is not None or height is not None:
                raise ValueError("give a size or heads, not both")
            layout = _zero_based(tuple(heads))
            if any(h.width < 200 or h.height < 200 for h in layout):
                raise ValueError("each head of the pattern needs at least 200x200 pixels")
        else:
            width, height = width or 1024, height or 768
            if width < 200 or height < 200:
                raise ValueError("the pattern needs at least 200x200 pixels")
            layout = (Head(0, 0, width, height),)
        super().__init__(*bounding_size(layout))
        self.fps = fps
        self.frame_index = 0
        #: The layout at construction: what :meth:`restore_layout` goes back to.
        self.original_heads = layout
        self._set_layout(layout)
        self._task: asyncio.Task[None] | None = None
        self._running = asyncio.Event()
        self._running.set()
        self.frame = self.render(0)

    def _set_layout(self, layout: tuple[Head, ...]) -> None:
        self._heads = layout
        self._painters = _painters(layout)

    # ------------------------------------------------------------------ heads

    def heads(self) -> tuple[Head, ...]:
        return self._heads

    async def apply_layout(self, heads: tuple[Head, ...]) -> bool:
        """Take the layout: the frame becomes the heads' bounding box, each head drawn at its
        size.  False (nothing changed) for an empty layout or a head without a size."""
        if not heads or any(h.width <= 0 or h.height <= 0 for h in heads):
            return False
        layout = _zero_based(tuple(heads))
        n = self.frame_index
        # A 4K head's background takes a second to draw: not on the event loop.
        painters, frame = await asyncio.to_thread(_prepare, layout, n)
        self._heads, self._painters = layout, painters
        self.frame_index = n  # the frame drawn; the animation goes on from it
        self.replace_frame(frame)
        self.set_heads(layout)
        return True

    async def restore_layout(self) -> None:
        await self.apply_layout(self.original_heads)

    # ------------------------------------------------------------------ rendering

    def render(self, n: int) -> np.ndarray:
        """Frame ``n``, from scratch."""
        return _render(self._heads, self._painters, n)

    def box_rect(self, n: int) -> Rect:
        """Where the first head's bouncing box is in frame ``n``."""
        head, painter = self._painters[0]
        box = painter.box_rect(n)
        return Rect(head.x + box.x, head.y + box.y, box.width, box.height)

    def advance(self) -> list[Rect]:
        """Step to the next frame in place; returns the damaged rectangles."""
        n = self.frame_index + 1
        rects = [
            Rect(head.x + rect.x, head.y + rect.y, rect.width, rect.height)
            for head, painter in self._painters
            for rect in painter.advance(_view(self.frame, head), n)
        ]
        self.frame_index = n
        return rects

    # ------------------------------------------------------------------ animation

    async def start(self) -> None:
        await super().start()
        if self._task is None and self.fps > 0:
            self._task = asyncio.create_task(self._animate(), name="pattern-source")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def pause(self) -> None:
        """Freeze on the current frame (tests compare against ``render(frame_index)``)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    async def _animate(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.fps
        deadline = loop.time()
        while True:
            await self._running.wait()
            deadline = max(deadline + period, loop.time() - period)
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            if not self._running.is_set():
                continue
            self.damage(self.advance())


class PatternClickSource(PatternSource):
    """The pattern, and a click (``ClickTrack``: 5 ms of 2 kHz) when each frame whose counter
    is a multiple of ``every`` is painted: the server's sound (:meth:`audio_source`).

    The click is stamped with the ``time.monotonic()`` of the frame's damage (the clock the
    ClickTrack paces on and the audio hub stamps with), and logged as (frame, time) in
    ``clicks.log``: a client's A/V offset is when it shows that frame against when it gets
    that click (``python -m tests.interop.bench_av_sync``)."""

    kind = "pattern-clicks"

    def __init__(
        self, width: int | None = None, height: int | None = None, fps: float = 30.0,
        every: int = 15,
    ) -> None:  # fmt: skip
        if every < 1:
            raise ValueError("every must be at least 1")
        super().__init__(width, height, fps)
        self.every = every
        self.clicks = ClickTrack()

    def audio_source(self) -> AudioSource | None:
        return self.clicks

    def advance(self) -> list[Rect]:
        rects = super().advance()
        if self.frame_index % self.every == 0:
            self.clicks.click(self.frame_index, time.monotonic())
        return rects


_Painters = list[tuple[Head, _HeadPattern]]


def _painters(layout: tuple[Head, ...]) -> _Painters:
    return [(head, _HeadPattern(head.width, head.height)) for head in layout]


def _render(layout: tuple[Head, ...], painters: _Painters, n: int) -> np.ndarray:
    frame = np.zeros((*bounding_size(layout)[::-1], 4), dtype=np.uint8)
    for head, painter in painters:
        painter.render(_view(frame, head), n)
    return frame


def _prepare(layout: tuple[Head, ...], n: int) -> tuple[_Painters, np.ndarray]:
    """The painters of ``layout`` and its frame ``n`` (run in a worker thread)."""
    painters = _painters(layout)
    return painters, _render(layout, painters, n)


def _zero_based(heads: tuple[Head, ...]) -> tuple[Head, ...]:
    """The layout moved so its top-left corner is (0, 0)."""
    if not heads:
        raise ValueError("a layout needs at least one head")
    x0, y0 = min(h.x for h in heads), min(h.y for h in heads)
    return tuple(
        Head(h.x - x0, h.y - y0, h.width, h.height, h.width_mm, h.height_mm) for h in heads
    )


def _view(frame: np.ndarray, head: Head) -> np.ndarray:
    return frame[head.y : head.y + head.height, head.x : head.x + head.width]


def _render_background(width: int, height: int) -> np.ndarray:
    frame = np.zeros((height, width, 4), dtype=np.uint8)
    bars_h = height * 2 // 5
    edges = np.linspace(0, width, len(_BARS) + 1).astype(int)
    for (b, g, r), x0, x1 in zip(_BARS, edges[:-1], edges[1:], strict=True):
        frame[:bars_h, x0:x1, :3] = (b, g, r)
    # Below the band: a grey ramp, then a 1-px/8-px checkerboard strip.
    top = bars_h + 48
    ramp = (np.arange(width) * 255 // max(1, width - 1)).astype(np.uint8)
    frame[top : top + 32, :, 0] = ramp
    frame[top : top + 32, :, 1] = ramp
    frame[top : top + 32, :, 2] = ramp
    ys, xs = np.mgrid[min(top + 32, height) : height, 0:width]
    fine = ((xs + ys) & 1) * 255
    coarse = (((xs >> 3) + (ys >> 3)) & 1) * 200 + 30
    checker = np.where(xs < width // 4, fine, coarse).astype(np.uint8)
    for channel in range(3):
        frame[min(top + 32, height) :, :, channel] = checker
    return frame


def _draw_band(frame: np.ndarray, band: Rect | None, n: int) -> None:
    if band is None:  # a head too short for it
        return
    xs = np.arange(band.width, dtype=np.int64) + 6 * n
    ys = np.arange(band.height, dtype=np.int64)[:, None]
    region = frame[band.y : band.bottom, band.x : band.right]
    region[..., 0] = (xs[None, :] * 3 + ys * 2) & 0xFF
    region[..., 1] = (xs[None, :] * 2 - ys * 3) & 0xFF
    region[..., 2] = (255 - xs[None, :]) & 0xFF


def _draw_box(frame: np.ndarray, box: Rect, n: int) -> None:
    hue = n % 6
    colour = [(0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0),
              (255, 0, 255)][hue]  # fmt: skip
    frame[box.y : box.bottom, box.x : box.right, :3] = colour
    frame[box.y + 8 : box.bottom - 8, box.x + 8 : box.right - 8, :3] = 255 - np.array(
        colour, dtype=np.uint8
    )


def _draw_counter(frame: np.ndarray, c: Rect, n: int) -> None:
    frame[c.y : c.bottom, c.x : c.right, :3] = 16
    text = f"{n % 10**_COUNTER_DIGITS:0{_COUNTER_DIGITS}d}"
    for i, digit in enumerate(text):
        x = c.x + 8 + i * (_DIGIT_W + 8)
        _draw_digit(frame, x, c.y + 8, int(digit))


def _triangle(t: int, span: int) -> int:
    """A triangle wave over 0..span."""
    if span <= 0:
        return 0
    t %= 2 * span
    return t if t <= span else 2 * span - t


def _draw_digit(frame: np.ndarray, x: int, y: int, digit: int) -> None:
    w, h, s = _DIGIT_W, _DIGIT_H, _SEG
    half = h // 2
    segments = {
        "a": (x, y, w, s),
        "b": (x + w - s, y, s, half),
        "c": (x + w - s, y + half, s, half),
        "d": (x, y + h - s, w, s),
        "e": (x, y + half, s, half),
        "f": (x, y, s, half),
        "g": (x, y + half - s // 2, w, s),
    }
    for name in _DIGITS[digit]:
        sx, sy, sw, sh = segments[name]
        frame[sy : sy + sh, sx : sx + sw, :3] = (64, 255, 64)
