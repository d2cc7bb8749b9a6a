"""Fault injection for client robustness tests (``--fault SPEC``, ``ServerConfig.faults``).

A test of a SPICE client can ask the server to misbehave on purpose, in these ways:

``delay:CHANNEL:SECONDS``
    Hold every message of the channel for SECONDS before writing it, in order.
``close-after:CHANNEL:N``
    Close the connection (gracefully: FIN after the data) once N messages were written.
``unknown-message:CHANNEL[:COUNT[:INTERVAL]]``
    Right after the channel starts, send a message of type :data:`UNKNOWN_MESSAGE_TYPE`, which
    no spec defines; COUNT of them (default 1), INTERVAL seconds apart (default 1).
``corrupt-image[:EVERY_N]``
    Damage the coded data of every EVERY_N-th image on the display channel (default: every
    image), keeping every length field and codec header valid.
``drop-frames[:EVERY_N]``
    Leave out every EVERY_N-th frame of the display's video streams (default: every second
    one), encoded but never sent, as if lost: an H.264/VP8 decoder sees the gap.
``delay-frames:SECONDS``
    Stamp every video stream frame SECONDS later on the multimedia clock, so the client holds
    it that much longer before showing it; negative: stamped in the past, so it arrives late
    (the client's STREAM_REPORTs say so, and rate control steps down).

CHANNEL is a SPICE channel name (``main``, ``display``, ``inputs``, ``cursor``, …) or ``*``
(all of them).

This module is the vocabulary only (pure: config imports it).  The machinery that applies the
faults lives in the asyncio layer, :mod:`spiceserver.server.fault_injection`; the sans-I/O
protocol core never hears of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from spiceserver.errors import ConfigError
from spiceserver.protocol.enums import ChannelType

__all__ = [
    "ALL_CHANNELS",
    "CHANNELS",
    "KINDS",
    "UNKNOWN_MESSAGE_BODY",
    "UNKNOWN_MESSAGE_TYPE",
    "Fault",
    "parse_faults",
]

#: Channel names a fault may name (every SPICE channel type); ``*`` means all of them.
CHANNELS = tuple(channel.name.lower() for channel in ChannelType)
ALL_CHANNELS = "*"

#: The fault kinds, with the grammar of each (for error messages and --help).
KINDS = {
    "delay": "delay:CHANNEL:SECONDS",
    "close-after": "close-after:CHANNEL:N",
    "unknown-message": "unknown-message:CHANNEL[:COUNT[:INTERVAL]]",
    "corrupt-image": "corrupt-image[:EVERY_N]",
    "drop-frames": "drop-frames[:EVERY_N]",
    "delay-frames": "delay-frames:SECONDS",
}
#: Kinds that apply to the display channel alone (no CHANNEL field), with the default EVERY_N.
DISPLAY_KINDS = {"corrupt-image": 1, "drop-frames": 2, "delay-frames": 1}
#: Longest frame delay-frames takes either way (seconds): beyond it the fault is a typo.
MAX_FRAME_SHIFT = 60.0

#: The type of the injected unknown message.  spice.proto numbers each channel's messages up
#: from 101 (display's drawing ones from 302) and the largest in use are in the low 300s, so
#: 0xFFFF, the top of the u16 type field, is undefined on every channel in both directions and
#: will stay so; the same number works for ``*`` and stands out in a hex dump.  It is above 100
#: (``SPICE_MSG_BASE_LAST``) on purpose: common types 1..100 go to a client's base-channel
#: code, and 100 itself is a declared (empty) message in spice.proto, so 0xFFFF exercises the
#: path a message from a newer server takes.  spice-gtk's generated demarshaller returns NULL
#: for it and ``spice_channel_recv_msg()`` logs "failed to parse message" and drops it.
UNKNOWN_MESSAGE_TYPE = 0xFFFF
#: Its body: not empty, so a client must skip ``size`` bytes to stay in step.
UNKNOWN_MESSAGE_BODY = b"spiceserver fault: unknown message\0"


@dataclass(frozen=True, slots=True)
class Fault:
    """One deliberate misbehaviour; build it with :meth:`parse` or by keyword.

    Only the fields of its ``kind`` matter: ``seconds`` (delay), ``messages`` (close-after),
    ``count`` and ``interval`` (unknown-message), ``every`` (corrupt-image, drop-frames),
    ``seconds`` (delay-frames too).
    """

    kind: str
    channel: str = ALL_CHANNELS
    seconds: float = 0.0
    messages: int = 0
    count: int = 1
    interval: float = 1.0
    every: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown fault {self.kind!r}; known: {', '.join(KINDS)}")
        if self.channel not in (*CHANNELS, ALL_CHANNELS):
            raise ConfigError(
                f"fault {self.kind}: unknown channel {self.channel!r} ({', '.join(CHANNELS)} or *)"
            )
        if self.kind in DISPLAY_KINDS:
            if self.channel not in ("display", ALL_CHANNELS):
                raise ConfigError(f"fault {self.kind} only applies to the display channel")
            object.__setattr__(self, "channel", "display")  # frozen: normalise * once
        if self.kind == "delay-frames" and not (
            math.isfinite(self.seconds) and 0 < abs(self.seconds) <= MAX_FRAME_SHIFT
        ):
            raise ConfigError(
                f"fault delay-frames: SECONDS must be non-zero, at most {MAX_FRAME_SHIFT:g} "
                f"either way, got {self.seconds}"
            )
        if self.kind == "delay" and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(f"fault delay: SECONDS must be positive, got {self.seconds}")
        if self.kind == "close-after" and self.messages < 1:
            raise ConfigError(f"fault close-after: N must be at least 1, got {self.messages}")
        if self.kind == "unknown-message":
            if self.count < 1:
                raise ConfigError(
                    f"fault unknown-message: COUNT must be at least 1, got {self.count}"
                )
            if not (math.isfinite(self.interval) and self.interval > 0):
                raise ConfigError(
                    f"fault unknown-message: INTERVAL must be positive, got {self.interval}"
                )
        if self.kind in ("corrupt-image", "drop-frames") and self.every < 1:
            raise ConfigError(f"fault {self.kind}: EVERY_N must be at least 1, got {self.every}")

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """A fault from its ``--fault`` form, e.g. ``delay:display:0.5``.

        Raises:
            ConfigError: the spec does not follow the grammar in :data:`KINDS`.
        """
        kind, *fields = spec.strip().split(":")
        grammar = KINDS.get(kind)
        if grammar is None:
            raise ConfigError(
                f"unknown fault {spec!r}; expected one of: {', '.join(KINDS.values())}"
            )
        try:
            if kind == "delay-frames":
                if len(fields) != 1:
                    raise ValueError
                return cls(kind, "display", seconds=float(fields[0]))
            if kind in DISPLAY_KINDS:
                if len(fields) > 1:
                    raise ValueError
                every = int(fields[0]) if fields else DISPLAY_KINDS[kind]
                return cls(kind, "display", every=every)
            if not fields or (kind != "unknown-message" and len(fields) != 2) or len(fields) > 3:
                raise ValueError
            channel, *args = fields
            if kind == "delay":
                return cls(kind, channel, seconds=float(args[0]))
            if kind == "close-after":
                return cls(kind, channel, messages=int(args[0]))
            return cls(
                kind,
                channel,
                count=int(args[0]) if args else 1,
                interval=float(args[1]) if len(args) > 1 else 1.0,
            )
        except (ValueError, IndexError):
            raise ConfigError(f"bad fault {spec!r}: expected {grammar}") from None

    def applies_to(self, channel: str) -> bool:
        return self.channel in (ALL_CHANNELS, channel)

    def __str__(self) -> str:
        """The spec form, which :meth:`parse` reads back."""
        if self.kind == "delay":
            return f"delay:{self.channel}:{self.seconds:g}"
        if self.kind == "close-after":
            return f"close-after:{self.channel}:{self.messages}"
        if self.kind == "unknown-message":
            return f"unknown-message:{self.channel}:{self.count}:{self.interval:g}"
        if self.kind == "delay-frames":
            return f"delay-frames:{self.seconds:g}"
        return f"{self.kind}:{self.every}"

    def describe(self) -> str:
        """What the fault does, for the start-up log."""
        where = "every channel" if self.channel == ALL_CHANNELS else f"the {self.channel} channel"
        if self.kind == "delay":
            return f"{self}: every message on {where} held {self.seconds:g}s before writing"
        if self.kind == "close-after":
            return f"{self}: {where} closed once {self.messages} messages were sent"
        if self.kind == "unknown-message":
            return (
                f"{self}: {self.count} message(s) of undefined type {UNKNOWN_MESSAGE_TYPE:#06x}"
                f" on {where}, {self.interval:g}s apart, from its start"
            )
        if self.kind == "delay-frames":
            way = "later" if self.seconds > 0 else "earlier (late on arrival)"
            return f"{self}: video stream frames stamped {abs(self.seconds):g}s {way}"
        if self.kind == "drop-frames":
            which = "every frame" if self.every == 1 else f"one frame in {self.every}"
            return f"{self}: {which} of the video streams left out"
        which = "every image" if self.every == 1 else f"one image in {self.every}"
        return f"{self}: {which} on the display channel sent with corrupt coded data"


def parse_faults(faults: Iterable[Fault | str]) -> tuple[Fault, ...]:
    """Specs or :class:`Fault` objects → faults; at most one of a kind per channel.

    Raises:
        ConfigError: a bad spec, or two faults of one kind that both apply to a channel.
    """
    if isinstance(faults, str | Fault):
        raise ConfigError("faults must be a list of specs or Fault objects")
    parsed = tuple(f if isinstance(f, Fault) else Fault.parse(f) for f in faults)
    for i, a in enumerate(parsed):
        for b in parsed[i + 1 :]:
            if a.kind == b.kind and (
                a.channel == b.channel or ALL_CHANNELS in (a.channel, b.channel)
            ):
                raise ConfigError(f"faults {a} and {b} both apply to the same channel")
    return parsed
