"""The inputs channel's server side: client input to the embedder's callback."""

from __future__ import annotations

from typing import Any

from spiceserver.protocol.enums import KeyModifiers
from spiceserver.protocol.events import InputEvent
from spiceserver.protocol.inputs import InputsChannel
from spiceserver.server.channels.base import ChannelHandler

__all__ = ["InputsHandler"]


class InputsHandler(ChannelHandler[InputsChannel]):
    protocol = InputsChannel

    def start(self, now: float) -> None:
        self.channel.start(now)

    def on_events(self, events: list[Any], now: float) -> None:
        super().on_events(events, now)
        for event in events:
            if isinstance(event, InputEvent):
                self.session.metrics.input_events += 1
                self.context.deliver_input(event)

    def set_modifiers(self, modifiers: KeyModifiers) -> None:
        """The host's lock keys: KEY_MODIFIERS if the client was told otherwise."""
        self.channel.set_modifiers(modifiers)
        self.connection.flush()

    def closed(self) -> None:
        for event in self.channel.release_all():
            self.context.deliver_input(event)
