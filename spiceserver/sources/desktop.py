"""The X11 desktop as a framebuffer source: what x11spice does, as an asyncio-friendly source.

Theory of operation
-------------------
Two X connections: a python-xlib one for events and small requests, and an mss one for
pixels (``XShmGetImage``, so a grab is one round trip and one memcpy).  With DAMAGE the event
loop reads the events itself and makes small grabs there, so a small change goes from X to
the socket in one loop callback (:mod:`spiceserver.sources.x11_loop`); big grabs and new
screen sizes run on the capture thread (``spice-x11``), one at a time, and hand over to the
loop.  Without DAMAGE (or ``capture_on_loop=False``) the thread does all of it and reports
through :meth:`FramebufferSource.damage` and friends, which hand over to the loop.  "The
thread" below is whichever follows the events.

* **What changed.**  With the DAMAGE extension the root window reports every rectangle X
  draws into (``DamageReportRawRectangles``, reported after the drawing is done).  Not
  ``DeltaRectangles``: it reports only growth of a region we would have to empty with
  DamageSubtract, and drawing that lands in the window between an event and the subtract is
  then silently folded in — measured here as a stale terminal after paging in ``less``.
  Raw events cost one small event per drawing operation, and they are coalesced below.
  Under a flood of them (``yes`` in an xterm: python-xlib parses events slower than X sends
  them, so the thread would never grab again) the thread switches to delta rectangles until
  the screen has been still for :data:`FLOOD_CALM_SECONDS`, and then makes delta exact by
  emptying the region *before* each grab with a round trip (DamageSubtract, then sync): drawing
  before the subtract is in the grab, drawing after it raises a new event.
  Without DAMAGE the whole screen is polled.  Either way the grabbed pixels are compared
  with the frame we hold, tile by tile (:mod:`spiceserver.sources.tiles`), so an
  application that repaints the same pixels — a clock redrawing its face, a terminal redrawing a
  line — costs no bytes on the wire, and what is reported is tightened to the pixels that
  really changed.
* **When.**  The first change after a quiet spell is grabbed at once (latency), and so are the
  next few (:data:`spiceserver.pacing.BURST` in all: a program draws a change in pieces, a
  few milliseconds apart); later ones are coalesced to ``max_fps`` grabs a second.  With no
  damage the thread sleeps in ``select()``, waking only for X events and the pointer check
  (once a second with XInput 2 raw motion, else every ``x11_capture.POINTER_POLL_SECONDS``):
  an idle desktop costs next to nothing.
* **Order.**  Each event is sent after its drawing is done, and the grab goes through the X
  server after the event was sent, so a grab sees at least what the events it answers
  announced; drawing after that raises new events and a new grab.  Nothing is lost between
  two grabs.  (The server's damage region is emptied at each grab only so it stays small.)
* **Size and monitors.**  A ConfigureNotify, or a RandR ScreenChangeNotify, CrtcChangeNotify
  or OutputChangeNotify on the root, has the thread read the root's size and the RandR
  monitors (:func:`spiceserver.x11_randr.read_heads`).  A new size re-creates the mss grabber
  (its shared-memory segment is sized for the screen) and swaps in a new frame with
  :meth:`replace_frame`, which re-creates the clients' surfaces; new monitors are announced
  with :meth:`set_heads` (after the frame, in the same loop callback).
* **Following clients.**  :meth:`DesktopSource.apply_layout` sets a client's monitor layout
  through RandR (:class:`spiceserver.x11_randr.RandrLayout`, on a connection and a thread of
  its own), then waits until this thread has shown it; :meth:`restore_layout` (and
  :meth:`stop`) put the original layout back.
* **Cursor.**  XFixes cursor notifications carry a serial; images are fetched once per serial
  (ARGB, premultiplied) and turned into SPICE ALPHA cursors (straight B,G,R,A) whose
  ``unique`` is derived from the serial.  A fully transparent cursor hides the client's cursor.
  Pointer motion (XInput 2 raw events, else a slow poll) becomes ``move_cursor`` for clients
  in server mouse mode.
* **Scrolls.**  A large changed rectangle is checked for a vertical move of the previous
  pixels (:func:`spiceserver.scroll.detect_scroll`).  When one is found, the held frame is
  moved the same way and only what still differs is reported as damage, with the move as a
  :meth:`~FramebufferSource.scroll` notification: clients that hold the previous pixels get a
  COPY_BITS plus the strip.  ``scroll_detect=False`` (``--no-scroll-detect``) turns it off.

**Exact frames.**  This thread never writes into :attr:`frame`: each update (moves, then
pixels) is applied to :attr:`frame` on the event loop, in the same callback that notifies the
listeners.  So whenever the loop reads :attr:`frame` at ``version`` N it holds exactly the
changes reported up to N, never a later one in part.  Damage alone would tolerate such a torn
read (the later damage re-sends those pixels), but a COPY_BITS moves the client's pixels, and
would carry a torn pixel to where no damage covers it.  The thread compares its grabs with
:attr:`frame` itself, once the loop has applied every update handed to it (until then the
frame lacks them; afterwards nothing writes it but those updates): one full-screen frame
(7.9 MiB at 1920x1080) instead of a copy of its own.  While the screen keeps changing, updates
are a grab interval apart, so the wait is normally over before it starts; in a burst after a
pause it is the loop applying the small update just before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from spiceserver.config import CLIPBOARD_MAX_BYTES, CLIPBOARD_TIMEOUT
from spiceserver.errors import ConfigError
from spiceserver.scroll import Scroll, apply_scroll
from spiceserver.sources.base import FramebufferSource, Head, Rect
from spiceserver.sources.x11_capture import _Capture, open_display
from spiceserver.sources.x11_cursor import cursor_from_argb
from spiceserver.sources.x11_loop import LoopCapture
from spiceserver.x11_randr import RandrWorker, read_heads

if TYPE_CHECKING:
    from spiceserver.clipboard import ClipboardBackend

__all__ = ["DesktopSource", "cursor_from_argb", "open_display"]

logger = logging.getLogger("spiceserver.desktop")

#: How long :meth:`DesktopSource.start` waits for the first full grab.
START_TIMEOUT = 30.0


class DesktopSource(FramebufferSource):
    """The screen of a running X server (Xorg, Xvfb, xorgxrdp …), with its cursor.

    Args:
        display: An X display name such as ``":0"``; None uses ``$DISPLAY``.
        max_fps: This many grabs a second while the screen keeps changing (a few more back to
            back after a pause: :mod:`spiceserver.pacing`).
        use_damage: Use the DAMAGE extension when the server has it (False forces the
            polling fallback, for tests).
        scroll_detect: Report vertical scrolls as moves (COPY_BITS for clients) instead of
            damage; may be changed while running.
        capture_on_loop: Follow the damage on the event loop, small grabs there too
            (:mod:`spiceserver.sources.x11_loop`); False: all of it on the capture thread.

    Raises:
        ConfigError: No display name, the display cannot be opened, or its root window is
            not 24/32-bit TrueColor.
    """

    kind = "desktop"

    def __init__(
        self,
        display: str | None = None,
        *,
        max_fps: float = 30.0,
        use_damage: bool = True,
        scroll_detect: bool = True,
        capture_on_loop: bool = True,
    ) -> None:
        name = display or os.environ.get("DISPLAY", "")
        if not name:
            raise ConfigError("no X display to share: set $DISPLAY or use --source desktop:DISPLAY")
        if max_fps <= 0:
            raise ConfigError(f"max_fps must be positive, got {max_fps}")
        conn = open_display(name)
        try:
            screen = conn.screen()
            width, height = screen.width_in_pixels, screen.height_in_pixels
            depth = screen.root_depth
            heads = read_heads(conn, width, height)
        finally:
            conn.close()
        if depth not in (24, 32):
            raise ConfigError(f"X display {name!r} has a {depth}-bit root window; 24 or 32 needed")
        super().__init__(width, height)
        self.display_name = name
        self.max_fps = max_fps
        self.use_damage = use_damage
        self.scroll_detect = scroll_detect
        self.capture_on_loop = capture_on_loop
        #: The fallbacks taken ("no DAMAGE", "no XShm", …), for logs and tests.
        self.fallbacks: list[str] = []
        #: Counters for benchmarks: grabs made, pixels grabbed, pixels reported changed,
        #: scrolls found and the pixels they moved, floods of damage met (FLOOD_EVENTS).
        self.stats = {
            "grabs": 0,
            "grabbed_pixels": 0,
            "changed_pixels": 0,
            "updates": 0,
            "scrolls": 0,
            "scrolled_pixels": 0,
            "damage_floods": 0,
        }
        self._thread: threading.Thread | None = None
        #: Jobs for the capture thread from the loop's capture (None: stop), and that capture.
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._driver: LoopCapture | None = None
        self._wake_r = self._wake_w = -1
        self._stopping = False
        #: Updates (and new frames) handed to the loop and not applied yet, under its condition
        #: (see Exact frames): a busy loop never queues frames of grabbed pixels.
        self._in_flight = 0
        self._applied = threading.Condition()
        #: The RandR monitors as last shown (loop thread), see :meth:`heads`.
        self._heads = heads
        #: RandR on a thread and an X connection of their own, made on the first layout.
        self._randr = RandrWorker(name, open_display)

    # ------------------------------------------------------------------ monitors

    def clipboard_backend(
        self, max_bytes: int = CLIPBOARD_MAX_BYTES, timeout: float = CLIPBOARD_TIMEOUT
    ) -> ClipboardBackend | None:
        """The X selections (CLIPBOARD and PRIMARY) of this display, on a connection and a
        thread of their own (:mod:`spiceserver.x11_clipboard`)."""
        from spiceserver.x11_clipboard import X11Clipboard

        return X11Clipboard(self.display_name, max_bytes=max_bytes, timeout=timeout)

    def heads(self) -> tuple[Head, ...]:
        """The X screen's RandR monitors (one head for the whole screen without them)."""
        width, height = self.size
        heads = self._heads
        if heads and all(h.x + h.width <= width and h.y + h.height <= height for h in heads):
            return heads
        return super().heads()

    async def apply_layout(self, heads: tuple[Head, ...]) -> bool:
        """Give the X screen this monitor layout through RandR (a mode per head on output i,
        see :mod:`spiceserver.x11_randr`); True once the frame and heads show it.  False on
        a server that cannot change modes (logged once) or when this layout failed."""
        capturing = self._thread is not None
        shown = (lambda: (self.size, self.heads())) if capturing else None
        return await self._randr.apply(heads, shown) is not None

    async def restore_layout(self) -> None:
        """Put back the layout from before the first :meth:`apply_layout` (if it changed)."""
        await self._randr.restore()

    def _show_layout(self, frame: np.ndarray | None, heads: tuple[Head, ...]) -> None:
        """Loop thread: a new frame (a new size) and/or new monitors from the capture thread."""
        self._heads = heads
        if frame is not None:
            self.replace_frame(frame)
        self.set_heads(heads)
        self._randr.shown()

    def _show_layout_handed(self, frame: np.ndarray | None, heads: tuple[Head, ...]) -> None:
        try:
            self._show_layout(frame, heads)
        finally:
            self._handed_back()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the X connections, grab the whole screen once, then follow changes."""
        await super().start()
        if self._thread is not None:
            return
        self._stopping = False
        self._in_flight = 0
        self._wake_r, self._wake_w = os.pipe()
        self._jobs = queue.SimpleQueue()
        ready: concurrent.futures.Future[_Capture] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="spice-x11", daemon=True
        )
        self._thread.start()
        try:
            capture = await asyncio.wait_for(asyncio.wrap_future(ready), START_TIMEOUT)
        except BaseException:
            await self.stop()
            raise
        if self._on_loop(capture):
            self._driver = LoopCapture(capture, self._jobs.put)

    def _on_loop(self, capture: _Capture) -> bool:
        """Whether the loop follows the damage (x11_loop.py): with DAMAGE, unless turned off."""
        return self.capture_on_loop and capture.damage is not None

    async def stop(self) -> None:
        """Stop the capture thread and close its X connections.  Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        if self._driver is not None:
            self._driver.close()
            self._driver = None
        self._jobs.put(None)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        await asyncio.to_thread(thread.join, 10.0)
        if thread.is_alive():
            logger.warning("the X capture thread did not stop within 10 s")
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        await self._randr.close()  # leaves the X screen as it was found

    # ------------------------------------------------------------------ capture thread

    def _hand(self, callback: Any, *args: Any) -> None:
        """Run ``callback(*args)`` on the loop thread (now, if there is no other), counted
        in flight until it has run (see :meth:`_settled`)."""
        loop = self._loop
        with self._applied:
            self._in_flight += 1  # the callback hands it back
        if loop is None or threading.get_ident() == self._loop_thread:
            callback(*args)
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed meanwhile
            self._handed_back()

    def _handed_back(self) -> None:
        with self._applied:
            self._in_flight -= 1
            self._applied.notify_all()

    def _settled(self) -> bool:
        """Capture thread: wait until the loop has applied every update handed to it, so
        :attr:`frame` holds all of them and nothing writes it (Exact frames); False if the
        source stops or the loop closed meanwhile."""
        loop = self._loop
        with self._applied:
            while self._in_flight > 0:  # (a callback of a loop before a restart: below 0)
                if self._stopping or loop is None or loop.is_closed():
                    return False
                self._applied.wait(0.25)
        return True

    def _publish(
        self, scrolls: list[Scroll], writes: list[tuple[Rect, np.ndarray]], damage: list[Rect]
    ) -> None:
        """Hand an update to the loop thread, which applies it and notifies (Exact frames);
        on the loop thread itself (x11_loop.py), applied right here: nothing is in flight
        for the capture thread to wait for, and a small change skips the hand-over's locks."""
        if threading.get_ident() == self._loop_thread:
            self._apply(scrolls, writes, damage)
        else:
            self._hand(self._apply_handed, scrolls, writes, damage)

    def _apply_handed(
        self, scrolls: list[Scroll], writes: list[tuple[Rect, np.ndarray]], damage: list[Rect]
    ) -> None:
        try:
            self._apply(scrolls, writes, damage)
        finally:
            self._handed_back()

    def _publish_layout(self, frame: np.ndarray | None, heads: tuple[Head, ...]) -> None:
        """Hand a new frame (a new screen size; None: same size) and monitors to the loop."""
        self._hand(self._show_layout_handed, frame, heads)

    def _apply(
        self, scrolls: list[Scroll], writes: list[tuple[Rect, np.ndarray]], damage: list[Rect]
    ) -> None:
        # Loop thread: the frame changes and the listeners hear of it with nothing between.
        frame = self.frame
        for scroll in scrolls:
            apply_scroll(frame, scroll)
        for rect, pixels in writes:
            frame[rect.y : rect.bottom, rect.x : rect.right] = pixels
        for i, scroll in enumerate(scrolls):
            self.scroll(scroll.rect, scroll.dy, damage if i == len(scrolls) - 1 else None)
        if damage and not scrolls:
            # damage() less its clipping and thread check: these rectangles are the grab's,
            # inside the frame (the writes above took them), and this is the loop thread.
            self._deliver("on_damage", (damage,))

    def _run(self, ready: concurrent.futures.Future[_Capture]) -> None:
        try:
            capture = _Capture(self)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        try:
            try:
                capture.setup()
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(capture)
            if self._on_loop(capture):
                while (job := self._jobs.get()) is not None:  # LoopCapture's big grabs
                    job()
            else:
                capture.loop(self._wake_r)
        except Exception:
            logger.exception("X capture stopped")
        finally:
            capture.close()
