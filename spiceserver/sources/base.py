"""The framebuffer source interface every screen producer implements.

A source owns a ``frame``: a ``uint8`` array of shape ``(height, width, 4)`` holding B, G, R, X
bytes (the memory layout of a SPICE 32_xRGB surface).  It tells its listeners — one per
connected display channel — which rectangles changed, when the size changed and when the
cursor changed.  Listeners are always called on the event loop thread; :meth:`damage` may be
called from any thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np

from spiceserver.config import CLIPBOARD_MAX_BYTES, CLIPBOARD_TIMEOUT
from spiceserver.protocol.messages import CursorShape

if TYPE_CHECKING:
    from spiceserver.clipboard import ClipboardBackend
    from spiceserver.sources.audio import AudioSource

__all__ = [
    "FramebufferSource",
    "Head",
    "Rect",
    "SourceListener",
    "bounding_size",
    "default_cursor",
    "same_geometry",
]


@dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in surface pixels; right and bottom exclusive."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def area(self) -> int:
        return self.width * self.height

    def clip(self, width: int, height: int) -> Rect | None:
        """This rectangle cut to a ``width`` × ``height`` surface; None if nothing is left."""
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(width, self.right), min(height, self.bottom)
        if x1 <= x0 or y1 <= y0:
            return None
        return Rect(x0, y0, x1 - x0, y1 - y0)

    def union(self, other: Rect) -> Rect:
        x0, y0 = min(self.x, other.x), min(self.y, other.y)
        x1, y1 = max(self.right, other.right), max(self.bottom, other.bottom)
        return Rect(x0, y0, x1 - x0, y1 - y0)

    def touches(self, other: Rect) -> bool:
        """Overlapping or sharing an edge."""
        return (
            self.x <= other.right
            and other.x <= self.right
            and self.y <= other.bottom
            and other.y <= self.bottom
        )


@dataclass(frozen=True, slots=True)
class Head:
    """One monitor of a source: a rectangle of its frame (a client shows one window per head),
    with the physical size in millimetres when known (0: unknown)."""

    x: int
    y: int
    width: int
    height: int
    width_mm: int = 0
    height_mm: int = 0


def bounding_size(heads: tuple[Head, ...]) -> tuple[int, int]:
    """Width and height of the frame that holds ``heads`` (placed at x, y >= 0)."""
    return max(h.x + h.width for h in heads), max(h.y + h.height for h in heads)


def same_geometry(a: tuple[Head, ...], b: tuple[Head, ...]) -> bool:
    """Whether two layouts place and size their heads alike (physical sizes aside: a source
    may report other millimetres than a client asked for, which is no change of layout)."""
    return [(h.x, h.y, h.width, h.height) for h in a] == [(h.x, h.y, h.width, h.height) for h in b]


class SourceListener(Protocol):
    def on_damage(self, rects: list[Rect]) -> None: ...

    def on_resize(self, width: int, height: int) -> None: ...

    def on_cursor(self, shape: CursorShape | None) -> None: ...

    def on_cursor_move(self, x: int, y: int) -> None: ...

    # Listeners written before scrolls existed may lack it: they get on_damage instead.
    def on_scroll(self, rect: Rect, dy: int, damage: list[Rect]) -> None: ...

    # The monitor layout changed (after on_resize when the size changed too).  Optional.
    def on_heads(self, heads: tuple[Head, ...]) -> None: ...


class FramebufferSource:
    """Base class: a frame, its listeners, damage and resize notifications."""

    #: A short name for logs.
    kind = "source"

    def __init__(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"bad frame size {width}x{height}")
        self.frame: np.ndarray = np.zeros((height, width, 4), dtype=np.uint8)
        self.cursor: CursorShape | None = default_cursor()
        self._listeners: list[SourceListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        #: Counts the damage, scroll and resize notifications delivered to listeners (on the
        #: loop thread): pixels read while it equals N include every change reported up to N.
        self.version = 0
        #: Set by the server while it runs (``SpiceServer.start``): ends every client session.
        #: Sources call it through :meth:`request_disconnect`.
        self.on_disconnect_request: Callable[[], None] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.frame.shape[1], self.frame.shape[0]

    def heads(self) -> tuple[Head, ...]:
        """The monitors this frame holds (default: one covering the whole frame)."""
        width, height = self.size
        return (Head(0, 0, width, height),)

    async def apply_layout(self, heads: tuple[Head, ...]) -> bool:
        """A client asks for this monitor layout (its windows' sizes, from the agent's
        MONITORS_CONFIG).  A source that can follow changes its frame (``replace_frame``,
        ``set_heads``) and returns True; the default cannot and returns False."""
        return False

    async def restore_layout(self) -> None:
        """The last client that changed the layout left: go back to the original one."""

    def set_heads(self, heads: tuple[Head, ...]) -> None:
        """Announce a new monitor layout to the listeners (call after ``replace_frame``)."""
        self._notify("on_heads", heads)

    def clipboard_backend(
        self, max_bytes: int = CLIPBOARD_MAX_BYTES, timeout: float = CLIPBOARD_TIMEOUT
    ) -> ClipboardBackend | None:
        """The clipboard that goes with these frames (the X selections of a desktop, a
        scenario's clipboard steps); None: none.  The server asks once, with its own size cap
        and timeout, when its agent is on, and shares it with the clients unless given
        another (``SpiceServer(clipboard=...)``)."""
        return None

    def audio_source(self) -> AudioSource | None:
        """Sound that goes with these frames (a scenario's tone steps); None: none.  The
        server plays it unless it is given another (``SpiceServer(sound=...)``)."""
        return None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Called by the server on its loop before the first client; animated sources start."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    async def stop(self) -> None:
        """Called by the server when it closes."""

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: SourceListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: SourceListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def damage(self, rects: list[Rect] | None = None) -> None:
        """Report changed rectangles (None: the whole frame).  Safe from any thread."""
        width, height = self.size
        clipped = [r for r in (rect.clip(width, height) for rect in rects or []) if r]
        if rects is None:
            clipped = [Rect(0, 0, width, height)]
        if clipped:
            self._notify("on_damage", clipped)

    def scroll(self, rect: Rect, dy: int, damage: list[Rect] | None = None) -> None:
        """Report that within ``rect`` the pixels moved ``dy`` rows down (up if negative), and
        that ``damage`` changed besides (usually the uncovered strip).

        The frame must already hold the result: for each row ``y`` of ``rect`` whose row
        ``y - dy`` is in ``rect`` too, the new row ``y`` is the old row ``y - dy``; the other
        rows of ``rect`` (the strip) hold their old pixels unless ``damage`` covers them.
        Clients that hold the previous pixels get a COPY_BITS instead of an image.

        Only exact if every change of the frame happens on the event loop thread (as in the
        embedding example): a client's pixels are moved, so a pixel it was sent while another
        thread was writing would be moved too.  Called from another thread, or with a move
        that does not fit the frame, it is reported as damage of ``rect`` and ``damage``.
        """
        width, height = self.size
        extra = [r for r in (d.clip(width, height) for d in damage or []) if r]
        on_loop = self._loop is None or threading.get_ident() == self._loop_thread
        if on_loop and rect.clip(width, height) == rect and 0 < abs(dy) < rect.height:
            self._notify("on_scroll", rect, dy, extra)
        else:
            self.damage([rect, *extra])

    def read(self, rect: Rect) -> np.ndarray:
        """A copy of the pixels under ``rect`` (the snapshot that gets encoded)."""
        return self.frame[rect.y : rect.bottom, rect.x : rect.right].copy()

    def read_into(self, rect: Rect, out: np.ndarray) -> None:
        """:meth:`read` into ``out`` (``rect``'s height, width, 4): room an encoder lent."""
        out[...] = self.frame[rect.y : rect.bottom, rect.x : rect.right]

    def replace_frame(self, frame: np.ndarray) -> None:
        """Swap in a new frame array; a new size re-creates the clients' surfaces."""
        _check_frame(frame)
        old = self.frame.shape
        self.frame = frame
        if frame.shape != old:
            self._notify("on_resize", frame.shape[1], frame.shape[0])
        else:
            self.damage()

    def set_cursor(self, shape: CursorShape | None) -> None:
        """A new cursor shape (None hides the cursor)."""
        self.cursor = shape
        self._notify("on_cursor", shape)

    def move_cursor(self, x: int, y: int) -> None:
        """The pointer moved on the source (clients in server mouse mode draw it there)."""
        self._notify("on_cursor_move", x, y)

    def request_disconnect(self) -> bool:
        """Ask the server to end every client session (e.g. a scenario's ``disconnect`` step).
        Safe from any thread; False when no server is running this source."""
        hook = self.on_disconnect_request
        if hook is None:
            return False
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(hook)
        else:
            hook()
        return True

    def _notify(self, method: str, *args: object) -> None:
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._deliver, method, args)
            return
        self._deliver(method, args)

    def _deliver(self, method: str, args: tuple[object, ...]) -> None:
        if method in ("on_damage", "on_resize", "on_scroll"):
            self.version += 1
        for listener in list(self._listeners):
            if method == "on_heads" and not hasattr(listener, "on_heads"):
                continue
            if method == "on_scroll" and not hasattr(listener, "on_scroll"):
                rect, _dy, damage = args  # a listener that cannot move pixels: damage
                listener.on_damage([cast(Rect, rect), *cast("list[Rect]", damage)])
            else:
                getattr(listener, method)(*args)


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 4:
        raise ValueError(
            f"a frame is uint8 of shape (height, width, 4), got {frame.dtype} {frame.shape}"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError("a frame cannot be empty")


_ARROW = (
    "X...........",
    "XX..........",
    "XOX.........",
    "XOOX........",
    "XOOOX.......",
    "XOOOOX......",
    "XOOOOOX.....",
    "XOOOOOOX....",
    "XOOOOOOOX...",
    "XOOOOOOOOX..",
    "XOOOOOOOOOX.",
    "XOOOOOOXXXXX",
    "XOOOXOOX....",
    "XOOXXOOX....",
    "XOX..XOOX...",
    "XX...XOOX...",
    "X.....XOOX..",
    "......XOOX..",
    ".......XX...",
)


def default_cursor() -> CursorShape:
    """A black-outlined white arrow, hot spot at its tip (ALPHA, straight B,G,R,A)."""
    colours = {"X": b"\x00\x00\x00\xff", "O": b"\xff\xff\xff\xff", ".": b"\x00\x00\x00\x00"}
    pixels = b"".join(colours[c] for row in _ARROW for c in row)
    return CursorShape(
        unique=1, width=len(_ARROW[0]), height=len(_ARROW), hot_x=0, hot_y=0, pixels=pixels
    )
