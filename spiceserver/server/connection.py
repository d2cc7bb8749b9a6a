"""One SPICE connection, whatever carries its bytes: link stage, then one channel.

A transport adapter (:mod:`spiceserver.server.transports`) feeds :meth:`SpiceConnection.
data_received` and writes what the connection hands its :class:`Outlet`: TCP, TLS and Unix
sockets directly, WebSocket through its framing.  Bytes go into the sans-I/O objects
(:class:`~spiceserver.protocol.link.LinkProtocol`, then the channel's protocol); whatever they
queue is written out as chunks (image payloads are memoryviews, never joined by us).  Every
protocol error is logged with the peer and channel, and closes only this connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from spiceserver.crypto import RsaKey, check_ticket, public_key_der
from spiceserver.errors import LinkRefused, ProtocolError, UnexpectedMessage
from spiceserver.protocol.channel import ChannelProtocol
from spiceserver.protocol.enums import ChannelType, LinkError
from spiceserver.protocol.link import LinkProtocol, LinkRequest, TicketReceived, tls_required
from spiceserver.protocol.main import MainChannel
from spiceserver.record import enum_name, link_record
from spiceserver.server.channels.base import ChannelHandler
from spiceserver.server.context import ServerContext
from spiceserver.server.registry import CHANNELS

if TYPE_CHECKING:
    from spiceserver.capture import ConnectionCapture
    from spiceserver.server.fault_injection import ConnectionFaults
    from spiceserver.session import Session

__all__ = ["Outlet", "SpiceConnection"]

logger = logging.getLogger("spiceserver.connection")

Chunk = bytes | memoryview


class Outlet(Protocol):
    """Where a connection's bytes go: a transport adapter."""

    @property
    def peer(self) -> str:
        """``host:port`` of the client, for log lines."""
        ...

    @property
    def address(self) -> str:
        """The client's address without port (per-address accounting); ``unix`` for Unix
        sockets."""
        ...

    @property
    def client_address(self) -> tuple[str, int] | None:
        """For capture mode's fake TCP flow: the client's (host, port), when known."""
        ...

    @property
    def server_address(self) -> str | None:
        """For capture mode's fake TCP flow: our address, when known."""
        ...

    def write(self, chunks: Sequence[Chunk]) -> None: ...
    def buffered(self) -> int:
        """Bytes handed to :meth:`write` and not yet sent."""
        ...

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None:
        """Close after sending what is buffered."""
        ...

    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...


class SpiceConnection:
    """Link stage, then one channel's traffic, over an :class:`Outlet`.

    The adapter calls :meth:`opened` once (False: refused, already closed), then
    :meth:`data_received` per read, :meth:`pause_writing` / :meth:`resume_writing` as the
    outlet's buffer crosses its marks, and :meth:`connection_lost` at the end.
    """

    def __init__(self, context: ServerContext, outlet: Outlet, *, secure: bool = False) -> None:
        self.context = context
        self.outlet = outlet
        #: Arrived over TLS.
        self.secure = secure
        self.link = LinkProtocol(max_link_size=context.config.max_link_size)
        self.request: LinkRequest | None = None
        self.channel: ChannelProtocol | None = None
        self.handler: ChannelHandler[Any] | None = None
        self.session: Session | None = None
        self.writing_paused = False
        self.closed = False
        #: Counted in ``context.addresses`` (False: refused in :meth:`opened`).
        self._counted = False
        #: Linked: no longer a link in progress for the per-address limits.
        self._authenticated = False
        self._key: RsaKey | None = None
        self._ticket: TicketReceived | None = None
        self._ticket_at = 0.0
        #: Cancels this link's ticket check while it waits for its turn (``context.gate``).
        self._cancel_check: Callable[[], None] | None = None
        #: Largest unsent output of this connection (its channel's, once linked), and the
        #: name of the limit that set it (for the log line when a client passes it).
        self.write_limit = context.config.max_write_buffer
        self._write_limit_name = "max_write_buffer"
        #: Taking a backlog step by step (counted in ``context.flooding``).
        self._flooding = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        #: Why the server closed this connection (the session record's disconnect reason).
        self.close_reason: str | None = None
        #: Capture mode's recorder for this connection; None (the default) costs one test.
        self.capture: ConnectionCapture | None = (
            None if context.captures is None else context.captures.connection()
        )
        #: Fault injection (``--fault``) on this channel, set at link; None costs one test.
        self.faults: ConnectionFaults | None = None

    @property
    def peer(self) -> str:
        return self.outlet.peer

    @property
    def name(self) -> str:
        """``peer channel`` for log lines."""
        channel = self.request.channel_name if self.request else "link"
        return f"{self.outlet.peer} {channel}"

    # ------------------------------------------------------------------ from the adapter

    def opened(self) -> bool:
        """The transport is up; False if the connection was refused (and is being closed)."""
        limit = self.context.config.max_connections
        refusal = None
        if len(self.context.connections) >= limit:
            refusal = f"{limit} connections already (max_connections)"
        else:
            refusal = self.context.addresses.admit(self.outlet.address)
        if refusal is not None:
            logger.warning("%s: refused: %s", self.name, refusal)
            self.capture = None  # nothing of this connection is recorded
            self.closed = True
            self.outlet.abort()
            return False
        self._counted = True
        if self.capture is not None:
            self.capture.opened(self.outlet.client_address, self.outlet.server_address)
        self._handshake_timer = self._loop.call_later(
            self.context.config.handshake_timeout, self._handshake_expired
        )
        self.context.opened(self)
        return True

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.capture is not None:
            self.capture.received(data)
        if self.channel is not None:
            self._guarded(self._channel_data, data)
        else:
            self._guarded(self._link_data, data)

    def _guarded(self, step: Callable[..., object], *args: Any) -> None:
        """Run one step of this connection; whatever it raises ends this connection only."""
        try:
            step(*args)
        except LinkRefused as exc:
            self._log_refusal(exc)
            self._flush_link()
            self.close()
        except ProtocolError as exc:
            self._protocol_error(exc)
        except Exception:
            logger.exception("%s: internal error, closing", self.name)
            self.abort("internal error")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self not in self.context.connections:
            return  # refused in opened()
        self.closed = True
        if self.context.recorders and self.channel is not None:
            reason = self.close_reason or (
                f"connection lost: {exc}" if exc else "client closed the connection"
            )
            self._record({"event": "disconnect", "reason": reason})
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._forget_link()
        if self._flooding:
            self._end_flood()
        if self._counted:
            self._counted = False
            self.context.addresses.closed(self.outlet.address, self._authenticated)
        if self.handler is not None:
            try:
                self.handler.closed()
            except Exception:
                logger.exception("%s: error while closing", self.name)
            self.handler.fail_round_trips()
        self.context.closed(self)
        request = self.request
        if (
            self.session is not None
            and request is not None
            and (request.channel_type != ChannelType.MAIN)
        ):
            key = (request.channel_type, request.channel_id)
            self.context.sessions.detach(self.session, key, self)
        if self.capture is not None:
            self.capture.close()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.session is not None:  # backpressure: the link estimate counts its time
            self.session.metrics.link.writing_paused(id(self), True, self.context.clock())

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.session is not None:
            self.session.metrics.link.writing_paused(id(self), False, self.context.clock())
        if self.handler is not None:
            self.handler.on_writable()

    # ------------------------------------------------------------------ errors and the record

    def _protocol_error(self, exc: ProtocolError) -> None:
        logger.warning("%s: protocol error, closing: %s", self.name, exc)
        if (
            self.context.recorders
            and isinstance(exc, UnexpectedMessage)
            and (exc.message_type is not None)
        ):
            self._record({"event": "unknown_message", "type": exc.message_type, "size": exc.size})
        self.abort(f"protocol error: {exc}")

    def _log_refusal(self, exc: LinkRefused) -> None:
        code = enum_name(LinkError, exc.code)
        logger.warning("%s: refused %s: %s", self.name, code.upper(), exc.reason)
        self._record_link(code, exc.reason)

    def _record(self, event: dict[str, Any]) -> None:
        request = self.request
        session = (
            self.session.id
            if self.session is not None
            else (request.connection_id or None if request is not None else None)
        )
        self.context.record(
            event,
            session,
            request.channel_name if request is not None else None,
            request.channel_id if request is not None else None,
        )

    def _record_link(self, result: str, reason: str = "") -> None:
        """A link finished: ``ok``, or the SpiceLinkErr it was refused with and why."""
        request = self.request
        if not self.context.recorders or request is None:
            return
        event = link_record(
            request.channel_type,
            request.channel_id,
            request.common_caps,
            request.channel_caps,
            result,
            self.peer,
        )
        if reason:
            event["reason"] = reason
        self._record(event)

    # ------------------------------------------------------------------ link stage

    def _link_data(self, data: bytes) -> None:
        self._link_events(self.link.receive_data(data))

    def _link_events(self, event: LinkRequest | TicketReceived | None) -> None:
        while event is not None:
            if isinstance(event, LinkRequest):
                event = self._on_link_request(event)
            else:
                self._on_ticket(event)
                event = None

    def _check_link(self, request: LinkRequest, *, authenticated: bool) -> None:
        """Refuse links to channels we do not serve, or in the clear when they must use TLS;
        once ``authenticated`` (the ticket was right), to dead sessions too.  Before the
        ticket a live session id and an unknown one get the same answer, at the same time."""
        code, reason = self.context.sessions.check(request, authenticated=authenticated)
        if code == LinkError.BAD_CONNECTION_ID:
            # A right ticket naming no live session: a probe, paced like a wrong ticket.
            self.context.failures.failed(self.outlet.address, self.context.clock())
        if code != LinkError.OK:
            raise self.link.refuse(code, reason)
        config = self.context.config
        if tls_required(
            request.channel_name,
            secure=self.secure,
            tls_enabled=self.context.tls_enabled,
            plaintext_channels=config.plaintext_channels,
        ):
            raise self.link.refuse(LinkError.NEED_SECURED, "this channel must use TLS")

    def _on_link_request(self, request: LinkRequest) -> LinkRequest | TicketReceived | None:
        self.request = request
        self._check_link(request, authenticated=False)
        key = self.context.keys.take_nowait()
        if key is None:
            # The pool ran dry: wait for a key off the loop.  Reading goes on (the link stage
            # buffers what comes, within its limit), so a client that gives up is seen at once.
            self.context.track(self._loop.create_task(self._accept_later()))
            return None
        return self._accept(key)

    async def _accept_later(self) -> None:
        key = await self.context.keys.take()
        if self.closed:
            self.context.keys.recycle(key)  # never shown to anyone
            return
        self._guarded(lambda: self._link_events(self._accept(key)))

    def _accept(self, key: RsaKey) -> LinkRequest | TicketReceived | None:
        assert self.request is not None
        self._key = key
        spec = CHANNELS[self.request.channel_type]
        self.link.accept(
            public_key_der(key),
            channel_caps=spec.handler.link_caps(self.context),
            ticket_size=key.key_size // 8,
        )
        self._flush_link()
        return self.link.receive_data(b"")

    def _on_ticket(self, event: TicketReceived) -> None:
        """The ticket arrived: it is checked when its address's turn comes (at once, unless
        the address failed recently: ``TicketGate``), and answered right then."""
        self._ticket = event
        self._ticket_at = self._loop.time()
        self._cancel_check = self.context.gate.submit(self.outlet.address, self._gated_check)

    def _gated_check(self) -> None:
        self._cancel_check = None
        if not self.closed:
            self._guarded(self._check_ticket)

    def _check_ticket(self) -> None:
        assert self._key is not None and self.request is not None and self._ticket is not None
        context = self.context
        ticket = context.ticket
        ok = check_ticket(self._key, self._ticket.ciphertext, ticket.password)
        self._key = None  # one key, one link
        address = self.outlet.address
        now = context.clock()
        waited = self._loop.time() - self._ticket_at
        paced = f" (checked after {waited:.2f}s: recent failures from {address})"
        if not ok:
            context.failures.failed(address, now)
            raise self.link.refuse(
                LinkError.PERMISSION_DENIED, "wrong ticket" + (paced if waited >= 0.01 else "")
            )
        if ticket.expired(now):
            raise self.link.refuse(LinkError.PERMISSION_DENIED, "ticket expired")
        is_main = self.request.channel_type == ChannelType.MAIN
        if is_main and ticket.one_shot and ticket.spent:
            raise self.link.refuse(LinkError.PERMISSION_DENIED, "one-shot ticket already used")
        self._check_link(self.request, authenticated=True)  # the session, now; or it went
        context.failures.succeeded(address)
        if is_main and ticket.one_shot:
            ticket.spent = True
        self.link.finish()
        self._flush_link()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._linked(self.request)

    def _forget_link(self) -> None:
        """The connection is gone: a ticket check still waiting is cancelled (never run), and a
        key no ticket was encrypted with goes back to the pool."""
        if self._cancel_check is not None:
            self._cancel_check()
            self._cancel_check = None
        if self._key is not None and self._ticket is None:
            self.context.keys.recycle(self._key)
        self._key = None

    def _linked(self, request: LinkRequest) -> None:
        """The link succeeded: build the channel's protocol and handler, join the session."""
        context = self.context
        config = context.config
        self._authenticated = True
        context.addresses.authenticated(self.outlet.address)
        spec = CHANNELS[request.channel_type]
        limits = config.channel_limits
        read_size = limits.read_size
        if config.websocket:  # one WebSocket message is handed over whole
            read_size = max(read_size, config.websocket_max_message)
        limits = dataclasses.replace(
            limits,
            max_message_size=config.max_message_sizes.get(spec.name, spec.max_message_size),
            read_size=read_size,
        )
        default = config.max_write_buffer
        if spec.max_write_buffer is not None and spec.max_write_buffer < default:
            default = spec.max_write_buffer
            self._write_limit_name = f"max_write_buffers[{spec.name}]"
        if spec.name in config.max_write_buffers:
            self._write_limit_name = f"max_write_buffers[{spec.name}]"
        self.write_limit = config.max_write_buffers.get(spec.name, default)
        options: dict[str, Any] = {
            "mini_header": self.link.mini_header,
            "common_caps": request.common_caps,
            "channel_caps": request.channel_caps,
            "limits": limits,
        }
        if spec.protocol is MainChannel:
            session = context.sessions.create(self)
            channel: ChannelProtocol = MainChannel(
                session_id=session.id,
                channels=context.sessions.offered,
                name=context.config.name,
                **options,
                **spec.handler.protocol_options(context),
            )
            logger.info("%s: session %#010x started", self.name, session.id)
        else:
            session, replaced = context.sessions.attach(request, self)
            if replaced is not None:
                logger.info("%s: replaces an older %s connection", self.name, request.channel_name)
                replaced.abort(f"replaced by a newer {request.channel_name} connection")
            channel = spec.protocol(**options, **spec.handler.protocol_options(context))
        self.session = session
        self.channel = channel
        self.handler = spec.handler(context, self, session, channel, request.channel_id)
        session.metrics.channel_stats.append(channel.stats)
        if context.faults is not None:
            self.faults = context.faults.connection(
                self,
                channel,
                spec.name,
                write_buffer_high=config.write_buffer_high,
                max_write_buffer=self.write_limit,
            )
        if context.captures is not None and self.capture is not None:
            context.captures.bind(
                self.capture,
                session.id,
                request.channel_type,
                request.channel_id,
                self.link.client_boundaries,
            )
        if context.recorders:
            self._record_link("ok")
        logger.info(
            "%s: linked (channel id %d, %s headers)",
            self.name,
            request.channel_id,
            "mini" if self.link.mini_header else "full",
        )
        self.handler.start(self.context.clock())
        leftover = self.link.leftover()
        if leftover:
            self._channel_data(leftover)
        else:
            self.flush()

    def _flush_link(self) -> None:
        out = self.link.data_to_send()
        if out and not self.outlet.is_closing():
            self.outlet.write((out,))
            if self.capture is not None:
                self.capture.sent((out,))

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.channel is None and not self.closed:
            logger.warning(
                "%s: refused: link not completed within %.0fs",
                self.name,
                self.context.config.handshake_timeout,
            )
            self.abort("handshake timeout")

    # ------------------------------------------------------------------ channel traffic

    def _channel_data(self, data: bytes) -> bool:
        """Feed the channel; True while a burst is being taken in steps (reading paused)."""
        assert self.channel is not None and self.handler is not None
        started = time.perf_counter()
        now = self.context.clock()
        more = self.channel.receive_data(data, now)
        self.handler.on_events(self.channel.events_received(), now)
        self.flush()
        if more and not self.closed:
            # A burst of messages: take the rest on a later loop iteration, reading nothing
            # more meanwhile, so every other connection gets its turn; and after a pause long
            # enough that all flooding clients together have at most half the loop.
            if not self._flooding:
                self._flooding = True
                self.context.flooding += 1
            self.outlet.pause_reading()
            took = time.perf_counter() - started
            pause = max(self.context.config.flood_pause, (2 * self.context.flooding - 1) * took)
            self._loop.call_later(pause, self._continue_input)
        elif self._flooding:
            self._end_flood()
        return more

    def _end_flood(self) -> None:
        self._flooding = False
        self.context.flooding -= 1

    def _continue_input(self) -> None:
        if self.closed:
            return
        try:
            more = self._channel_data(b"")
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if not more and not self.closed:
            self.outlet.resume_reading()

    def flush(self) -> None:
        """Write whatever the channel protocol queued."""
        if self.channel is None or self.outlet.is_closing():
            return
        now = self.context.clock()
        if self.faults is not None:  # fault injection: may hold, cut or close
            self.faults.flush(now)
            return
        chunks = self.channel.data_to_send(now)
        if chunks:
            self.write_chunks(chunks)

    def write_chunks(self, chunks: list[Chunk]) -> None:
        """Put framed messages on the wire (capture records them here).  Every byte queued
        counts: a connection past its channel's limit, or whose session is past
        ``max_session_write_buffer``, is closed (its client stopped reading)."""
        if self.outlet.is_closing():
            return
        self.outlet.write(chunks)
        unsent = self.outlet.buffered()
        if unsent > self.write_limit:
            self._stopped_reading(unsent, self._write_limit_name)
            return
        session = self.session
        if unsent and session is not None:
            total = unsent + sum(
                other.buffered()
                for other in (session.main, *session.channels.values())
                if other is not self and other is not None
            )
            if total > self.context.config.max_session_write_buffer:
                self._stopped_reading(total, "max_session_write_buffer")
                return
        if self.capture is not None:
            self.capture.sent(chunks)

    def _stopped_reading(self, unsent: int, limit: str) -> None:
        logger.warning(
            "%s: closing: client stopped reading (%d bytes unsent, %s)", self.name, unsent, limit
        )
        self.abort(f"client stopped reading ({limit})")

    def buffered(self) -> int:
        return self.outlet.buffered()

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
        if not self.outlet.is_closing():
            self.outlet.close()

    def abort(self, reason: str = "closed by the server") -> None:
        """Drop the connection now, discarding queued output."""
        self.close_reason = self.close_reason or reason
        self.outlet.abort()
