"""Events the protocol core reports to its owner (the server layer or an embedding program).

Input events use PC AT (set 1) scancodes as SPICE carries them: ``scancode`` is the make code
(0x01..0x7F); keys sent with an E0 prefix (arrows, right Ctrl, keypad Enter …) are
``0xE000 | code`` and the E1-prefixed Pause key is ``0xE11D``.
"""

from __future__ import annotations

from spiceserver.protocol.enums import KeyModifiers, MouseButton
from spiceserver.protocol.records import record

__all__ = [
    "AgentCapabilities",
    "AgentDropped",
    "AgentMessage",
    "AgentMonitor",
    "ButtonEvent",
    "ClientDisconnecting",
    "ClipboardData",
    "ClipboardGrab",
    "ClipboardRelease",
    "ClipboardRequest",
    "CompressionPreferred",
    "DisplayReady",
    "FileXferCancelled",
    "FileXferData",
    "FileXferStart",
    "InputEvent",
    "KeyEvent",
    "LockState",
    "MaxClipboard",
    "MonitorsConfig",
    "MouseModeChanged",
    "MouseModeRequested",
    "PointerMotion",
    "PointerPosition",
    "PongReceived",
    "StreamReported",
    "WheelEvent",
]


@record
class KeyEvent:
    """A key went down or up."""

    scancode: int
    pressed: bool


@record
class LockState:
    """The client's Caps/Num/Scroll lock state."""

    modifiers: KeyModifiers


@record
class PointerPosition:
    """Absolute pointer position in surface pixels (client mouse mode)."""

    x: int
    y: int
    buttons: int
    display_id: int = 0


@record
class PointerMotion:
    """Relative pointer motion (server mouse mode)."""

    dx: int
    dy: int
    buttons: int


@record
class ButtonEvent:
    """A pointer button went down or up (not the wheel)."""

    button: MouseButton
    pressed: bool
    buttons: int


@record
class WheelEvent:
    """One wheel step: ``dy`` = -1 up, +1 down (spice-server's mapping of buttons UP/DOWN)."""

    dy: int


#: Any input event the inputs channel reports (what ``on_input`` receives).
InputEvent = KeyEvent | LockState | PointerPosition | PointerMotion | ButtonEvent | WheelEvent


@record
class DisplayReady:
    """DISPLAY_INIT arrived: the client's image cache and GLZ window (in pixels)."""

    pixmap_cache_size: int
    glz_window_size: int
    glz_dictionary_id: int = 0


@record
class CompressionPreferred:
    """PREFERRED_COMPRESSION: the client asked for a SpiceImageCompression."""

    compression: int


@record
class StreamReported:
    """STREAM_REPORT for one of our streams (``spice.proto`` DisplayChannel stream_report)."""

    stream_id: int
    unique_id: int
    num_frames: int
    num_drops: int
    #: end_frame_mm_time minus the client's mm-time when it got the last frame: negative = late.
    last_frame_delay: int
    #: The window's first and last frame (mm-time), and the audio delay (0xFFFFFFFF: none).
    start_frame_mm_time: int = 0
    end_frame_mm_time: int = 0
    audio_delay: int = 0xFFFF_FFFF

    @property
    def cannot_decode(self) -> bool:
        """The client cannot play this stream (num_frames 0, num_drops 0xFFFFFFFF)."""
        return self.num_frames == 0 and self.num_drops == 0xFFFF_FFFF


@record
class MouseModeChanged:
    """The main channel switched mouse mode (SERVER 1, CLIENT 2)."""

    mode: int


@record
class MouseModeRequested:
    """MOUSE_MODE_REQUEST arrived (reported whether or not the mode changes)."""

    mode: int
    granted: bool


@record
class AgentMessage:
    """An AGENT_START / AGENT_DATA / AGENT_TOKEN message while the agent is off
    (``agent=False``): only noted (``size`` is the message body's length)."""

    name: str
    type: int
    size: int


@record
class PongReceived:
    """The client answered our PING ``id``: it has handled every message sent before it."""

    id: int
    #: Seconds from the PING being queued to its PONG (the link estimate's samples).
    round_trip: float = 0.0


@record
class ClientDisconnecting:
    """The client announced it is leaving, with a SpiceLinkErr reason."""

    reason: int


# ------------------------------------------------------------------ the built-in agent
# What spiceserver.protocol.agent parsed from a client's agent stream (AGENT_DATA).  Selection
# and type numbers are spice-protocol:spice/vd_agent.h's (spiceserver.clipboard names them).


@record
class AgentCapabilities:
    """ANNOUNCE_CAPABILITIES: the client's VD_AGENT_CAP_* bits (``request``: it wants ours;
    they were sent already)."""

    caps: frozenset[int]
    request: bool


@record
class ClipboardGrab:
    """The client owns ``selection`` now and offers ``types`` (a serial race it lost is not
    reported: the protocol discards that grab, as spice-vdagent does)."""

    selection: int
    types: tuple[int, ...]


@record
class ClipboardRequest:
    """The client wants our ``selection`` data of ``type`` (answer with ``clipboard``)."""

    selection: int
    type: int


@record
class ClipboardData:
    """The client's data of ``type`` for ``selection``, answering our request (type 0, NONE,
    and no data: it has none)."""

    selection: int
    type: int
    data: bytes


@record
class ClipboardRelease:
    """The client no longer owns ``selection``."""

    selection: int


@record
class MaxClipboard:
    """The largest clipboard the client accepts (-1: no limit)."""

    max: int


@record
class AgentMonitor:
    """One entry of a client's MONITORS_CONFIG; ``index`` is the client's display id (with
    sparse configs, entries of width or height 0 are disabled displays)."""

    index: int
    width: int
    height: int
    depth: int
    x: int
    y: int
    width_mm: int = 0
    height_mm: int = 0


@record
class MonitorsConfig:
    """MONITORS_CONFIG: the windows the client has (already answered with REPLY)."""

    monitors: tuple[AgentMonitor, ...]
    flags: int


@record
class FileXferStart:
    """FILE_XFER_START with a valid name and size: answer with ``file_status``."""

    id: int
    name: str
    size: int


@record
class FileXferData:
    """FILE_XFER_DATA: the next ``data`` of transfer ``id``."""

    id: int
    data: bytes


@record
class FileXferCancelled:
    """FILE_XFER_STATUS from the client: it stopped transfer ``id`` (``result`` CANCELLED or
    ERROR)."""

    id: int
    result: int


@record
class AgentDropped:
    """An agent message the protocol dropped, and why (the connection stays up).  ``type``
    is the VD_AGENT_* type; ``selection`` is set for clipboard data that was dropped (the
    request it answered has failed); ``size`` is the message's announced size."""

    type: int
    size: int
    reason: str
    selection: int | None = None
