"""spiceserver: serve screens over SPICE to virt-viewer, remote-viewer, spice-gtk and friends.

The public names below load on first use (PEP 562), so that importing the sans-I/O core,
:mod:`spiceserver.protocol`, does not also import the asyncio server, numpy and the codecs.
``from spiceserver import SpiceServer`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spiceserver.clipboard import ClipboardBackend, ClipboardType, MemoryClipboard, Selection
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
        Head,
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
    "ClipboardBackend",
    "ClipboardType",
    "ConfigError",
    "CursorShape",
    "DecodeError",
    "FramebufferSource",
    "Head",
    "ImageCompression",
    "ImageSource",
    "InputEvent",
    "KeyEvent",
    "KeyModifiers",
    "LinkRefused",
    "LockState",
    "MemoryClipboard",
    "MessageTooLarge",
    "MouseButton",
    "NumpySource",
    "PatternSource",
    "PointerMotion",
    "PointerPosition",
    "ProtocolError",
    "Rect",
    "ScenarioSource",
    "Selection",
    "ServerConfig",
    "SpiceError",
    "SpiceServer",
    "UnexpectedMessage",
    "WheelEvent",
    "__version__",
]

#: Where each public name is defined (keep in step with the ``TYPE_CHECKING`` imports above).
_LAZY = {
    "ClipboardBackend": "spiceserver.clipboard",
    "ClipboardType": "spiceserver.clipboard",
    "MemoryClipboard": "spiceserver.clipboard",
    "Selection": "spiceserver.clipboard",
    "ServerConfig": "spiceserver.config",
    "ConfigError": "spiceserver.errors",
    "DecodeError": "spiceserver.errors",
    "LinkRefused": "spiceserver.errors",
    "MessageTooLarge": "spiceserver.errors",
    "ProtocolError": "spiceserver.errors",
    "SpiceError": "spiceserver.errors",
    "UnexpectedMessage": "spiceserver.errors",
    "ChannelLimits": "spiceserver.protocol.channel",
    "ImageCompression": "spiceserver.protocol.enums",
    "KeyModifiers": "spiceserver.protocol.enums",
    "MouseButton": "spiceserver.protocol.enums",
    "ButtonEvent": "spiceserver.protocol.events",
    "InputEvent": "spiceserver.protocol.events",
    "KeyEvent": "spiceserver.protocol.events",
    "LockState": "spiceserver.protocol.events",
    "PointerMotion": "spiceserver.protocol.events",
    "PointerPosition": "spiceserver.protocol.events",
    "WheelEvent": "spiceserver.protocol.events",
    "CursorShape": "spiceserver.protocol.messages",
    "SpiceServer": "spiceserver.server",
    "FramebufferSource": "spiceserver.sources",
    "Head": "spiceserver.sources",
    "ImageSource": "spiceserver.sources",
    "NumpySource": "spiceserver.sources",
    "PatternSource": "spiceserver.sources",
    "Rect": "spiceserver.sources",
    "ScenarioSource": "spiceserver.sources",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spiceserver' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
