"""One TCP connection: the asyncio adapter around :class:`LinkProtocol` and a channel protocol.

Bytes from the socket go into the sans-I/O objects; whatever they queue is written out with
``writelines`` (image payloads are memoryviews, never joined by us).  Every protocol error is
logged with the peer and channel, and closes only this connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from spiceserver.crypto import check_ticket, public_key_der
from spiceserver.errors import LinkRefused, ProtocolError, UnexpectedMessage
from spiceserver.protocol.channel import ChannelProtocol
from spiceserver.protocol.enums import ChannelType, CommonCap, LinkError
from spiceserver.protocol.link import LinkProtocol, LinkRequest, TicketReceived

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from spiceserver.capture import ConnectionCapture
    from spiceserver.faults import ConnectionFaults
    from spiceserver.server.handlers import ChannelHandler
    from spiceserver.server.server import SpiceServer

__all__ = ["SpiceConnection"]

logger = logging.getLogger("spiceserver.connection")

#: Common caps on every channel: AUTH_SELECTION | AUTH_SPICE | MINI_HEADER = 0x0B (§1.5).
SERVER_COMMON_CAPS = [
    CommonCap.PROTOCOL_AUTH_SELECTION,
    CommonCap.AUTH_SPICE,
    CommonCap.MINI_HEADER,
]


class SpiceConnection(asyncio.Protocol):
    def __init__(self, server: SpiceServer, *, secure: bool = False) -> None:
        self.server = server
        #: Arrived on the TLS listener.
        self.secure = secure
        self.link = LinkProtocol(max_link_size=server.config.max_link_size)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.request: LinkRequest | None = None
        self.channel: ChannelProtocol | None = None
        self.handler: ChannelHandler | None = None
        self.writing_paused = False
        self.closed = False
        self._key: RSAPrivateKey | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        #: Why the server closed this connection (the session record's disconnect reason).
        self.close_reason: str | None = None
        #: Capture mode's recorder for this connection; None (the default) costs one test.
        self.capture: ConnectionCapture | None = (
            None if server.captures is None else server.captures.connection()
        )
        #: Fault injection (``--fault``) on this channel, set at attach; None costs one test.
        self.faults: ConnectionFaults | None = None

    @property
    def name(self) -> str:
        """``peer channel`` for log lines."""
        channel = self.request.channel_name if self.request else "link"
        return f"{self.peer} {channel}"

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport.set_write_buffer_limits(high=self.server.config.write_buffer_high)
        limit = self.server.config.max_connections
        if len(self.server.connections) >= limit:
            logger.warning("%s: refused: %d connections already (max_connections)", self.name,
                           limit)
            self.capture = None  # nothing of this connection is recorded
            transport.abort()
            return
        if self.capture is not None:
            self.capture.opened(transport)
        self._handshake_timer = self._loop.call_later(
            self.server.config.handshake_timeout, self._handshake_expired
        )
        self.server.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.capture is not None:
            self.capture.received(data)
        try:
            if self.channel is not None:
                self._channel_data(data)
            else:
                self._link_data(data)
        except LinkRefused as exc:
            self.server.log_refusal(self, exc)
            self._flush_link()
            self.close()
        except ProtocolError as exc:
            self._protocol_error(exc)
        except Exception:
            logger.exception("%s: internal error, closing", self.name)
            self.abort("internal error")

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def _protocol_error(self, exc: ProtocolError) -> None:
        logger.warning("%s: protocol error, closing: %s", self.name, exc)
        unknown = isinstance(exc, UnexpectedMessage) and exc.message_type is not None
        if self.server.recorders and unknown:
            assert isinstance(exc, UnexpectedMessage)
            self.server.record({"event": "unknown_message", "type": exc.message_type,
                                "size": exc.size}, self)
        self.abort(f"protocol error: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.server.recorders and self.channel is not None:
            reason = self.close_reason or (
                f"connection lost: {exc}" if exc else "client closed the connection"
            )
            self.server.record({"event": "disconnect", "reason": reason}, self)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        if self.handler is not None:
            try:
                self.handler.closed()
            except Exception:
                logger.exception("%s: error while closing", self.name)
            self.handler.fail_round_trips()
        self.server.connection_closed(self)
        if self.capture is not None:
            self.capture.close()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.handler is not None:
            self.handler.on_writable()

    # ------------------------------------------------------------------ link stage

    def _link_data(self, data: bytes) -> None:
        event = self.link.receive_data(data)
        while event is not None:
            if isinstance(event, LinkRequest):
                event = self._on_link_request(event)
            else:
                event = self._on_ticket(event)

    def _on_link_request(self, request: LinkRequest) -> LinkRequest | TicketReceived | None:
        self.request = request
        code, reason = self.server.sessions.check(request)
        if code != LinkError.OK:
            raise self.link.refuse(code, reason)
        code, reason = self.server.check_secure(self)
        if code != LinkError.OK:
            raise self.link.refuse(code, reason)
        key = self.server.keys.take_nowait()
        if key is None:
            # The pool ran dry: wait for a key off the loop, reading nothing meanwhile.
            assert self.transport is not None
            self.transport.pause_reading()
            task = self._loop.create_task(self._accept_later())
            self.server.track(task)
            return None
        return self._accept(key)

    async def _accept_later(self) -> None:
        key = await self.server.keys.take()
        if self.closed:
            return
        assert self.transport is not None
        self.transport.resume_reading()
        try:
            event = self._accept(key)
            while event is not None:
                event = (
                    self._on_ticket(event)
                    if isinstance(event, TicketReceived)
                    else self._on_link_request(event)
                )
        except LinkRefused as exc:
            self.server.log_refusal(self, exc)
            self._flush_link()
            self.close()

    def _accept(self, key: RSAPrivateKey) -> LinkRequest | TicketReceived | None:
        assert self.request is not None
        self._key = key
        self.link.accept(
            public_key_der(key),
            common_caps=list(SERVER_COMMON_CAPS),
            channel_caps=self.server.channel_caps(self.request.channel_type),
            ticket_size=key.key_size // 8,
        )
        self._flush_link()
        return self.link.receive_data(b"")

    def _on_ticket(self, event: TicketReceived) -> LinkRequest | TicketReceived | None:
        assert self._key is not None and self.request is not None
        ticket = self.server.ticket
        ok = check_ticket(self._key, event.ciphertext, ticket.password)
        self._key = None  # one key, one link
        address = self.peer.rpartition(":")[0]
        if not ok:
            self._refuse_slowly(self.server.failures.failed(address, self._loop.time()))
            return None
        if ticket.expired():
            raise self.link.refuse(LinkError.PERMISSION_DENIED, "ticket expired")
        is_main = self.request.channel_type == ChannelType.MAIN
        if is_main and ticket.one_shot and ticket.spent:
            raise self.link.refuse(LinkError.PERMISSION_DENIED, "one-shot ticket already used")
        code, reason = self.server.sessions.check(self.request)  # the main may have gone
        if code != LinkError.OK:
            raise self.link.refuse(code, reason)
        self.server.failures.succeeded(address)
        if is_main and ticket.one_shot:
            ticket.spent = True
        self.link.finish()
        self._flush_link()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._linked()
        return None

    def _linked(self) -> None:
        assert self.request is not None
        self.channel, self.handler = self.server.attach(self, self.request, self.link.mini_header)
        if self.server.recorders:
            self.server.record_link(self, "ok")
        logger.info(
            "%s: linked (channel id %d, %s headers)",
            self.name,
            self.request.channel_id,
            "mini" if self.link.mini_header else "full",
        )
        self.handler.start(self._loop.time())
        leftover = self.link.leftover()
        if leftover:
            self._channel_data(leftover)
        else:
            self.flush()

    def _refuse_slowly(self, delay: float) -> None:
        """PERMISSION_DENIED after ``delay`` seconds: repeated failures from one address wait
        longer each time, while nothing else does (the loop keeps serving everyone)."""
        if delay <= 0:
            raise self.link.refuse(LinkError.PERMISSION_DENIED, "wrong ticket")
        assert self.transport is not None
        self.transport.pause_reading()

        def refuse() -> None:
            if self.closed:
                return
            exc = self.link.refuse(LinkError.PERMISSION_DENIED,
                                   f"wrong ticket (answered after {delay:.2f}s: repeated failures)")
            self.server.log_refusal(self, exc)
            self._flush_link()
            self.close()

        self._loop.call_later(delay, refuse)

    def _flush_link(self) -> None:
        out = self.link.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)
            if self.capture is not None:
                self.capture.sent((out,))

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.channel is None and not self.closed:
            logger.warning("%s: refused: link not completed within %.0fs", self.name,
                           self.server.config.handshake_timeout)
            self.abort("handshake timeout")

    # ------------------------------------------------------------------ channel traffic

    def _channel_data(self, data: bytes) -> bool:
        """Feed the channel; True while a burst is being taken in steps (reading paused)."""
        assert self.channel is not None and self.handler is not None
        now = self._loop.time()
        more = self.channel.receive_data(data, now)
        events = self.channel.events_received()
        self.handler.on_events(events, now)
        self.flush()
        if more and self.transport is not None:
            # A burst of messages: take the rest on a later loop iteration, reading nothing
            # more meanwhile, so every other connection gets its turn.
            self.transport.pause_reading()
            self._loop.call_soon(self._continue_input)
        return more

    def _continue_input(self) -> None:
        if self.closed or self.transport is None:
            return
        try:
            more = self._channel_data(b"")
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if not more and not self.closed:
            self.transport.resume_reading()

    def flush(self) -> None:
        """Write whatever the channel protocol queued."""
        if self.channel is None or self.transport is None or self.transport.is_closing():
            return
        self.channel.set_time(self._loop.time())
        chunks = self.channel.data_to_send()
        if chunks:
            if self.faults is not None:  # fault injection: may hold, cut or close (faults.py)
                self.faults.write(chunks)
            else:
                self.write_chunks(chunks)

    def write_chunks(self, chunks: list[bytes | memoryview]) -> None:
        """Put framed messages on the wire (capture records them here)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(chunks)
            if self.transport.get_write_buffer_size() > self.server.config.max_write_buffer:
                logger.warning("%s: closing: client stopped reading (%d bytes unsent)",
                               self.name, self.transport.get_write_buffer_size())
                self.abort("client stopped reading (max_write_buffer)")
                return
            if self.capture is not None:
                self.capture.sent(chunks)

    @property
    def writable(self) -> bool:
        """Room for a screen update: transport below its high-water mark, ACK window open."""
        return (
            not self.closed
            and not self.writing_paused
            and self.channel is not None
            and self.channel.can_send()
        )

    def close(self, reason: str = "closed by the server") -> None:
        """Close after flushing what is queued."""
        self.close_reason = self.close_reason or reason
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self, reason: str = "closed by the server") -> None:
        """Drop the connection now, discarding queued output."""
        self.close_reason = self.close_reason or reason
        if self.transport is not None:
            self.transport.abort()

    def describe(self) -> dict[str, Any]:
        return {"peer": self.peer, "channel": self.request.channel_name if self.request else None}


def channel_name(channel_type: int) -> str:
    try:
        return ChannelType(channel_type).name.lower()
    except ValueError:
        return f"type-{channel_type}"
