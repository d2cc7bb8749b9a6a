"""The record channel (type 6), sans I/O: the client's microphone, client → server.

The server asks for the microphone with START {u32 channels, u16 format, u32 frequency} and
lets it go with STOP (SPICE-REFERENCE-2 §2; spice-common:spice.proto ``channel
RecordChannel``).  spice-gtk answers START by choosing its mode (OPUS iff both sides have
RECORD_CAP_OPUS, else RAW: spice-gtk:src/channel-record.c ``spice_record_desired_mode``) and,
with the first captured audio, sends MODE then START_MARK then one DATA per frame: 480 stereo
frames (10 ms at 48 kHz), 1920 bytes raw or one Opus packet
(spice-gtk:src/channel-record.c ``spice_record_channel_send_data``).  A new START restarts
that sequence.  This module checks the framing and reports events; it never decodes: PCM and
Opus stay bytes here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from spiceserver.errors import DecodeError, UnexpectedMessage
from spiceserver.protocol import messages as m
from spiceserver.protocol.channel import ChannelProtocol, Handler
from spiceserver.protocol.enums import AudioDataMode, AudioFormat, ChannelType, RecordCap, has_cap

__all__ = [
    "MAX_OPUS_PACKET",
    "RECORD_CHANNELS",
    "RECORD_RATE",
    "RecordChannel",
    "RecordModeSet",
    "RecordPacket",
    "RecordStarted",
]

#: What START asks for: 48 kHz stereo S16 (the only rate spice-gtk's Opus encoder takes:
#: spice-common:common/snd_codec.h ``SND_CODEC_OPUS_PLAYBACK_FREQ``).
RECORD_RATE = 48000
RECORD_CHANNELS = 2
#: One Opus packet is at most 1275 bytes (RFC 6716 §3.2.1).
MAX_OPUS_PACKET = 1275
#: Stereo S16 frame.
_FRAME_BYTES = 4


@dataclass(frozen=True, slots=True)
class RecordModeSet:
    """MODE: what the following DATA carries (RAW or OPUS)."""

    mode: AudioDataMode
    time: int


@dataclass(frozen=True, slots=True)
class RecordStarted:
    """START_MARK: the client's first captured sample is at mm-time ``time``."""

    time: int


@dataclass(frozen=True, slots=True)
class RecordPacket:
    """DATA: one packet of the current ``mode`` (bytes: PCM or Opus, not decoded here)."""

    mode: AudioDataMode
    time: int
    data: bytes


class RecordChannel(ChannelProtocol):
    channel_type = ChannelType.RECORD
    #: The handler passes the caps per server (OPUS only with a decoder): see ``server_caps``.
    SERVER_CAPS: ClassVar[tuple[int, ...]] = (RecordCap.OPUS,)

    def __init__(self, *, opus: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        #: Whether this server decodes Opus (and so advertised RECORD_CAP_OPUS).
        self.opus = opus
        self.recording = False
        self.mode = AudioDataMode.INVALID

    @classmethod
    def server_caps(cls, opus: bool) -> tuple[int, ...]:
        return (RecordCap.OPUS,) if opus else ()

    @property
    def client_opus(self) -> bool:
        return has_cap(self.client_channel_caps, RecordCap.OPUS)

    def start(self, now: float) -> None:
        self.start_acks(now)

    def begin(self) -> None:
        """START: someone wants the microphone."""
        if not self.recording:
            self.send(
                m.RecordStart(
                    channels=RECORD_CHANNELS, format=AudioFormat.S16, frequency=RECORD_RATE
                )
            )
            # The client sends MODE again with its first audio; until then DATA still in
            # flight from the last stream keeps the last mode.
            self.recording = True

    def end(self) -> None:
        """STOP: no one does any more."""
        if self.recording:
            self.send(m.RecordStop())
            self.recording = False

    # ------------------------------------------------------------------ client messages

    def _on_mode(self, message: m.RecordMode, now: float) -> None:
        allowed = (AudioDataMode.RAW, AudioDataMode.OPUS) if self.opus else (AudioDataMode.RAW,)
        if message.mode not in allowed:
            raise DecodeError(f"record MODE {message.mode} (this server takes {allowed})")
        self.mode = AudioDataMode(message.mode)
        self._events.append(RecordModeSet(mode=self.mode, time=message.time))

    def _on_start_mark(self, message: m.RecordStartMark, now: float) -> None:
        self._events.append(RecordStarted(time=message.time))

    def _on_data(self, message: m.RecordData, now: float) -> None:
        mode = self.mode
        if mode == AudioDataMode.INVALID:
            raise UnexpectedMessage(
                "record DATA before MODE", message_type=m.RecordData.TYPE, size=len(message.data)
            )
        data = message.data
        if mode == AudioDataMode.RAW and len(data) % _FRAME_BYTES:
            raise DecodeError(f"raw record DATA of {len(data)} bytes: not whole stereo S16 frames")
        if mode == AudioDataMode.OPUS and not 0 < len(data) <= MAX_OPUS_PACKET:
            raise DecodeError(f"Opus record DATA of {len(data)} bytes")
        if self.recording:  # DATA still in flight after our STOP is dropped here
            self._events.append(RecordPacket(mode=mode, time=message.time, data=data))

    _handlers: ClassVar[dict[type[m.Message], Handler]] = {
        m.RecordMode: _on_mode,
        m.RecordStartMark: _on_start_mark,
        m.RecordData: _on_data,
    }
