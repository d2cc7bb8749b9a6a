"""The record channel's server side: the client's microphone into the microphone hub.

START when the hub gives this channel the microphone, STOP when it takes it back
(:meth:`RecordHandler.set_recording`); DATA packets go to the hub still encoded, its thread
decodes them.  What the client may send is bounded twice: by the registry's
``max_message_size`` per message and by the hub's queue in bytes.
"""

from __future__ import annotations

import logging
from typing import Any

from spiceserver.protocol.record import RecordChannel, RecordModeSet, RecordPacket, RecordStarted
from spiceserver.server.channels.base import ChannelHandler
from spiceserver.server.context import ServerContext

__all__ = ["RecordHandler"]

logger = logging.getLogger("spiceserver.channels")


class RecordHandler(ChannelHandler[RecordChannel]):
    protocol = RecordChannel

    @classmethod
    def link_caps(cls, context: ServerContext) -> tuple[int, ...]:
        hub = context.microphone
        return RecordChannel.server_caps(hub is not None and hub.opus_available)

    @classmethod
    def protocol_options(cls, context: ServerContext) -> dict[str, Any]:
        hub = context.microphone
        return {"opus": hub is not None and hub.opus_available}

    def start(self, now: float) -> None:
        #: Packets and bytes of this stream (for the record), and in all.
        self.packets = self.bytes = 0
        self.channel.start(now)
        hub = self.context.microphone
        if hub is not None:
            hub.add_listener(self)
        self.connection.flush()

    # Microphone hub listener (on the loop).
    def set_recording(self, recording: bool) -> None:
        channel = self.channel
        if recording == channel.recording or self.connection.closed:
            return
        if recording:
            channel.begin()
            self.packets = self.bytes = 0
            self.record({"event": "record_start"})
        else:
            channel.end()
            self.record({"event": "record_stop", "packets": self.packets, "bytes": self.bytes})
        self.connection.flush()

    def decode_failed(self, reason: str) -> None:
        if not self.connection.closed:
            logger.warning("%s: bad microphone audio, closing: %s", self.connection.name, reason)
            self.connection.abort(f"bad microphone audio: {reason}")

    def on_events(self, events: list[object], now: float) -> None:
        super().on_events(events, now)
        hub = self.context.microphone
        for event in events:
            if isinstance(event, RecordPacket):
                self.packets += 1
                self.bytes += len(event.data)
                if hub is not None:
                    hub.feed(self, event.mode, event.data)
            elif isinstance(event, RecordModeSet):
                if hub is not None and hub.active is self:
                    hub.stopped()  # a new stream: a fresh decoder
                self.record({"event": "record_mode", "mode": event.mode.name.lower()})
            elif isinstance(event, RecordStarted):
                self.record({"event": "record_start_mark", "time": event.time})

    def record(self, event: dict[str, Any]) -> None:
        if self.context.recorders:
            super().record(event)

    def closed(self) -> None:
        hub = self.context.microphone
        if hub is not None:
            if self.channel.recording:
                self.record({"event": "record_stop", "packets": self.packets, "bytes": self.bytes})
            hub.remove_listener(self)
