"""What every channel handler shares: the event record, PING round trips, lifecycle hooks.

A handler is the server-side behaviour of one linked channel: it gets the channel's sans-I/O
protocol object in its constructor, the events that protocol parsed (:meth:`on_events`), and
says what to send through that protocol; its connection writes the bytes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Generic, TypeVar

from spiceserver.protocol.channel import ChannelProtocol
from spiceserver.protocol.events import ClientDisconnecting, PongReceived
from spiceserver.record import event_record
from spiceserver.server.context import ChannelOutlet, ServerContext
from spiceserver.session import Session

__all__ = ["ChannelHandler"]

logger = logging.getLogger("spiceserver.channels")

P = TypeVar("P", bound=ChannelProtocol)


class ChannelHandler(Generic[P]):
    """Base of the per-channel handlers; ``channel`` is the channel's protocol object."""

    #: The ChannelProtocol subclass this handler drives (the registry builds it).
    protocol: ClassVar[type[ChannelProtocol]]

    def __init__(
        self,
        context: ServerContext,
        connection: ChannelOutlet,
        session: Session,
        channel: P,
        channel_id: int = 0,
    ) -> None:
        self.context = context
        self.connection = connection
        self.session = session
        self.channel = channel
        self.channel_id = channel_id
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._acked_at = 0.0

    @classmethod
    def link_caps(cls, context: ServerContext) -> tuple[int, ...]:
        """Channel caps for the link reply (default: what the protocol class declares)."""
        return cls.protocol.SERVER_CAPS

    @classmethod
    def protocol_options(cls, context: ServerContext) -> dict[str, Any]:
        """Extra keyword arguments for the protocol object, per server."""
        return {}

    @property
    def channel_name(self) -> str:
        return self.channel.channel_type.name.lower()

    def start(self, now: float) -> None:
        """Linked: queue what the channel opens with."""

    def on_events(self, events: list[Any], now: float) -> None:
        """Events the channel protocol parsed from the client."""
        stats = self.channel.stats
        if stats.acked_at != self._acked_at:  # an ACK came: a delivery sample
            self._acked_at = stats.acked_at
            link = self.session.metrics.link
            link.acked(id(self), stats.acked_bytes, stats.bytes_sent, stats.acked_at)
        if self.context.recorders:
            for event in events:
                record = event_record(event)
                if record is not None:
                    self.record(record)
        for event in events:
            if isinstance(event, ClientDisconnecting):
                logger.info(
                    "%s: client is disconnecting (reason %d)", self.connection.name, event.reason
                )
            elif isinstance(event, PongReceived):
                future = self._pongs.pop(event.id, None)
                if future is not None and not future.done():
                    future.set_result(None)

    def on_writable(self) -> None:
        """The connection can take more output again."""

    def closed(self) -> None:
        """The connection is gone."""
        self.session.metrics.link.forget(id(self))

    def record(self, event: dict[str, Any]) -> None:
        self.context.record(event, self.session.id, self.channel_name, self.channel_id)

    async def round_trip(self) -> None:
        """PING the client and wait for its PONG: afterwards it has handled every message sent
        before (spice-gtk handles a channel's messages in order, drawing included)."""
        if self.connection.closed:
            raise ConnectionError(f"{self.connection.name}: not connected")
        future = asyncio.get_running_loop().create_future()
        ping_id = self.channel.ping(asyncio.get_running_loop().time())
        self._pongs[ping_id] = future
        self.connection.flush()
        try:
            await future
        finally:
            self._pongs.pop(ping_id, None)

    def fail_round_trips(self) -> None:
        """The connection is gone: every :meth:`round_trip` still waiting raises."""
        for future in self._pongs.values():
            if not future.done():
                future.set_exception(ConnectionError(f"{self.connection.name}: closed"))
        self._pongs.clear()
