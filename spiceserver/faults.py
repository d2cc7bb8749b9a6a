"""Fault injection for client robustness tests (``--fault SPEC``, ``ServerConfig.faults``).

A test of a SPICE client can ask the server to misbehave on purpose, in four ways:

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

CHANNEL is ``main``, ``display``, ``inputs``, ``cursor`` or ``*`` (all of them).

Theory of operation.  Faults live in the asyncio layer only; the sans-I/O protocol core never
hears of them.  :class:`FaultInjector` exists only when faults are configured, and each hook is
one ``is None`` test when they are not:

* ``SpiceServer.attach`` asks :meth:`FaultInjector.connection` for a :class:`ConnectionFaults`
  (None when no fault applies to that channel);
* ``SpiceConnection.flush`` hands the framed chunks to :meth:`ConnectionFaults.write` instead
  of writing them (delay, close-after);
* the display update loop passes each encoded image through an :class:`ImageCorrupter`.

The unknown message goes out through the channel protocol's own ``send_raw``, so its framing,
serial and ACK-window accounting are those of any other message (spice-gtk counts it towards
its ACKs before parsing: ``spice-channel.c`` ``spice_channel_recv_msg()``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spiceserver.errors import ConfigError
from spiceserver.protocol.display import EncodedImage
from spiceserver.protocol.enums import ImageType

if TYPE_CHECKING:
    from spiceserver.protocol.channel import ChannelProtocol
    from spiceserver.server.connection import SpiceConnection

__all__ = [
    "CHANNELS",
    "KINDS",
    "UNKNOWN_MESSAGE_TYPE",
    "ConnectionFaults",
    "Fault",
    "FaultInjector",
    "ImageCorrupter",
    "corrupt_image",
    "parse_faults",
    "take_messages",
]

logger = logging.getLogger("spiceserver.faults")

Chunk = bytes | memoryview

#: Channel names a fault may name; ``*`` means all of them.
CHANNELS = ("main", "display", "inputs", "cursor")
ALL_CHANNELS = "*"

#: The fault kinds, with the grammar of each (for error messages and --help).
KINDS = {
    "delay": "delay:CHANNEL:SECONDS",
    "close-after": "close-after:CHANNEL:N",
    "unknown-message": "unknown-message:CHANNEL[:COUNT[:INTERVAL]]",
    "corrupt-image": "corrupt-image[:EVERY_N]",
}

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

#: Every CORRUPT_STRIDE-th byte of the coded data is inverted, from its first byte on: dense
#: enough that no codec can decode the image as it was, sparse enough to leave some structure.
CORRUPT_STRIDE = 16

#: Bytes kept intact at the start of each image body (``EncodedImage.body``, after the 18-byte
#: descriptor): the length fields and the codec's own header, so the client's framing and its
#: size checks pass and its decoder meets the damage.  BITMAP: format, flags, width, height,
#: stride, Palette* (18 bytes).  QUIC: u32 data_size, then magic, version, type, width, height
#: (5 words, ``quic.c``).  LZ_RGB: u32 data_size, then 7 big-endian words (magic, version,
#: type, width, height, stride, top_down; ``lz.c``).  GLZ_RGB: u32 data_size, then the 33-byte
#: header (``decode-glz.c`` ``decode_header()``), whose image id and window distance keep the
#: client's GLZ window in step with ours.
INTACT_PREFIX = {
    ImageType.BITMAP: 18,
    ImageType.QUIC: 4 + 20,
    ImageType.LZ_RGB: 4 + 28,
    ImageType.GLZ_RGB: 4 + 33,
}

_MINI_HEADER = struct.Struct("<HI")  # SpiceMiniDataHeader: type, size
_FULL_HEADER = struct.Struct("<QHII")  # SpiceDataHeader: serial, type, size, sub_list


@dataclass(frozen=True, slots=True)
class Fault:
    """One deliberate misbehaviour; build it with :meth:`parse` or by keyword.

    Only the fields of its ``kind`` matter: ``seconds`` (delay), ``messages`` (close-after),
    ``count`` and ``interval`` (unknown-message), ``every`` (corrupt-image).
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
                f"fault {self.kind}: unknown channel {self.channel!r} "
                f"({', '.join(CHANNELS)} or *)"
            )
        if self.kind == "corrupt-image":
            if self.channel not in ("display", ALL_CHANNELS):
                raise ConfigError("fault corrupt-image only applies to the display channel")
            object.__setattr__(self, "channel", "display")  # frozen: normalise * once
        if self.kind == "delay" and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(f"fault delay: SECONDS must be positive, got {self.seconds}")
        if self.kind == "close-after" and self.messages < 1:
            raise ConfigError(f"fault close-after: N must be at least 1, got {self.messages}")
        if self.kind == "unknown-message":
            if self.count < 1:
                raise ConfigError(f"fault unknown-message: COUNT must be at least 1, "
                                  f"got {self.count}")
            if not (math.isfinite(self.interval) and self.interval > 0):
                raise ConfigError(f"fault unknown-message: INTERVAL must be positive, "
                                  f"got {self.interval}")
        if self.kind == "corrupt-image" and self.every < 1:
            raise ConfigError(f"fault corrupt-image: EVERY_N must be at least 1, got {self.every}")

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """A fault from its ``--fault`` form, e.g. ``delay:display:0.5``.

        Raises:
            ConfigError: the spec does not follow the grammar in :data:`KINDS`.
        """
        kind, *fields = spec.strip().split(":")
        grammar = KINDS.get(kind)
        if grammar is None:
            raise ConfigError(f"unknown fault {spec!r}; expected one of: "
                              f"{', '.join(KINDS.values())}")
        try:
            if kind == "corrupt-image":
                if len(fields) > 1:
                    raise ValueError
                return cls(kind, "display", every=int(fields[0]) if fields else 1)
            if not fields or (kind != "unknown-message" and len(fields) != 2) or len(fields) > 3:
                raise ValueError
            channel, *args = fields
            if kind == "delay":
                return cls(kind, channel, seconds=float(args[0]))
            if kind == "close-after":
                return cls(kind, channel, messages=int(args[0]))
            return cls(kind, channel,
                       count=int(args[0]) if args else 1,
                       interval=float(args[1]) if len(args) > 1 else 1.0)
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
        return f"corrupt-image:{self.every}"

    def describe(self) -> str:
        """What the fault does, for the start-up log."""
        where = "every channel" if self.channel == ALL_CHANNELS else f"the {self.channel} channel"
        if self.kind == "delay":
            return f"{self}: every message on {where} held {self.seconds:g}s before writing"
        if self.kind == "close-after":
            return f"{self}: {where} closed once {self.messages} messages were sent"
        if self.kind == "unknown-message":
            return (f"{self}: {self.count} message(s) of undefined type {UNKNOWN_MESSAGE_TYPE:#06x}"
                    f" on {where}, {self.interval:g}s apart, from its start")
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
            if a.kind == b.kind and (a.channel == b.channel
                                     or ALL_CHANNELS in (a.channel, b.channel)):
                raise ConfigError(f"faults {a} and {b} both apply to the same channel")
    return parsed


class FaultInjector:
    """The server's faults; hands each connection and display channel its share."""

    def __init__(self, faults: Iterable[Fault | str]) -> None:
        self.faults = parse_faults(faults)

    def log_active(self) -> None:
        """One WARNING per active fault: the server misbehaves on purpose from here on."""
        for fault in self.faults:
            logger.warning("FAULT INJECTION active: %s", fault.describe())

    def connection(
        self, connection: SpiceConnection, channel: ChannelProtocol, channel_name: str
    ) -> ConnectionFaults | None:
        """The faults of a connection that just linked (None when none applies)."""
        mine = {f.kind: f for f in self.faults if f.kind != "corrupt-image"
                and f.applies_to(channel_name)}
        if not mine:
            return None
        return ConnectionFaults(connection, channel, mine)

    def image_corrupter(self, name: str) -> ImageCorrupter | None:
        """For a display channel: the image transformer, or None without corrupt-image."""
        for fault in self.faults:
            if fault.kind == "corrupt-image":
                return ImageCorrupter(fault.every, name)
        return None


class ConnectionFaults:
    """Delay, close-after and unknown-message on one connection.

    :meth:`write` stands between the channel protocol's output and the transport.  Delay keeps
    order (one FIFO, one due time per flush, all due times increasing) and memory bounded: held
    bytes count like unsent transport bytes, so above ``write_buffer_high`` the connection
    reports itself paused and the display and cursor stop producing (latest-wins: damage merges
    meanwhile), and above ``max_write_buffer`` it is dropped, as an unread one is.  A delay also
    slows the ACK window (SPICE-REFERENCE 2.3): the client ACKs only what it has received, so
    at most 2 × window messages leave per delay period and updates merge instead of queueing.
    """

    def __init__(
        self, connection: SpiceConnection, channel: ChannelProtocol, faults: dict[str, Fault]
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._loop = asyncio.get_running_loop()
        config = connection.server.config
        self._high = config.write_buffer_high
        self._max = config.max_write_buffer
        delay = faults.get("delay")
        self._delay = delay.seconds if delay is not None else 0.0
        close = faults.get("close-after")
        self._close_after = close.messages if close is not None else 0
        self._remaining = self._close_after or None
        self._closing = False
        self._mini_header = channel.mini_header
        # Delay line: (due, chunks, bytes, close after writing them).
        self._held: collections.deque[tuple[float, list[Chunk], int, bool]] = collections.deque()
        self._held_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._delay_logged = False
        unknown = faults.get("unknown-message")
        self._unknown_left = unknown.count if unknown is not None else 0
        self._unknown_interval = unknown.interval if unknown is not None else 0.0
        if unknown is not None:
            # call_soon: after handler.start() and the first flush, so the channel's own
            # opening messages (INIT, SET_ACK) go first.
            self._loop.call_soon(self._send_unknown)

    @property
    def held_bytes(self) -> int:
        """Bytes waiting in the delay line."""
        return self._held_bytes

    def write(self, chunks: list[Chunk]) -> None:
        """Take the place of writing ``chunks`` (whole framed messages) to the transport."""
        if self._closing:
            return  # close-after fired: nothing more is sent
        last = False
        if self._remaining is not None:
            chunks, taken = take_messages(chunks, self._remaining, self._mini_header)
            self._remaining -= taken
            if self._remaining == 0:
                self._closing = last = True
        if self._delay:
            self._hold(chunks, last)
            return
        self._connection.write_chunks(chunks)
        if last:
            self._close()

    # ------------------------------------------------------------------ delay

    def _hold(self, chunks: list[Chunk], last: bool) -> None:
        if not self._delay_logged:
            self._delay_logged = True
            logger.info("%s: fault delay: holding every message %gs", self._connection.name,
                        self._delay)
        size = sum(len(c) for c in chunks)
        due = self._loop.time() + self._delay
        self._held.append((due, chunks, size, last))
        self._held_bytes += size
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._release)
        transport = self._connection.transport
        backlog = self._held_bytes + (transport.get_write_buffer_size() if transport else 0)
        if backlog > self._max:
            logger.warning("%s: closing: %d bytes held or unsent under fault delay",
                           self._connection.name, backlog)
            self._connection.abort("fault delay: max_write_buffer exceeded")
            return
        if self._held_bytes > self._high and not self._connection.writing_paused:
            self._paused = True
            self._connection.pause_writing()

    def _release(self) -> None:
        self._timer = None
        if self._connection.closed:
            self._held.clear()
            self._held_bytes = 0
            return
        now = self._loop.time()
        while self._held and self._held[0][0] <= now:
            _due, chunks, size, last = self._held.popleft()
            self._held_bytes -= size
            logger.debug("%s: fault delay: writing %d bytes", self._connection.name, size)
            self._connection.write_chunks(chunks)
            if last:
                self._close()
                return
        if self._held:
            self._timer = self._loop.call_at(self._held[0][0], self._release)
        transport = self._connection.transport
        if (self._paused and self._held_bytes <= self._high // 2 and transport is not None
                and transport.get_write_buffer_size() <= self._high):
            # Otherwise the transport is itself above its high-water mark and resumes us.
            self._paused = False
            self._connection.resume_writing()

    # ------------------------------------------------------------------ close-after

    def _close(self) -> None:
        logger.info("%s: fault close-after: closing after %d messages", self._connection.name,
                    self._close_after)
        self._connection.close(f"fault close-after:{self._close_after}")

    # ------------------------------------------------------------------ unknown-message

    def _send_unknown(self) -> None:
        if self._connection.closed or self._closing or self._unknown_left <= 0:
            return
        self._unknown_left -= 1
        self._channel.send_raw(UNKNOWN_MESSAGE_TYPE, (UNKNOWN_MESSAGE_BODY,))
        logger.info("%s: fault unknown-message: sent type %#06x (%d bytes)", self._connection.name,
                    UNKNOWN_MESSAGE_TYPE, len(UNKNOWN_MESSAGE_BODY))
        self._connection.flush()
        if self._unknown_left:
            self._loop.call_later(self._unknown_interval, self._send_unknown)


class ImageCorrupter:
    """Corrupts every ``every``-th image of one display channel (see :func:`corrupt_image`)."""

    def __init__(self, every: int, name: str) -> None:
        self.every = every
        self.name = name
        self.images = 0
        self.corrupted = 0

    def __call__(self, image: EncodedImage) -> EncodedImage:
        self.images += 1
        if self.images % self.every:
            return image
        damaged = corrupt_image(image)
        if damaged is image:
            return image
        self.corrupted += 1
        logger.info("%s: fault corrupt-image: image %d (%s %dx%d, %d bytes) sent corrupt",
                    self.name, self.images, image.type.name, image.width, image.height,
                    image.size)
        return damaged


def corrupt_image(image: EncodedImage) -> EncodedImage:
    """A copy of ``image`` whose coded data is damaged and whose lengths are unchanged.

    The first :data:`INTACT_PREFIX` bytes of the body (length fields, codec header) stay as
    they are; after them every :data:`CORRUPT_STRIDE`-th byte is inverted.  The image is never
    modified in place (encoded images may be shared between sessions).  An image type with no
    entry in :data:`INTACT_PREFIX`, or with no coded byte, comes back unchanged.
    """
    keep = INTACT_PREFIX.get(image.type)
    data = bytearray(b"".join(image.body))
    if keep is None or len(data) <= keep:
        return image
    view = np.frombuffer(data, np.uint8)  # writable: it shares the bytearray
    view[keep::CORRUPT_STRIDE] ^= 0xFF
    return dataclasses.replace(image, body=(memoryview(data),))


def take_messages(
    chunks: list[Chunk], count: int, mini_header: bool = True
) -> tuple[list[Chunk], int]:
    """The chunks of the first ``count`` messages framed in ``chunks``, and how many there were.

    ``chunks`` hold whole messages (what ``ChannelProtocol.data_to_send`` returns), each a
    mini or full header followed by its body; a header or body may span chunks.  Bodies are
    sliced, never copied.
    """
    header = _MINI_HEADER if mini_header else _FULL_HEADER
    size_index = 1 if mini_header else 2  # the u32 size field
    pending: collections.deque[memoryview] = collections.deque(
        memoryview(c).cast("B") for c in chunks if len(c)
    )
    out: list[Chunk] = []
    taken = 0
    while taken < count and pending:
        head = bytearray()
        for view in pending:
            head += view[: header.size - len(head)]
            if len(head) == header.size:
                break
        if len(head) < header.size:
            raise ValueError("chunks end inside a message header")
        need = header.size + header.unpack(head)[size_index]
        while need:
            view = pending.popleft()
            if len(view) > need:
                out.append(view[:need])
                pending.appendleft(view[need:])
                need = 0
            else:
                out.append(view)
                need -= len(view)
                if need and not pending:
                    raise ValueError("chunks end inside a message body")
        taken += 1
    return out, taken
