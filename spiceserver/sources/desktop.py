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
* **When.**  The first change after a quiet spell is grabbed at once (latency); later ones are
  coalesced to at most ``max_fps`` grabs a second.  With no damage the thread sleeps in
  ``select()``, waking only for X events and the pointer check (once a second with XInput 2
  raw motion, else every :data:`POINTER_POLL_SECONDS`): an idle desktop costs next to nothing.
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
(7.9 MiB at 1920x1080) instead of a copy of its own.  Updates are at least a grab interval
apart while the screen keeps changing, so the wait is normally over before it starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from spiceserver.clipboard import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT
from spiceserver.errors import ConfigError
from spiceserver.protocol.messages import CursorShape
from spiceserver.scroll import Scroll, ScrollMisses, apply_scroll
from spiceserver.sources.base import FramebufferSource, Head, Rect
from spiceserver.sources.tiles import changed_rects, damage_boxes, load_kernel
from spiceserver.sources.x11_cursor import cursor_from_argb
from spiceserver.sources.x11_grab import Grabber, ScreenShrank
from spiceserver.sources.x11_loop import LoopCapture
from spiceserver.x11_randr import RandrWorker, describe, fix_xlib_errors, read_heads, read_layout

if TYPE_CHECKING:
    from Xlib.display import Display

    from spiceserver.clipboard import ClipboardBackend

__all__ = ["DesktopSource", "cursor_from_argb", "open_display"]

logger = logging.getLogger("spiceserver.desktop")

#: Without DAMAGE, the screen is polled this often when nothing changed for a second.
IDLE_POLL_SECONDS = 0.25
#: X events read in one pass of the capture loop before it grabs again.  Raw damage
#: rectangles (one per glyph xterm draws) can arrive faster than python-xlib parses them
#: (``yes`` in an xterm): reaching this many switches the damage to delta rectangles, which X
#: reports only for pixels not already damaged since our last subtract.
FLOOD_EVENTS = 512
#: Bytes the capture's X connection reads at a time (128 events).
X_READ_BYTES = 4096
#: Seconds without any damage after which flood mode ends (raw rectangles again; xterm pauses
#: for a fraction of a second now and then even under `seq`).  Not a fixed period: each return
#: to raw rectangles during a flood costs the parse of the thousands of events X queues first.
FLOOD_CALM_SECONDS = 1.0
#: Raw damage: the DamageSubtract keeping X's region small goes this long after a grab (before
#: it, it cost 0.05 ms of a small change's latency: ``bench_desktop --trace-hops``).
SUBTRACT_DELAY = 0.005
#: Without XInput 2, the pointer position is polled this often.
POINTER_POLL_SECONDS = 0.1
#: With XInput 2, the pointer is still polled this often: warps raise no raw motion.
WARP_POLL_SECONDS = 1.0
#: XFixes cursor images kept by serial (animated cursors cycle through a few).
CURSOR_CACHE_SIZE = 64
#: High bits of a cursor's SPICE ``unique`` ("XFIX"): serials never collide with the default 1.
_CURSOR_UNIQUE_TAG = 0x5846_4958 << 32
#: The core event code of XGE events (XInput 2 raw motion arrives as one).
_GENERIC_EVENT = 35
#: python-xlib's RandR event classes: the screen's size or monitors may have changed.
_RANDR_EVENTS = frozenset({"ScreenChangeNotify", "CrtcChangeNotify", "OutputChangeNotify"})
#: How long :meth:`DesktopSource.start` waits for the first full grab.
START_TIMEOUT = 30.0
#: Seconds after set-up before the small-box compare kernel loads (tiles.load_kernel, on a
#: thread): its numba import and load hold the GIL for ~0.4 s, which at once delayed the
#: first client's first frame (bench_desktop first_frame_s, noisy: +0.1..0.4 s); until then
#: small boxes are compared with numpy.
KERNEL_LOAD_DELAY = 3.0
#: Changed rectangles smaller than this (pixels) are not checked for a scroll: cheap to encode.
SCROLL_MIN_AREA = 128 * 32


def open_display(name: str) -> Display:
    """A python-xlib connection to ``name``, or a :class:`ConfigError` that says what to check."""
    from Xlib import display as xdisplay
    from Xlib import error as xerror

    try:
        display = xdisplay.Display(name)
    except (xerror.DisplayError, OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot open X display {name!r} ({exc}): is an X server running there, and may "
            "this user connect to it (DISPLAY, XAUTHORITY, xhost)?"
        ) from exc
    fix_xlib_errors(display)
    return display


class DesktopSource(FramebufferSource):
    """The screen of a running X server (Xorg, Xvfb, xorgxrdp …), with its cursor.

    Args:
        display: An X display name such as ``":0"``; None uses ``$DISPLAY``.
        max_fps: At most this many grabs a second while the screen keeps changing.
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
        self, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_TIMEOUT
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
        """Hand an update to the loop thread, which applies it and notifies (Exact frames)."""
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
            self.damage(damage)

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


class _Capture:
    """The X side of a :class:`DesktopSource`: made and closed on the capture thread, driven
    by it (:meth:`loop`) or by the event loop (:class:`~spiceserver.sources.x11_loop.
    LoopCapture`, which runs only its big grabs and resizes on the thread)."""

    def __init__(self, source: DesktopSource) -> None:
        self.source = source
        self.interval = 1.0 / source.max_fps
        self.display = open_display(source.display_name)
        self.display.set_error_handler(self._x_error)
        # python-xlib reads as much as SO_RCVBUF (~200 KiB) per recv and parses it in one go,
        # copying the rest of the buffer per event: under a flood of damage one
        # pending_events() call then runs for seconds.  Small reads keep each call short, so
        # FLOOD_EVENTS can take effect (python-xlib has no API for this: its protocol object).
        self.display.display.recv_buffer_size = X_READ_BYTES
        self.root = self.display.screen().root
        try:
            self.sct = Grabber(source.display_name)
        except Exception as exc:
            self.display.close()
            raise ConfigError(f"mss cannot grab {source.display_name!r}: {exc}") from exc
        #: The screen's size as last handed to the loop (the source's frame follows).
        self.width, self.height = source.size
        self.damage: int | None = None
        self.damage_event = -1
        #: Delta rectangles instead of raw ones, since a flood of damage (see FLOOD_EVENTS).
        self.flooded = False
        self.last_damage = 0.0
        self.xi_opcode: int | None = None
        self.xfixes = False
        self.pending: list[Rect] = []
        #: The root's size or the RandR layout may have changed (check with _check_layout).
        self.resized = False
        self.heads = source._heads
        self.cursor_dirty = False
        self.cursor_serial = -1
        self.cursor_cache: OrderedDict[int, CursorShape | None] = OrderedDict()
        self.cursor_shape: CursorShape | bool | None = False  # False: never set
        self.pointer_dirty = False
        self.pointer: tuple[int, int] | None = None
        self.next_grab = 0.0
        self.subtract_at: float | None = None  # see SUBTRACT_DELAY
        self.next_pointer = 0.0
        self.next_pointer_poll = 0.0
        self.pointer_poll = POINTER_POLL_SECONDS
        self.last_change = 0.0
        self.misses = ScrollMisses()
        self._cursor_error_logged = False

    # -- setup -----------------------------------------------------------------

    def setup(self) -> None:
        """Select events and pick fallbacks, each logged once; then grab the whole screen."""
        from Xlib import X
        from Xlib.ext import damage, xfixes, xinput

        d, root, name = self.display, self.root, self.source.display_name
        fallbacks = self.source.fallbacks
        root.change_attributes(event_mask=X.StructureNotifyMask)
        if d.has_extension("RANDR"):
            from Xlib.ext import randr

            d.xrandr_query_version()
            root.xrandr_select_input(
                randr.RRScreenChangeNotifyMask
                | randr.RRCrtcChangeNotifyMask
                | randr.RROutputChangeNotifyMask
            )
        if not self.source.use_damage:
            fallbacks.append("no DAMAGE (disabled): polling the screen")
        elif d.has_extension("DAMAGE"):
            d.damage_query_version()
            # Delta rectangles until set up: a flood already going on (raw rectangles are
            # parsed slower than X can send them) would starve the set-up's round trips.
            # The main loop tries raw rectangles at once.
            self.damage = root.damage_create(damage.DamageReportDeltaRectangles)
            self.flooded = True
            self.damage_event = d.extension_event.DamageNotify
        else:
            fallbacks.append("no DAMAGE extension: polling the screen and comparing tiles")
        if d.has_extension("XFIXES"):
            d.xfixes_query_version()
            d.xfixes_select_cursor_input(root, xfixes.XFixesDisplayCursorNotifyMask)
            self.xfixes = True
            self.cursor_dirty = True
        else:
            fallbacks.append("no XFIXES: clients keep the default cursor shape")
        if d.has_extension("XInputExtension"):
            try:
                version = d.xinput_query_version()
                if (version.major_version, version.minor_version) >= (2, 0):
                    root.xinput_select_events([(xinput.AllMasterDevices, xinput.RawMotionMask)])
                    self.xi_opcode = d.query_extension("XInputExtension").major_opcode
            except Exception as exc:
                logger.debug("XInput 2 raw motion unavailable: %s", exc)
        if self.xi_opcode is not None:
            self.pointer_poll = WARP_POLL_SECONDS
        else:
            fallbacks.append(
                f"no XInput 2: polling the pointer every {POINTER_POLL_SECONDS * 1000:.0f} ms"
            )
        d.sync()
        self._check_layout()
        self._grab_full()
        loader = threading.Timer(KERNEL_LOAD_DELAY, load_kernel)
        loader.name, loader.daemon = "spice-x11-jit", True
        loader.start()
        status = " ".join(self.sct.performance_status)
        if "MIT-SHM is working" not in status:
            fallbacks.append(f"no XShm: grabbing with XGetImage ({status or 'mss without XShm'})")
        for fallback in fallbacks:
            logger.warning("%s: %s", name, fallback)
        logger.info(
            "sharing X display %s (%dx%d): %s",
            name,
            *self.source.size,
            "DAMAGE, XShm, XFixes" if not fallbacks else "with fallbacks",
        )

    def close(self) -> None:
        try:
            self.sct.close()
        finally:
            try:
                self.display.close()
            except Exception:  # the connection may already be gone
                logger.debug("closing the X connection failed", exc_info=True)

    # -- main loop -------------------------------------------------------------

    def loop(self, wake_fd: int) -> None:
        d = self.display
        xfd = d.fileno()
        while not self.source._stopping:
            self._read_events()
            now = time.monotonic()
            self.calm(now)
            if self.resized:
                self.resized = False
                self._check_layout()
            self.cursor()
            if self._grab_due(now):
                self._grab_update(now)
                self.next_grab = now + self.interval
                continue  # the grab's round trips may have queued events
            self.subtract_and_pointer(now)
            d.flush()
            if d.pending_events():
                continue
            timeout = self._timeout(time.monotonic())
            readable, _, _ = select.select([xfd, wake_fd], [], [], timeout)
            if wake_fd in readable:
                return

    def calm(self, now: float) -> None:
        """Raw damage rectangles again once a flood is over (see FLOOD_CALM_SECONDS)."""
        if self.flooded and now - self.last_damage > FLOOD_CALM_SECONDS:
            self._set_damage_level(flooded=False)

    def cursor(self) -> None:
        if self.cursor_dirty and self.xfixes:
            self.cursor_dirty = False
            self._update_cursor()

    def subtract_and_pointer(self, now: float) -> None:
        """The delayed DamageSubtract and the pointer's position, when due."""
        if self.subtract_at is not None and now >= self.subtract_at:
            self.subtract_at = None
            if self.damage is not None and not self.flooded:  # flooded: before each grab
                self.display.damage_subtract(self.damage)
        if self._pointer_due(now):
            self.pointer_dirty = False
            self._update_pointer()
            self.next_pointer = now + self.interval
            self.next_pointer_poll = now + self.pointer_poll

    def _next_grab_at(self, now: float) -> float | None:
        """When the next grab is due; None while there is no damage to grab."""
        if self.damage is None:  # polling: slower once the screen has been still for 1 s
            idle = now - self.last_change > 1.0
            return self.next_grab + (IDLE_POLL_SECONDS - self.interval if idle else 0.0)
        return self.next_grab if self.pending else None

    def _grab_due(self, now: float) -> bool:
        due = self._next_grab_at(now)
        return due is not None and now >= due

    def _pointer_due(self, now: float) -> bool:
        if self.pointer_dirty:
            return now >= self.next_pointer
        return now >= self.next_pointer_poll

    def _timeout(self, now: float, grabbing: bool = True) -> float:
        """Seconds until something is due (``grabbing``: a grab too)."""
        deadline = self.next_pointer if self.pointer_dirty else self.next_pointer_poll
        for due in (self._next_grab_at(now) if grabbing else None, self.subtract_at):
            if due is not None:
                deadline = min(deadline, due)
        return max(0.0, deadline - now)

    def _read_events(self) -> None:
        """Handle the events received so far, reading at most FLOOD_EVENTS of them: more
        waiting means a flood of damage (delta rectangles from now on)."""
        d = self.display
        count = 0
        # pending_events() reads from the socket each time (X_READ_BYTES) and returns the
        # queue's length; next_event() pops a queued event without I/O.
        while queued := d.pending_events():
            for _ in range(queued):
                self._on_event(d.next_event())
            count += queued
            if count >= FLOOD_EVENTS:
                if self.damage is not None and not self.flooded:
                    self._set_damage_level(flooded=True)
                return

    def _set_damage_level(self, *, flooded: bool) -> None:
        """Switch between raw and delta damage rectangles (the new report starts before the
        old one ends, so no change falls between them)."""
        from Xlib.ext import damage

        assert self.damage is not None
        level = damage.DamageReportDeltaRectangles if flooded else damage.DamageReportRawRectangles
        old, self.damage = self.damage, self.root.damage_create(level)
        self.display.damage_destroy(old)
        self.flooded = flooded
        self.source.stats["damage_floods"] += flooded
        logger.debug(
            "%s: %s", self.source.display_name,
            "a flood of damage: delta rectangles" if flooded else "calm again: raw rectangles",
        )  # fmt: skip

    def _on_event(self, event: Any) -> None:
        from Xlib import X

        etype = event.type & 0x7F
        if etype == self.damage_event:
            area = event.area
            self.pending.append(Rect(area.x, area.y, area.width, area.height))
            self.last_damage = time.monotonic()
        elif etype == _GENERIC_EVENT:
            if getattr(event, "extension", None) == self.xi_opcode:
                self.pointer_dirty = True
        elif etype == X.ConfigureNotify:
            self.resized = True
        elif hasattr(event, "cursor_serial"):
            self.cursor_serial = event.cursor_serial
            self.cursor_dirty = True
        elif type(event).__name__ in _RANDR_EVENTS:
            self.resized = True

    def _x_error(self, error: Any, request: Any) -> None:
        logger.debug("X error on %s: %s", self.source.display_name, error)

    # -- pixels ----------------------------------------------------------------

    def _grab(self, box: Rect) -> np.ndarray:
        stats = self.source.stats
        stats["grabs"] += 1
        stats["grabbed_pixels"] += box.area
        return self.sct.grab(box)

    def _grab_full(self) -> None:
        full = Rect(0, 0, self.width, self.height)
        self.source._publish([], [(full, self._grab(full))], [full])

    def _grab_update(self, now: float) -> None:
        boxes = self.grab_plan(now)
        if boxes is None:
            return
        try:
            self.grab_boxes(boxes, now)
        except ScreenShrank:
            if self._check_layout():
                self.pending.clear()
                return
            raise

    def grab_plan(self, now: float, follow_layout: bool = True) -> list[Rect] | None:
        """The boxes to grab for the damage so far (pending emptied); None: none, the screen
        changed size (``follow_layout``: followed here, else left to the caller: resized)."""
        width, height = self.width, self.height
        if self.damage is not None:
            # No round trip before the grab (half a millisecond): events already received
            # join it, later ones raise a grab of their own.  Raw rectangles need no
            # subtract (it only keeps X's region small): see SUBTRACT_DELAY.
            if self.flooded:
                # Delta rectangles leave damage inside the region unreported until the subtract:
                # it must reach X before the grab, or a change between the two would be lost.
                self.display.damage_subtract(self.damage)
                self.display.sync()
            self._read_events()  # the rest of a drawing (a scroll's copy, then its new line)
            if self.resized:
                if not follow_layout:
                    return None
                self.resized = False
                if self._check_layout():
                    self.pending.clear()
                    return None
            boxes = damage_boxes(self.pending, width, height)
            self.pending.clear()
            return boxes
        return [Rect(0, 0, width, height)]

    def grab_boxes(self, boxes: list[Rect], now: float) -> None:
        """Grab ``boxes``, compare them with the source's frame and publish what changed.
        Raises ScreenShrank when a box is no longer on the screen."""
        import mss.exception

        # On the loop (x11_loop.py) every update handed over is applied already: the loop
        # applies them, and grabs only while no job of the capture thread runs.
        on_loop = threading.get_ident() == self.source._loop_thread
        changed: list[Rect] = []
        writes: list[tuple[Rect, np.ndarray]] = []
        scrolls: list[Scroll] = []
        for box in boxes:
            try:
                pixels = self._grab(box)
            except mss.exception.ScreenShotError as exc:
                # The screen shrank under this grab (its events are not read yet): follow.
                logger.debug("grab of %s failed (%s): checking the screen size", box, exc)
                raise ScreenShrank(str(exc)) from exc
            if not on_loop and not self.source._settled():
                return  # stopping
            # Read only (Exact frames); boxes are disjoint, so one box's changes, applied
            # later with the others, never alter what the next box is compared with.
            held = self.source.frame[box.y : box.bottom, box.x : box.right]
            rects = changed_rects(held, pixels)
            if rects and self.source.scroll_detect and box.area >= SCROLL_MIN_AREA:
                rects = self._scrolled(held, pixels, rects, box, scrolls, now)
            for rect in rects:
                new = pixels[rect.y : rect.bottom, rect.x : rect.right]
                target = Rect(box.x + rect.x, box.y + rect.y, rect.width, rect.height)
                writes.append((target, new))  # a view of this grab's own buffer
                changed.append(target)
        if changed or scrolls:
            self.last_change = now
            stats = self.source.stats
            stats["updates"] += 1
            stats["changed_pixels"] += sum(r.area for r in changed)
            stats["scrolls"] += len(scrolls)
            stats["scrolled_pixels"] += sum(s.dest.area for s in scrolls)
            self.source._publish(scrolls, writes, changed)
        self.subtract_at = now + SUBTRACT_DELAY

    def _scrolled(
        self,
        held: np.ndarray,
        pixels: np.ndarray,
        rects: list[Rect],
        box: Rect,
        scrolls: list[Scroll],
        now: float,
    ) -> list[Rect]:
        """``rects`` (the changes, in box coordinates), or, if their pixels scrolled, what
        still differs once ``held`` is moved the same way (the move joins ``scrolls``).

        Tried on the changes' bounding box first: scrolled text of uneven line lengths is
        cut into many rectangles, but it moved as one.  Then on the largest change alone (a
        clock ticking beside a scrolling terminal)."""
        bbox = rects[0]
        for rect in rects[1:]:
            bbox = bbox.union(rect)
        tries = [bbox] + ([max(rects, key=lambda r: r.area)] if len(rects) > 1 else [])
        for area in tries:
            if area.area < SCROLL_MIN_AREA:
                continue
            old = held[area.y : area.bottom, area.x : area.right]
            new = pixels[area.y : area.bottom, area.x : area.right]
            scroll = self.misses.detect(old, new, (box, area), now)
            if scroll is not None:
                # What the box holds once the loop applies the move: a copy, as ``held``
                # is the source's frame (read only here).
                moved = held.copy()
                apply_scroll(moved[area.y : area.bottom, area.x : area.right], scroll)
                scrolls.append(scroll.shifted(box.x + area.x, box.y + area.y))
                return changed_rects(moved, pixels)
        return rects

    def _check_layout(self) -> bool:
        """Follow a change of the screen's size or monitors; True if the size changed."""
        width, height, heads = self.read_layout()
        if (width, height) == (self.width, self.height):
            return False
        self.resize(width, height, heads)
        return True

    def read_layout(self) -> tuple[int, int, tuple[Head, ...]]:
        """The screen's size and monitors (new monitors of the same size are followed)."""
        width, height, heads = read_layout(self.display)
        if (width, height) == (self.width, self.height) and heads != self.heads:
            self.heads = heads
            logger.info("%s: monitors are now %s", self.source.display_name, describe(heads))
            self.source._publish_layout(None, heads)
        return width, height, heads

    def resize(self, width: int, height: int, heads: tuple[Head, ...]) -> None:
        """Follow a new screen size: a new grabber and frame, grabbed whole."""
        logger.info(
            "%s: screen is now %dx%d (%s)", self.source.display_name, width, height, describe(heads)
        )
        self.sct.close()
        self.sct = Grabber(self.source.display_name)
        self.width, self.height = width, height
        # A grab is a buffer of its own (copied out of XShm): the loop's frame from now on.
        frame = self._grab(Rect(0, 0, width, height))
        self.pending.clear()
        self.heads = heads
        self.source._publish_layout(frame, heads)

    # -- cursor ----------------------------------------------------------------

    def _update_cursor(self) -> None:
        serial = self.cursor_serial
        if serial in self.cursor_cache:
            self.cursor_cache.move_to_end(serial)
            shape = self.cursor_cache[serial]
        else:
            try:
                image = self.display.xfixes_get_cursor_image(self.root)
            except Exception as exc:
                # Xorg refuses (BadAccess) the image of a cursor whose creator has gone,
                # such as a root cursor set by xsetroot: keep what the client has.
                if not self._cursor_error_logged:
                    logger.info(
                        "%s: cursor image unavailable (%s); keeping the last one",
                        self.source.display_name,
                        exc,
                    )
                    self._cursor_error_logged = True
                return
            shape = cursor_from_argb(
                image.cursor_image,
                image.width,
                image.height,
                image.xhot,
                image.yhot,
                _CURSOR_UNIQUE_TAG | image.cursor_serial,
            )
            self.cursor_cache[image.cursor_serial] = shape
            if len(self.cursor_cache) > CURSOR_CACHE_SIZE:
                self.cursor_cache.popitem(last=False)
        if shape != self.cursor_shape:
            self.cursor_shape = shape
            self.source.set_cursor(shape)

    def _update_pointer(self) -> None:
        reply = self.root.query_pointer()
        position = (reply.root_x, reply.root_y)
        if position != self.pointer:
            self.pointer = position
            self.source.move_cursor(*position)
