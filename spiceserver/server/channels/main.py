"""The main channel's server side: the session lives as long as this connection."""

from __future__ import annotations

import logging
from typing import Any

from spiceserver.protocol.enums import MouseMode
from spiceserver.protocol.events import MouseModeChanged
from spiceserver.protocol.main import MainChannel
from spiceserver.server.channels.base import ChannelHandler

__all__ = ["MainHandler"]

logger = logging.getLogger("spiceserver.channels")


class MainHandler(ChannelHandler[MainChannel]):
    protocol = MainChannel

    def start(self, now: float) -> None:
        self.channel.start(now)

    def on_events(self, events: list[Any], now: float) -> None:
        super().on_events(events, now)
        for event in events:
            if isinstance(event, MouseModeChanged):
                logger.info(
                    "%s: mouse mode %s",
                    self.connection.name,
                    "client" if event.mode == MouseMode.CLIENT else "server",
                )

    def closed(self) -> None:
        self.context.end_session(self.session)
