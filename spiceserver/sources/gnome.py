"""A GNOME Wayland desktop as a framebuffer source: mutter's ScreenCast through PipeWire.

Theory of operation
-------------------
:meth:`GnomeSource.start` opens a remote desktop session with a screen cast of one monitor
(:mod:`spiceserver.sources.mutter`; the primary monitor unless a connector is given) and
reads the stream's PipeWire node through GStreamer (:mod:`spiceserver.sources.pipewire`).
Everything that blocks runs on one thread of its own (``spice-gnome``); D-Bus runs on the
server's loop.  Either setup step failing raises :class:`ConfigError` and leaves nothing
running: the server never starts with a half-working source.

* **What changed.**  mutter sends a frame only when the monitor was repainted (a still
  screen costs nothing), but a repaint is of whole windows.  Each frame is compared with the
  held one tile by tile (:func:`changed_rows_rects`, as for X), so
  only the pixels that really changed are reported.  (PipeWire's damage metadata would say
  it sooner, but GStreamer's ``pipewiresrc`` neither asks for nor passes it on.)
* **When.**  The newest frame wins: the appsink holds one, and the thread takes at most
  ``max_fps`` a second.
* **Exact frames.**  As in :mod:`~spiceserver.sources.desktop`, the thread never writes
  :attr:`frame`: each update is applied on the loop in the callback that notifies the
  listeners, and at most :data:`MAX_UNAPPLIED_UPDATES` wait there.
* **Size.**  mutter 43 ends the session when the monitor configuration changes (a new mode,
  a rotation); the source then records the monitor again in a new session and swaps the
  new frame in with :meth:`replace_frame` (a new size re-creates the clients' surfaces).
  A frame of another size within one stream (a renegotiated PipeWire format) is followed
  the same way.
* **Cursor.**  The pointer is drawn into the frames (ScreenCast ``cursor-mode`` 1, embedded)
  and the clients' own cursor is hidden: ``pipewiresrc`` does not pass PipeWire's cursor
  metadata (``SPA_META_Cursor``) on, so shapes and positions cannot reach the cursor channel.
* **Input** goes into the same session: :class:`spiceserver.gnome_input.GnomeInput`.
* **Clipboard** too (:meth:`GnomeSource.clipboard_backend`,
  :class:`spiceserver.gnome_clipboard.GnomeClipboard`), following each new session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from spiceserver.config import CLIPBOARD_MAX_BYTES, CLIPBOARD_TIMEOUT
from spiceserver.errors import ConfigError
from spiceserver.scroll import as_u32
from spiceserver.sources.base import FramebufferSource, Rect
from spiceserver.sources.mutter import CURSOR_EMBEDDED, MutterSession
from spiceserver.sources.pipewire import PipeWireFrames, import_gst
from spiceserver.sources.tiles import changed_rects

__all__ = ["GnomeSource"]

logger = logging.getLogger("spiceserver.gnome")

#: How long :meth:`GnomeSource.start` waits for the first frame after the stream started.
START_TIMEOUT = 15.0
#: Updates handed to the loop and not yet applied: past this the capture thread waits (and
#: the appsink keeps only the newest frame meanwhile).
MAX_UNAPPLIED_UPDATES = 2
#: How often the capture thread looks at its stop flag and the pipeline's errors when no
#: frame comes.
PULL_SECONDS = 0.25

#: Pause between two attempts to start the capture pipeline.
RETRY_SECONDS = 0.2
#: After mutter ends a session (monitors changed), this many tries to record again, the
#: n-th after n × REOPEN_DELAY seconds (the monitor may still be reconfiguring).
REOPEN_ATTEMPTS = 5
REOPEN_DELAY = 0.5

if TYPE_CHECKING:
    from spiceserver.clipboard import ClipboardBackend

_Writes = list[tuple[Rect, np.ndarray]]


class GnomeSource(FramebufferSource):
    """One monitor of the GNOME (mutter) Wayland session this process runs in.

    Args:
        connector: The monitor to show (``"Meta-0"``, ``"DP-1"`` …); None: the primary one.
        bus_address: The session bus; None uses ``$DBUS_SESSION_BUS_ADDRESS``.
        pipewire_remote: A PipeWire socket path; None uses the default
            (``$XDG_RUNTIME_DIR/pipewire-0``).
        max_fps: At most this many frames a second are compared and reported.

    The size is known once :meth:`start` has the first frame (1×1 before that).
    """

    kind = "gnome"

    def __init__(
        self,
        connector: str | None = None,
        *,
        bus_address: str | None = None,
        pipewire_remote: str | None = None,
        max_fps: float = 30.0,
    ) -> None:
        if max_fps <= 0:
            raise ConfigError(f"max_fps must be positive, got {max_fps}")
        super().__init__(1, 1)
        self.connector = connector
        self.bus_address = bus_address
        self.pipewire_remote = pipewire_remote
        self.max_fps = max_fps
        #: The running session (for :class:`~spiceserver.gnome_input.GnomeInput`); None
        #: before :meth:`start` and after :meth:`stop`.
        self.session: MutterSession | None = None
        #: Counters for benchmarks: frames compared, frames that changed something, pixels
        #: reported changed.
        self.stats = {"frames": 0, "updates": 0, "changed_pixels": 0, "resizes": 0}
        self._frames: PipeWireFrames | None = None
        self._reopen_task: asyncio.Future[None] | None = None
        self._stopped = False
        self._session_listeners: list[Callable[[MutterSession], None]] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._unapplied = threading.BoundedSemaphore(MAX_UNAPPLIED_UPDATES)

    def clipboard_backend(
        self, max_bytes: int = CLIPBOARD_MAX_BYTES, timeout: float = CLIPBOARD_TIMEOUT
    ) -> ClipboardBackend | None:
        """The session's CLIPBOARD through mutter's selection methods
        (:mod:`spiceserver.gnome_clipboard`)."""
        from spiceserver.gnome_clipboard import GnomeClipboard

        return GnomeClipboard(self, max_bytes=max_bytes, timeout=timeout)

    def add_session_listener(self, listener: Callable[[MutterSession], None]) -> None:
        """Call ``listener`` (on the loop) with each session opened from now on: mutter 43
        ends a session when the monitors change and the source opens another."""
        self._session_listeners.append(listener)

    def remove_session_listener(self, listener: Callable[[MutterSession], None]) -> None:
        with contextlib.suppress(ValueError):
            self._session_listeners.remove(listener)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the session, wait for the first frame, then follow changes.

        Raises:
            ConfigError: No GStreamer/PipeWire plugin, no session bus or mutter on it,
                access refused, or no frame from PipeWire; nothing is left running.
        """
        await super().start()
        if self._thread is not None:
            return
        await asyncio.to_thread(import_gst)  # missing bindings fail before any session
        self._stopped = False
        await self._open()

    async def stop(self) -> None:
        """Stop capturing and end the session.  Idempotent."""
        self._stopped = True
        task, self._reopen_task = self._reopen_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self._close()

    async def _open(self) -> None:
        session = await MutterSession.open(
            self.bus_address, connector=self.connector, cursor_mode=CURSOR_EMBEDDED
        )
        try:
            frames, first = await asyncio.to_thread(
                _start_capture, session.stream.node_id, self.pipewire_remote, START_TIMEOUT
            )
            # Input is taken once the session's devices are up (mutter.WARMUP_SECONDS).
            await asyncio.sleep(max(0.0, session.ready_at - asyncio.get_running_loop().time()))
        except BaseException:
            await session.close()
            raise
        self.session = session
        self._frames = frames
        session.on_closed = self._session_closed
        for listener in list(self._session_listeners):
            try:
                listener(session)
            except Exception:
                logger.exception("a GNOME session listener failed")
        if self._listeners:  # a session again (see Size): new size or not, all is sent anew
            self.replace_frame(first.copy())
        else:
            self.frame = first.copy()
        # The pointer is in the frames (see Cursor): a client cursor too would be a second one.
        self.set_cursor(None)
        self._stopping.clear()
        self._unapplied = threading.BoundedSemaphore(MAX_UNAPPLIED_UPDATES)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(frames, first, ready), name="spice-gnome", daemon=True
        )
        self._thread.start()
        await asyncio.wrap_future(ready)
        height, width = first.shape[:2]
        logger.info("sharing GNOME monitor %s (%dx%d)", session.stream.connector, width, height)

    async def _close(self) -> None:
        thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is not None:
            await asyncio.to_thread(thread.join, 10.0)
            if thread.is_alive():
                logger.warning("the GNOME capture thread did not stop within 10 s")
        frames, self._frames = self._frames, None
        if frames is not None:
            await asyncio.to_thread(frames.close)
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    def _session_closed(self) -> None:
        """mutter ended the session, or its stream broke (on the loop): mutter 43 ends it
        when the monitors change.  Recorded again in a new session."""
        if self._stopped or self._reopen_task is not None:
            return
        self._stopping.set()  # the capture thread stops pulling a stream that is gone
        self._reopen_task = asyncio.ensure_future(self._reopen())

    def _capture_failed(self) -> None:
        """The stream broke while the session lives on (capture thread): start afresh."""
        loop = self._loop
        if loop is not None and not loop.is_closed() and not self._stopping.is_set():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._session_closed)

    async def _reopen(self) -> None:
        logger.info("mutter ended the screen cast (a monitor change?): recording again")
        try:
            await self._close()
            for attempt in range(1, REOPEN_ATTEMPTS + 1):
                try:
                    await self._open()
                    return
                except ConfigError as exc:
                    logger.warning("recording the GNOME monitor again (try %d): %s", attempt, exc)
                    await asyncio.sleep(REOPEN_DELAY * attempt)
            logger.error("cannot record the GNOME monitor again: the picture stays as it was")
        finally:
            self._reopen_task = None

    # ------------------------------------------------------------------ capture thread

    def _run(
        self, frames: PipeWireFrames, first: np.ndarray, ready: concurrent.futures.Future[None]
    ) -> None:
        held = first
        ready.set_result(None)
        interval = 1.0 / self.max_fps
        try:
            while not self._stopping.is_set():
                frame = frames.pull(PULL_SECONDS)
                if frame is None:
                    error = frames.error()
                    if error is not None:
                        logger.warning("PipeWire capture stopped: %s", error)
                        self._capture_failed()
                        return
                    continue
                started = time.monotonic()
                held = self._compare(held, frame)
                # Latest wins: frames arriving meanwhile replace each other in the appsink.
                self._stopping.wait(max(0.0, interval - (time.monotonic() - started)))
        except Exception:
            logger.exception("GNOME capture stopped")

    def _compare(self, held: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """Report what ``frame`` changes against ``held``; returns the new held frame."""
        self.stats["frames"] += 1
        if frame.shape != held.shape:
            height, width = frame.shape[:2]
            logger.info("GNOME monitor is now %dx%d", width, height)
            self.stats["resizes"] += 1
            self._publish_frame(frame.copy())
            return frame
        rects = changed_rows_rects(held, frame)
        if not rects:
            return held
        writes: _Writes = []
        for rect in rects:
            pixels = frame[rect.y : rect.bottom, rect.x : rect.right]
            held[rect.y : rect.bottom, rect.x : rect.right] = pixels
            writes.append((rect, pixels))  # views of this frame, which nothing else writes
        self.stats["updates"] += 1
        self.stats["changed_pixels"] += sum(r.area for r in rects)
        self._publish(writes, rects)
        return held

    def _publish(self, writes: _Writes, damage: list[Rect]) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._apply(writes, damage)
            return
        while not self._unapplied.acquire(timeout=PULL_SECONDS):
            if self._stopping.is_set() or loop.is_closed():
                return
        try:
            loop.call_soon_threadsafe(self._apply_handed, writes, damage)
        except RuntimeError:  # the loop closed meanwhile
            self._unapplied.release()

    def _apply_handed(self, writes: _Writes, damage: list[Rect]) -> None:
        try:
            self._apply(writes, damage)
        finally:
            self._unapplied.release()

    def _apply(self, writes: _Writes, damage: list[Rect]) -> None:
        frame = self.frame
        for rect, pixels in writes:
            if rect.bottom <= frame.shape[0] and rect.right <= frame.shape[1]:
                frame[rect.y : rect.bottom, rect.x : rect.right] = pixels
        self.damage(damage)

    def _publish_frame(self, frame: np.ndarray) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self.replace_frame(frame)
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.replace_frame, frame)


def changed_rows_rects(old: np.ndarray, new: np.ndarray) -> list[Rect]:
    """:func:`~spiceserver.sources.tiles.changed_rects` of two whole frames, tiled only over
    the band of rows that differ.

    mutter hands over whole frames, so each one is compared in full.  One comparison of the
    pixels as 32-bit words finds the changed rows (about 1 ms for 1280×800 here); the tiling,
    about 20 ms over a whole 1280×800 frame, then covers only that band (a typed glyph: 14
    rows)."""
    rows = np.flatnonzero((as_u32(old) != as_u32(new)).any(axis=1))
    if not rows.size:
        return []
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    return [
        Rect(rect.x, rect.y + top, rect.width, rect.height)
        for rect in changed_rects(old[top:bottom], new[top:bottom])
    ]


def _start_capture(
    node: int, remote: str | None, timeout: float
) -> tuple[PipeWireFrames, np.ndarray]:
    """A running pipeline on ``node`` and its first frame with pixels; ConfigError if none
    comes within ``timeout`` seconds.

    A pipeline that fails to start or to negotiate is built anew: on a loaded machine
    pipewiresrc sometimes gives up on a stream mutter has only just announced (its own
    timeouts: "not-negotiated", or a failed state change without a message).
    """
    deadline = time.monotonic() + timeout
    error = "no frame"
    while time.monotonic() < deadline:
        frames = PipeWireFrames(node, remote=remote)
        try:
            try:
                frames.start()
            except ConfigError as exc:  # closed already
                error = str(exc)
                logger.info("PipeWire capture of node %d: %s; trying again", node, error)
                time.sleep(RETRY_SECONDS)
                continue
            while time.monotonic() < deadline:
                frame = frames.pull(PULL_SECONDS)
                if frame is not None:
                    return frames, frame
                failed = frames.error()
                if failed is not None:
                    error = failed
                    break
        except BaseException:
            frames.close()
            raise
        frames.close()
        logger.info("PipeWire capture of node %d failed (%s); trying again", node, error)
        time.sleep(RETRY_SECONDS)
    raise ConfigError(
        f"no frame from PipeWire node {node} within {timeout:.0f} s ({error}): is PipeWire "
        "running for this session, with wireplumber?"
    )
