"""The playback channel (type 5), sans I/O: server → client audio.

Order (spice:server/sound.cpp ``PlaybackChannelClient::send_item``): MODE, then START (spice-gtk
creates its decoder at START for the mode current then: spice-gtk:src/channel-playback.c
``playback_handle_start``), VOLUME and MUTE, then DATA.  STOP ends a stream; a new one starts
with MODE and START again.  Each DATA is one 10 ms packet stamped with the session's mm-time at
capture (spice-gtk plays it ``latency`` ms after that time).  Opus iff the client has CAP_OPUS
and the server has an encoder (``snd_desired_audio_mode``); spice-html5 plays Opus only, at
48 kHz stereo (spice-html5:src/playback.js).  Samples never reach this module: it frames bytes.
"""

from __future__ import annotations

from typing import ClassVar

from spiceserver.protocol import messages as m
from spiceserver.protocol.channel import ChannelProtocol, Handler
from spiceserver.protocol.enums import AudioDataMode, AudioFormat, ChannelType, PlaybackCap, has_cap
from spiceserver.protocol.main import mm_time

__all__ = ["AUDIO_CHANNELS", "AUDIO_RATE", "PlaybackChannel"]

#: The only format served: 48 kHz, stereo, S16 (spice-common:common/snd_codec.h, Opus).
AUDIO_RATE = 48000
AUDIO_CHANNELS = 2


class PlaybackChannel(ChannelProtocol):
    channel_type = ChannelType.PLAYBACK
    SERVER_CAPS: ClassVar[tuple[int, ...]] = (PlaybackCap.VOLUME, PlaybackCap.OPUS)

    playing = False
    mode = AudioDataMode.INVALID

    def start(self, now: float) -> None:
        self.start_acks(now)

    @property
    def client_opus(self) -> bool:
        return has_cap(self.client_channel_caps, PlaybackCap.OPUS)

    @property
    def client_latency(self) -> bool:
        return has_cap(self.client_channel_caps, PlaybackCap.LATENCY)

    def desired_mode(self, opus_available: bool) -> AudioDataMode:
        """OPUS iff both sides can (``snd_desired_audio_mode``), else RAW."""
        return AudioDataMode.OPUS if opus_available and self.client_opus else AudioDataMode.RAW

    def begin(self, now: float, mode: AudioDataMode, volume: int | None = None) -> None:
        """A stream starts: MODE, START (and VOLUME + MUTE when ``volume`` is given)."""
        if self.playing:
            self.end()
        self.mode = mode
        time = mm_time(now)
        self.send(m.PlaybackMode(time=time, mode=mode))
        self.send(
            m.PlaybackStart(
                channels=AUDIO_CHANNELS, format=AudioFormat.S16, frequency=AUDIO_RATE, time=time
            )
        )
        if volume is not None:
            self.send(m.PlaybackVolume(volume=(volume,) * AUDIO_CHANNELS))
            self.send(m.PlaybackMute(mute=0))
        self.playing = True

    def data(self, time: int, packet: bytes | memoryview) -> None:
        """One packet in the current mode; ``time`` is its mm-time (u32 ms)."""
        if not self.playing:
            raise RuntimeError("playback DATA outside START … STOP")
        self.send_raw(m.PlaybackData.TYPE, (m.PlaybackData._STRUCT.pack(time), packet))

    def end(self) -> None:
        """STOP: the stream paused (silence, or the source went away)."""
        if self.playing:
            self.send(m.PlaybackStop())
            self.playing = False

    def latency(self, latency_ms: int) -> None:
        """LATENCY, to clients that take it."""
        if self.client_latency:
            self.send(m.PlaybackLatency(latency_ms=latency_ms))

    #: The client sends only the common messages on this channel.
    _handlers: ClassVar[dict[type[m.Message], Handler]] = {}
