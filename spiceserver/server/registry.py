"""Every channel the server serves, declared once.

One :class:`ChannelSpec` per channel type: its sans-I/O protocol class, its server-side handler,
the largest client message it accepts, and whether CHANNELS_LIST offers it.  The link stage,
the session registry, the config checks and the record all read this table; adding a channel
is a protocol module, a handler module and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spiceserver.protocol.channel import ChannelProtocol
from spiceserver.protocol.enums import ChannelType
from spiceserver.server.channels.base import ChannelHandler
from spiceserver.server.channels.cursor import CursorHandler
from spiceserver.server.channels.display import DisplayHandler
from spiceserver.server.channels.inputs import InputsHandler
from spiceserver.server.channels.main import MainHandler
from spiceserver.server.channels.playback import PlaybackHandler
from spiceserver.server.channels.record import RecordHandler

__all__ = ["CHANNELS", "ChannelSpec", "offered_channels"]


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    channel_type: ChannelType
    handler: type[ChannelHandler[Any]]
    #: Largest client → server message body (``ServerConfig.max_message_sizes`` overrides).
    max_message_size: int
    #: Largest unsent output of one connection (``ServerConfig.max_write_buffers``
    #: overrides); None: ``ServerConfig.max_write_buffer``.
    max_write_buffer: int | None = None
    #: Listed in the main channel's CHANNELS_LIST (never MAIN itself: pitfall 7).
    offered: bool = True
    #: Offered only when the server has audio (``offered_channels(audio=True)``).
    needs_audio: bool = False
    #: Offered only when the server has somewhere to put the microphone (a record sink).
    needs_microphone: bool = False

    @property
    def name(self) -> str:
        return self.channel_type.name.lower()

    @property
    def protocol(self) -> type[ChannelProtocol]:
        return self.handler.protocol

    @property
    def caps(self) -> tuple[int, ...]:
        """Channel caps we advertise in the link reply (the protocol class declares them)."""
        return self.protocol.SERVER_CAPS


_MIB = 1024 * 1024

#: By channel type.  spice-gtk sends at most a few dozen bytes per message on display, inputs
#: and cursor; main carries agent chunks.  Output: main and inputs only answer requests (a
#: few dozen bytes each), the cursor sends shapes of up to 256 KiB latest-wins and stops at
#: ``write_buffer_high``; the display's one update may be a whole raw frame.
CHANNELS: dict[int, ChannelSpec] = {
    spec.channel_type: spec
    for spec in (
        ChannelSpec(ChannelType.MAIN, MainHandler, 64 * 1024, _MIB, offered=False),
        ChannelSpec(ChannelType.DISPLAY, DisplayHandler, 4096),
        ChannelSpec(ChannelType.INPUTS, InputsHandler, 4096, _MIB),
        ChannelSpec(ChannelType.CURSOR, CursorHandler, 4096, 8 * _MIB),
        # The client sends only ACKs and PONGs here; what it is sent is bounded latest-wins
        # (server/channels/playback.py) well below this.
        ChannelSpec(ChannelType.PLAYBACK, PlaybackHandler, 4096, _MIB, needs_audio=True),
        # DATA is one 10 ms packet: 1920 bytes raw, <= 1275 Opus (protocol/record.py); we only
        # send START/STOP.
        ChannelSpec(ChannelType.RECORD, RecordHandler, 4096, _MIB, needs_microphone=True),
    )
}


def offered_channels(
    *, audio: bool = False, microphone: bool = False
) -> tuple[tuple[int, int], ...]:
    """CHANNELS_LIST: (type, id) of every offered channel (one of each, id 0); playback only
    when the server has audio, record only when it has a record sink."""
    return tuple(
        (spec.channel_type, 0)
        for spec in CHANNELS.values()
        if spec.offered
        and (audio or not spec.needs_audio)
        and (microphone or not spec.needs_microphone)
    )
