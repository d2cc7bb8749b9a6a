"""Scenario scripts, pure: JSON in, compiled steps and a timeline of operations out.

:func:`compile_script` checks a scenario step by step (errors name the step, like
``steps[2].steps[0] (fill)``), loads every image and cursor file once, and follows the surface
size through the steps so rectangles, pastes, cursor positions and test-pattern sizes are
checked against the size they will meet.  :func:`timeline` turns the compiled steps into
drawing, cursor and disconnect operations separated by :class:`At` time marks.  Nothing here
paints or sleeps: :mod:`spiceserver.sources.scenario` does, live and offline, from the same
timeline.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from spiceserver.errors import ConfigError
from spiceserver.protocol.messages import CursorShape
from spiceserver.sources._scenario_media import (
    Video,
    VideoFrame,
    _load_cursor_image,
    check_video_fits,
    compile_photo,
    compile_video,
    run_video,
)
from spiceserver.sources.base import Rect, default_cursor
from spiceserver.sources.image import load_image
from spiceserver.sources.pattern import PatternSource

__all__ = [
    "MAX_CURSOR_SIDE",
    "MAX_OPERATIONS",
    "MAX_PRELOAD_PIXELS",
    "MAX_SURFACE_PIXELS",
    "MAX_SURFACE_SIDE",
    "At",
    "ClipboardStep",
    "CursorStep",
    "Disconnect",
    "Fill",
    "Move",
    "Op",
    "PatternFrame",
    "Resize",
    "Script",
    "Show",
    "Tone",
    "compile_script",
    "has_clipboard",
    "has_tone",
    "read_json",
    "script_duration",
    "timeline",
]

#: Largest surface side and area a scenario may ask for (a 16 Mpx frame is 64 MiB).
MAX_SURFACE_SIDE = 8192
MAX_SURFACE_PIXELS = 16 * 1024 * 1024
#: Largest cursor side (the usual hardware-cursor limit; a 256×256 shape is 256 KiB).
MAX_CURSOR_SIDE = 256
#: Every image is held in memory from the start: at most this many pixels in all (256 MiB).
MAX_PRELOAD_PIXELS = 64 * 1024 * 1024
#: Steps executed in one run, counting repeats and animation frames: bounds the offline
#: renderers and keeps a typo like ``"repeat": 1e9`` from meaning days.
MAX_OPERATIONS = 1_000_000
_MAX_DEPTH = 16
_MAX_WAIT = 86_400.0
_MAX_FPS = 240.0
_MAX_PATTERN_FRAME = 10**9
#: Tone frequencies: audible, and below the Nyquist frequency of 48 kHz audio.
_TONE_HZ = (20.0, 20000.0)
#: Largest clipboard text a step may set (bytes of UTF-8).
_MAX_CLIPBOARD = 1024 * 1024
_DEFAULT_SIZE = (1024, 768)
#: High bits of the ``unique`` of a scenario cursor, so it never equals the default cursor's 1.
_CURSOR_UNIQUE_BASE = 0x5CE7_0000_0000


# Compiled steps, one class per action; ``where`` names the step in error messages.


@dataclass(frozen=True, slots=True, eq=False)
class Show:
    """``{"show": FILE}``: the image becomes the frame; with ``at``, pasted there."""

    where: str
    image: np.ndarray  # read-only, shared by every step showing the same file
    at: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Fill:
    """``{"fill": COLOUR, "rect": [x, y, w, h]}`` (no rect: the whole surface)."""

    where: str
    bgr: tuple[int, int, int]
    rect: Rect | None


@dataclass(frozen=True, slots=True)
class Pattern:
    """``{"pattern": N, "frames": K, "fps": F}``: test-pattern frames N … N+K-1."""

    where: str
    first: int
    frames: int | None  # None: one still frame, no time taken
    fps: float


@dataclass(frozen=True, slots=True)
class CursorStep:
    """``{"cursor": FILE | "default" | "hide"}``."""

    where: str
    shape: CursorShape | None


@dataclass(frozen=True, slots=True)
class Move:
    """``{"move": [x, y]}``: the cursor position."""

    where: str
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Resize:
    """``{"resize": [w, h], "fill": COLOUR}``: a new surface, filled."""

    where: str
    width: int
    height: int
    bgr: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Wait:
    """``{"wait": SECONDS}``."""

    where: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Repeat:
    """``{"repeat": N, "steps": [...]}``."""

    where: str
    count: int
    body: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class End:
    """``{"end": true}``: the run stops here, holding the last frame."""

    where: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    """``{"disconnect": true}``: the server ends every client session."""

    where: str


@dataclass(frozen=True, slots=True)
class Tone:
    """``{"tone": HZ}`` / ``{"tone": HZ, "seconds": S}`` / ``{"tone": "off"}``: the sound.

    Takes no scenario time: the tone plays on (for ``seconds``, or until the next tone step)
    while the following steps run."""

    where: str
    frequency: float | None  # None: off
    seconds: float | None  # None: until the next tone step


@dataclass(frozen=True, slots=True)
class ClipboardStep:
    """``{"clipboard": "text"}`` / ``{"clipboard": "text", "selection": "primary"}``: the
    scenario's "desktop" owns the selection with that UTF-8 text (clients are offered it).
    Takes no scenario time."""

    where: str
    text: str
    selection: str  # "clipboard" or "primary"


Step = (
    Show
    | Fill
    | Pattern
    | CursorStep
    | Move
    | Resize
    | Wait
    | Repeat
    | End
    | Disconnect
    | Tone
    | ClipboardStep
    | Video
)


# Timeline operations besides the steps that are applied as they are.
@dataclass(frozen=True, slots=True)
class At:
    """Wait until ``time`` seconds after the start before the next operation."""

    time: float


@dataclass(frozen=True, slots=True)
class PatternFrame:
    """Test-pattern frame ``n``; ``advance``: frame n-1 is on screen, repaint what changed."""

    n: int
    advance: bool


Drawing = Show | Fill | Resize | PatternFrame | VideoFrame
Op = Drawing | CursorStep | Move | Disconnect | Tone | ClipboardStep | At


@dataclass(frozen=True, slots=True, eq=False)
class Script:
    """A compiled scenario: what :func:`timeline` and the source need, nothing from JSON."""

    name: str
    steps: tuple[Step, ...]
    size: tuple[int, int]
    background: tuple[int, int, int]
    start: str
    after: str
    #: One PatternSource per size a pattern step meets, built at compile time (its background
    #: takes a few milliseconds to render: not something to do mid-run on the loop).
    patterns: dict[tuple[int, int], PatternSource]
    #: Seconds from start to end, computed once (walking a long timeline takes a while).
    duration: float = 0.0
    #: ``"heads"``: monitors as (x, y, width, height) of the start-size frame (empty: one).
    heads: tuple[tuple[int, int, int, int], ...] = ()


# ---------------------------------------------------------------------- timeline


class _Clock:
    """Where a timeline walk is: scenario seconds so far, and whether an end step ran."""

    __slots__ = ("ended", "time")

    def __init__(self) -> None:
        self.time = 0.0
        self.ended = False


def timeline(script: Script) -> Iterator[Op]:
    """The scenario as operations and time marks; pure, the same every time."""
    return _run_steps(script.steps, _Clock())


def _run_steps(steps: tuple[Step, ...], clock: _Clock) -> Iterator[Op]:
    for step in steps:
        if clock.ended:
            return
        if isinstance(step, Wait):
            clock.time += step.seconds
            yield At(clock.time)
        elif isinstance(step, Repeat):
            for _ in range(step.count):
                yield from _run_steps(step.body, clock)
                if clock.ended:
                    return
        elif isinstance(step, End):
            clock.ended = True
        elif isinstance(step, Pattern):
            yield from _run_pattern(step, clock)
        elif isinstance(step, Video):  # _scenario_media.py
            for op in run_video(step, clock.time):
                yield At(op) if isinstance(op, float) else op
            clock.time += step.frames / step.fps
        else:
            yield step


def _run_pattern(step: Pattern, clock: _Clock) -> Iterator[Op]:
    yield PatternFrame(step.first, advance=False)
    if step.frames is None:
        return
    # Frame k shows at start + k/fps (not a running sum: no drift over long animations), and
    # the last one is held for 1/fps like the others.
    start = clock.time
    for k in range(1, step.frames):
        yield At(start + k / step.fps)
        yield PatternFrame(step.first + k, advance=True)
    clock.time = start + step.frames / step.fps
    yield At(clock.time)


def script_duration(script: Script) -> float:
    """Seconds from the start to the end of the scenario (its waits and animations)."""
    end = 0.0
    for op in timeline(script):
        if isinstance(op, At):
            end = max(end, op.time)
    return end


# ---------------------------------------------------------------------- compiling


def read_json(path: Path) -> Any:
    """A JSON file's content; ConfigError naming the file, and the line for bad JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


_COLOUR_HELP = 'a colour is "#rrggbb" or [r, g, b] with 0..255 values'


class Compiler:
    """JSON → compiled steps, loading every file once; errors name the step."""

    #: Action key → (compile method, the option keys it accepts).
    ACTIONS: ClassVar[dict[str, tuple[str, frozenset[str]]]] = {
        "show": ("_show", frozenset({"at"})),
        "fill": ("_fill", frozenset({"rect"})),
        "pattern": ("_pattern", frozenset({"frames", "fps"})),
        "cursor": ("_cursor", frozenset({"hot"})),
        "move": ("_move", frozenset()),
        "resize": ("_resize", frozenset({"fill"})),
        "wait": ("_wait", frozenset()),
        "repeat": ("_repeat", frozenset({"steps"})),
        "end": ("_end", frozenset()),
        "disconnect": ("_disconnect", frozenset()),
        "tone": ("_tone", frozenset({"seconds"})),
        "clipboard": ("_clipboard", frozenset({"selection"})),
        "photo": ("_photo", frozenset({"seed"})),
        "video": ("_video", frozenset({"frames", "fps", "seed", "motion", "trail"})),
    }
    TOP_KEYS = frozenset({"steps", "size", "background", "start", "after", "heads", "comment"})

    def __init__(self, base_dir: Path, name: str) -> None:
        self.base_dir = base_dir
        self.name = name
        self.images: dict[Path, np.ndarray] = {}
        self.cursors: dict[tuple[Path, int, int], CursorShape] = {}
        self.preloaded = 0
        self.patterns: dict[tuple[int, int], PatternSource] = {}

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.name}: {where}: {message}")

    def script(self, spec: Any) -> Script:
        if isinstance(spec, list):
            spec = {"steps": spec}
        if not isinstance(spec, dict):
            raise self.error("top level", 'expected an object with "steps", or a list of steps')
        unknown = sorted(set(spec) - self.TOP_KEYS)
        if unknown:
            raise self.error(
                "top level",
                f"unknown key {unknown[0]!r} (known: {', '.join(sorted(self.TOP_KEYS))})",
            )
        if "steps" not in spec:
            raise self.error("top level", 'no "steps"')
        size = self.size(spec.get("size", list(_DEFAULT_SIZE)), "size", "size")
        background = self.colour(spec.get("background", [0, 0, 0]), "background")
        start = self.choice(spec.get("start", "client"), "start", ("client", "immediately"))
        after = self.choice(spec.get("after", "hold"), "after", ("hold", "restart"))
        steps = self.steps(spec["steps"], "steps", 0)
        if not steps:
            raise self.error("steps", "the scenario has no steps")
        operations = _count_operations(steps)
        if operations > MAX_OPERATIONS:
            raise self.error(
                "steps",
                f"{operations} steps would run (repeats and animation "
                f"frames counted); at most {MAX_OPERATIONS}",
            )
        self.check_sizes(steps, size)
        script = Script(self.name, steps, size, background, start, after, self.patterns)
        heads = self.heads(spec.get("heads", []), size)
        script = dataclasses.replace(script, duration=script_duration(script), heads=heads)
        if start == "immediately" and after == "restart" and script.duration < 0.1:
            raise self.error(
                "after", "a scenario that restarts by itself must last at least 0.1s (add a wait)"
            )
        return script

    def steps(self, value: Any, where: str, depth: int) -> tuple[Step, ...]:
        if not isinstance(value, list):
            raise self.error(where, f"expected a list of steps, got {_kind(value)}")
        if depth > _MAX_DEPTH:
            raise self.error(where, f"repeats nested more than {_MAX_DEPTH} deep")
        return tuple(self.step(item, f"{where}[{i}]", depth) for i, item in enumerate(value))

    def step(self, value: Any, where: str, depth: int) -> Step:
        if not isinstance(value, dict):
            raise self.error(where, f'a step is an object like {{"wait": 1}}, got {_kind(value)}')
        actions = [key for key in value if key in self.ACTIONS]
        if "resize" in actions and "fill" in actions:
            actions.remove("fill")  # {"resize": [w, h], "fill": colour}: fill is an option
        if len(actions) != 1:
            found = (
                f"found {', '.join(map(repr, actions))}"
                if actions
                else f"got only {', '.join(map(repr, value)) or 'an empty object'}"
            )
            raise self.error(
                where, f"a step needs exactly one of {', '.join(self.ACTIONS)} ({found})"
            )
        action = actions[0]
        method, options = self.ACTIONS[action]
        where = f"{where} ({action})"
        unknown = sorted(set(value) - {action, "comment"} - options)
        if unknown:
            allowed = ", ".join(sorted(options)) or "none"
            raise self.error(where, f"unknown key {unknown[0]!r} (options: {allowed})")
        compile_step: Callable[[dict[str, Any], str, int], Step] = getattr(self, method)
        return compile_step(value, where, depth)

    # ------------------------------------------------------------------ one method per action

    def _show(self, step: dict[str, Any], where: str, depth: int) -> Step:
        image = self.image(step["show"], where)
        at = self.point(step["at"], where, "at") if "at" in step else None
        return Show(where, image, at)

    def _fill(self, step: dict[str, Any], where: str, depth: int) -> Step:
        rect = None
        if "rect" in step:
            value = step["rect"]
            if not (isinstance(value, list) and len(value) == 4 and all(map(_is_int, value))):
                raise self.error(where, f"rect is [x, y, width, height], got {value!r}")
            x, y, width, height = value
            if x < 0 or y < 0 or width <= 0 or height <= 0:
                raise self.error(where, f"rect {value} needs x, y >= 0 and a positive size")
            rect = Rect(x, y, width, height)
        return Fill(where, self.colour(step["fill"], where), rect)

    def _pattern(self, step: dict[str, Any], where: str, depth: int) -> Step:
        first = self.integer(
            step["pattern"], where, "the pattern frame number", 0, _MAX_PATTERN_FRAME
        )
        if "frames" not in step:
            if "fps" in step:
                raise self.error(where, "fps needs frames (how many frames to animate)")
            return Pattern(where, first, None, 30.0)
        frames = self.integer(step["frames"], where, "frames", 1, MAX_OPERATIONS)
        fps = self.number(step.get("fps", 30.0), where, "fps", 0.0, _MAX_FPS)
        if fps <= 0:
            raise self.error(where, "fps must be above 0")
        return Pattern(where, first, frames, fps)

    def _cursor(self, step: dict[str, Any], where: str, depth: int) -> Step:
        value = step["cursor"]
        if value is None or value == "hide":
            shape = None
        elif value == "default":
            shape = default_cursor()
        else:
            hot = self.point(step.get("hot", [0, 0]), where, "hot")
            return CursorStep(where, self.cursor_shape(value, hot, where))
        if "hot" in step:
            raise self.error(where, "hot only goes with a cursor image")
        return CursorStep(where, shape)

    def _move(self, step: dict[str, Any], where: str, depth: int) -> Step:
        x, y = self.point(step["move"], where, "move")
        return Move(where, x, y)

    def _resize(self, step: dict[str, Any], where: str, depth: int) -> Step:
        width, height = self.size(step["resize"], where, "resize")
        return Resize(where, width, height, self.colour(step.get("fill", [0, 0, 0]), where))

    def _wait(self, step: dict[str, Any], where: str, depth: int) -> Step:
        return Wait(where, self.number(step["wait"], where, "wait (seconds)", 0.0, _MAX_WAIT))

    def _repeat(self, step: dict[str, Any], where: str, depth: int) -> Step:
        count = self.integer(step["repeat"], where, "repeat (a count)", 1, MAX_OPERATIONS)
        if "steps" not in step:
            raise self.error(where, 'repeat needs "steps"')
        body = self.steps(step["steps"], where.removesuffix(" (repeat)") + ".steps", depth + 1)
        if not body:
            raise self.error(where, 'nothing to repeat: "steps" is empty')
        return Repeat(where, count, body)

    def _end(self, step: dict[str, Any], where: str, depth: int) -> Step:
        if step["end"] is not True:
            raise self.error(where, 'write {"end": true}')
        return End(where)

    def _disconnect(self, step: dict[str, Any], where: str, depth: int) -> Step:
        if step["disconnect"] is not True:
            raise self.error(where, 'write {"disconnect": true}')
        return Disconnect(where)

    def _tone(self, step: dict[str, Any], where: str, depth: int) -> Step:
        value = step["tone"]
        if value == "off":
            if "seconds" in step:
                raise self.error(where, 'seconds only goes with a frequency, not "off"')
            return Tone(where, None, None)
        if isinstance(value, str):
            raise self.error(where, f'tone is a frequency in Hz or "off", got {value!r}')
        low, high = _TONE_HZ
        frequency = self.number(value, where, "tone (Hz)", low, high)
        seconds = None
        if "seconds" in step:
            seconds = self.number(step["seconds"], where, "seconds", 0.0, _MAX_WAIT)
            if seconds < 0.01:
                raise self.error(where, "seconds must be at least 0.01 (one 10 ms packet)")
        return Tone(where, frequency, seconds)

    def _clipboard(self, step: dict[str, Any], where: str, depth: int) -> Step:
        text = step["clipboard"]
        if not isinstance(text, str):
            raise self.error(where, f"clipboard is a text, got {_kind(text)}")
        if len(text.encode()) > _MAX_CLIPBOARD:
            raise self.error(where, f"clipboard text over {_MAX_CLIPBOARD} bytes")
        selection = self.choice(step.get("selection", "clipboard"), where, ("clipboard", "primary"))
        return ClipboardStep(where, text, selection)

    def _photo(self, step: dict[str, Any], where: str, depth: int) -> Step:
        return Show(*compile_photo(self, step, where))

    def _video(self, step: dict[str, Any], where: str, depth: int) -> Step:
        return compile_video(self, step, where)

    # ------------------------------------------------------------------ values

    def image(self, value: Any, where: str) -> np.ndarray:
        path = self.path(value, where)
        if path not in self.images:
            try:
                image = load_image(path)
            except (OSError, ValueError) as exc:
                raise self.error(where, f"cannot load {value!r}: {exc}") from None
            self.check_area(image.shape[1], image.shape[0], where, f"image {value!r}")
            self.preloaded += image.shape[0] * image.shape[1]
            if self.preloaded > MAX_PRELOAD_PIXELS:
                raise self.error(
                    where,
                    f"the scenario's images hold more than {MAX_PRELOAD_PIXELS} pixels in all",
                )
            image.setflags(write=False)  # shared by every step that shows it
            self.images[path] = image
        return self.images[path]

    def cursor_shape(self, value: Any, hot: tuple[int, int], where: str) -> CursorShape:
        path = self.path(value, where)
        key = (path, *hot)
        if key not in self.cursors:
            try:
                bgra = _load_cursor_image(path)
            except (OSError, ValueError) as exc:
                raise self.error(where, f"cannot load cursor {value!r}: {exc}") from None
            height, width = bgra.shape[:2]
            if width > MAX_CURSOR_SIDE or height > MAX_CURSOR_SIDE:
                raise self.error(
                    where,
                    f"cursor {value!r} is {width}x{height}; at most "
                    f"{MAX_CURSOR_SIDE}x{MAX_CURSOR_SIDE}",
                )
            if not (hot[0] < width and hot[1] < height):
                raise self.error(
                    where, f"hot spot {list(hot)} is outside the {width}x{height} cursor"
                )
            # Distinct uniques per shape, numbered in file order: deterministic, and never
            # the default arrow's 1.
            unique = _CURSOR_UNIQUE_BASE + len(self.cursors) + 1
            self.cursors[key] = CursorShape(
                unique=unique,
                width=width,
                height=height,
                hot_x=hot[0],
                hot_y=hot[1],
                pixels=bgra.tobytes(),
            )
        return self.cursors[key]

    def path(self, value: Any, where: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.error(where, f"expected a file name, got {value!r}")
        return (self.base_dir / value).resolve()

    def colour(self, value: Any, where: str) -> tuple[int, int, int]:
        """(B, G, R), the frame's byte order."""
        if isinstance(value, str) and len(value) == 7 and value[0] == "#":
            try:
                rgb = int(value[1:], 16)
            except ValueError:
                raise self.error(where, f"bad colour {value!r}: {_COLOUR_HELP}") from None
            return rgb & 0xFF, (rgb >> 8) & 0xFF, rgb >> 16
        if (
            isinstance(value, list)
            and len(value) == 3
            and all(_is_int(c) and 0 <= c <= 255 for c in value)
        ):
            return value[2], value[1], value[0]
        raise self.error(where, f"bad colour {value!r}: {_COLOUR_HELP}")

    def size(self, value: Any, where: str, what: str) -> tuple[int, int]:
        if not (isinstance(value, list) and len(value) == 2 and all(map(_is_int, value))):
            raise self.error(where, f"{what} is [width, height], got {value!r}")
        self.check_area(value[0], value[1], where, what)
        return value[0], value[1]

    def check_area(self, width: int, height: int, where: str, what: str) -> None:
        if not (
            0 < width <= MAX_SURFACE_SIDE
            and 0 < height <= MAX_SURFACE_SIDE
            and width * height <= MAX_SURFACE_PIXELS
        ):
            raise self.error(
                where,
                f"{what} is {width}x{height}; a surface is "
                f"1..{MAX_SURFACE_SIDE} pixels a side and at most "
                f"{MAX_SURFACE_PIXELS} pixels",
            )

    def heads(self, value: Any, size: tuple[int, int]) -> tuple[tuple[int, int, int, int], ...]:
        """``"heads": [[x, y, width, height], ...]``: monitors of the start frame (16 at most;
        while the frame has another size, it is one head)."""
        if not isinstance(value, list) or len(value) > 16:
            raise self.error("heads", "expected a list of at most 16 [x, y, width, height]")
        heads = []
        for i, item in enumerate(value):
            if not (isinstance(item, list) and len(item) == 4 and all(map(_is_int, item))):
                raise self.error(f"heads[{i}]", f"a head is [x, y, width, height], got {item!r}")
            x, y, width, height = item
            if x < 0 or y < 0 or width < 1 or height < 1:
                raise self.error(f"heads[{i}]", "x, y >= 0 and width, height >= 1")
            if x + width > size[0] or y + height > size[1]:
                raise self.error(
                    f"heads[{i}]", f"{item} does not fit the {size[0]}x{size[1]} frame"
                )
            heads.append((x, y, width, height))
        return tuple(heads)

    def point(self, value: Any, where: str, what: str) -> tuple[int, int]:
        if not (
            isinstance(value, list)
            and len(value) == 2
            and all(_is_int(v) and v >= 0 for v in value)
        ):
            raise self.error(where, f"{what} is [x, y] with x, y >= 0, got {value!r}")
        return value[0], value[1]

    def integer(self, value: Any, where: str, what: str, low: int, high: int) -> int:
        if not (_is_int(value) and low <= value <= high):
            raise self.error(where, f"{what} must be an integer in {low}..{high}, got {value!r}")
        return int(value)

    def number(self, value: Any, where: str, what: str, low: float, high: float) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (low <= value <= high)
        ):
            raise self.error(where, f"{what} must be a number in {low:g}..{high:g}, got {value!r}")
        return float(value)

    def choice(self, value: Any, where: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.error(
                where, f"expected one of {', '.join(map(repr, choices))}, got {value!r}"
            )
        return str(value)

    # ------------------------------------------------------------------ sizes

    def check_sizes(self, steps: tuple[Step, ...], size: tuple[int, int]) -> tuple[int, int]:
        """Follow the surface size through the steps, checking each step against the size it
        meets and building the test patterns; returns the size after them."""
        for step in steps:
            width, height = size
            if isinstance(step, Show):
                image_w, image_h = step.image.shape[1], step.image.shape[0]
                if step.at is None:
                    size = (image_w, image_h)
                elif step.at[0] + image_w > width or step.at[1] + image_h > height:
                    raise self.error(
                        step.where,
                        f"the {image_w}x{image_h} image at "
                        f"{list(step.at)} does not fit the {width}x{height} surface",
                    )
            elif isinstance(step, Fill) and step.rect is not None:
                if step.rect.right > width or step.rect.bottom > height:
                    r = step.rect
                    raise self.error(
                        step.where,
                        f"rect {[r.x, r.y, r.width, r.height]} does "
                        f"not fit the {width}x{height} surface",
                    )
            elif isinstance(step, Move):
                if step.x >= width or step.y >= height:
                    raise self.error(
                        step.where, f"({step.x}, {step.y}) is outside the {width}x{height} surface"
                    )
            elif isinstance(step, Resize):
                size = (step.width, step.height)
            elif isinstance(step, Video) and (why := check_video_fits(step, width, height)):
                raise self.error(step.where, why)
            elif isinstance(step, Pattern):
                if size not in self.patterns:
                    try:
                        self.patterns[size] = PatternSource(width, height, fps=0)
                    except ValueError as exc:
                        raise self.error(
                            step.where,
                            f"{exc}; the surface is {width}x{height} here (add a resize before it)",
                        ) from None
            elif isinstance(step, Repeat):
                # The body's sizes depend on its entry size only until it sets one, so a second
                # pass (entering with the size the first pass left) covers every later pass.
                after = self.check_sizes(step.body, size)
                size = self.check_sizes(step.body, after) if step.count > 1 else after
            elif isinstance(step, End):
                break
        return size


def has_clipboard(steps: tuple[Step, ...]) -> bool:
    """Whether any step (in repeats too) sets the clipboard: the scenario then has one."""
    return any(
        isinstance(step, ClipboardStep) or (isinstance(step, Repeat) and has_clipboard(step.body))
        for step in steps
    )


def has_tone(steps: tuple[Step, ...]) -> bool:
    """Whether any step (in repeats too) plays a tone: the scenario then has sound."""
    return any(
        isinstance(step, Tone) or (isinstance(step, Repeat) and has_tone(step.body))
        for step in steps
    )


def _count_operations(steps: tuple[Step, ...]) -> int:
    total = 0
    for step in steps:
        if isinstance(step, Repeat):
            total += step.count * _count_operations(step.body)
        elif isinstance(step, Pattern):
            total += step.frames or 1
        elif isinstance(step, Video):
            total += step.frames
        else:
            total += 1
    return total


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), "a number")


def compile_script(spec: Any, base_dir: Path, name: str) -> Script:
    """Check and compile a parsed scenario; image paths are relative to ``base_dir``.

    Raises:
        ConfigError: naming ``name`` and the step at fault.
    """
    return Compiler(base_dir, name).script(spec)
