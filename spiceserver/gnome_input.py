"""SPICE input into a GNOME Wayland session, through the source's mutter remote desktop session.

:class:`GnomeInput` is an :data:`~spiceserver.input.InputHandler` for a
:class:`~spiceserver.sources.gnome.GnomeSource`.  It is called on the event loop, where the
D-Bus connection lives too, so each event becomes one or two ``Notify…`` method calls written
at once, in order, without waiting for mutter's replies (:meth:`MutterSession.notify` bounds
how many may be unanswered).  The calls (``org.gnome.Mutter.RemoteDesktop.xml``):

* keys: ``NotifyKeyboardKeycode(u evdev code, b pressed)``.  mutter's virtual keyboard takes
  Linux evdev codes (= X keycode − 8), so SPICE's physical scancodes map through the same
  table as for X (:mod:`spiceserver.keymap`), whatever the layout on either side;
* pointer: ``NotifyPointerMotionAbsolute(s stream, d x, d y)`` in the stream's pixels, or
  ``NotifyPointerMotionRelative(d dx, d dy)``;
* buttons: ``NotifyPointerButton(i evdev button, b pressed)`` (``BTN_LEFT`` 0x110 …);
* wheel: ``NotifyPointerAxisDiscrete(u axis, i steps)``, axis 0 vertical, positive steps down.

Lock keys: mutter has no call that reads the keyboard's lock state back, so a client's
KEY_MODIFIERS cannot be compared with the session's and is ignored (pressing Caps Lock
itself works like any key).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from spiceserver.keymap import scancode_to_evdev
from spiceserver.protocol.enums import MouseButton
from spiceserver.protocol.events import (
    ButtonEvent,
    InputEvent,
    KeyEvent,
    PointerMotion,
    PointerPosition,
    WheelEvent,
)

if TYPE_CHECKING:
    from spiceserver.sources.gnome import GnomeSource

__all__ = ["EVDEV_BUTTONS", "GnomeInput"]

logger = logging.getLogger("spiceserver.gnome")

#: SPICE button → evdev button code (``linux/input-event-codes.h``: BTN_LEFT 0x110,
#: BTN_RIGHT 0x111, BTN_MIDDLE 0x112, BTN_SIDE 0x113, BTN_EXTRA 0x114).  UP and DOWN are
#: wheel steps, which reach handlers as WheelEvent.
EVDEV_BUTTONS = {
    MouseButton.LEFT: 0x110,
    MouseButton.RIGHT: 0x111,
    MouseButton.MIDDLE: 0x112,
    MouseButton.SIDE: 0x113,
    MouseButton.EXTRA: 0x114,
}
#: ``NotifyPointerAxisDiscrete`` axis numbers (``clutter``'s vertical and horizontal).
AXIS_VERTICAL = 0
#: A wheel event of more steps than this is cut to it.
MAX_WHEEL_STEPS = 32


class GnomeInput:
    """Injects SPICE input events into the session of ``source`` (once it has started).

    Args:
        source: The GNOME source whose session receives the input.
        view_only: Ignore every event.
    """

    def __init__(self, source: GnomeSource, *, view_only: bool = False) -> None:
        self.source = source
        self.view_only = view_only
        #: evdev key codes and buttons this handler holds down in the session.
        self.held_keys: set[int] = set()
        self.held_buttons: set[int] = set()
        self._warned_no_session = False

    def __call__(self, event: InputEvent) -> None:
        """Send one event (on the event loop; never blocks)."""
        if self.view_only:
            return
        session = self.source.session
        if session is None or session.closed:
            if not self._warned_no_session:
                self._warned_no_session = True
                logger.warning("no GNOME session yet (or it ended): input dropped")
            return
        match event:
            case KeyEvent(scancode=scancode, pressed=pressed):
                self._key(scancode, pressed)
            case PointerPosition(x=x, y=y):
                session.notify(
                    "NotifyPointerMotionAbsolute",
                    "sdd",
                    [session.stream_path, float(x), float(y)],
                )
            case PointerMotion(dx=dx, dy=dy):
                session.notify("NotifyPointerMotionRelative", "dd", [float(dx), float(dy)])
            case ButtonEvent(button=button, pressed=pressed):
                self._button(button, pressed)
            case WheelEvent(dy=dy):
                self._wheel(dy)

    def close(self) -> None:
        """Release what is held (the source's session may outlive the clients)."""
        self.release_all()

    def release_all(self) -> None:
        session = self.source.session
        if session is not None:
            for code in sorted(self.held_keys):
                session.notify("NotifyKeyboardKeycode", "ub", [code, False])
            for button in sorted(self.held_buttons):
                session.notify("NotifyPointerButton", "ib", [button, False])
        self.held_keys.clear()
        self.held_buttons.clear()

    # ------------------------------------------------------------------ helpers

    def _key(self, scancode: int, pressed: bool) -> None:
        code = scancode_to_evdev(scancode)
        if code is None:
            logger.debug("no evdev key for scancode %#06x", scancode)
            return
        if pressed:
            self.held_keys.add(code)
        elif code in self.held_keys:
            self.held_keys.discard(code)
        else:
            return  # a release of a key pressed before we started: mutter never saw it
        session = self.source.session
        assert session is not None
        session.notify("NotifyKeyboardKeycode", "ub", [code, pressed])

    def _button(self, button: MouseButton, pressed: bool) -> None:
        session = self.source.session
        assert session is not None
        code = EVDEV_BUTTONS.get(button)
        if code is None:
            return
        if pressed:
            self.held_buttons.add(code)
        elif code in self.held_buttons:
            self.held_buttons.discard(code)
        else:
            return
        session.notify("NotifyPointerButton", "ib", [code, pressed])

    def _wheel(self, dy: int) -> None:
        if dy == 0:
            return
        session = self.source.session
        assert session is not None
        steps = max(-MAX_WHEEL_STEPS, min(MAX_WHEEL_STEPS, dy))
        session.notify("NotifyPointerAxisDiscrete", "ui", [AXIS_VERTICAL, steps])
