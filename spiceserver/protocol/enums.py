"""Protocol constants, with explicit values (spice-protocol ``spice/enums.h``, ``protocol.h``).

spice.proto numbers messages implicitly; here every value is spelled out so that a single
omission cannot shift a whole channel (tests pin these against enums.h).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

SPICE_MAGIC = b"REDQ"
VERSION_MAJOR = 2
VERSION_MINOR = 2
#: ``SPICE_TICKET_PUBKEY_BYTES``: DER SubjectPublicKeyInfo of a 1024-bit RSA key.
TICKET_PUBKEY_BYTES = 162
#: ``SPICE_MAX_PASSWORD_LENGTH`` (the plaintext ticket without its NUL).
MAX_PASSWORD_LENGTH = 60


class ChannelType(IntEnum):
    MAIN = 1
    DISPLAY = 2
    INPUTS = 3
    CURSOR = 4
    PLAYBACK = 5
    RECORD = 6
    TUNNEL = 7
    SMARTCARD = 8
    USBREDIR = 9
    PORT = 10
    WEBDAV = 11


class LinkError(IntEnum):
    """``SpiceLinkErr``: the u32 result of the link stage."""

    OK = 0
    ERROR = 1
    INVALID_MAGIC = 2
    INVALID_DATA = 3
    VERSION_MISMATCH = 4
    NEED_SECURED = 5
    NEED_UNSECURED = 6
    PERMISSION_DENIED = 7
    BAD_CONNECTION_ID = 8
    CHANNEL_NOT_AVAILABLE = 9


class CommonCap(IntEnum):
    """Bit numbers of the common capabilities (``SPICE_COMMON_CAP_*``)."""

    PROTOCOL_AUTH_SELECTION = 0
    AUTH_SPICE = 1
    AUTH_SASL = 2
    MINI_HEADER = 3


class MainCap(IntEnum):
    SEMI_SEAMLESS_MIGRATE = 0
    NAME_AND_UUID = 1
    AGENT_CONNECTED_TOKENS = 2
    SEAMLESS_MIGRATE = 3


class DisplayCap(IntEnum):
    SIZED_STREAM = 0
    MONITORS_CONFIG = 1
    COMPOSITE = 2
    A8_SURFACE = 3
    STREAM_REPORT = 4
    LZ4_COMPRESSION = 5
    PREF_COMPRESSION = 6
    GL_SCANOUT = 7
    MULTI_CODEC = 8
    CODEC_MJPEG = 9
    CODEC_VP8 = 10
    CODEC_H264 = 11
    PREF_VIDEO_CODEC_TYPE = 12
    CODEC_VP9 = 13
    CODEC_H265 = 14


class InputsCap(IntEnum):
    KEY_SCANCODE = 0


class AuthMechanism(IntEnum):
    """``SpiceLinkAuthMechanism.auth_mechanism``: the number of the chosen auth cap."""

    SPICE = 1
    SASL = 2


# --- message types ------------------------------------------------------------------------


class BaseServerMsg(IntEnum):
    """Server → client messages common to every channel."""

    MIGRATE = 1
    MIGRATE_DATA = 2
    SET_ACK = 3
    PING = 4
    WAIT_FOR_CHANNELS = 5
    DISCONNECTING = 6
    NOTIFY = 7
    LIST = 8


class BaseClientMsg(IntEnum):
    """Client → server messages common to every channel."""

    ACK_SYNC = 1
    ACK = 2
    PONG = 3
    MIGRATE_FLUSH_MARK = 4
    MIGRATE_DATA = 5
    DISCONNECTING = 6


class MainServerMsg(IntEnum):
    MIGRATE_BEGIN = 101
    MIGRATE_CANCEL = 102
    INIT = 103
    CHANNELS_LIST = 104
    MOUSE_MODE = 105
    MULTI_MEDIA_TIME = 106
    AGENT_CONNECTED = 107
    AGENT_DISCONNECTED = 108
    AGENT_DATA = 109
    AGENT_TOKEN = 110
    MIGRATE_SWITCH_HOST = 111
    MIGRATE_END = 112
    NAME = 113
    UUID = 114
    AGENT_CONNECTED_TOKENS = 115


class MainClientMsg(IntEnum):
    CLIENT_INFO = 101
    MIGRATE_CONNECTED = 102
    MIGRATE_CONNECT_ERROR = 103
    ATTACH_CHANNELS = 104
    MOUSE_MODE_REQUEST = 105
    AGENT_START = 106
    AGENT_DATA = 107
    AGENT_TOKEN = 108
    MIGRATE_END = 109
    MIGRATE_DST_DO_SEAMLESS = 110
    MIGRATE_CONNECTED_SEAMLESS = 111
    QUALITY_INDICATOR = 112


class DisplayServerMsg(IntEnum):
    MODE = 101
    MARK = 102
    RESET = 103
    COPY_BITS = 104
    INVAL_LIST = 105
    INVAL_ALL_PIXMAPS = 106
    INVAL_PALETTE = 107
    INVAL_ALL_PALETTES = 108
    STREAM_CREATE = 122
    STREAM_DATA = 123
    STREAM_CLIP = 124
    STREAM_DESTROY = 125
    STREAM_DESTROY_ALL = 126
    DRAW_FILL = 302
    DRAW_OPAQUE = 303
    DRAW_COPY = 304
    DRAW_BLEND = 305
    SURFACE_CREATE = 314
    SURFACE_DESTROY = 315
    STREAM_DATA_SIZED = 316
    MONITORS_CONFIG = 317
    STREAM_ACTIVATE_REPORT = 319


class VideoCodec(IntEnum):
    """SpiceVideoCodecType (spice-protocol:spice/enums.h): STREAM_CREATE's codec_type and the
    entries of PREFERRED_VIDEO_CODEC_TYPE."""

    MJPEG = 1
    VP8 = 2
    H264 = 3
    VP9 = 4
    H265 = 5


#: The display cap a client advertises for each codec it decodes (spice-protocol:spice/enums.h).
VIDEO_CODEC_CAPS: dict[VideoCodec, DisplayCap] = {
    VideoCodec.MJPEG: DisplayCap.CODEC_MJPEG,
    VideoCodec.VP8: DisplayCap.CODEC_VP8,
    VideoCodec.H264: DisplayCap.CODEC_H264,
    VideoCodec.VP9: DisplayCap.CODEC_VP9,
    VideoCodec.H265: DisplayCap.CODEC_H265,
}


class DisplayClientMsg(IntEnum):
    INIT = 101
    STREAM_REPORT = 102
    PREFERRED_COMPRESSION = 103
    GL_DRAW_DONE = 104
    PREFERRED_VIDEO_CODEC_TYPE = 105


class InputsServerMsg(IntEnum):
    INIT = 101
    KEY_MODIFIERS = 102
    MOUSE_MOTION_ACK = 111


class InputsClientMsg(IntEnum):
    KEY_DOWN = 101
    KEY_UP = 102
    KEY_MODIFIERS = 103
    KEY_SCANCODE = 104
    MOUSE_MOTION = 111
    MOUSE_POSITION = 112
    MOUSE_PRESS = 113
    MOUSE_RELEASE = 114


class CursorServerMsg(IntEnum):
    INIT = 101
    RESET = 102
    SET = 103
    MOVE = 104
    HIDE = 105
    TRAIL = 106
    INVAL_ONE = 107
    INVAL_ALL = 108


# Audio channels (``spice-protocol:spice/enums.h``, ``spice-common:spice.proto``).


class PlaybackServerMsg(IntEnum):
    DATA = 101
    MODE = 102
    START = 103
    STOP = 104
    VOLUME = 105
    MUTE = 106
    LATENCY = 107


class PlaybackCap(IntEnum):
    CELT_0_5_1 = 0  # gone from every client
    VOLUME = 1
    LATENCY = 2
    OPUS = 3


class RecordServerMsg(IntEnum):
    START = 101
    STOP = 102
    VOLUME = 103
    MUTE = 104


class RecordClientMsg(IntEnum):
    DATA = 101
    MODE = 102
    START_MARK = 103


class RecordCap(IntEnum):
    CELT_0_5_1 = 0
    VOLUME = 1
    OPUS = 2


class AudioDataMode(IntEnum):
    """SPICE_AUDIO_DATA_MODE_*: what DATA carries."""

    INVALID = 0
    RAW = 1
    CELT_0_5_1 = 2
    OPUS = 3


class AudioFormat(IntEnum):
    S16 = 1


# --- values carried inside messages ---------------------------------------------------------


class MouseMode(IntFlag):
    """``SpiceMouseMode``: relative pointer motion (server) or absolute positions (client)."""

    SERVER = 1
    CLIENT = 2


class KeyModifiers(IntFlag):
    """``SpiceKeyboardModifierFlags``: the lock keys' state (inputs INIT, KEY_MODIFIERS)."""

    SCROLL_LOCK = 1
    NUM_LOCK = 2
    CAPS_LOCK = 4


class MouseButton(IntEnum):
    """``SpiceMouseButton``: UP and DOWN are wheel steps; SIDE and EXTRA are back and forward."""

    INVALID = 0
    LEFT = 1
    MIDDLE = 2
    RIGHT = 3
    UP = 4
    DOWN = 5
    SIDE = 6
    EXTRA = 7


class SurfaceFormat(IntEnum):
    """``SpiceSurfaceFmt``: not sequential (pitfall 13)."""

    INVALID = 0
    FMT_1_A = 1
    FMT_8_A = 8
    FMT_16_555 = 16
    FMT_32_xRGB = 32
    FMT_16_565 = 80
    FMT_32_ARGB = 96


class ImageType(IntEnum):
    BITMAP = 0
    QUIC = 1
    LZ_PLT = 100
    LZ_RGB = 101
    GLZ_RGB = 102
    FROM_CACHE = 103
    SURFACE = 104
    JPEG = 105
    FROM_CACHE_LOSSLESS = 106
    ZLIB_GLZ_RGB = 107
    JPEG_ALPHA = 108
    LZ4 = 109


class BitmapFormat(IntEnum):
    INVALID = 0
    FMT_32BIT = 8
    RGBA = 9


class ImageCompression(IntEnum):
    """``SpiceImageCompression`` (PREFERRED_COMPRESSION and ``--image-compression``)."""

    INVALID = 0
    OFF = 1
    AUTO_GLZ = 2
    AUTO_LZ = 3
    QUIC = 4
    GLZ = 5
    LZ = 6
    LZ4 = 7


class CursorType(IntEnum):
    ALPHA = 0
    MONO = 1


class CursorFlags(IntFlag):
    NONE = 1
    CACHE_ME = 2
    FROM_CACHE = 4


BITMAP_FLAG_TOP_DOWN = 4
SURFACE_FLAG_PRIMARY = 1
ROPD_OP_PUT = 8
#: ``SPICE_INPUT_MOTION_ACK_BUNCH``: acknowledge every this many motion messages (pitfall 33).
MOTION_ACK_BUNCH = 4


# ======================================================== VDAgent (spice-protocol:spice/vd_agent.h)


class AgentMsg(IntEnum):
    """``VD_AGENT_*`` message types inside the agent stream (AGENT_DATA payloads)."""

    MOUSE_STATE = 1
    MONITORS_CONFIG = 2
    REPLY = 3
    CLIPBOARD = 4
    DISPLAY_CONFIG = 5
    ANNOUNCE_CAPABILITIES = 6
    CLIPBOARD_GRAB = 7
    CLIPBOARD_REQUEST = 8
    CLIPBOARD_RELEASE = 9
    FILE_XFER_START = 10
    FILE_XFER_STATUS = 11
    FILE_XFER_DATA = 12
    CLIENT_DISCONNECTED = 13
    MAX_CLIPBOARD = 14
    AUDIO_VOLUME_SYNC = 15
    GRAPHICS_DEVICE_INFO = 16


class AgentCap(IntEnum):
    """``VD_AGENT_CAP_*`` bit numbers (ANNOUNCE_CAPABILITIES)."""

    MOUSE_STATE = 0
    MONITORS_CONFIG = 1
    REPLY = 2
    CLIPBOARD = 3
    DISPLAY_CONFIG = 4
    CLIPBOARD_BY_DEMAND = 5
    CLIPBOARD_SELECTION = 6
    SPARSE_MONITORS_CONFIG = 7
    GUEST_LINEEND_LF = 8
    GUEST_LINEEND_CRLF = 9
    MAX_CLIPBOARD = 10
    AUDIO_VOLUME_SYNC = 11
    MONITORS_CONFIG_POSITION = 12
    FILE_XFER_DISABLED = 13
    FILE_XFER_DETAILED_ERRORS = 14
    GRAPHICS_DEVICE_INFO = 15
    CLIPBOARD_NO_RELEASE_ON_REGRAB = 16
    CLIPBOARD_GRAB_SERIAL = 17


class AgentReplyError(IntEnum):
    """``VD_AGENT_SUCCESS`` / ``VD_AGENT_ERROR`` in VDAgentReply."""

    SUCCESS = 1
    ERROR = 2


class FileXferStatus(IntEnum):
    """``VD_AGENT_FILE_XFER_STATUS_*``."""

    CAN_SEND_DATA = 0
    CANCELLED = 1
    ERROR = 2
    SUCCESS = 3
    NOT_ENOUGH_SPACE = 4
    SESSION_LOCKED = 5
    VDAGENT_NOT_CONNECTED = 6
    DISABLED = 7


class MonitorsConfigFlags(IntFlag):
    """``VD_AGENT_CONFIG_MONITORS_FLAG_*``."""

    USE_POS = 1
    PHYSICAL_SIZE = 2


def caps_to_words(bits: list[int] | tuple[int, ...] | set[int]) -> list[int]:
    """Capability numbers → u32 words (cap N is bit N % 32 of word N // 32)."""
    if not bits:
        return []
    words = [0] * (max(bits) // 32 + 1)
    for bit in bits:
        words[bit // 32] |= 1 << (bit % 32)
    return words


def has_cap(words: tuple[int, ...] | list[int], bit: int) -> bool:
    """Whether capability number ``bit`` is set in the peer's capability words."""
    index = bit // 32
    return index < len(words) and bool(words[index] >> (bit % 32) & 1)
