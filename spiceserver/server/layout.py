"""Monitor layouts the clients ask for (the agent's MONITORS_CONFIG), applied to the source.

Contract between the agent (which parses the request) and the source (which may follow it):
the main channel's agent calls :meth:`LayoutController.request` with the heads a client wants
(its enabled displays, in display-id order, positions as the client gave them);
``ServerContext.end_session`` calls :meth:`LayoutController.session_ended`.

Policy (``ServerConfig.resize`` / ``--resize``):

* ``off``: requests are ignored; the source keeps its layout.
* ``follow`` (default): a request is validated (:func:`normalize_layout`), then applied
  ``resize_debounce`` seconds after the last *different* request reached the server (a window
  being dragged sends a stream of sizes; only the last one is applied).  The most recent
  request wins, whichever client sent it.  ``source.apply_layout`` runs as a task, one at a
  time; a request that arrives meanwhile is applied after it.
* No resize loops: a request whose geometry equals the source's current heads, or repeats the
  last request while the source still shows what that request produced, is a no-op.  Web
  clients that size their window to the new surface and send that size back thus end the
  exchange (OpenNebula/one #1263 shows the loops this prevents).
* A source that answers False cannot follow: "resize not supported by this source" is logged
  once per server, at INFO.
* When the session whose layout won ends, the newest request of the sessions still there
  takes over (its window still wants that size).  When no session that asked for a layout is
  left, the source's :meth:`~spiceserver.sources.base.FramebufferSource.restore_layout` runs
  if a layout was applied (andris and spice-vdagent put the original modes back; a shared
  desktop should not stay at a viewer's window size); sessions that never asked (view-only
  viewers, spice-html5 before a resize) do not hold it.  Closing the server restores too
  (:meth:`LayoutController.aclose`).
* A source that raises (or takes over :data:`APPLY_TIMEOUT`) is logged with the error; that
  is not "cannot follow", so later requests still go to it.

Sizes are applied as asked (after clamping): spice-gtk and spice-vdagent use the window size
as given, and the pattern and numpy sources can show any size.  Rounding to what a display
server accepts (spice-vdagent rounds x and width down to multiples of 8 for Xorg,
``spice-vdagent:src/vdagent/x11-randr.c`` ``zero_base_monitors``) is the source's business;
since a repeated request is compared with the request, not with the rounded result, rounding
cannot cause a loop either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from spiceserver.config import RESIZE_MODES
from spiceserver.sources.base import FramebufferSource, Head, bounding_size, same_geometry

if TYPE_CHECKING:
    from spiceserver.session import Session

__all__ = [
    "APPLY_TIMEOUT",
    "MAX_HEADS",
    "MAX_HEAD_SIDE",
    "MAX_LAYOUT_PIXELS",
    "MAX_LAYOUT_SIDE",
    "RESIZE_MODES",
    "LayoutController",
    "normalize_layout",
]

logger = logging.getLogger("spiceserver.layout")

#: Most heads of one layout (spice-gtk sends up to 16, ``MAX_DISPLAY``; Xorg's dummy driver
#: has 16 outputs); further heads are dropped.
MAX_HEADS = 16
#: Longest side of one head: larger sizes are clamped to it.
MAX_HEAD_SIDE = 8192
#: Longest side, and most pixels, of the frame a layout needs (its heads' bounding box): a
#: layout beyond either is refused.  32 Mpx (a 128 MiB frame) holds an 8K monitor or four 4K.
MAX_LAYOUT_SIDE = 16384
MAX_LAYOUT_PIXELS = 8192 * 4096
#: Seconds a source may take to apply or restore a layout before it is given up on (logged).
APPLY_TIMEOUT = 15.0


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


#: ``call_later(delay, callback)``: the event loop's, or a test's.
CallLater = Callable[[float, Callable[[], None]], TimerHandle]


def normalize_layout(heads: tuple[Head, ...]) -> tuple[tuple[Head, ...], str]:
    """``heads`` made safe to apply, and what was changed ("" if nothing).

    Heads without a positive size are dropped (disabled displays), at most :data:`MAX_HEADS`
    are kept, sizes are clamped to :data:`MAX_HEAD_SIDE`, and the layout is moved so its
    top-left corner is (0, 0) (as spice-vdagent does: the frame is the bounding box).  An
    empty result (nothing left, or a bounding box beyond :data:`MAX_LAYOUT_SIDE` /
    :data:`MAX_LAYOUT_PIXELS`) means: refuse the request.
    """
    notes: list[str] = []
    enabled = [h for h in heads if h.width > 0 and h.height > 0]
    if len(enabled) < len(heads):
        notes.append(f"{len(heads) - len(enabled)} head(s) without a size dropped")
    if len(enabled) > MAX_HEADS:
        notes.append(f"heads beyond {MAX_HEADS} dropped")
        enabled = enabled[:MAX_HEADS]
    if not enabled:
        return (), "; ".join([*notes, "no head left"])
    clamped = []
    for head in enabled:
        width, height = min(head.width, MAX_HEAD_SIDE), min(head.height, MAX_HEAD_SIDE)
        if (width, height) != (head.width, head.height):
            notes.append(f"{head.width}x{head.height} clamped to {width}x{height}")
        mm = (max(0, min(head.width_mm, 0xFFFF)), max(0, min(head.height_mm, 0xFFFF)))
        clamped.append(Head(head.x, head.y, width, height, *mm))
    x0 = min(h.x for h in clamped)
    y0 = min(h.y for h in clamped)
    moved = tuple(
        Head(h.x - x0, h.y - y0, h.width, h.height, h.width_mm, h.height_mm) for h in clamped
    )
    width, height = bounding_size(moved)
    if max(width, height) > MAX_LAYOUT_SIDE or width * height > MAX_LAYOUT_PIXELS:
        return (), "; ".join([*notes, f"a {width}x{height} frame is too large"])
    return moved, "; ".join(notes)


class LayoutController:
    """Applies the clients' monitor layouts to one source: debounced, on change only, one at a
    time, restored when the last client that changed it leaves (module docstring)."""

    def __init__(
        self,
        source: FramebufferSource,
        *,
        mode: str = "follow",
        debounce: float = 0.25,
        track: Callable[[asyncio.Task[Any]], None] | None = None,
        call_later: CallLater | None = None,
    ) -> None:
        if mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {mode!r} ({', '.join(RESIZE_MODES)})")
        if debounce < 0:
            raise ValueError("the resize debounce cannot be negative")
        self.source = source
        self.mode = mode
        self.debounce = debounce
        self._track = track
        self._call_later = call_later
        #: The newest request not applied yet, and whether its debounce time has passed.
        self._pending: tuple[Session, tuple[Head, ...]] | None = None
        self._due = False
        self._timer: TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        #: The last request given to the source, and the source's heads right after it:
        #: repeating that request while the source still shows them changes nothing.
        self._last: tuple[tuple[Head, ...], tuple[Head, ...]] | None = None
        #: Each live session's latest request, oldest first: the last one is the layout that
        #: wins; when its session ends, the one before takes over (bounded by the sessions).
        self._requests: dict[int, tuple[Session, tuple[Head, ...]]] = {}
        self._changed = False
        self._restore_wanted = False
        self._told_unsupported = False
        self._closed = False
        #: Counters for tests and logs: layouts applied, refused by the source, restores.
        self.applied = 0
        self.refused = 0
        self.restored = 0
        #: Set after each operation (apply, refusal, restore) completes; tests wait on it.
        self.settled = asyncio.Event()

    # ------------------------------------------------------------------ what clients may see

    @property
    def follows(self) -> bool:
        """Whether a client's layout may be applied: mode follow, a source whose class can
        (it overrides ``apply_layout``), and which has not said it cannot."""
        can = type(self.source).apply_layout is not FramebufferSource.apply_layout
        return self.mode == "follow" and can and not self._told_unsupported

    def max_heads(self, current: int) -> int:
        """The display MONITORS_CONFIG's ``max_allowed``: how many heads a client may ask for
        (spice-gtk keeps it as ``monitors-max``, within 1..256)."""
        return max(current, MAX_HEADS if self.follows else current, 1)

    # ------------------------------------------------------------------ the agent's side

    def request(self, session: Session, heads: tuple[Head, ...]) -> None:
        """``session``'s client asks for ``heads`` (its windows, in client order)."""
        if self.mode == "off" or self._closed or not session.alive:
            logger.debug("session %#010x: layout request ignored (%s)", session.id, self.mode)
            return
        layout, notes = normalize_layout(tuple(heads))
        if not layout:
            logger.info("session %#010x: layout request refused: %s", session.id, notes)
            return
        if notes:
            logger.info("session %#010x: layout request adjusted: %s", session.id, notes)
        logger.debug("session %#010x asks for layout %s", session.id, layout)
        self._requests.pop(session.id, None)
        self._requests[session.id] = (session, layout)  # the newest: it wins
        self._queue(session, layout)

    def _queue(self, session: Session, layout: tuple[Head, ...]) -> None:
        """Make ``layout`` the one to apply once the debounce time has passed."""
        if self._pending is not None and self._pending[1] == layout:
            # The same layout again: the wait is not extended (a client repeating itself
            # cannot postpone the change forever), but it now counts as this session's.
            self._pending = (session, layout)
            return
        self._pending = (session, layout)
        self._due = False
        if self._timer is not None:
            self._timer.cancel()
        call_later = self._call_later or asyncio.get_running_loop().call_later
        self._timer = call_later(self.debounce, self._debounced)

    def session_ended(self, session: Session) -> None:
        """``session`` is gone.  If its layout was the one that won, the newest request of
        the sessions left takes over; if none of them asked for anything, the source's own
        layout is restored (when a client had changed it)."""
        if self._pending is not None and self._pending[0] is session:
            self._pending = None
            self._due = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        won = bool(self._requests) and next(reversed(self._requests)) == session.id
        self._requests.pop(session.id, None)
        if self._closed or not won:
            return
        if self._requests:
            self._queue(*self._requests[next(reversed(self._requests))])
        elif self._changed or self._task is not None:  # (an apply under way changes it)
            self._restore_wanted = True
            self._kick()

    async def aclose(self) -> None:
        """The server closes: drop what is pending, then put the source's layout back if a
        client had changed it (bounded by :data:`APPLY_TIMEOUT`)."""
        self._closed = True
        self._pending = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception):
                await task  # an apply under way completes (it is bounded)
        if self._changed:
            self._requests.clear()  # every session is ending
            self._restore_wanted = True
            await self._work()

    async def idle(self) -> None:
        """Until no request is pending and nothing is being applied or restored."""
        while self._pending is not None or self._task is not None:
            await self.settled.wait()

    # ------------------------------------------------------------------ applying

    def _debounced(self) -> None:
        self._timer = None
        if self._pending is not None and not self._closed:
            self._due = True
            self._kick()

    def _kick(self) -> None:
        """Start the worker unless it runs: it picks up whatever is due."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._work(), name="layout controller"
            )
            if self._track is not None:
                self._track(self._task)

    async def _work(self) -> None:
        try:
            while True:
                if self._due and self._pending is not None:
                    session, layout = self._pending
                    self._pending, self._due = None, False
                    if session.alive:
                        await self._apply(session, layout)
                elif self._restore_wanted:
                    self._restore_wanted = False
                    if self._changed and not self._requests and self._pending is None:
                        await self._restore()
                else:
                    return
                self._settle()
        finally:
            if self._task is asyncio.current_task():
                self._task = None
            self._settle()

    def _settle(self) -> None:
        self.settled.set()
        self.settled = asyncio.Event()

    async def _apply(self, session: Session, layout: tuple[Head, ...]) -> None:
        source = self.source
        current = source.heads()
        if same_geometry(layout, current) or (
            self._last is not None
            and self._last[0] == layout
            and same_geometry(self._last[1], current)
        ):
            # Nothing would change (a client answering the new surface with its size, or
            # the same request again): no work, and no new surface for anyone.
            logger.debug("session %#010x: layout unchanged, not applied", session.id)
            return
        done: bool | None = None  # None: it failed (logged), which is not "cannot"
        try:
            async with asyncio.timeout(APPLY_TIMEOUT):
                done = bool(await source.apply_layout(layout))
        except TimeoutError:
            logger.warning("the source took over %.0f s to apply a layout", APPLY_TIMEOUT)
        except Exception:
            logger.exception("the source failed to apply layout %s", layout)
        self._last = (layout, source.heads())
        if not same_geometry(self._last[1], current):
            self._changed = True  # even half done, it is to be put back
        if not done:
            self.refused += 1
            if done is False and not self._told_unsupported:
                self._told_unsupported = True
                logger.info("resize not supported by this source (%s)", source.kind)
            return
        self.applied += 1
        self._changed = True
        width, height = bounding_size(layout)
        logger.info(
            "session %#010x: layout of %d head(s), %dx%d, applied",
            session.id,
            len(layout),
            width,
            height,
        )

    async def _restore(self) -> None:
        try:
            async with asyncio.timeout(APPLY_TIMEOUT):
                await self.source.restore_layout()
        except TimeoutError:
            logger.warning("the source took over %.0f s to restore its layout", APPLY_TIMEOUT)
        except Exception:
            logger.exception("the source failed to restore its layout")
        self._changed = False
        self._last = None
        self.restored += 1
        logger.info("the last client that changed the layout left: original layout restored")
