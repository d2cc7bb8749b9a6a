"""Where client input goes: a callback of the embedding program, or the log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, Self

from spiceserver.logs import skip
from spiceserver.protocol.enums import KeyModifiers
from spiceserver.protocol.events import (
    ButtonEvent,
    InputEvent,
    KeyEvent,
    LockState,
    PointerMotion,
    PointerPosition,
    WheelEvent,
)

__all__ = ["InputBackend", "InputHandler", "choose_desktop_input", "ignore_input", "log_input"]

logger = logging.getLogger("spiceserver.input")

#: Called on the event loop thread with every input event of every client.
InputHandler = Callable[[InputEvent], None]


class InputBackend(Protocol):
    """What injects client input into a desktop (XTEST, pynput, a compositor's API).

    It is an :data:`InputHandler` (called on the event loop: it must only queue, never block),
    started before the server and closed after it; :meth:`close` releases every key and
    button it still holds.  ``on_locks``, if set, is called — on any thread — with the
    desktop's lock keys whenever they may have changed; the CLI hands them to
    :meth:`SpiceServer.set_key_modifiers` on the loop.
    :class:`~spiceserver.desktop_input.X11Input` and
    :class:`~spiceserver.pynput_input.PynputInput` are two.
    """

    on_locks: Callable[[KeyModifiers], None] | None

    def start(self) -> Self:
        """Reach the desktop; raise :class:`~spiceserver.errors.ConfigError` if it cannot."""
        ...

    def close(self) -> None:
        """Release what is held and let go of the desktop.  Idempotent."""
        ...

    def __call__(self, event: InputEvent) -> None: ...


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


def choose_desktop_input(choice: str, display: str, *, view_only: bool = False) -> InputBackend:
    """The input backend ``--input CHOICE`` names for the desktop on ``display`` (not started).

    ``auto`` is XTEST where the X display has the XTEST extension, else pynput (on macOS and
    Windows, or an X display that cannot be opened); pynput's X backend needs XTEST as well, so
    on an X display without it :meth:`~InputBackend.start` then says that no backend can
    inject.  The choice and its reason are logged.
    """
    from spiceserver.desktop_input import X11Input
    from spiceserver.pynput_input import PynputInput

    if choice == "auto":
        choice, why = _auto_input(display)
    else:
        why = f"--input {choice}"
    logger.info("input backend: %s (%s)", choice, why)
    if choice == "xtest":
        return X11Input(display, view_only=view_only)
    return PynputInput(display, view_only=view_only)


def _auto_input(display: str) -> tuple[str, str]:
    import sys

    if sys.platform in ("darwin", "win32"):
        return "pynput", f"no XTEST on {sys.platform}"
    from spiceserver.errors import ConfigError
    from spiceserver.sources.desktop import open_display

    try:
        conn = open_display(display)
    except ConfigError:
        return "pynput", f"X display {display!r} cannot be opened"
    try:
        if conn.has_extension("XTEST"):
            return "xtest", f"X display {display!r} has XTEST"
        return "pynput", f"X display {display!r} has no XTEST"
    finally:
        conn.close()
