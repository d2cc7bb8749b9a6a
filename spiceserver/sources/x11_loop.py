"""The X desktop's damage, followed on the event loop; its big grabs on the capture thread.

A small change (a typed glyph, a clock's digits) took these steps from X to the socket:
the capture thread wakes for the damage event, grabs, compares and hands the update over to
the loop (a wake-up of the loop: ~0.1 ms), which applies it and sends it.  After an idle
spell every step costs several times its warm price (a cold CPU: ``bench_desktop
--trace-hops``), so the fewest steps win.  Here the loop reads the X connection itself
(``add_reader``); a grab of at most :data:`SMALL_GRAB_PIXELS` is made, compared, applied and
sent in that same callback (the display handler sends from its damage callback,
``DisplayHandler._send_now``).  Anything bigger — a window, a scroll, a new screen size —
goes to the capture thread as before (``submit``), one job at a time; while it runs, damage
keeps accumulating and the next grab waits for it, so the grabber is only ever used by one
thread at a time, and a grab on the loop compares with a frame that holds every update (the
loop applied them: desktop.py, Exact frames).

What runs here, on the loop, is what the capture thread ran between its grabs: reading
events (at most ``FLOOD_EVENTS`` a pass, so a flood of damage costs the loop bounded time
and switches to delta rectangles), the damage subtract, the cursor image and the pointer
position (round trips to a local X server, as x11spice makes them in its main loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from spiceserver.sources.x11_grab import ScreenShrank

if TYPE_CHECKING:
    from spiceserver.sources.x11_capture import _Capture

__all__ = ["SMALL_GRAB_PIXELS", "LoopCapture"]

logger = logging.getLogger("spiceserver.desktop")

#: Grabs of at most this many pixels (16 tiles of 32x32: a glyph, a word, a clock) are made
#: on the loop: one XShmGetImage round trip and one compare (a numba kernel), less than the
#: hand-over from a thread that sits on the path of every small change.
SMALL_GRAB_PIXELS = 16 * 32 * 32


class LoopCapture:
    """Drives a :class:`~spiceserver.sources.x11_capture._Capture` from the event loop.

    Args:
        capture: Set up (its X connections open, the first frame grabbed).
        submit: Runs a job on the capture thread (in order, one at a time).
    """

    def __init__(self, capture: _Capture, submit: Callable[[Callable[[], None]], None]) -> None:
        self.capture = capture
        self._submit = submit
        self._loop = asyncio.get_running_loop()
        self._fd = capture.display.fileno()
        #: A grab or a resize runs on the capture thread.
        self.busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False
        self.closed = False
        #: Grabs made here, and jobs (big grabs, resizes) run on the capture thread.
        self.loop_grabs = 0
        self.thread_jobs = 0
        self._loop.add_reader(self._fd, self.run)
        self._schedule()

    def close(self) -> None:
        """Stop following X (the capture thread may still finish its job)."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.run)

    def run(self) -> None:
        """One pass: what the capture thread's loop did between two waits."""
        self._scheduled = False
        if self.closed:
            return
        try:
            self._pass()
        except Exception:
            logger.exception("X capture stopped")
            self.close()

    def _pass(self) -> None:
        capture = self.capture
        display = capture.display
        capture._read_events()
        now = time.monotonic()
        capture.calm(now)
        if capture.resized and not self.busy:
            capture.resized = False
            self._follow_layout()
        capture.cursor()
        if not self.busy and capture._grab_due(now):
            self._grab(now)
            capture.grabbed(now)
        capture.subtract_and_pointer(now)
        display.flush()
        if capture.queued_events():  # queued by a round trip: no readable socket for them
            self._schedule()
            return
        if self._timer is not None:
            self._timer.cancel()
        timeout = capture._timeout(time.monotonic(), grabbing=not self.busy)
        self._timer = self._loop.call_later(timeout, self.run)

    def _grab(self, now: float) -> None:
        capture = self.capture
        boxes = capture.grab_plan(now, follow_layout=False)
        if boxes is None:  # the screen changed size: the next pass follows it
            self._schedule()
            return
        if sum(box.area for box in boxes) <= SMALL_GRAB_PIXELS:
            self.loop_grabs += 1
            try:
                capture.grab_boxes(boxes, now)  # published and sent from here
            except ScreenShrank:
                if not self._follow_layout():  # off a screen of the same size: X is wrong
                    raise
            return

        def grab() -> None:
            capture.grab_boxes(boxes, now)

        self._run_job(grab)

    def _follow_layout(self) -> bool:
        """New monitors, or a new screen size (a job: the new frame is grabbed whole);
        True for a new size."""
        capture = self.capture
        width, height, heads = capture.read_layout()
        if (width, height) == (capture.width, capture.height):
            return False
        capture.pending.clear()
        self._run_job(lambda: capture.resize(width, height, heads))
        return True

    def _run_job(self, job: Callable[[], None]) -> None:
        """``job`` on the capture thread; passes resume when it is done."""
        self.busy = True
        self.thread_jobs += 1
        loop = self._loop

        def run() -> None:
            error: BaseException | None = None
            try:
                job()
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._done, error)

        self._submit(run)

    def _done(self, error: BaseException | None) -> None:
        self.busy = False
        if self.closed:
            return
        try:
            # A box off the screen: it changed size (else X is wrong: stop, as the thread did).
            if error is not None and not (
                isinstance(error, ScreenShrank) and self._follow_layout()
            ):
                raise error
        except Exception:
            logger.exception("X capture stopped")
            self.close()
            return
        self._schedule()
