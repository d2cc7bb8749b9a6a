"""A scripted source: a JSON scenario says exactly what the screen shows, and when.

For people testing SPICE clients: a test states the frames, sizes and cursors it wants, connects,
and compares what its client shows with what the scenario says it must show.

Theory of operation
-------------------
1. **Compile** (:mod:`spiceserver.sources._scenario_script`, at construction, so a bad file is a
   :class:`~spiceserver.errors.ConfigError` at start-up, never mid-run).  Every image and cursor
   file is loaded then: no disk I/O or image decoding ever blocks the event loop later.
2. **Timeline**: the compiled steps become operations (paint, resize, cursor, disconnect) and
   ``At(t)`` marks, *t* in seconds from the start.  The timeline is pure, so the live source
   and the offline renderers (:meth:`ScenarioSource.render_steps`,
   :meth:`ScenarioSource.final_state`) walk the very same sequence and paint with the very same
   function (:func:`_paint`): the same scenario gives the same frames every time.
3. **Play**: the operations before the first ``At`` are applied at construction (the frame a
   client sees first).  When the scenario starts, a task sleeps until each ``At`` (deadlines
   from the start, so waits never drift) and applies the operations that follow it.

Start rule: by default the clock starts when the first client's display channel links (so a
test that connects sees the whole scenario); ``"start": "immediately"`` starts it with the
server.  The scenario plays once per server; later clients see what it shows when they join,
or its last frame once it has ended.  ``"after": "restart"`` rewinds it at the end and replays
it for the next client (at once with ``"start": "immediately"``: a loop).

Sound: a scenario with ``tone`` steps has a :class:`~spiceserver.sources.audio.ToneSwitch`
(:meth:`ScenarioSource.audio_source`), which the server plays on its playback channel; a tone
step switches it at its instant on the timeline, like a drawing step.  Tones before the first
wait start with the clock (not at construction: nobody listens yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiceserver.clipboard import (
    ClipboardType,
    MemoryClipboard,
    Selection,
)
from spiceserver.config import CLIPBOARD_MAX_BYTES, CLIPBOARD_TIMEOUT
from spiceserver.protocol.display import DisplayChannel
from spiceserver.protocol.messages import CursorShape
from spiceserver.sources._scenario_media import VideoFrame, paint_video
from spiceserver.sources._scenario_script import (
    MAX_CURSOR_SIDE,
    MAX_OPERATIONS,
    MAX_PRELOAD_PIXELS,
    MAX_SURFACE_PIXELS,
    MAX_SURFACE_SIDE,
    At,
    ClipboardStep,
    CursorStep,
    Disconnect,
    Fill,
    Move,
    Op,
    PatternFrame,
    Resize,
    Script,
    Show,
    Tone,
    compile_script,
    has_clipboard,
    has_tone,
    read_json,
    timeline,
)
from spiceserver.sources.audio import AudioSource, ToneSwitch
from spiceserver.sources.base import (
    FramebufferSource,
    Head,
    Rect,
    SourceListener,
    default_cursor,
)
from spiceserver.sources.pattern import PatternSource

__all__ = [
    "MAX_CURSOR_SIDE",
    "MAX_OPERATIONS",
    "MAX_PRELOAD_PIXELS",
    "MAX_SURFACE_PIXELS",
    "MAX_SURFACE_SIDE",
    "ScenarioSource",
    "ScenarioState",
]

logger = logging.getLogger("spiceserver.scenario")


@dataclass(frozen=True, slots=True, eq=False)
class ScenarioState:
    """What the scenario shows from ``time`` (seconds after its start) on."""

    time: float
    #: (height, width, 4) uint8, B, G, R, X (X = 0), like FramebufferSource.frame.
    frame: np.ndarray
    #: The cursor shape; None when hidden.
    cursor: CursorShape | None
    #: The last ``move`` step's position; None before any.
    cursor_position: tuple[int, int] | None
    #: ``disconnect`` steps executed so far.
    disconnects: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.frame.shape[1], self.frame.shape[0]


# ---------------------------------------------------------------------- the source


class ScenarioSource(FramebufferSource):
    """Plays a JSON scenario: images, fills, test-pattern frames, resizes, cursors, waits.

    Args:
        scenario: the parsed JSON (a dict with ``steps``, or just the list of steps), or the
            path of a JSON file.
        base_dir: where relative image paths start (default: the file's folder, or the
            current directory for a dict).

    Raises:
        ConfigError: the scenario is invalid; the message names the step.
    """

    kind = "scenario"

    def __init__(
        self,
        scenario: dict[str, Any] | list[Any] | str | Path,
        *,
        base_dir: str | Path | None = None,
    ) -> None:
        if isinstance(scenario, str | Path):
            path = Path(scenario)
            spec: Any = read_json(path)
            name = str(path)
            base = Path(base_dir) if base_dir is not None else path.parent
        else:
            spec, name = scenario, "scenario"
            base = Path(base_dir) if base_dir is not None else Path.cwd()
        self._script = compile_script(spec, base, name)
        super().__init__(*self._script.size)
        #: ``waiting`` (for its start), ``running`` or ``done``.
        self.state = "waiting"
        #: Completed runs (more than one with ``"after": "restart"``).
        self.runs = 0
        #: Set when a run completes (cleared when one begins): ``await source.finished.wait()``.
        self.finished = asyncio.Event()
        self.cursor_position: tuple[int, int] | None = None
        self.disconnects = 0
        self._task: asyncio.Task[None] | None = None
        self._ops: Iterator[Op] = iter(())
        self._held: Op | None = None
        #: The sound of the tone steps; None: the scenario has none.
        self._sound = ToneSwitch() if has_tone(self._script.steps) else None
        #: The last tone step before the first wait: played when the clock starts.
        self._first_tone: Tone | None = None
        #: The clipboard steps' "desktop" side; None: the scenario has none.
        self._clipboard = MemoryClipboard() if has_clipboard(self._script.steps) else None
        self._rewind()

    @classmethod
    def from_file(cls, path: str | Path) -> ScenarioSource:
        """The scenario in a JSON file; image paths are relative to its folder."""
        return cls(Path(path))

    # ------------------------------------------------------------------ offline rendering

    @property
    def duration(self) -> float:
        """Seconds from the start to the end of the scenario (its waits and animations)."""
        return self._script.duration

    @property
    def start_rule(self) -> str:
        """``client`` (the first display channel starts it) or ``immediately``."""
        return self._script.start

    def render_steps(self) -> Iterator[ScenarioState]:
        """Every state the scenario shows, in order, computed offline (pure and repeatable).

        One state per instant at which a step draws or sets the cursor: the first is what a
        client sees at the start (time 0), the last is the end state, at :attr:`duration`.
        """
        sim = _Simulation(self._script)
        now, changed = 0.0, True
        for op in timeline(self._script):
            if isinstance(op, At):
                if op.time > now:
                    if changed:
                        yield sim.snapshot(now)
                    now, changed = op.time, False
            else:
                sim.apply(op)
                changed = changed or not isinstance(op, Tone | ClipboardStep)
        yield sim.snapshot(now)

    def final_state(self) -> ScenarioState:
        """The end state (last frame, its size, cursor), computed offline."""
        sim = _Simulation(self._script)
        now = 0.0
        for op in timeline(self._script):
            if isinstance(op, At):
                now = max(now, op.time)
            else:
                sim.apply(op)
        return sim.snapshot(now)

    def final_frame(self) -> np.ndarray:
        """The last frame, (height, width, 4) B, G, R, X, computed offline."""
        return self.final_state().frame

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await super().start()
        if self._script.start == "immediately":
            self.begin()

    def heads(self) -> tuple[Head, ...]:
        """The scenario's ``"heads"`` while the frame has its start size; else one head (a
        scripted screen keeps its script: it does not follow clients' layouts)."""
        heads = self._script.heads
        if heads and self.size == self._script.size:
            return tuple(Head(*head) for head in heads)
        return super().heads()

    def audio_source(self) -> AudioSource | None:
        """The tone steps' sound (None without tone steps): the server plays it."""
        return self._sound

    def clipboard_backend(
        self, max_bytes: int = CLIPBOARD_MAX_BYTES, timeout: float = CLIPBOARD_TIMEOUT
    ) -> MemoryClipboard | None:
        """The clipboard steps' clipboard (None without them): the server shares it with
        the clients, and what clients copy can be read from it (``fetch``)."""
        return self._clipboard

    async def stop(self) -> None:
        if self._sound is not None:
            self._sound.set(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def begin(self) -> None:
        """Start the clock now (on the loop thread); a no-op unless waiting.

        The ``client`` start rule calls it when a display channel links; tests and embedding
        programs may call it themselves.
        """
        if self.state != "waiting" or self._loop is None:
            return
        self.state = "running"
        self.finished.clear()
        logger.info("%s: scenario started (%.3fs long)", self._script.name, self.duration)
        self._task = asyncio.create_task(self._play(), name="scenario-source")

    def add_listener(self, listener: SourceListener) -> None:
        super().add_listener(listener)
        if self.cursor_position is not None:
            # A cursor channel that joins late is told where the scenario put the pointer.
            listener.on_cursor_move(*self.cursor_position)
        if self._script.start == "client" and _is_display(listener):
            self.begin()

    # ------------------------------------------------------------------ playing

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            held, self._held = self._held, None
            if self._first_tone is not None:
                self._apply(self._first_tone)
                self._first_tone = None
            pending = self._ops if held is None else _prepend(held, self._ops)
            for op in pending:
                if isinstance(op, At):
                    delay = started + op.time - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    self._apply(op)
            self.state = "done"
            self.runs += 1
            self.finished.set()
            logger.info("%s: scenario finished (run %d)", self._script.name, self.runs)
            if self._script.after != "restart":
                return
            self._rewind()
            if self._script.start == "client":
                return  # the next display channel to link begins the next run
            self.state = "running"
            self.finished.clear()

    def _rewind(self) -> None:
        """Back to time 0: the initial surface, then the steps before the first wait."""
        self.state = "waiting"
        width, height = self._script.size
        self._apply(Resize("start", width, height, self._script.background))
        if self.runs:  # a replay starts from the same cursor as the first run
            self.set_cursor(default_cursor())
            self.cursor_position = None
        self._ops = timeline(self._script)
        self._held = self._first_tone = None
        if self._sound is not None:
            self._sound.set(None)
        for op in self._ops:
            if isinstance(op, Tone):
                self._first_tone = op
                continue
            # A disconnect needs the server, and an At the clock: both wait for begin().
            if isinstance(op, At | Disconnect):
                self._held = op
                break
            self._apply(op)

    def _apply(self, op: Op) -> None:
        if isinstance(op, ClipboardStep):
            assert self._clipboard is not None  # made whenever a clipboard step exists
            selection = Selection.PRIMARY if op.selection == "primary" else Selection.CLIPBOARD
            self._clipboard.offer(selection, {ClipboardType.UTF8_TEXT: op.text.encode()})
        elif isinstance(op, Tone):
            assert self._sound is not None  # made whenever a tone step exists
            self._sound.set(op.frequency, op.seconds)
        elif isinstance(op, CursorStep):
            self.set_cursor(op.shape)
        elif isinstance(op, Move):
            self.cursor_position = (op.x, op.y)
            self.move_cursor(op.x, op.y)
        elif isinstance(op, Disconnect):
            self.disconnects += 1
            if not self.request_disconnect():
                logger.warning(
                    "%s: %s: disconnect, but no server is listening", self._script.name, op.where
                )
        elif not isinstance(op, At):
            frame, rects = _paint(op, self.frame, self._script.patterns)
            if frame is not self.frame:
                self.replace_frame(frame)
            else:
                self.damage(rects)


def _is_display(listener: object) -> bool:
    """Whether a listener serves a client's display channel (the server sets ``channel``
    before it adds the listener); other listeners — cursor channels, recorders — are not."""
    return isinstance(getattr(listener, "channel", None), DisplayChannel)


def _prepend(first: Op, rest: Iterator[Op]) -> Iterator[Op]:
    yield first
    yield from rest


# ---------------------------------------------------------------------- painting


def _paint(
    op: Op, frame: np.ndarray, patterns: dict[tuple[int, int], PatternSource]
) -> tuple[np.ndarray, list[Rect] | None]:
    """Apply a drawing operation: a new frame array (whole-frame change, maybe a new size), or
    ``frame`` changed in place and the rectangles that changed."""
    if isinstance(op, Show):
        if op.at is None:
            return op.image.copy(), None
        x, y = op.at
        height, width = op.image.shape[:2]
        frame[y : y + height, x : x + width] = op.image
        return frame, [Rect(x, y, width, height)]
    if isinstance(op, Fill):
        rect = op.rect or Rect(0, 0, frame.shape[1], frame.shape[0])
        frame[rect.y : rect.bottom, rect.x : rect.right] = (*op.bgr, 0)
        return frame, [rect]
    if isinstance(op, Resize):
        new = np.empty((op.height, op.width, 4), dtype=np.uint8)
        new[:] = (*op.bgr, 0)
        return new, None
    if isinstance(op, VideoFrame):
        return frame, paint_video(op, frame)
    if isinstance(op, PatternFrame):
        pattern = patterns[(frame.shape[1], frame.shape[0])]
        if not op.advance:
            return pattern.render(op.n), None
        # PatternSource.advance repaints only what moved, in place; it works on its own
        # ``frame``, so lend it ours (which holds frame n - 1) for the call.
        own = pattern.frame
        pattern.frame, pattern.frame_index = frame, op.n - 1
        try:
            rects = pattern.advance()
        finally:
            pattern.frame = own
        return frame, rects
    raise TypeError(f"not a drawing operation: {op!r}")


class _Simulation:
    """The offline twin of a live ScenarioSource: the same operations on a private frame."""

    def __init__(self, script: Script) -> None:
        self.script = script
        width, height = script.size
        self.frame, _ = _paint(
            Resize("start", width, height, script.background),
            np.zeros((1, 1, 4), np.uint8),
            script.patterns,
        )
        self.cursor: CursorShape | None = default_cursor()
        self.position: tuple[int, int] | None = None
        self.disconnects = 0

    def apply(self, op: Op) -> None:
        if isinstance(op, CursorStep):
            self.cursor = op.shape
        elif isinstance(op, Move):
            self.position = (op.x, op.y)
        elif isinstance(op, Disconnect):
            self.disconnects += 1
        elif not isinstance(op, Tone | ClipboardStep):  # sound, clipboard: not in the frames
            self.frame, _ = _paint(op, self.frame, self.script.patterns)

    def snapshot(self, time: float) -> ScenarioState:
        return ScenarioState(time, self.frame.copy(), self.cursor, self.position, self.disconnects)
