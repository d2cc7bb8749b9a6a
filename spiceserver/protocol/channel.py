"""Framed traffic on one linked channel, sans I/O: headers, ACK window, PING/PONG, dispatch.

After the link, each direction is a sequence of messages with either the 6-byte mini header
(u16 type, u32 size) or the 18-byte full header (u64 serial, u16 type, u32 size, u32 sub_list)
— mini iff both sides advertised MINI_HEADER (SPICE-REFERENCE 2.1).

Flow control (spice-server ``red-channel-client.cpp``): after SET_ACK{generation, window} the
client sends one ACK per ``window`` messages it received.  We count messages sent since the
SET_ACK and report :meth:`ChannelProtocol.can_send` False once more than ``2 * window`` are
unacknowledged; the owner then stops producing (latest-wins) until an ACK arrives.

Subclasses declare ``_handlers``: a table from message class to method.  A message type with
no entry is a protocol error; messages deliberately ignored are listed with :meth:`_ignore`.
They also declare ``SERVER_CAPS``, the channel capabilities the server advertises in its link
reply: only what the class handles (pitfall 22).

Time is passed in: ``receive_data(data, now)`` for input; for output, ACK-window lag is
measured from :meth:`ChannelProtocol.data_to_send` ``(now)``, the moment the bytes leave.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from spiceserver.errors import DecodeError, MessageTooLarge, UnexpectedMessage
from spiceserver.protocol import messages as m
from spiceserver.protocol.enums import ChannelType
from spiceserver.protocol.events import ClientDisconnecting, PongReceived

__all__ = ["FULL_HEADER", "MINI_HEADER", "ChannelLimits", "ChannelProtocol", "ChannelStats"]

#: SpiceMiniDataHeader (u16 type, u32 size) and SpiceDataHeader (u64 serial, u16 type, u32 size,
#: u32 sub_list): the only framing parsers; capture and fault injection reuse these.
MINI_HEADER = _MINI = struct.Struct("<HI")
FULL_HEADER = _FULL = struct.Struct("<QHII")

#: spice-server's ``NARROW_CLIENT_ACK_WINDOW``.
DEFAULT_ACK_WINDOW = 20


#: The most bytes one read hands over: asyncio's selector transports and uvloop both read up
#: to 256 KiB at a time.
DEFAULT_READ_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    """Bounds on what one channel accepts from its client, and on the work it causes."""

    #: Largest client → server message body (AGENT_DATA chunks are ≤ 2 KiB + header).
    max_message_size: int = 64 * 1024
    #: Client → server bytes buffered before they are parsed (bounds a flooding client).
    #: None (the default): the largest legal message plus one read, ``max_message_size`` +
    #: 18 + ``read_size``, so no legal burst is ever refused (see :attr:`receive_buffer_limit`).
    max_receive_buffer: int | None = None
    #: The most bytes one read can hand over (the transport's read size; for WebSocket the
    #: largest message): what may arrive on top of one partial message.
    read_size: int = DEFAULT_READ_SIZE
    #: Messages handled per read before yielding to other connections (fairness under flood).
    max_messages_per_call: int = 256
    #: Events handed to the owner per call, whatever the messages: one 4 KiB KEY_SCANCODE
    #: is ~4,000 key events, so the work one client causes per loop turn is bounded in events;
    #: the rest wait, in order, for the next turn.
    max_events_per_call: int = 256
    ack_window: int = DEFAULT_ACK_WINDOW

    @property
    def receive_buffer_limit(self) -> int:
        """Unparsed client bytes allowed: ``max_receive_buffer``, or by default one whole
        legal message (full header) plus one read."""
        if self.max_receive_buffer is not None:
            return self.max_receive_buffer
        return self.max_message_size + _FULL.size + self.read_size


@dataclass(slots=True)
class ChannelStats:
    """Counters for the per-session metrics line."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    ack_lag: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=256))
    rtt: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=64))
    #: Bytes sent up to the end of the newest ACKed window (``bytes_sent`` when its last
    #: message was queued), and when that ACK came: the link estimate's delivery samples.
    acked_bytes: int = 0
    acked_at: float = 0.0


Handler = Callable[[Any, Any, float], None]


class ChannelProtocol:
    """Base of the per-channel state machines."""

    channel_type: ClassVar[ChannelType]
    #: Channel capabilities advertised in the link reply (cap numbers).
    SERVER_CAPS: ClassVar[tuple[int, ...]] = ()
    _handlers: ClassVar[dict[type[m.Message], Handler]] = {}

    def __init__(
        self,
        *,
        mini_header: bool,
        common_caps: tuple[int, ...] = (),
        channel_caps: tuple[int, ...] = (),
        limits: ChannelLimits | None = None,
    ) -> None:
        self.mini_header = mini_header
        self.client_common_caps = common_caps
        self.client_channel_caps = channel_caps
        self.limits = limits or ChannelLimits()
        self.stats = ChannelStats()
        self._in = bytearray()
        self._out: list[bytes | memoryview] = []
        #: Index in ``_out`` where each queued message starts (see :meth:`take_messages`).
        self._starts: list[int] = []
        self._events: list[Any] = []
        self._serial = 0
        # ACK window state.
        self._ack_generation = 0
        self._ack_window = 0
        self._client_generation = -1
        self._unacked = 0
        self._window_sent_at: collections.deque[float] = collections.deque(maxlen=1024)
        #: ``stats.bytes_sent`` at the end of each window not yet ACKed (same bound).
        self._window_bytes: collections.deque[int] = collections.deque(maxlen=1024)
        # PING state.
        self._ping_id = 0
        self._pings: dict[int, float] = {}

    # ------------------------------------------------------------------ input side

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> bool:
        """Parse whole messages from ``data``; raises a ProtocolError subclass on bad input.

        Handles at most ``limits.max_messages_per_call`` messages, and none once
        ``limits.max_events_per_call`` events are waiting; returns True when more work is
        waiting (whole messages unparsed, events of a message not made yet, or events beyond
        what :meth:`events_received` hands over next): the owner then stops reading and calls
        again with ``b""`` on a later loop iteration, so one flooding client cannot starve the
        others.  A message worth many events (KEY_SCANCODE) makes them as they are handed
        over (:meth:`_backlog`), so none lives long: the cycle collector never sees them.
        """
        self._in += data
        if len(self._in) > self.limits.receive_buffer_limit:
            raise MessageTooLarge(f"{len(self._in)} bytes of client data are waiting unparsed")
        header = _MINI if self.mini_header else _FULL
        offset = 0
        buffer = self._in
        budget = self.limits.max_messages_per_call
        events = self.limits.max_events_per_call
        try:
            while True:
                if self._backlog(events - len(self._events)):
                    return True  # the rest of one message's events, on the next call
                if len(buffer) - offset < header.size:
                    break
                if budget == 0 or len(self._events) >= events:
                    return True
                budget -= 1
                if self.mini_header:
                    type_, size = _MINI.unpack_from(buffer, offset)
                else:
                    _serial, type_, size, sub_list = _FULL.unpack_from(buffer, offset)
                    if sub_list:
                        raise DecodeError("sub-message lists from a client are not supported")
                if size > self.limits.max_message_size:
                    raise MessageTooLarge(
                        f"message type {type_} announces {size} bytes, limit "
                        f"{self.limits.max_message_size}"
                    )
                end = offset + header.size + size
                if len(buffer) < end:
                    break
                body = bytes(buffer[offset + header.size : end])
                offset = end
                self._dispatch(type_, body, now)
        finally:
            del buffer[:offset]
        return len(self._events) > events

    def _backlog(self, room: int) -> bool:
        """Make up to ``room`` events owed by a message already parsed; True if some are
        still owed.  (Subclasses whose messages carry many events: the inputs channel.)"""
        return False

    def events_received(self) -> list[Any]:
        """Events produced since the last call, at most ``limits.max_events_per_call`` (the
        rest come with the next call, in order)."""
        limit = self.limits.max_events_per_call
        if len(self._events) <= limit:
            events, self._events = self._events, []
            return events
        events = self._events[:limit]
        del self._events[:limit]
        return events

    # ------------------------------------------------------------------ output side

    def send(self, message: m.Message) -> None:
        self.send_raw(message.TYPE, (message.pack(),))

    def send_raw(self, type_: int, chunks: Iterable[bytes | memoryview]) -> None:
        """Frame a message whose body is the concatenation of ``chunks`` (no copy made)."""
        chunks = list(chunks)
        size = sum(len(c) for c in chunks)
        self._starts.append(len(self._out))
        if self.mini_header:
            self._out.append(_MINI.pack(type_, size))
        else:
            self._serial += 1
            self._out.append(_FULL.pack(self._serial, type_, size, 0))
        self._out.extend(chunks)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += size + (_MINI.size if self.mini_header else _FULL.size)
        if self._ack_window:
            self._unacked += 1
            if self._unacked % self._ack_window == 0:
                self._unstamped += 1  # stamped when it leaves: data_to_send(now)
                self._window_bytes.append(self.stats.bytes_sent)

    def data_to_send(self, now: float | None = None) -> list[bytes | memoryview]:
        """Everything queued, as chunks of whole messages; ``now`` is when they are written
        (the start of the ACK lag of each window completed since the last call)."""
        self._stamp(now)
        out, self._out = self._out, []
        self._starts = []
        return out

    def take_messages(
        self, count: int, now: float | None = None
    ) -> tuple[list[bytes | memoryview], int]:
        """The chunks of at most ``count`` whole queued messages and how many there were; the
        rest stays queued (fault injection's close-after cuts the stream here)."""
        self._stamp(now)
        if count >= len(self._starts):
            taken = len(self._starts)
            return self.data_to_send(now), taken
        cut = self._starts[count]
        out, self._out = self._out[:cut], self._out[cut:]
        self._starts = [start - cut for start in self._starts[count:]]
        return out, count

    def _stamp(self, now: float | None) -> None:
        if now is not None:
            self._now = now
        while self._unstamped:
            self._window_sent_at.append(self._now)
            self._unstamped -= 1

    _unstamped = 0

    def can_send(self) -> bool:
        """False while more than 2 × window messages are unacknowledged (``waiting_for_ack``)."""
        return not self._ack_window or self._unacked <= 2 * self._ack_window

    def start_acks(self, now: float) -> None:
        """Send SET_ACK; the client ACKs every ``window`` messages from here on."""
        self._now = now
        self._ack_generation += 1
        self.send(m.SetAck(generation=self._ack_generation, window=self.limits.ack_window))
        self._ack_window = self.limits.ack_window
        self._unacked = 0
        self._unstamped = 0
        self._window_sent_at.clear()
        self._window_bytes.clear()

    def ping(self, now: float, padding: int = 0) -> int:
        """Send a PING; its PONG (a :class:`PongReceived` event) gives the round-trip time and
        says the client has handled everything sent before it.  Returns the ping's id.

        ``padding`` zero bytes ride along (the client answers with 12 bytes whatever the
        size): the net test's large PING, whose round trip minus a 0-byte one is the time
        the link took to carry them (``spice:server/main-channel-client.cpp``)."""
        self._ping_id += 1
        if len(self._pings) >= 16:  # a client that never answers cannot grow this
            del self._pings[next(iter(self._pings))]  # forget the oldest unanswered one
        self._pings[self._ping_id] = now
        stamp = int(now * 1e9) & 0xFFFF_FFFF_FFFF_FFFF
        self.send(m.Ping(id=self._ping_id, timestamp=stamp, padding=bytes(padding)))
        return self._ping_id

    def set_time(self, now: float) -> None:
        """The owner's clock, for output queued before the next ``data_to_send(now)``."""
        self._now = now

    _now = 0.0

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, type_: int, body: bytes, now: float) -> None:
        message = m.decode_client_message(self.channel_type, type_, body)
        self.stats.messages_received += 1
        handler = _BASE_HANDLERS.get(type(message)) or self._handlers.get(type(message))
        if handler is None:
            raise UnexpectedMessage(
                f"{type(message).__name__} is not accepted on the {self.channel_type.name} channel",
                message_type=type_,
                size=len(body),
            )
        handler(self, message, now)

    def _ignore(self, message: m.Message, now: float) -> None:
        """Accepted and deliberately ignored."""

    # Base handlers (channel-base.c, red-channel-client.cpp).

    def _on_ack_sync(self, message: m.AckSync, now: float) -> None:
        self._client_generation = message.generation

    def _on_ack(self, message: m.Ack, now: float) -> None:
        if self._client_generation != self._ack_generation or not self._ack_window:
            return  # an ACK for an older SET_ACK
        self._unacked = max(0, self._unacked - self._ack_window)
        if self._window_sent_at:
            self.stats.ack_lag.append(now - self._window_sent_at.popleft())
        if self._window_bytes:
            self.stats.acked_bytes = self._window_bytes.popleft()
            self.stats.acked_at = now

    def _on_pong(self, message: m.Pong, now: float) -> None:
        sent = self._pings.pop(message.id, None)
        if sent is not None:
            self.stats.rtt.append(now - sent)
            self._events.append(PongReceived(id=message.id, round_trip=now - sent))

    def _on_disconnecting(self, message: m.ClientDisconnecting, now: float) -> None:
        self._events.append(ClientDisconnecting(reason=message.reason))


_BASE_HANDLERS: dict[type[m.Message], Handler] = {
    m.AckSync: ChannelProtocol._on_ack_sync,
    m.Ack: ChannelProtocol._on_ack,
    m.Pong: ChannelProtocol._on_pong,
    m.ClientDisconnecting: ChannelProtocol._on_disconnecting,
    m.MigrateFlushMark: ChannelProtocol._ignore,
    m.ClientMigrateData: ChannelProtocol._ignore,
}
