"""Events the protocol core reports to its owner (the server layer or an embedding program).

Input events use PC AT (set 1) scancodes as SPICE carries them: ``scancode`` is the make code
(0x01..0x7F); keys sent with an E0 prefix (arrows, right Ctrl, keypad Enter …) are
``0xE000 | code`` and the E1-prefixed Pause key is ``0xE11D``.
"""

from __future__ import annotations

from dataclasses import dataclass

from spiceserver.protocol.enums import KeyModifiers, MouseButton

__all__ = [
    "AgentMessage",
    "ButtonEvent",
    "ClientDisconnecting",
    "CompressionPreferred",
    "DisplayReady",
    "InputEvent",
    "KeyEvent",
    "LockState",
    "MouseModeChanged",
    "MouseModeRequested",
    "PointerMotion",
    "PointerPosition",
    "PongReceived",
    "WheelEvent",
]


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """A key went down or up."""

    scancode: int
    pressed: bool


@dataclass(frozen=True, slots=True)
class LockState:
    """The client's Caps/Num/Scroll lock state."""

    modifiers: KeyModifiers


@dataclass(frozen=True, slots=True)
class PointerPosition:
    """Absolute pointer position in surface pixels (client mouse mode)."""

    x: int
    y: int
    buttons: int
    display_id: int = 0


@dataclass(frozen=True, slots=True)
class PointerMotion:
    """Relative pointer motion (server mouse mode)."""

    dx: int
    dy: int
    buttons: int


@dataclass(frozen=True, slots=True)
class ButtonEvent:
    """A pointer button went down or up (not the wheel)."""

    button: MouseButton
    pressed: bool
    buttons: int


@dataclass(frozen=True, slots=True)
class WheelEvent:
    """One wheel step: ``dy`` = -1 up, +1 down (spice-server's mapping of buttons UP/DOWN)."""

    dy: int


#: Any input event the inputs channel reports (what ``on_input`` receives).
InputEvent = KeyEvent | LockState | PointerPosition | PointerMotion | ButtonEvent | WheelEvent


@dataclass(frozen=True, slots=True)
class DisplayReady:
    """DISPLAY_INIT arrived: the client's image cache and GLZ window (in pixels)."""

    pixmap_cache_size: int
    glz_window_size: int
    glz_dictionary_id: int = 0


@dataclass(frozen=True, slots=True)
class CompressionPreferred:
    """PREFERRED_COMPRESSION: the client asked for a SpiceImageCompression."""

    compression: int


@dataclass(frozen=True, slots=True)
class MouseModeChanged:
    """The main channel switched mouse mode (SERVER 1, CLIENT 2)."""

    mode: int


@dataclass(frozen=True, slots=True)
class MouseModeRequested:
    """MOUSE_MODE_REQUEST arrived (reported whether or not the mode changes)."""

    mode: int
    granted: bool


@dataclass(frozen=True, slots=True)
class AgentMessage:
    """An AGENT_START / AGENT_DATA / AGENT_TOKEN message; no agent is claimed, so it is only
    noted (``size`` is the message body's length)."""

    name: str
    type: int
    size: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The client answered our PING ``id``: it has handled every message sent before it."""

    id: int
    #: Seconds from the PING being queued to its PONG (the link estimate's samples).
    round_trip: float = 0.0


@dataclass(frozen=True, slots=True)
class ClientDisconnecting:
    """The client announced it is leaving, with a SpiceLinkErr reason."""

    reason: int
