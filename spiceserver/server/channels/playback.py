"""The playback channel's server side: the audio hub's packets to one client, latest-wins.

Packets wait in a queue bounded in bytes (``ServerConfig.audio_queue_bytes``) and in age
(``audio_max_delay``): a client that does not read loses the oldest audio and, once it reads
again, hears the newest, never a backlog of seconds.  The connection's own buffer is bounded by
its high-water mark and the ACK window (:attr:`ChannelOutlet.writable`).
"""

from __future__ import annotations

import collections
import logging

from spiceserver.protocol.enums import AudioDataMode
from spiceserver.protocol.main import mm_time
from spiceserver.protocol.playback import PlaybackChannel
from spiceserver.server.audio import AudioPacket
from spiceserver.server.channels.base import ChannelHandler

__all__ = ["PlaybackHandler"]

logger = logging.getLogger("spiceserver.channels")


class PlaybackHandler(ChannelHandler[PlaybackChannel]):
    protocol = PlaybackChannel
    wants_opus = False
    mode = AudioDataMode.RAW

    def start(self, now: float) -> None:
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self._queued_bytes = 0
        #: Packets dropped for this client (latest-wins).
        self.dropped = 0
        self.sent = 0
        self.channel.start(now)
        hub = self.context.audio
        if hub is not None:
            self.mode = self.channel.desired_mode(hub.opus_available)
            self.wants_opus = self.mode == AudioDataMode.OPUS
            hub.add_listener(self)
            logger.info("%s: audio as %s", self.connection.name, self.mode.name)
        self.connection.flush()

    # Audio hub listener: on the loop thread.
    def on_audio(self, packet: AudioPacket) -> None:
        payload = packet.opus if self.wants_opus else packet.raw
        if payload is None:  # joined while the hub made raw only: Opus from the next packet
            return
        config = self.context.config
        queue = self._queue
        queue.append((packet.time, payload))
        self._queued_bytes += len(payload)
        oldest = packet.time - config.audio_max_delay
        while queue and (self._queued_bytes > config.audio_queue_bytes or queue[0][0] < oldest):
            self._queued_bytes -= len(queue.popleft()[1])
            self.dropped += 1
        self._send_pending()

    def on_audio_stop(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0
        if self.channel.playing and not self.connection.closed:
            self.channel.end()
            if self.context.recorders:
                self.record({"event": "audio_stop", "sent": self.sent, "dropped": self.dropped})
            self.connection.flush()

    def on_events(self, events: list[object], now: float) -> None:
        super().on_events(events, now)
        self._send_pending()  # an ACK may have reopened the window

    def on_writable(self) -> None:
        self._send_pending()

    def _send_pending(self) -> None:
        connection = self.connection
        channel = self.channel
        queue = self._queue
        while queue and connection.writable:
            time, payload = queue.popleft()
            self._queued_bytes -= len(payload)
            if not channel.playing:
                channel.begin(time, self.mode)
                if self.context.recorders:
                    self.record({"event": "audio_start", "mode": self.mode.name.lower()})
            channel.data(mm_time(time), payload)
            self.sent += 1
            connection.flush()

    def closed(self) -> None:
        hub = self.context.audio
        if hub is not None:
            hub.remove_listener(self)
