"""The exception tree of :mod:`spiceserver`.

::

    SpiceError
    ├── ProtocolError             the peer broke the protocol; the connection is closed
    │   ├── DecodeError           a message could not be parsed (short, trailing bytes, bad value)
    │   ├── MessageTooLarge       a length field above the configured limit
    │   └── UnexpectedMessage     a message that is not allowed on this channel or in this state
    ├── LinkRefused               the link stage ended with a SpiceLinkErr sent to the peer
    └── ConfigError               a bad option given by the embedding program or the CLI

Errors the peer causes are always :class:`ProtocolError` subclasses: nothing else (no
``struct.error``, no ``IndexError``) escapes the protocol layer.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "LinkRefused",
    "MessageTooLarge",
    "ProtocolError",
    "SpiceError",
    "UnexpectedMessage",
]


class SpiceError(Exception):
    """Base class of every error raised by spiceserver."""


class ProtocolError(SpiceError):
    """The peer sent something the protocol does not allow."""


class DecodeError(ProtocolError):
    """A message body could not be parsed: too short, trailing bytes, or a value out of range."""


class AgentProtocolError(ProtocolError):
    """The client's agent stream broke VDAgent framing or its AGENT_DATA token budget."""


class MessageTooLarge(ProtocolError):
    """A length field announced more bytes than the configured limit allows."""


class UnexpectedMessage(ProtocolError):
    """A message type that is unknown on this channel, or not allowed in the current state."""

    def __init__(
        self, reason: str, *, message_type: int | None = None, size: int | None = None
    ) -> None:
        super().__init__(reason)
        #: The offending message's type number and body size, when known.
        self.message_type = message_type
        self.size = size


class LinkRefused(SpiceError):
    """The link was refused with a ``SpiceLinkErr`` code (already sent to the peer)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ConfigError(SpiceError):
    """An invalid server option."""
