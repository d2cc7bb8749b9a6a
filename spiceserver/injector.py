"""The thread every desktop input backend injects on, and what they share.

A backend (:class:`~spiceserver.desktop_input.X11Input`,
:class:`~spiceserver.pynput_input.PynputInput`) is called on the event loop, so it only
queues; its own thread drains the queue and talks to the desktop, whose APIs block.  The
backend says how to reach one key, button or pointer position (the ``_…`` hooks below); this
base keeps what must be the same everywhere:

* held keys and buttons are counted, a release for something never pressed (pressed before
  the backend started) is dropped, and everything still held is released when the thread stops;
* the lock keys (``KEY_MODIFIERS``) are synced by tapping Caps/Num/Scroll Lock where the
  desktop's state differs, and the desktop's state is read back after each lock key and every
  :data:`LOCK_POLL_SECONDS`, for ``on_locks`` (which the CLI wires to
  :meth:`SpiceServer.set_key_modifiers`);
* a burst of queued events is injected before one flush.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Self

from spiceserver.protocol.enums import KeyModifiers, MouseButton
from spiceserver.protocol.events import (
    ButtonEvent,
    InputEvent,
    KeyEvent,
    LockState,
    PointerMotion,
    PointerPosition,
    WheelEvent,
)

__all__ = ["LOCKS", "LOCK_POLL_SECONDS", "MAX_QUEUED", "MAX_WHEEL_STEPS", "ThreadedInput"]

logger = logging.getLogger("spiceserver.desktop")

#: The desktop's lock state is read this often, so lock changes made there reach the clients.
LOCK_POLL_SECONDS = 0.5
#: Input events queued beyond this are dropped (a client flooding a stuck desktop).
MAX_QUEUED = 4096
#: Wheel steps injected for one event at most (a hostile client's dy is unbounded).
MAX_WHEEL_STEPS = 32

#: Lock flag → set-1 scancode of its key.
LOCKS = (
    (KeyModifiers.CAPS_LOCK, 0x3A),
    (KeyModifiers.NUM_LOCK, 0x45),
    (KeyModifiers.SCROLL_LOCK, 0x46),
)
_LOCK_SCANCODES = frozenset(scancode for _flag, scancode in LOCKS)

_STOP = object()


class ThreadedInput:
    """Queues SPICE input events and injects them on a thread of its own.

    Subclasses implement the hooks; :meth:`start`, :meth:`close`, ``__call__`` and the context
    manager protocol make it an :class:`~spiceserver.input.InputBackend`.

    Args:
        view_only: Ignore every event (lock state is still reported).
        on_locks: Called on the input thread with the desktop's lock state, after each change
            and every :data:`LOCK_POLL_SECONDS`; hand it to the loop yourself.
    """

    #: The input thread's name, and what log lines call this backend.
    thread_name = "spice-input"
    label = "input"

    def __init__(
        self,
        *,
        view_only: bool = False,
        on_locks: Callable[[KeyModifiers], None] | None = None,
    ) -> None:
        self.view_only = view_only
        self.on_locks = on_locks
        #: What this handler holds down (the hooks' key and button targets).
        self.held_keys: set[Hashable] = set()
        self.held_buttons: set[Hashable] = set()
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUED)
        self._thread: threading.Thread | None = None
        self._next_lock_poll = 0.0
        self._no_lock_state_logged = False

    # ------------------------------------------------------------------ hooks

    def _connect(self) -> None:
        """Reach the desktop (on the caller's thread, so errors reach :meth:`start`)."""

    def _disconnect(self) -> None:
        """Let go of the desktop (on the input thread, after the last release)."""

    def _flush(self) -> None:
        """Push out what the last burst of events queued."""

    def _key_target(self, scancode: int) -> Hashable | None:
        """What to press for a scancode; None for keys this backend cannot produce."""
        raise NotImplementedError

    def _press_key(self, target: Hashable, pressed: bool) -> None:
        raise NotImplementedError

    def _button_target(self, button: MouseButton) -> Hashable | None:
        raise NotImplementedError

    def _press_button(self, target: Hashable, pressed: bool) -> None:
        raise NotImplementedError

    def _wheel(self, steps: int) -> None:
        """``steps`` wheel clicks, negative up (at most :data:`MAX_WHEEL_STEPS` either way)."""
        raise NotImplementedError

    def _move_to(self, x: int, y: int) -> None:
        raise NotImplementedError

    def _move_by(self, dx: int, dy: int) -> None:
        raise NotImplementedError

    def _read_locks(self) -> KeyModifiers | None:
        """The desktop's lock state; None where it cannot be read."""
        return None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Reach the desktop and start the input thread.  Returns self."""
        if self._thread is not None:
            return self
        self._connect()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Release what is held, stop the thread, let go of the desktop.  Idempotent; blocks
        for at most a few seconds."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            # Blocks only while the queue is full, which a live thread drains; a thread that
            # died (connection lost) drains nothing, hence the bound.
            self._queue.put(_STOP, timeout=1.0)
        thread.join(timeout=5.0)
        if thread.is_alive():
            logger.warning("the %s thread did not stop within 5 s", self.label)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, event: InputEvent) -> None:
        """Queue one event (called on the event loop; never blocks)."""
        if self.view_only or self._thread is None or not self._thread.is_alive():
            return  # nothing to inject into (a dead thread already logged why)
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            logger.warning("input queue full; dropping %s", type(event).__name__)

    # ------------------------------------------------------------------ input thread

    def _run(self) -> None:
        try:
            self._report_locks()
            while True:
                timeout = max(0.0, self._next_lock_poll - time.monotonic())
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
                # Take what else is waiting before the one flush: a burst of motion or a
                # typed word goes out in one write.
                while item is not None and item is not _STOP:
                    self.inject(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                self._flush()
                if item is _STOP:
                    break
                if time.monotonic() >= self._next_lock_poll:
                    self._report_locks()
        except Exception:
            logger.exception("%s stopped", self.label)
        finally:
            with contextlib.suppress(Exception):
                self.release_all()
                self._flush()
            with contextlib.suppress(Exception):
                self._disconnect()

    def inject(self, event: InputEvent) -> None:
        """Inject one SPICE input event (on the input thread)."""
        match event:
            case KeyEvent(scancode=scancode, pressed=pressed):
                self._key(scancode, pressed)
            case PointerPosition(x=x, y=y):
                self._move_to(x, y)
            case PointerMotion(dx=dx, dy=dy):
                self._move_by(_clamp16(dx), _clamp16(dy))
            case ButtonEvent(button=button, pressed=pressed):
                self._button(button, pressed)
            case WheelEvent(dy=dy):
                if dy:
                    self._wheel(max(-MAX_WHEEL_STEPS, min(MAX_WHEEL_STEPS, dy)))
            case LockState(modifiers=modifiers):
                self._sync_locks(KeyModifiers(modifiers))

    def release_all(self) -> None:
        """Release every key and button this handler holds (shutdown)."""
        for key in sorted(self.held_keys, key=repr):
            self._press_key(key, False)
        for button in sorted(self.held_buttons, key=repr):
            self._press_button(button, False)
        self.held_keys.clear()
        self.held_buttons.clear()

    # ------------------------------------------------------------------ helpers

    def _key(self, scancode: int, pressed: bool) -> None:
        target = self._key_target(scancode)
        if target is None:
            logger.debug("%s: no key for scancode %#06x", self.label, scancode)
            return
        if pressed:
            self.held_keys.add(target)
            self._press_key(target, True)
        else:
            if target not in self.held_keys:
                return  # a release for a key pressed before we started: never seen here
            self.held_keys.discard(target)
            self._press_key(target, False)
        if scancode in _LOCK_SCANCODES and not pressed:
            self._next_lock_poll = 0.0  # read the lock state back right away

    def _button(self, button: MouseButton, pressed: bool) -> None:
        target = self._button_target(button)
        if target is None:
            return
        if pressed:
            self.held_buttons.add(target)
            self._press_button(target, True)
        elif target in self.held_buttons:
            self.held_buttons.discard(target)
            self._press_button(target, False)

    def _sync_locks(self, wanted: KeyModifiers) -> None:
        current = self._read_locks()
        if current is None:
            if not self._no_lock_state_logged:
                self._no_lock_state_logged = True
                logger.info(
                    "%s: the lock state cannot be read: client lock keys ignored", self.label
                )
            return
        for flag, scancode in LOCKS:
            if bool(wanted & flag) != bool(current & flag):
                target = self._key_target(scancode)
                if target is not None and target not in self.held_keys:
                    self._press_key(target, True)
                    self._press_key(target, False)
        self._next_lock_poll = 0.0

    def _report_locks(self) -> None:
        self._next_lock_poll = time.monotonic() + LOCK_POLL_SECONDS
        locks = self._read_locks()
        if locks is not None and self.on_locks is not None:
            try:
                self.on_locks(locks)
            except Exception:
                logger.exception("lock-state callback failed")


def _clamp16(value: int) -> int:
    return max(-32768, min(32767, value))
