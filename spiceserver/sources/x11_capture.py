"""The X11 capture behind :class:`~spiceserver.sources.desktop.DesktopSource`: its X
connection, DAMAGE and XFixes events, grabs, tile compare, scroll check, cursor and pointer.

It runs on the source's capture thread, or (small changes, ``x11_loop.LoopCapture``) on the
event loop; :mod:`spiceserver.sources.desktop` explains the whole design.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from spiceserver.errors import ConfigError
from spiceserver.kernel_memory import release_after_load
from spiceserver.pacing import BURST, next_slot
from spiceserver.protocol.messages import CursorShape
from spiceserver.scroll import Scroll, ScrollMisses
from spiceserver.sources.base import Head, Rect
from spiceserver.sources.tiles import changed_rects, changed_rects_moved, damage_boxes, load_kernel
from spiceserver.sources.x11_cursor import cursor_from_argb
from spiceserver.sources.x11_events import DirectDamage, use_lean_damage_events
from spiceserver.sources.x11_grab import Grabber, ScreenShrank
from spiceserver.x11_randr import describe, fix_xlib_errors, read_layout

if TYPE_CHECKING:
    from Xlib.display import Display

    from spiceserver.sources.desktop import DesktopSource

__all__ = ["open_display"]

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
#: The grab's plan reads the events once more (the rest of a drawing: a scroll's copy, then
#: its new line), unless a read emptied the socket less than this long before: what X drew
#: in so short a time is no likelier to be there than in the grab's own round trip (and its
#: damage raises the next grab).  That read is a system call, 30 µs of a cold CPU on the
#: path of a small change (``bench_desktop --trace-hops``).
REREAD_AFTER = 0.0002
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
#: Seconds after set-up before the compare and scroll kernels load (tiles.load_kernel, on a
#: thread): numba's import and the load hold the GIL for ~0.4 + 0.3 s, which at once delayed
#: the first client's first frame (bench_desktop first_frame_s, noisy: +0.1..0.4 s); until
#: then numpy compares (with the same answers).
KERNEL_LOAD_DELAY = 3.0
#: Changed rectangles smaller than this (pixels) are not checked for a scroll: cheap to encode.
SCROLL_MIN_AREA = 128 * 32


def _load_compare_kernel() -> None:
    """tiles.load_kernel on its timer thread: a failure leaves numpy's compare in place."""
    try:
        load_kernel()
        # Loading linked the kernels with LLVM, whose code the codecs' warm-up had paged
        # out: out again (``python -m tests.interop.bench_rss``: 125 -> 113 MiB).
        release_after_load()
    except Exception:
        logger.warning("compare kernels not loaded: numpy compares instead", exc_info=True)


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
        #: DamageNotify read off the socket while python-xlib has nothing in flight.
        self.direct: DirectDamage | None = None
        #: When a read last emptied the socket (see REREAD_AFTER).
        self.drained_at = -1.0
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
            use_lean_damage_events(d, self.damage_event)
            self.direct = DirectDamage.create(d, self.damage_event, X_READ_BYTES)
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
        loader = threading.Timer(KERNEL_LOAD_DELAY, _load_compare_kernel)
        loader.name, loader.daemon = "spice-x11-jit", True
        loader.start()
        status = self.sct.shm_status
        if status is not None:
            fallbacks.append(f"no XShm: grabbing with XGetImage ({status})")
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
                self.grabbed(now)
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

    def grabbed(self, now: float) -> None:
        """Schedule the next grab after one made at ``now``: with DAMAGE a few may follow
        at once after a pause, for a change drawn in pieces (:mod:`spiceserver.pacing`);
        polling, no burst (nothing says more is coming)."""
        burst = BURST if self.damage is not None else 1
        self.next_grab = next_slot(self.next_grab, now, self.interval, burst)

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
        count = 0
        direct = self.direct
        if direct is not None:  # damage alone: straight off the socket (x11_events.py)
            damaged, xlib = self.pending.append, False
            while count < FLOOD_EVENTS:
                read, xlib, drained = direct.read(damaged)
                count += read
                if drained or xlib:
                    break
            now = time.monotonic()
            if count:
                self.last_damage = now
            if not xlib and count < FLOOD_EVENTS:
                self.drained_at = now
                return
        d = self.display
        # pending_events() reads from the socket each time (X_READ_BYTES) and returns the
        # queue's length; next_event() pops a queued event without I/O.
        while count < FLOOD_EVENTS and (queued := d.pending_events()):
            for _ in range(queued):
                self._on_event(d.next_event())
            count += queued
        if count >= FLOOD_EVENTS and self.damage is not None and not self.flooded:
            self._set_damage_level(flooded=True)

    def queued_events(self) -> bool:
        """Whether events wait in python-xlib's queue (a round trip read them).  With the
        direct reader, its queue is looked at without a read: anything still on the socket
        makes it readable, and python-xlib parses every whole packet it reads at once."""
        if self.direct is not None:
            return self.direct.queued()
        return bool(self.display.pending_events())

    def _just_drained(self) -> bool:
        """Whether the socket was emptied of events less than REREAD_AFTER ago, and no round
        trip has queued any since (python-xlib's queue)."""
        direct = self.direct  # (only its reads set drained_at)
        if direct is None or time.monotonic() - self.drained_at >= REREAD_AFTER:
            return False
        return not direct.queued()

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

    def _grab(self, box: Rect, borrowed: bool = False) -> np.ndarray:
        stats = self.source.stats
        stats["grabs"] += 1
        stats["grabbed_pixels"] += box.area
        return self.sct.grab(box, borrowed=borrowed)

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
            if self.flooded or not self._just_drained():
                self._read_events()  # the rest of a drawing (a scroll's copy, its new line)
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
        # On the loop (x11_loop.py) every update handed over is applied already: the loop
        # applies them, and grabs only while no job of the capture thread runs.
        on_loop = threading.get_ident() == self.source._loop_thread
        # One box grabbed on the loop is compared and applied (publish) before anything
        # grabs again: its pixels may stay in the grab's shared memory, uncopied (a numpy
        # copy, ~18 us on the path of a typed glyph after an idle spell: bench_desktop
        # --trace-hops with stamps around it).
        borrowed = on_loop and len(boxes) == 1
        changed: list[Rect] = []
        writes: list[tuple[Rect, np.ndarray]] = []
        scrolls: list[Scroll] = []
        for box in boxes:
            pixels = self._grab(box, borrowed)  # ScreenShrank: the caller follows the new size
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
                scrolls.append(scroll.shifted(box.x + area.x, box.y + area.y))
                return changed_rects_moved(held, pixels, scroll.shifted(area.x, area.y))
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
