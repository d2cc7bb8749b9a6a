"""Every SPICE message this server sends or accepts, declared once, as data.

A message is a frozen record (:func:`~spiceserver.protocol.records.record`, a lighter
``dataclass(frozen=True, slots=True)``) registered with :func:`message` under its channel,
direction and type number (spice.proto ``channel ...`` blocks).  Fixed layouts are a single
precompiled ``struct`` format; a trailing ``bytes`` field marked ``tail=True`` takes the rest of
the body.
The few variable layouts (arrays, strings) provide their own ``_pack``/``_unpack``.  Display
drawing messages, which carry encoded images, are built in :mod:`spiceserver.protocol.display`.

Decoding is strict: a body that is too short or has bytes left over raises
:class:`~spiceserver.errors.DecodeError` (the generated spice-server demarshallers reject short
bodies too; trailing bytes are a sign of a peer we do not understand).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import ClassVar, TypeVar, dataclass_transform

from spiceserver.errors import DecodeError, UnexpectedMessage
from spiceserver.protocol.enums import (
    BaseClientMsg,
    BaseServerMsg,
    ChannelType,
    CursorFlags,
    CursorServerMsg,
    CursorType,
    DisplayClientMsg,
    DisplayServerMsg,
    InputsClientMsg,
    InputsServerMsg,
    MainClientMsg,
    MainServerMsg,
    PlaybackServerMsg,
    RecordClientMsg,
    RecordServerMsg,
)
from spiceserver.protocol.records import record, record_fields

__all__ = ["CLIENT", "REGISTRY", "SERVER", "Message", "decode_client_message", "message"]

CLIENT = "client"  # client → server
SERVER = "server"  # server → client

#: (direction, channel type or None for the common messages, type number) → message class.
REGISTRY: dict[tuple[str, ChannelType | None, int], type[Message]] = {}

M = TypeVar("M", bound="Message")


class Message:
    """Base of all message records."""

    TYPE: ClassVar[int]
    CHANNEL: ClassVar[ChannelType | None]
    DIRECTION: ClassVar[str]
    _STRUCT: ClassVar[struct.Struct]
    _TAIL: ClassVar[bool]
    _FIELDS: ClassVar[tuple[str, ...]]

    def pack(self) -> bytes:
        """The message body."""
        return self._pack()

    @classmethod
    def unpack(cls: type[M], body: bytes | memoryview) -> M:
        """Parse a body; :class:`DecodeError` on any mismatch."""
        return cls._unpack(body)

    # Default fixed-layout codec; variable layouts override these two.
    def _pack(self) -> bytes:
        # Every subclass is a record (the @message decorator); this base class is not one.
        # The fields' own values, in order (dataclasses.astuple deep-copies each: ~10x slower).
        values = [getattr(self, name) for name in self._FIELDS]
        if self._TAIL:
            return self._STRUCT.pack(*values[:-1]) + bytes(values[-1])
        return self._STRUCT.pack(*values)

    @classmethod
    def _unpack(cls: type[M], body: bytes | memoryview) -> M:
        fixed = cls._STRUCT.size
        if len(body) < fixed or (not cls._TAIL and len(body) != fixed):
            raise DecodeError(
                f"{cls.__name__}: body of {len(body)} bytes, expected "
                f"{'at least ' if cls._TAIL else ''}{fixed}"
            )
        values = cls._STRUCT.unpack_from(body)
        if cls._TAIL:
            values = (*values, bytes(body[fixed:]))
        return cls(*values)


# The decorator makes each class a frozen, slotted record itself: ``dataclass_transform``
# tells type checkers so, and they then see each message's constructor and frozen fields.
@dataclass_transform(frozen_default=True)
def message(
    channel: ChannelType | None, type_: int, fmt: str = "", *, tail: bool = False
) -> Callable[[type[M]], type[M]]:
    """Register a message record; ``fmt`` is its little-endian struct layout.

    The direction comes from the name of ``type_``'s enum class: a ``*Client*`` enum (such as
    ``MainClientMsg``) declares a client → server message, any other a server → client one.
    """

    def register(cls: type[M]) -> type[M]:
        direction = CLIENT if "Client" in type(type_).__name__ else SERVER
        cls = record(cls)
        cls.TYPE = int(type_)
        cls.CHANNEL = channel
        cls.DIRECTION = direction
        cls._STRUCT = struct.Struct("<" + fmt)
        cls._TAIL = tail
        cls._FIELDS = record_fields(cls)
        key = (direction, channel, int(type_))
        if key in REGISTRY:  # pragma: no cover - a declaration bug
            raise RuntimeError(f"duplicate message {key}")
        REGISTRY[key] = cls
        return cls

    return register


def decode_client_message(channel: ChannelType, type_: int, body: bytes | memoryview) -> Message:
    """Decode a client → server message of ``channel``; unknown types raise."""
    cls = REGISTRY.get((CLIENT, None if type_ < 100 else channel, type_))
    if cls is None:
        raise UnexpectedMessage(
            f"unknown message type {type_} on the {channel.name} channel",
            message_type=type_,
            size=len(body),
        )
    return cls.unpack(body)


def _check_len(name: str, body: bytes | memoryview, need: int) -> None:
    if len(body) < need:
        raise DecodeError(f"{name}: body of {len(body)} bytes, expected at least {need}")


# ============================================================================ common messages


@message(None, BaseServerMsg.SET_ACK, "II")
class SetAck(Message):
    """SET_ACK: the client answers ACK_SYNC, then one ACK per ``window`` messages."""

    generation: int
    window: int


@message(None, BaseServerMsg.PING, "IQ", tail=True)
class Ping(Message):
    """PING: the client echoes id and timestamp in PONG (never the padding)."""

    id: int
    timestamp: int
    padding: bytes = b""


@message(None, BaseClientMsg.ACK_SYNC, "I")
class AckSync(Message):
    """ACK_SYNC: echo of SET_ACK's generation."""

    generation: int


@message(None, BaseClientMsg.ACK)
class Ack(Message):
    """ACK: the client received another ``window`` messages."""


@message(None, BaseClientMsg.PONG, "IQ")
class Pong(Message):
    """PONG: 12 bytes, id and timestamp of a PING."""

    id: int
    timestamp: int


@message(None, BaseClientMsg.MIGRATE_FLUSH_MARK)
class MigrateFlushMark(Message):
    """MIGRATE_FLUSH_MARK (migration is not supported: accepted and ignored)."""


@message(None, BaseClientMsg.MIGRATE_DATA, tail=True)
class ClientMigrateData(Message):
    """MIGRATE_DATA (client): accepted and ignored."""

    data: bytes


@message(None, BaseClientMsg.DISCONNECTING, "QI")
class ClientDisconnecting(Message):
    """DISCONNECTING (client): the client says why it is leaving."""

    time_stamp: int
    reason: int


# ============================================================================== main channel


@message(ChannelType.MAIN, MainServerMsg.INIT, "IIIIIIII")
class MainInit(Message):
    """MAIN INIT (SpiceMsgMainInit): u32 fields (pitfall 8)."""

    session_id: int
    display_channels_hint: int
    supported_mouse_modes: int
    current_mouse_mode: int
    agent_connected: int
    agent_tokens: int
    multi_media_time: int
    ram_hint: int


@message(ChannelType.MAIN, MainServerMsg.CHANNELS_LIST)
class ChannelsList(Message):
    """CHANNELS_LIST: u32 count, then (u8 type, u8 id) pairs."""

    channels: tuple[tuple[int, int], ...]

    def _pack(self) -> bytes:
        body = bytearray(struct.pack("<I", len(self.channels)))
        for channel_type, channel_id in self.channels:
            body += struct.pack("<BB", channel_type, channel_id)
        return bytes(body)


@message(ChannelType.MAIN, MainServerMsg.MOUSE_MODE, "HH")
class MouseModeMsg(Message):
    """MOUSE_MODE: u16 supported, u16 current (pitfall 8)."""

    supported_modes: int
    current_mode: int


@message(ChannelType.MAIN, MainServerMsg.MULTI_MEDIA_TIME, "I")
class MultiMediaTime(Message):
    """MULTI_MEDIA_TIME: the server's ms clock, for stream scheduling."""

    time: int


@message(ChannelType.MAIN, MainServerMsg.NAME)
class Name(Message):
    """NAME: u32 length (including the NUL, as spice-server sends it), the name."""

    name: str

    def _pack(self) -> bytes:
        raw = self.name.encode() + b"\0"
        return struct.pack("<I", len(raw)) + raw


@message(ChannelType.MAIN, MainServerMsg.UUID, "16s")
class Uuid(Message):
    """UUID: 16 raw bytes."""

    uuid: bytes


@message(ChannelType.MAIN, MainServerMsg.AGENT_CONNECTED)
class AgentConnected(Message):
    """AGENT_CONNECTED: the agent appeared (clients without AGENT_CONNECTED_TOKENS)."""


@message(ChannelType.MAIN, MainServerMsg.AGENT_CONNECTED_TOKENS, "I")
class AgentConnectedTokens(Message):
    """AGENT_CONNECTED_TOKENS: the agent appeared; the client may send ``num_tokens``
    AGENT_DATA before it needs AGENT_TOKEN."""

    num_tokens: int


@message(ChannelType.MAIN, MainServerMsg.AGENT_DISCONNECTED, "I")
class AgentDisconnected(Message):
    """AGENT_DISCONNECTED: the agent went away (the client resets its agent state)."""

    error_code: int


@message(ChannelType.MAIN, MainServerMsg.AGENT_DATA, tail=True)
class ServerAgentData(Message):
    """AGENT_DATA server → client: one piece (≤ 2048 bytes) of the agent stream."""

    data: bytes


@message(ChannelType.MAIN, MainServerMsg.AGENT_TOKEN, "I")
class ServerAgentToken(Message):
    """AGENT_TOKEN server → client: the client may send ``num_tokens`` more AGENT_DATA."""

    num_tokens: int


@message(ChannelType.MAIN, MainClientMsg.CLIENT_INFO, "Q")
class ClientInfo(Message):
    """CLIENT_INFO: obsolete (pitfall 10); accepted and ignored."""

    cache_size: int


@message(ChannelType.MAIN, MainClientMsg.MIGRATE_CONNECTED)
class MigrateConnected(Message):
    """MIGRATE_CONNECTED: migration is not supported; ignored."""


@message(ChannelType.MAIN, MainClientMsg.MIGRATE_CONNECT_ERROR)
class MigrateConnectError(Message):
    """MIGRATE_CONNECT_ERROR: ignored."""


@message(ChannelType.MAIN, MainClientMsg.ATTACH_CHANNELS)
class AttachChannels(Message):
    """ATTACH_CHANNELS: the client is ready for CHANNELS_LIST."""


@message(ChannelType.MAIN, MainClientMsg.MOUSE_MODE_REQUEST, "H")
class MouseModeRequest(Message):
    """MOUSE_MODE_REQUEST: u16 mode."""

    mode: int


@message(ChannelType.MAIN, MainClientMsg.AGENT_START, "I")
class AgentStart(Message):
    """AGENT_START: the client's tokens for our AGENT_DATA (spice-gtk: 0xFFFFFFFF)."""

    num_tokens: int


@message(ChannelType.MAIN, MainClientMsg.AGENT_DATA, tail=True)
class AgentData(Message):
    """AGENT_DATA: one piece of the client's agent stream (spiceserver.protocol.agent)."""

    data: bytes


@message(ChannelType.MAIN, MainClientMsg.AGENT_TOKEN, "I")
class AgentToken(Message):
    """AGENT_TOKEN: more tokens for our AGENT_DATA (spice-gtk never sends it)."""

    num_tokens: int


@message(ChannelType.MAIN, MainClientMsg.MIGRATE_END)
class MigrateEnd(Message):
    """MIGRATE_END: ignored."""


@message(ChannelType.MAIN, MainClientMsg.MIGRATE_DST_DO_SEAMLESS, "I")
class MigrateDstDoSeamless(Message):
    """MIGRATE_DST_DO_SEAMLESS: ignored."""

    src_version: int


@message(ChannelType.MAIN, MainClientMsg.MIGRATE_CONNECTED_SEAMLESS)
class MigrateConnectedSeamless(Message):
    """MIGRATE_CONNECTED_SEAMLESS: ignored."""


@message(ChannelType.MAIN, MainClientMsg.QUALITY_INDICATOR, tail=True)
class QualityIndicator(Message):
    """QUALITY_INDICATOR: ignored."""

    data: bytes


# =========================================================================== display channel


@message(ChannelType.DISPLAY, DisplayServerMsg.MARK)
class Mark(Message):
    """MARK: the client may show the primary surface (pitfall 15)."""


@message(ChannelType.DISPLAY, DisplayServerMsg.SURFACE_CREATE, "IIIII")
class SurfaceCreate(Message):
    """SURFACE_CREATE (20 bytes)."""

    surface_id: int
    width: int
    height: int
    format: int
    flags: int


@message(ChannelType.DISPLAY, DisplayServerMsg.SURFACE_DESTROY, "I")
class SurfaceDestroy(Message):
    """SURFACE_DESTROY."""

    surface_id: int


@message(ChannelType.DISPLAY, DisplayServerMsg.MONITORS_CONFIG)
class MonitorsConfig(Message):
    """MONITORS_CONFIG: heads of (monitor_id, surface_id, width, height, x, y, flags)."""

    heads: tuple[tuple[int, int, int, int, int, int, int], ...]
    max_allowed: int = 1

    def _pack(self) -> bytes:
        body = bytearray(struct.pack("<HH", len(self.heads), self.max_allowed))
        for head in self.heads:
            body += struct.pack("<IIIIiiI", *head)
        return bytes(body)


# Streams (spice-common:spice.proto, DisplayChannel): stream_id_t is u32, stream_flags a u8,
# video_codec_type a u8; a Rect is top, left, bottom, right (i32 each); a Clip is its u8 type,
# then for RECTS (1) its ClipRects inline: u32 count and the rects.
_RECT = struct.Struct("<iiii")
CLIP_NONE = 0
CLIP_RECTS = 1
#: STREAM_CREATE flags: rows come top-down (spice.proto stream_flags TOP_DOWN).
STREAM_TOP_DOWN = 1

#: A rectangle as (x, y, width, height), the form the stream messages take it in.
Box = tuple[int, int, int, int]


def _pack_rect(box: Box) -> bytes:
    x, y, w, h = box
    return _RECT.pack(y, x, y + h, x + w)


def _pack_clip(rects: tuple[Box, ...] | None) -> bytes:
    """Clip NONE (``None``) or RECTS (the rects the stream shows through; empty: none)."""
    if rects is None:
        return bytes((CLIP_NONE,))
    return struct.pack("<BI", CLIP_RECTS, len(rects)) + b"".join(map(_pack_rect, rects))


@message(ChannelType.DISPLAY, DisplayServerMsg.STREAM_CREATE)
class StreamCreate(Message):
    """STREAM_CREATE: a stream of ``codec`` frames of stream_w x stream_h, scaled to ``dest``
    on ``surface_id``; 51 bytes with clip NONE."""

    surface_id: int
    id: int
    flags: int
    codec: int
    stamp: int
    stream_width: int
    stream_height: int
    src_width: int
    src_height: int
    dest: Box
    clip: tuple[Box, ...] | None = None

    def _pack(self) -> bytes:
        head = struct.pack(
            "<IIBBQIIII",
            self.surface_id,
            self.id,
            self.flags,
            self.codec,
            self.stamp,
            self.stream_width,
            self.stream_height,
            self.src_width,
            self.src_height,
        )
        return head + _pack_rect(self.dest) + _pack_clip(self.clip)


@message(ChannelType.DISPLAY, DisplayServerMsg.STREAM_DATA, "III", tail=True)
class StreamData(Message):
    """STREAM_DATA: one encoded frame, to be shown at ``mm_time`` (the main channel's clock)."""

    id: int
    mm_time: int
    size: int
    data: bytes


@message(ChannelType.DISPLAY, DisplayServerMsg.STREAM_DATA_SIZED)
class StreamDataSized(Message):
    """STREAM_DATA_SIZED (client cap SIZED_STREAM): a frame of its own size and destination."""

    id: int
    mm_time: int
    width: int
    height: int
    dest: Box
    data: bytes

    def _pack(self) -> bytes:
        head = struct.pack("<IIII", self.id, self.mm_time, self.width, self.height)
        return head + _pack_rect(self.dest) + struct.pack("<I", len(self.data)) + self.data


@message(ChannelType.DISPLAY, DisplayServerMsg.STREAM_CLIP)
class StreamClip(Message):
    """STREAM_CLIP: the parts of the stream's destination it may paint (None: all of it)."""

    id: int
    clip: tuple[Box, ...] | None = None

    def _pack(self) -> bytes:
        return struct.pack("<I", self.id) + _pack_clip(self.clip)


@message(ChannelType.DISPLAY, DisplayServerMsg.STREAM_DESTROY, "I")
class StreamDestroy(Message):
    """STREAM_DESTROY."""

    id: int


@message(ChannelType.DISPLAY, DisplayServerMsg.STREAM_DESTROY_ALL)
class StreamDestroyAll(Message):
    """STREAM_DESTROY_ALL."""


@message(ChannelType.DISPLAY, DisplayServerMsg.STREAM_ACTIVATE_REPORT, "IIII")
class StreamActivateReport(Message):
    """STREAM_ACTIVATE_REPORT (client cap STREAM_REPORT): report every ``max_window_size``
    frames or ``timeout_ms``, tagged ``unique_id``."""

    stream_id: int
    unique_id: int
    max_window_size: int
    timeout_ms: int


@message(ChannelType.DISPLAY, DisplayClientMsg.INIT, "BqBi")
class DisplayInit(Message):
    """DISPLAY INIT: the client's image cache and GLZ window, in pixels."""

    pixmap_cache_id: int
    pixmap_cache_size: int
    glz_dictionary_id: int
    glz_dictionary_window_size: int


@message(ChannelType.DISPLAY, DisplayClientMsg.STREAM_REPORT, "IIIIIIiI")
class StreamReport(Message):
    """STREAM_REPORT: how the frames of ``unique_id``'s window fared on the client;
    ``num_frames == 0`` with ``num_drops == 0xFFFFFFFF``: it cannot decode the stream."""

    stream_id: int
    unique_id: int
    start_frame_mm_time: int
    end_frame_mm_time: int
    num_frames: int
    num_drops: int
    last_frame_delay: int
    audio_delay: int


@message(ChannelType.DISPLAY, DisplayClientMsg.PREFERRED_COMPRESSION, "B")
class PreferredCompression(Message):
    """PREFERRED_COMPRESSION: a SpiceImageCompression the client would like."""

    image_compression: int


@message(ChannelType.DISPLAY, DisplayClientMsg.GL_DRAW_DONE)
class GlDrawDone(Message):
    """GL_DRAW_DONE: ignored (no GL scanout)."""


@message(ChannelType.DISPLAY, DisplayClientMsg.PREFERRED_VIDEO_CODEC_TYPE, tail=True)
class PreferredVideoCodecType(Message):
    """PREFERRED_VIDEO_CODEC_TYPE: u8 count then the codecs (SpiceVideoCodecType), best first."""

    codecs: bytes

    @classmethod
    def _unpack(cls, body: bytes | memoryview) -> PreferredVideoCodecType:
        _check_len(cls.__name__, body, 1)
        if len(body) != 1 + body[0]:
            raise DecodeError(f"{cls.__name__}: {body[0]} codecs in {len(body) - 1} bytes")
        return cls(bytes(body[1:]))


# ============================================================================ inputs channel


@message(ChannelType.INPUTS, InputsServerMsg.INIT, "H")
class InputsInit(Message):
    """INPUTS INIT: the server's keyboard lock state."""

    keyboard_modifiers: int


@message(ChannelType.INPUTS, InputsServerMsg.KEY_MODIFIERS, "H")
class ServerKeyModifiers(Message):
    """KEY_MODIFIERS (server): the lock state changed on the server."""

    modifiers: int


@message(ChannelType.INPUTS, InputsServerMsg.MOUSE_MOTION_ACK)
class MouseMotionAck(Message):
    """MOUSE_MOTION_ACK: one per 4 motion messages (pitfall 33)."""


@message(ChannelType.INPUTS, InputsClientMsg.KEY_DOWN, "I")
class KeyDown(Message):
    """KEY_DOWN: PC AT set-1 scancode bytes packed LSB first (E0 keys: 0xE0 | code << 8)."""

    code: int


@message(ChannelType.INPUTS, InputsClientMsg.KEY_UP, "I")
class KeyUp(Message):
    """KEY_UP: the break code (code | 0x80)."""

    code: int


@message(ChannelType.INPUTS, InputsClientMsg.KEY_MODIFIERS, "H")
class ClientKeyModifiers(Message):
    """KEY_MODIFIERS (client): the client's lock-key state."""

    modifiers: int


@message(ChannelType.INPUTS, InputsClientMsg.KEY_SCANCODE, tail=True)
class KeyScancode(Message):
    """KEY_SCANCODE: raw scancode bytes, press then release for a quick key press."""

    data: bytes


@message(ChannelType.INPUTS, InputsClientMsg.MOUSE_MOTION, "iiH")
class MouseMotion(Message):
    """MOUSE_MOTION: relative motion (server mouse mode)."""

    dx: int
    dy: int
    buttons_state: int


@message(ChannelType.INPUTS, InputsClientMsg.MOUSE_POSITION, "IIHB")
class MousePosition(Message):
    """MOUSE_POSITION: absolute position in surface pixels (client mouse mode)."""

    x: int
    y: int
    buttons_state: int
    display_id: int


@message(ChannelType.INPUTS, InputsClientMsg.MOUSE_PRESS, "BH")
class MousePress(Message):
    """MOUSE_PRESS: buttons_state already includes the button."""

    button: int
    buttons_state: int


@message(ChannelType.INPUTS, InputsClientMsg.MOUSE_RELEASE, "BH")
class MouseRelease(Message):
    """MOUSE_RELEASE: buttons_state no longer includes the button."""

    button: int
    buttons_state: int


# ============================================================================ cursor channel


@record
class CursorShape:
    """An ALPHA cursor: straight (non-premultiplied) B,G,R,A pixels, top-down.

    ``unique`` names the image: clients cache shapes by it, so a different image needs a
    different ``unique`` (0: an image that is never cached)."""

    unique: int
    width: int
    height: int
    hot_x: int
    hot_y: int
    pixels: bytes

    def __post_init__(self) -> None:
        if len(self.pixels) != self.width * self.height * 4:
            raise ValueError("cursor pixels must be width * height * 4 bytes")


def _pack_cursor(shape: CursorShape | None, flags: int = 0) -> bytes:
    """spice.proto ``Cursor``: u16 flags, header, data to the end of the message.  With
    FROM_CACHE the client takes the shape from its cache by ``unique``: header only, no data
    (as spice-server's ``cursor_fill`` marshals it)."""
    if shape is None:
        return struct.pack("<H", CursorFlags.NONE)
    header = struct.pack(
        "<HQBHHHH",
        flags,
        shape.unique,
        CursorType.ALPHA,
        shape.width,
        shape.height,
        shape.hot_x,
        shape.hot_y,
    )
    return header if flags & CursorFlags.FROM_CACHE else header + shape.pixels


@message(ChannelType.CURSOR, CursorServerMsg.INIT)
class CursorInit(Message):
    """CURSOR INIT: must precede SET/MOVE (pitfall 35)."""

    x: int
    y: int
    visible: int
    shape: CursorShape | None

    def _pack(self) -> bytes:
        return struct.pack("<hhHHB", self.x, self.y, 0, 0, self.visible) + _pack_cursor(self.shape)


@message(ChannelType.CURSOR, CursorServerMsg.SET)
class CursorSet(Message):
    """CURSOR SET: a new shape (spice-gtk ignores ``visible`` here)."""

    x: int
    y: int
    visible: int
    shape: CursorShape | None
    #: CursorFlags.CACHE_ME (client: keep it under ``unique``) or FROM_CACHE (take it from there).
    cache: int = 0

    def _pack(self) -> bytes:
        return struct.pack("<hhB", self.x, self.y, self.visible) + _pack_cursor(
            self.shape, self.cache
        )


@message(ChannelType.CURSOR, CursorServerMsg.MOVE, "hh")
class CursorMove(Message):
    """CURSOR MOVE."""

    x: int
    y: int


@message(ChannelType.CURSOR, CursorServerMsg.HIDE)
class CursorHide(Message):
    """CURSOR HIDE."""


@message(ChannelType.CURSOR, CursorServerMsg.INVAL_ONE, "Q")
class CursorInvalOne(Message):
    """CURSOR INVAL_ONE: the client drops one cached shape."""

    unique: int


# ============================================================= playback and record channels
# Layouts: spice-common:spice.proto ``channel PlaybackChannel`` / ``channel RecordChannel``.


@message(ChannelType.PLAYBACK, PlaybackServerMsg.DATA, "I", tail=True)
class PlaybackData(Message):
    """PLAYBACK DATA: u32 mm-time at capture, then one packet (10 ms: Opus or 1920 B raw)."""

    time: int
    data: bytes


@message(ChannelType.PLAYBACK, PlaybackServerMsg.MODE, "IH", tail=True)
class PlaybackMode(Message):
    """PLAYBACK MODE: what DATA carries from now on; sent before START (spice-gtk builds its
    decoder at START for the current mode: spice-gtk:src/channel-playback.c)."""

    time: int
    mode: int
    data: bytes = b""


@message(ChannelType.PLAYBACK, PlaybackServerMsg.START, "IHII")
class PlaybackStart(Message):
    """PLAYBACK START: u32 channels, u16 format (1 = S16), u32 frequency, u32 mm-time."""

    channels: int
    format: int
    frequency: int
    time: int


@message(ChannelType.PLAYBACK, PlaybackServerMsg.STOP)
class PlaybackStop(Message):
    """PLAYBACK STOP: no DATA until the next START."""


@message(ChannelType.PLAYBACK, PlaybackServerMsg.VOLUME)
class PlaybackVolume(Message):
    """PLAYBACK VOLUME: u8 channel count, u16 volume per channel."""

    volume: tuple[int, ...]

    def _pack(self) -> bytes:
        return struct.pack(f"<B{len(self.volume)}H", len(self.volume), *self.volume)


@message(ChannelType.PLAYBACK, PlaybackServerMsg.MUTE, "B")
class PlaybackMute(Message):
    mute: int


@message(ChannelType.PLAYBACK, PlaybackServerMsg.LATENCY, "I")
class PlaybackLatency(Message):
    """PLAYBACK LATENCY: the client's playback delay in ms (needs client cap LATENCY)."""

    latency_ms: int


@message(ChannelType.RECORD, RecordServerMsg.START, "IHI")
class RecordStart(Message):
    channels: int
    format: int
    frequency: int


@message(ChannelType.RECORD, RecordServerMsg.STOP)
class RecordStop(Message):
    pass


@message(ChannelType.RECORD, RecordClientMsg.DATA, "I", tail=True)
class RecordData(Message):
    time: int
    data: bytes


@message(ChannelType.RECORD, RecordClientMsg.MODE, "IH", tail=True)
class RecordMode(Message):
    time: int
    mode: int
    data: bytes = b""


@message(ChannelType.RECORD, RecordClientMsg.START_MARK, "I")
class RecordStartMark(Message):
    time: int


def all_client_messages() -> list[type[Message]]:
    """Every registered client → server message class (for tests and fuzzing)."""
    return [cls for (direction, _, _), cls in REGISTRY.items() if direction == CLIENT]
