"""SPICE input into an X display: keys by physical position, pointer, buttons, lock keys.

:class:`X11Input` is an :data:`~spiceserver.input.InputHandler`: pass it as ``on_input`` to
:class:`~spiceserver.server.SpiceServer`.  It is called on the event loop, so it only queues
the event; a thread of its own (``spice-x11-input``) holds the X connection and injects with
XTEST, which X treats like a real device (no ``send_event`` flag, so xterm and friends accept
it).

Why XTEST through python-xlib and not pynput's Controllers: pynput types *characters* through
the server's current keymap (and remaps keycodes to do so), which makes a key depend on the
server's layout and loses keys that have no character (Menu, the keypad, right Ctrl);
SPICE sends physical keys, so they go in as X keycodes (:mod:`spiceserver.keymap`).  pynput
also opens ``$DISPLAY`` when it is imported — not the display given with ``--source
desktop:DISPLAY`` — and fails to import without one.  Its X backend is XTEST through
python-xlib as well, so the pointer gains nothing from it either.

Lock keys are kept in step both ways: a client's ``KEY_MODIFIERS`` toggles the X locks that
differ (by tapping Caps/Num/Scroll Lock), and the X keyboard LEDs are read back after every
lock change and every :data:`LOCK_POLL_SECONDS`, and handed to ``on_locks`` (which the CLI
wires to :meth:`SpiceServer.set_key_modifiers`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spiceserver.errors import ConfigError
from spiceserver.input import ignore_input
from spiceserver.keymap import scancode_to_x_keycode
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
from spiceserver.sources.desktop import open_display

if TYPE_CHECKING:
    from Xlib.display import Display

__all__ = ["LOCK_POLL_SECONDS", "X11Input", "ignore_input"]

logger = logging.getLogger("spiceserver.desktop")

#: The X LEDs are read this often, so lock changes made on the server reach the clients.
LOCK_POLL_SECONDS = 0.5
#: Input events queued beyond this are dropped (a client flooding a stuck X server).
MAX_QUEUED = 4096

#: SPICE button → X core button (8 and 9 are back/forward, as evdev maps BTN_SIDE/BTN_EXTRA).
X_BUTTONS = {
    MouseButton.LEFT: 1,
    MouseButton.MIDDLE: 2,
    MouseButton.RIGHT: 3,
    MouseButton.UP: 4,
    MouseButton.DOWN: 5,
    MouseButton.SIDE: 8,
    MouseButton.EXTRA: 9,
}

#: Lock flag → (scancode of its key, bit in the X LED mask).  LEDs 1, 2, 3 are Caps, Num and
#: Scroll Lock in every stock XKB ``indicator`` map.
_LOCKS = (
    (KeyModifiers.CAPS_LOCK, 0x3A, 1 << 0),
    (KeyModifiers.NUM_LOCK, 0x45, 1 << 1),
    (KeyModifiers.SCROLL_LOCK, 0x46, 1 << 2),
)

_STOP = object()


class X11Input:
    """Injects SPICE input events into an X display; also usable as a context manager.

    Args:
        display: The X display name (the same one the :class:`DesktopSource` shows).
        view_only: Ignore every event (lock state is still reported).
        on_locks: Called on the input thread with the X lock state, after each change and
            every :data:`LOCK_POLL_SECONDS`; hand it to the loop yourself.

    Raises:
        ConfigError: From :meth:`start`, if the display cannot be opened or lacks XTEST.
    """

    def __init__(
        self,
        display: str,
        *,
        view_only: bool = False,
        on_locks: Callable[[KeyModifiers], None] | None = None,
    ) -> None:
        self.display_name = display
        self.view_only = view_only
        self.on_locks = on_locks
        #: Keycodes and buttons this handler holds down in X.
        self.held_keys: set[int] = set()
        self.held_buttons: set[int] = set()
        self.xfree86 = False
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUED)
        self._display: Display | None = None
        self._thread: threading.Thread | None = None
        self._next_lock_poll = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> X11Input:
        """Open the X connection and start the input thread.  Returns self."""
        if self._thread is not None:
            return self
        display = open_display(self.display_name)
        try:
            if not self.view_only and not display.has_extension("XTEST"):
                raise ConfigError(
                    f"X display {self.display_name!r} has no XTEST extension: input cannot be "
                    "injected (use --view-only)"
                )
            self.xfree86 = _uses_xfree86_keycodes(display)
            if self.xfree86:
                logger.warning(
                    "%s: xfree86 keycodes (not evdev): E0 keys use the kbd table", self.display_name
                )
        except BaseException:
            display.close()
            raise
        self._display = display
        self._thread = threading.Thread(target=self._run, name="spice-x11-input", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Release what is held, stop the thread, close the connection.  Idempotent; blocks
        for at most a few seconds."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            # Blocks only while the queue is full, which a live thread drains; a thread that
            # died (X connection lost) drains nothing, hence the bound.
            self._queue.put(_STOP, timeout=1.0)
        thread.join(timeout=5.0)
        if thread.is_alive():
            logger.warning("the X input thread did not stop within 5 s")

    def __enter__(self) -> X11Input:
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
        display = self._display
        assert display is not None
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
                display.flush()
                if item is _STOP:
                    break
                if time.monotonic() >= self._next_lock_poll:
                    self._report_locks()
        except Exception:
            logger.exception("X input stopped")
        finally:
            with contextlib.suppress(Exception):
                self.release_all()
                display.flush()
            with contextlib.suppress(Exception):
                display.close()
            self._display = None

    def inject(self, event: InputEvent) -> None:
        """Turn one SPICE input event into XTEST requests (on the input thread)."""
        match event:
            case KeyEvent(scancode=scancode, pressed=pressed):
                self._key(scancode, pressed)
            case PointerPosition(x=x, y=y):
                self._fake("MotionNotify", 0, x=x, y=y)
            case PointerMotion(dx=dx, dy=dy):
                self._fake("MotionNotify", 1, x=_clamp16(dx), y=_clamp16(dy))
            case ButtonEvent(button=button, pressed=pressed):
                self._button(X_BUTTONS.get(button), pressed)
            case WheelEvent(dy=dy):
                wheel = 4 if dy < 0 else 5
                for _ in range(min(abs(dy), 32)):
                    self._fake("ButtonPress", wheel)
                    self._fake("ButtonRelease", wheel)
            case LockState(modifiers=modifiers):
                self._sync_locks(KeyModifiers(modifiers))

    def release_all(self) -> None:
        """Release every key and button this handler holds (shutdown)."""
        for keycode in sorted(self.held_keys):
            self._fake("KeyRelease", keycode)
        for button in sorted(self.held_buttons):
            self._fake("ButtonRelease", button)
        self.held_keys.clear()
        self.held_buttons.clear()

    # ------------------------------------------------------------------ helpers

    def _key(self, scancode: int, pressed: bool) -> None:
        keycode = scancode_to_x_keycode(scancode, xfree86=self.xfree86)
        if keycode is None:
            logger.debug("no X key for scancode %#06x", scancode)
            return
        if pressed:
            self.held_keys.add(keycode)
            self._fake("KeyPress", keycode)
        else:
            if keycode not in self.held_keys:
                return  # a release for a key pressed before we started: X never saw it
            self.held_keys.discard(keycode)
            self._fake("KeyRelease", keycode)
        if scancode in (0x3A, 0x45, 0x46) and not pressed:
            self._next_lock_poll = 0.0  # read the LEDs back right away

    def _button(self, button: int | None, pressed: bool) -> None:
        if button is None:
            return
        if pressed:
            self.held_buttons.add(button)
            self._fake("ButtonPress", button)
        elif button in self.held_buttons:
            self.held_buttons.discard(button)
            self._fake("ButtonRelease", button)

    def _sync_locks(self, wanted: KeyModifiers) -> None:
        current = self._read_locks()
        for flag, scancode, _led in _LOCKS:
            if bool(wanted & flag) != bool(current & flag):
                keycode = scancode_to_x_keycode(scancode, xfree86=self.xfree86)
                if keycode is not None and keycode not in self.held_keys:
                    self._fake("KeyPress", keycode)
                    self._fake("KeyRelease", keycode)
        self._next_lock_poll = 0.0

    def _read_locks(self) -> KeyModifiers:
        assert self._display is not None
        mask = self._display.get_keyboard_control().led_mask
        locks = KeyModifiers(0)
        for flag, _scancode, led in _LOCKS:
            if mask & led:
                locks |= flag
        return locks

    def _report_locks(self) -> None:
        self._next_lock_poll = time.monotonic() + LOCK_POLL_SECONDS
        locks = self._read_locks()
        if self.on_locks is not None:
            try:
                self.on_locks(locks)
            except Exception:
                logger.exception("lock-state callback failed")

    def _fake(self, kind: str, detail: int, x: int = 0, y: int = 0) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        assert self._display is not None
        xtest.fake_input(self._display, getattr(X, kind), detail, x=x, y=y)


def _uses_xfree86_keycodes(display: Display) -> bool:
    """True if the server numbers keys the old ``xfree86`` way (Up is 98, not evdev's 111)."""
    from Xlib import XK

    up = XK.string_to_keysym("Up")
    return display.keycode_to_keysym(111, 0) != up and display.keycode_to_keysym(98, 0) == up


def _clamp16(value: int) -> int:
    return max(-32768, min(32767, value))
