"""spiceserver: serve screens over SPICE to virt-viewer, remote-viewer, spice-gtk and friends."""

from __future__ import annotations

from spiceserver.config import ServerConfig
from spiceserver.errors import (
    ConfigError,
    DecodeError,
    LinkRefused,
    MessageTooLarge,
    ProtocolError,
    SpiceError,
    UnexpectedMessage,
)
from spiceserver.protocol.channel import ChannelLimits
from spiceserver.protocol.enums import ImageCompression, KeyModifiers, MouseButton
from spiceserver.protocol.events import (
    ButtonEvent,
    InputEvent,
    KeyEvent,
    LockState,
    PointerMotion,
    PointerPosition,
    WheelEvent,
)
from spiceserver.protocol.messages import CursorShape
from spiceserver.server import SpiceServer
from spiceserver.sources import (
    FramebufferSource,
    ImageSource,
    NumpySource,
    PatternSource,
    Rect,
    ScenarioSource,
)

__version__ = "0.1.0"

__all__ = [
    "ButtonEvent",
    "ChannelLimits",
    "ConfigError",
    "CursorShape",
    "DecodeError",
    "FramebufferSource",
    "ImageCompression",
    "ImageSource",
    "InputEvent",
    "KeyEvent",
    "KeyModifiers",
    "LinkRefused",
    "LockState",
    "MessageTooLarge",
    "MouseButton",
    "NumpySource",
    "PatternSource",
    "PointerMotion",
    "PointerPosition",
    "ProtocolError",
    "Rect",
    "ScenarioSource",
    "ServerConfig",
    "SpiceError",
    "SpiceServer",
    "UnexpectedMessage",
    "WheelEvent",
    "__version__",
]
