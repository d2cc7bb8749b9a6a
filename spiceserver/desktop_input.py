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

Lock keys are kept in step both ways (:class:`~spiceserver.injector.ThreadedInput`, which
also holds the queue, the thread and the release of held keys): a client's ``KEY_MODIFIERS``
toggles the X locks that differ (by tapping Caps/Num/Scroll Lock), and the X keyboard LEDs are
read back after every lock change and every :data:`LOCK_POLL_SECONDS`, and handed to
``on_locks`` (which the CLI wires to :meth:`SpiceServer.set_key_modifiers`).

Where XTEST is missing, pynput cannot help on X either: its X backend injects through XTEST
too (:mod:`spiceserver.pynput_input`, ``--input``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from spiceserver.errors import ConfigError
from spiceserver.injector import LOCK_POLL_SECONDS, MAX_QUEUED, ThreadedInput
from spiceserver.input import ignore_input
from spiceserver.keymap import scancode_to_x_keycode
from spiceserver.protocol.enums import KeyModifiers, MouseButton
from spiceserver.sources.desktop import open_display

if TYPE_CHECKING:
    from Xlib.display import Display

__all__ = ["LOCK_POLL_SECONDS", "MAX_QUEUED", "X11Input", "ignore_input", "read_x_locks"]

logger = logging.getLogger("spiceserver.desktop")

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

#: Lock flag → bit in the X LED mask.  LEDs 1, 2, 3 are Caps, Num and Scroll Lock in every
#: stock XKB ``indicator`` map.
X_LEDS = (
    (KeyModifiers.CAPS_LOCK, 1 << 0),
    (KeyModifiers.NUM_LOCK, 1 << 1),
    (KeyModifiers.SCROLL_LOCK, 1 << 2),
)


class X11Input(ThreadedInput):
    """Injects SPICE input events into an X display; also usable as a context manager.

    Args:
        display: The X display name (the same one the :class:`DesktopSource` shows).
        view_only: Ignore every event (lock state is still reported).
        on_locks: Called on the input thread with the X lock state, after each change and
            every :data:`LOCK_POLL_SECONDS`; hand it to the loop yourself.

    Raises:
        ConfigError: From :meth:`start`, if the display cannot be opened or lacks XTEST.
    """

    thread_name = "spice-x11-input"
    label = "X input"

    def __init__(
        self,
        display: str,
        *,
        view_only: bool = False,
        on_locks: Callable[[KeyModifiers], None] | None = None,
    ) -> None:
        super().__init__(view_only=view_only, on_locks=on_locks)
        self.display_name = display
        self.xfree86 = False
        self._display: Display | None = None

    # ------------------------------------------------------------------ hooks

    def _connect(self) -> None:
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

    def _disconnect(self) -> None:
        display, self._display = self._display, None
        if display is not None:
            try:
                display.sync()  # the releases took effect when close() returns
            finally:
                display.close()

    def _flush(self) -> None:
        assert self._display is not None
        self._display.flush()

    def _key_target(self, scancode: int) -> Hashable | None:
        return scancode_to_x_keycode(scancode, xfree86=self.xfree86)

    def _press_key(self, target: Hashable, pressed: bool) -> None:
        assert isinstance(target, int)
        self._fake("KeyPress" if pressed else "KeyRelease", target)

    def _button_target(self, button: MouseButton) -> Hashable | None:
        return X_BUTTONS.get(button)

    def _press_button(self, target: Hashable, pressed: bool) -> None:
        assert isinstance(target, int)
        self._fake("ButtonPress" if pressed else "ButtonRelease", target)

    def _wheel(self, steps: int) -> None:
        wheel = 4 if steps < 0 else 5
        for _ in range(abs(steps)):
            self._fake("ButtonPress", wheel)
            self._fake("ButtonRelease", wheel)

    def _move_to(self, x: int, y: int) -> None:
        self._fake("MotionNotify", 0, x=x, y=y)

    def _move_by(self, dx: int, dy: int) -> None:
        self._fake("MotionNotify", 1, x=dx, y=dy)

    def _read_locks(self) -> KeyModifiers:
        assert self._display is not None
        return read_x_locks(self._display)

    # ------------------------------------------------------------------ helpers

    def _fake(self, kind: str, detail: int, x: int = 0, y: int = 0) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        assert self._display is not None
        xtest.fake_input(self._display, getattr(X, kind), detail, x=x, y=y)


def read_x_locks(display: Display) -> KeyModifiers:
    """The lock state of an X display, from its keyboard LEDs."""
    mask = display.get_keyboard_control().led_mask
    locks = KeyModifiers(0)
    for flag, led in X_LEDS:
        if mask & led:
            locks |= flag
    return locks


def _uses_xfree86_keycodes(display: Display) -> bool:
    """True if the server numbers keys the old ``xfree86`` way (Up is 98, not evdev's 111)."""
    from Xlib import XK

    up = XK.string_to_keysym("Up")
    return display.keycode_to_keysym(111, 0) != up and display.keycode_to_keysym(98, 0) == up
