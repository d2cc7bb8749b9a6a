"""Where client input goes: a callback of the embedding program, or the log."""

from __future__ import annotations

import logging
from collections.abc import Callable

from spiceserver.logs import skip
from spiceserver.protocol.events import (
    ButtonEvent,
    InputEvent,
    KeyEvent,
    LockState,
    PointerMotion,
    PointerPosition,
    WheelEvent,
)

__all__ = ["InputHandler", "ignore_input", "log_input"]

logger = logging.getLogger("spiceserver.input")

#: Called on the event loop thread with every input event of every client.
InputHandler = Callable[[InputEvent], None]


_KEY = "key %s scancode %#06x"
_BUTTON = "button %s %s"
_WHEEL = "wheel %s"
_LOCKS = "lock keys %s"
_POINTER = "pointer %s"


def ignore_input(event: InputEvent) -> None:
    """An input handler for ``--view-only``: drop everything, log nothing (keys are private)."""


def log_input(event: InputEvent) -> None:
    """The default sink for synthetic sources: keys and buttons at INFO, motion at DEBUG.

    One line per event, so rate-limited (:mod:`spiceserver.logs`): a flood of keys is a few
    lines a second and a count of the rest, and a dropped line costs no record at all.
    """
    match event:
        case KeyEvent(scancode=code, pressed=pressed):
            if not skip(logger, logging.INFO, _KEY):
                logger.info(_KEY, "down" if pressed else "up", code)
        case ButtonEvent(button=button, pressed=pressed):
            if not skip(logger, logging.INFO, _BUTTON):
                logger.info(_BUTTON, button.name.lower(), "down" if pressed else "up")
        case WheelEvent(dy=dy):
            if not skip(logger, logging.INFO, _WHEEL):
                logger.info(_WHEEL, "up" if dy < 0 else "down")
        case LockState(modifiers=mods):
            if not skip(logger, logging.INFO, _LOCKS):
                logger.info(_LOCKS, mods)
        case PointerPosition() | PointerMotion():
            if not skip(logger, logging.DEBUG, _POINTER):
                logger.debug(_POINTER, event)
