"""Where client input goes: a callback of the embedding program, or the log."""

from __future__ import annotations

import logging
from collections.abc import Callable

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


def ignore_input(event: InputEvent) -> None:
    """An input handler for ``--view-only``: drop everything, log nothing (keys are private)."""


def log_input(event: InputEvent) -> None:
    """The default sink for synthetic sources: keys and buttons at INFO, motion at DEBUG."""
    match event:
        case KeyEvent(scancode=code, pressed=pressed):
            logger.info("key %s scancode %#06x", "down" if pressed else "up", code)
        case ButtonEvent(button=button, pressed=pressed):
            logger.info("button %s %s", button.name.lower(), "down" if pressed else "up")
        case WheelEvent(dy=dy):
            logger.info("wheel %s", "up" if dy < 0 else "down")
        case LockState(modifiers=mods):
            logger.info("lock keys %s", mods)
        case PointerPosition() | PointerMotion():
            logger.debug("pointer %s", event)
