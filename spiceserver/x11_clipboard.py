"""The X desktop's CLIPBOARD and PRIMARY selections as a :class:`ClipboardBackend`.

:class:`X11Clipboard` is what spice-vdagent's X11 half is to a guest
(``spice-vdagent:src/vdagent/x11.c``), built into the server:

* **Client → desktop.**  When a client grabs a selection, a hidden window of ours takes it
  (SetSelectionOwner with a real server time) and answers desktop programs: TARGETS,
  TIMESTAMP, and each target of the types the client offered (text as UTF8_STRING,
  ``text/plain;charset=utf-8``, STRING in Latin-1, TEXT; images by MIME atom), fetching the
  data from the client with the grab's :data:`~spiceserver.clipboard.Fetch`.  Data larger
  than one X request goes by INCR.
* **Desktop → client.**  XFixes reports every owner change of the two selections; for a
  program other than us the owner's TARGETS are asked and mapped to VDAgent types, and the
  listener hears :meth:`~ClipboardListener.desktop_grabbed` (or ``desktop_released`` when
  the owner goes).  :meth:`X11Clipboard.read` converts the selection into a property of our
  window, INCR included.

Bounds: every exchange with another X client has a deadline (``timeout`` for each step, four
times that for a whole transfer or a client's fetch), so an owner that never answers or a
requestor that stops reading INCR only costs that; data over ``max_bytes`` is refused in both
directions (logged, at most once per :data:`WARN_INTERVAL` per kind); at most
:data:`MAX_QUEUED_READS` reads wait per selection.  The X side runs on a thread of its own
(:mod:`spiceserver.x11_selection`); nothing here blocks the event loop.  When the X
connection is lost, that is logged once and the backend goes inert (reads return None).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from spiceserver.clipboard import (
    ClipboardListener,
    ClipboardType,
    Fetch,
    Selection,
    check_limits,
)
from spiceserver.config import CLIPBOARD_MAX_BYTES, CLIPBOARD_TIMEOUT
from spiceserver.sources.desktop import open_display
from spiceserver.x11_selection import SELECTIONS, TRANSFER_TIMEOUTS, Grab, SelectionThread

__all__ = ["X11Clipboard"]

logger = logging.getLogger("spiceserver.clipboard")

# CLIPBOARD_TIMEOUT (spiceserver.clipboard), here: seconds an X owner may take to answer (per
# INCR chunk too) and a requestor to read the next INCR chunk; a whole conversion, and a
# client's fetch, get TRANSFER_TIMEOUTS (4) times that.
#: read() calls waiting per selection; more return None at once.
MAX_QUEUED_READS = 4
#: A warning (over the cap, no answer in time, too many waiting) is repeated at most this
#: often (seconds) per kind: a flood of copies costs a few log lines.
WARN_INTERVAL = 10.0
#: How long close() waits for the X thread.
CLOSE_TIMEOUT = 5.0


class X11Clipboard:
    """The clipboard bridge to an X display's selections.

    Args:
        display_name: The X display, as given to ``--source desktop:DISPLAY``.
        max_bytes: Largest clipboard data taken from or given to the desktop.
        timeout: Seconds allowed to each step of an X peer; a whole transfer, and a client's
            fetch, get four times that.

    Raises:
        ConfigError: Bad limits, or the display cannot be opened.
    """

    def __init__(
        self,
        display_name: str,
        *,
        max_bytes: int = CLIPBOARD_MAX_BYTES,
        timeout: float = CLIPBOARD_TIMEOUT,
    ) -> None:
        check_limits(max_bytes, timeout)
        self.display_name = display_name
        self.max_bytes = max_bytes
        self.timeout = timeout
        # Opened now so a bad display fails at start-up; the thread takes it over.
        self._display: Any = open_display(display_name)
        self._bridge = _LoopBridge(max_bytes, timeout)
        self._reads = dict.fromkeys(SELECTIONS, 0)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ ClipboardBackend

    def attach(self, listener: ClipboardListener) -> None:
        """Start following the desktop's selections; events go to ``listener``."""
        self._bridge.listener = listener
        self._start()

    async def read(self, selection: Selection, type: ClipboardType) -> bytes | None:
        """The desktop owner's data (text always UTF-8), or None: not offered, no owner, no
        answer within ``timeout``, over ``max_bytes``, or the X connection is gone."""
        bridge = self._bridge
        if selection not in self._reads or not self._start():
            return None
        if self._reads[selection] >= MAX_QUEUED_READS:
            bridge.warn(
                f"reads {selection.name}",
                "%d X %s reads already waiting: one refused",
                MAX_QUEUED_READS,
                selection.name,
            )
            return None
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._reads[selection] += 1
        try:
            if not bridge.post(("read", selection, type, future)):
                return None
            # The X thread enforces the real deadlines (each conversion, a new owner's TARGETS
            # included, ends within TRANSFER_TIMEOUTS timeouts); this only guards against
            # that thread's death.
            async with asyncio.timeout(self.timeout * TRANSFER_TIMEOUTS * (MAX_QUEUED_READS + 2)):
                return await future
        except TimeoutError:
            return None
        finally:
            self._reads[selection] -= 1

    def client_grabbed(
        self, selection: Selection, types: tuple[ClipboardType, ...], fetch: Fetch
    ) -> None:
        """Own ``selection`` on the desktop for the client, answering with ``fetch``."""
        self._want(selection, (tuple(types), fetch))

    def client_released(self, selection: Selection) -> None:
        """Give the selection up (if we still own it)."""
        self._want(selection, None)

    async def close(self) -> None:
        """Give up owned selections and stop the X thread.  Idempotent."""
        bridge = self._bridge
        if bridge.closed:
            return
        bridge.closed = True
        thread, self._thread = self._thread, None
        if thread is None:
            with contextlib.suppress(Exception):
                self._display.close()
        else:
            bridge.post(("stop",), force=True)
            await asyncio.to_thread(thread.join, CLOSE_TIMEOUT)
            if thread.is_alive():
                logger.warning("the X clipboard thread did not stop within %.0f s", CLOSE_TIMEOUT)
                return  # it still uses the pipe
        bridge.close_pipe()

    # ------------------------------------------------------------------ internals

    def _start(self) -> bool:
        """Start the X thread on first use (from the loop).  False once closed or inert."""
        bridge = self._bridge
        if self._thread is not None:
            return bridge.accepting
        if bridge.closed:
            return False
        bridge.loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="spice-x11-clipboard", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        bridge = self._bridge
        try:
            # Its set-up makes X round trips: here on the thread, never on the loop.
            SelectionThread(bridge, self._display, bridge.wake_r, self.display_name).run()
        finally:
            bridge.stopped()

    def _want(
        self, selection: Selection, offer: tuple[tuple[ClipboardType, ...], Fetch] | None
    ) -> None:
        if selection not in self._reads:
            return  # SECONDARY: not bridged
        self._bridge.want(selection, offer)
        if self._thread is None:
            with contextlib.suppress(RuntimeError):  # no running loop: applied at attach()
                self._start()


class _LoopBridge:
    """The loop side as the X thread sees it (:class:`~spiceserver.x11_selection.Bridge`):
    a command queue and the wanted grabs under one lock, a wake-up pipe, and calls handed to
    the loop."""

    def __init__(self, max_bytes: int, timeout: float) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self.listener: ClipboardListener | None = None
        self.accepting = True
        self.closed = False
        self._lock = threading.Lock()
        self._commands: deque[tuple[Any, ...]] = deque()
        self._wanted: dict[Selection, tuple[int, Grab | None]] = {}
        self._generation = 0
        self._warned: dict[str, float] = {}
        self.wake_r, self._wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- loop side -------------------------------------------------------------

    def want(
        self, selection: Selection, offer: tuple[tuple[ClipboardType, ...], Fetch] | None
    ) -> None:
        with self._lock:
            self._generation += 1
            grab = None if offer is None else Grab(*offer, self._generation)
            self._wanted[selection] = (self._generation, grab)
        self._wake()

    def post(self, command: tuple[Any, ...], force: bool = False) -> bool:
        with self._lock:
            if not self.accepting and not force:
                return False
            self._commands.append(command)
        self._wake()
        return True

    def stopped(self) -> None:
        """The X thread ended: reads posted meanwhile are answered, none can come after."""
        with self._lock:
            self.accepting = False
        for command in self.take_commands():
            if command[0] == "read":
                self.to_loop(self.deliver_read, command[3], None)

    def close_pipe(self) -> None:
        for fd in (self.wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    async def _fetch(self, key: tuple[Selection, int, ClipboardType], fetch: Fetch) -> None:
        selection, _generation, ctype = key
        data: bytes | None = None
        limit = self.timeout * TRANSFER_TIMEOUTS
        try:
            async with asyncio.timeout(limit):
                data = await fetch(ctype)
        except TimeoutError:
            self.warn(
                "fetch",
                "the client did not hand over its %s %s data within %.1f s: X request refused",
                selection.name,
                ctype.name,
                limit,
            )
        except Exception:
            logger.exception("fetching the client's %s data failed", ctype.name)
        if data is not None and len(data) > self.max_bytes:
            self.cap_hit(f"client {ctype.name} data", len(data))
            data = None
        self.post(("fetched", key, data))

    # -- the Bridge protocol (called on the X thread, unless said otherwise) ---

    def take_commands(self) -> list[tuple[Any, ...]]:
        with self._lock:
            commands = list(self._commands)
            self._commands.clear()
        return commands

    def wanted(self) -> dict[Selection, tuple[int, Grab | None]]:
        with self._lock:
            return dict(self._wanted)

    def to_loop(self, fn: Callable[..., object], *args: object) -> None:
        loop = self.loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed
            loop.call_soon_threadsafe(fn, *args)

    def start_fetch(self, key: tuple[Selection, int, ClipboardType], fetch: Fetch) -> None:
        loop = self.loop
        coro = self._fetch(key, fetch)
        try:
            if loop is None:
                raise RuntimeError("no loop")
            asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop closed
            coro.close()
            self.post(("fetched", key, None))

    def cap_hit(self, what: str, size: int) -> None:
        self.warn(
            what,
            "clipboard: %s of %d bytes is over the cap of %d bytes: dropped",
            what,
            size,
            self.max_bytes,
        )

    def warn(self, key: str, message: str, *args: object) -> None:
        """Any thread."""
        now = time.monotonic()
        with self._lock:
            last = self._warned.get(key)
            if last is not None and now - last < WARN_INTERVAL:
                return
            self._warned[key] = now
        logger.warning(message, *args)

    def deliver_read(self, future: asyncio.Future[bytes | None], value: bytes | None) -> None:
        """On the loop."""
        if not future.done():
            future.set_result(value)

    def desktop_grabbed(self, selection: Selection, types: tuple[ClipboardType, ...]) -> None:
        """On the loop."""
        if self.listener is not None and not self.closed:
            try:
                self.listener.desktop_grabbed(selection, types)
            except Exception:
                logger.exception("the clipboard listener failed")

    def desktop_released(self, selection: Selection) -> None:
        """On the loop."""
        if self.listener is not None and not self.closed:
            try:
                self.listener.desktop_released(selection)
            except Exception:
                logger.exception("the clipboard listener failed")
