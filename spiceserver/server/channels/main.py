"""The main channel's server side: the session lives as long as this connection.

With the agent on (``context.agent``), the main channel is also the client's VDAgent: its
:class:`~spiceserver.server.agent.SessionAgent` answers the agent events.
"""

from __future__ import annotations

import logging
from typing import Any

from spiceserver.bandwidth import NET_TEST_BYTES
from spiceserver.logs import skip
from spiceserver.protocol.enums import MouseMode
from spiceserver.protocol.events import MouseModeChanged, PongReceived
from spiceserver.protocol.main import MainChannel
from spiceserver.server.agent import SessionAgent
from spiceserver.server.channels.base import ChannelHandler
from spiceserver.server.context import ServerContext

__all__ = ["MainHandler"]

logger = logging.getLogger("spiceserver.channels")

#: One line per change: a client toggling modes in a flood is rate-limited (spiceserver.logs).
_MODE = "%s: mouse mode %s"


class MainHandler(ChannelHandler[MainChannel]):
    protocol = MainChannel
    agent: SessionAgent | None = None

    @classmethod
    def protocol_options(cls, context: ServerContext) -> dict[str, Any]:
        if context.agent is None:
            return {}
        return {"agent": context.agent.stream()}

    def start(self, now: float) -> None:
        self.channel.start(now)  # ends with a PING: the net test's warm-up
        # The net test (spice:server/main-channel-client.cpp start_net_test): a 0-byte PING
        # for the latency, a large one for the bandwidth (spiceserver.bandwidth).
        latency = self.channel.ping(now)
        rate = self.channel.ping(now, NET_TEST_BYTES)
        self.session.metrics.link.net_test_started(latency, rate)
        services = self.context.agent
        if services is not None and self.channel.agent is not None:
            self.agent = SessionAgent(self, services, self.channel.agent)

    def on_events(self, events: list[Any], now: float) -> None:
        super().on_events(events, now)
        agent = self.agent
        link = self.session.metrics.link
        for event in events:
            if agent is not None and agent.on_event(event):
                continue
            if isinstance(event, PongReceived):
                if link.pong(event.id, event.round_trip):
                    logger.info(
                        "%s: net test: round trip %.1f ms, %s%s",
                        self.connection.name,
                        1000 * (link.round_trip or 0.0),
                        "invalid"
                        if link.net_test_bps is None
                        else f"{link.net_test_bps / 1e6:.2f} Mbit/s",
                        " (low bandwidth)" if link.low_bandwidth() else "",
                    )
            elif isinstance(event, MouseModeChanged) and not skip(logger, logging.INFO, _MODE):
                mode = "client" if event.mode == MouseMode.CLIENT else "server"
                logger.info(_MODE, self.connection.name, mode)
        if agent is not None:
            agent.pump()

    def on_writable(self) -> None:
        if self.agent is not None:
            self.agent.pump()

    def closed(self) -> None:
        if self.agent is not None:
            self.agent.close()
        self.context.end_session(self.session)
