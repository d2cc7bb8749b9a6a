"""The main channel's server side: the session lives as long as this connection."""

from __future__ import annotations

import logging
from typing import Any

from spiceserver.logs import skip
from spiceserver.protocol.enums import MouseMode
from spiceserver.protocol.events import MouseModeChanged
from spiceserver.protocol.main import MainChannel
from spiceserver.server.channels.base import ChannelHandler

__all__ = ["MainHandler"]

logger = logging.getLogger("spiceserver.channels")

#: One line per change: a client toggling modes in a flood is rate-limited (spiceserver.logs).
_MODE = "%s: mouse mode %s"


class MainHandler(ChannelHandler[MainChannel]):
    protocol = MainChannel

    def start(self, now: float) -> None:
        self.channel.start(now)

    def on_events(self, events: list[Any], now: float) -> None:
        super().on_events(events, now)
        for event in events:
            if isinstance(event, MouseModeChanged) and not skip(logger, logging.INFO, _MODE):
                mode = "client" if event.mode == MouseMode.CLIENT else "server"
                logger.info(_MODE, self.connection.name, mode)

    def closed(self) -> None:
        self.context.end_session(self.session)
