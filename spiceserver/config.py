"""Server options, as frozen dataclasses, with every limit named and documented."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from spiceserver.errors import ConfigError
from spiceserver.faults import Fault, parse_faults
from spiceserver.protocol.enums import MAX_PASSWORD_LENGTH, ImageCompression
from spiceserver.protocol.link import DEFAULT_MAX_LINK_SIZE

if TYPE_CHECKING:
    from spiceserver.protocol.channel import ChannelLimits

__all__ = [
    "AUDIO_MODES",
    "CLIPBOARD_MAX_BYTES",
    "CLIPBOARD_TIMEOUT",
    "COMPRESSION_NAMES",
    "DEFAULT_ENCODE_CACHE_BYTES",
    "DEFAULT_MAX_CLIENTS",
    "INPUT_BACKENDS",
    "JPEG_POLICIES",
    "RESIZE_MODES",
    "ServerConfig",
    "is_loopback",
]

#: ``--image-compression`` values → SpiceImageCompression.
COMPRESSION_NAMES = {
    "off": ImageCompression.OFF,
    "auto-glz": ImageCompression.AUTO_GLZ,
    "auto-lz": ImageCompression.AUTO_LZ,
    "quic": ImageCompression.QUIC,
    "glz": ImageCompression.GLZ,
    "lz": ImageCompression.LZ,
}


#: ``--jpeg-wan-compression`` values (libspice's names).
JPEG_POLICIES = ("auto", "always", "never")

#: ``--streaming-video`` values (QEMU's and libspice's names): never stream, stream every
#: region updated like a video, or only those that look like one (photographic content).
STREAMING_VIDEO_MODES = ("off", "all", "filter")
#: ``--video-codecs`` names (SpiceVideoCodecType; only those with an encoder here are used).
VIDEO_CODEC_NAMES = ("mjpeg", "vp8", "h264", "vp9")


def parse_video_codecs(text: str) -> tuple[str, ...]:
    """``--video-codecs``: names in preference order, ``mjpeg,h264`` or QEMU's
    ``spice:mjpeg;gstreamer:h264`` (the encoder prefix is dropped)."""
    names: list[str] = []
    for item in text.replace(";", ",").split(","):
        name = item.strip().lower().rpartition(":")[2]
        if not name:
            continue
        if name not in VIDEO_CODEC_NAMES:
            raise ConfigError(f"unknown video codec {name!r} ({', '.join(VIDEO_CODEC_NAMES)})")
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError("no video codec given")
    return tuple(names)


#: ``ServerConfig.audio`` values.
AUDIO_MODES = ("auto", "desktop", "tone", "off")

#: ``--input`` values: how the desktop source injects client input
#: (:func:`spiceserver.input.choose_desktop_input`).
INPUT_BACKENDS = ("auto", "xtest", "pynput")
#: ``ServerConfig.resize`` values (``spiceserver.server.layout``).
RESIZE_MODES = ("follow", "off")

#: Clipboard data larger than this is refused both ways (a screenshot PNG fits); the
#: default of every clipboard backend and of ``ServerConfig.clipboard_max_bytes``.
CLIPBOARD_MAX_BYTES = 32 * 1024 * 1024
#: Seconds a clipboard owner (a client, a desktop program) may take to answer.
CLIPBOARD_TIMEOUT = 5.0

#: ``ServerConfig.max_clients`` and ``encode_cache_bytes`` defaults (the CLI shows them).
DEFAULT_MAX_CLIENTS = 32
DEFAULT_ENCODE_CACHE_BYTES = 64 * 1024 * 1024


def _channel_limits() -> ChannelLimits:
    """The default :class:`~spiceserver.protocol.channel.ChannelLimits`, imported only when a
    config is made: the command line imports this module before it opens the port, and the
    protocol's message classes cost start-up time there (``tests/interop/bench_startup``)."""
    from spiceserver.protocol.channel import ChannelLimits

    return ChannelLimits()


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts local connections."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything a :class:`~spiceserver.SpiceServer` needs besides its source."""

    host: str = "127.0.0.1"
    #: 0 picks a free port (see ``SpiceServer.port``).
    port: int = 5900
    #: Listen on this Unix socket instead of ``host:port`` (``spice+unix://PATH``, as QEMU's
    #: ``-spice unix=on,addr=PATH``).
    unix_path: str | None = None
    #: Accept WebSocket (spice-html5, no websockify) on the same port(s) as plain SPICE.
    websocket: bool = True
    #: Origins a WebSocket may come from (``"https://host:port"``); None: any page may try,
    #: the ticket is the gate (as with libspice-server).
    websocket_origins: tuple[str, ...] | None = None
    #: Largest WebSocket message a client may send (frames of one message added up).
    websocket_max_message: int = 256 * 1024
    #: A directory of static files (a web client) served by GET on the same port.
    web_root: str | None = None
    #: The ticket; ``None`` with ``disable_ticketing`` accepts any ticket.
    password: str | None = None
    disable_ticketing: bool = False
    #: Codec for screen updates; like libspice-server, GLZ/LZ with QUIC for photos.
    image_compression: ImageCompression = ImageCompression.AUTO_GLZ
    #: Lossy JPEG for smooth photographic areas (libspice's jpeg-wan-compression): "auto"
    #: while the link is below 10 Mbit/s, "always", or "never".  Only in the auto image
    #: compressions, only to clients with a JPEG decoder (server/channels/display/lossy.py).
    jpeg_wan_compression: str = "auto"
    #: libjpeg quality of those images, 1..100 (libspice and andris: 85).
    jpeg_quality: int = 85
    #: GLZ images wrapped in zlib when smaller (libspice's zlib-glz-wan-compression), with
    #: the same choices and the same slow-link test as ``jpeg_wan_compression``.
    zlib_glz_wan_compression: str = "auto"
    #: Seconds an area sent lossy must stay still before it is re-sent losslessly.
    lossless_refresh: float = 0.5
    #: Video streams for regions updated like a video (server/channels/display/streams.py):
    #: "off" (for now the default: the animated pattern's band would stream, and many tests
    #: compare its frames exactly), "all", or "filter" (photographic regions only; libspice's
    #: default).  Lossy, so only to clients that may get JPEG (auto image compression,
    #: jpeg_wan_compression not never).
    streaming_video: str = "off"
    #: Stream codecs in the server's preference order (a client's
    #: PREFERRED_VIDEO_CODEC_TYPE comes first); a string is parsed as ``--video-codecs``.
    #: H.264, VP8 and VP9 need PyAV (the ``video`` extra); MJPEG is the fallback.
    video_codecs: tuple[str, ...] = ("h264", "vp8", "mjpeg")
    #: Name sent in MAIN NAME to clients that ask (NAME_AND_UUID).
    name: str = "spiceserver"
    #: Most screen updates per second sent to one client (up to 5% more from a faster source:
    #: the slack that keeps a source at exactly ``max_fps`` from losing frames to jitter; and
    #: after a pause a few back to back, ``spiceserver.pacing.BURST``).
    max_fps: float = 30.0
    #: Largest SpiceLinkHeader.size accepted (spice-server: 4096).
    max_link_size: int = DEFAULT_MAX_LINK_SIZE
    #: A connection must complete its link within this many seconds.
    handshake_timeout: float = 10.0
    #: Client → server buffering and the ACK window of every channel.
    channel_limits: ChannelLimits = field(default_factory=_channel_limits)
    #: Seconds at least between two steps of a client's backlog (a flood: every step a full
    #: ``channel_limits`` budget), and as long as the steps of all flooding clients take
    #: together: they get at most half of the loop, and the GIL the encoders need is free
    #: the other half.  A client that never fills a budget never waits.
    flood_pause: float = 0.001
    #: Largest client → server message body, by channel name, overriding each channel's
    #: default (main 64 KiB for agent chunks, display/inputs/cursor 4 KiB: spice-gtk sends at
    #: most a few dozen bytes there; ``spiceserver.server.registry``).
    max_message_sizes: Mapping[str, int] = field(default_factory=dict)
    #: Transport write buffer high-water mark: above it, no new screen updates are produced.
    write_buffer_high: int = 4 * 1024 * 1024
    #: A display connection with more unsent output than this is closed: its client stopped
    #: reading (screen updates stop at ``write_buffer_high``, so only a stuck client gets
    #: here).  Every byte queued counts, whatever the channel (see ``max_write_buffers``).
    max_write_buffer: int = 64 * 1024 * 1024
    #: Largest unsent output of one connection by channel name, overriding each channel's
    #: default (main and inputs 1 MiB: they only answer requests; cursor 8 MiB; display
    #: ``max_write_buffer``; ``spiceserver.server.registry``): a client that makes the server
    #: talk and never reads is closed there.
    max_write_buffers: Mapping[str, int] = field(default_factory=dict)
    #: Largest unsent output of one session, all its connections together: the connection
    #: whose write crosses it is closed.
    max_session_write_buffer: int = 64 * 1024 * 1024
    #: Most simultaneous connections, linked or not; further ones are closed at once.
    max_connections: int = 4096
    #: Most simultaneous connections from one client address (IPv4/IPv6 address; a Unix
    #: socket's clients count as one), so one peer cannot take every ``max_connections`` slot.
    #: 256 lets one address hold every session of the default ``max_clients`` with all its
    #: channels.
    max_connections_per_address: int = 256
    #: Most connections of one address still in the link stage (not yet authenticated:
    #: waiting for a key, a ticket or its turn to be checked), so a guesser holds at most this
    #: many file descriptors.  spice-gtk links at most four channels at once per session.
    max_unauthenticated_per_address: int = 32
    #: Ticket checks of an address that has failed are spaced this many seconds apart, right
    #: ticket or wrong (a few per second at most), doubling with each further failure ...
    ticket_check_spacing: float = 0.25
    #: ... up to this many seconds.
    ticket_check_max_spacing: float = 8.0
    #: Failures older than this many seconds (counted from an address's latest) are forgotten.
    ticket_failure_window: float = 60.0
    #: Most simultaneous client sessions (main-channel links); further ones are refused at the
    #: link stage with ERROR, established sessions untouched.  With the default auto-glz each
    #: session encodes its GLZ images itself and its dictionary grows to ~33 MiB: 32 clients
    #: of an animated 1024x768 source measured 30 fps on 2 cores at ~1.2 GiB RSS (README
    #: "Many clients"; auto-lz shares every encode and stays far lower).
    max_clients: int = DEFAULT_MAX_CLIENTS
    #: GLZ dictionaries one session may hold.  spice-gtk keeps one GLZ window per session,
    #: shared by its display channels (libspice-server shares one per client and id,
    #: ``spice:server/image-encoders.cpp`` ``glz_shared_dictionary_new``); a display naming
    #: another id replaces a dictionary no live display uses, or gets LZ.
    glz_dictionaries_per_session: int = 1
    #: Bytes of GLZ dictionaries across all sessions (each takes up to ~33.4 MiB: a 32 MiB
    #: window arena and its hash tables).  A session that would cross it gets a smaller
    #: dictionary, or LZ when less than 4 MiB is left; ending sessions give theirs back.
    glz_memory_budget: int = 1024 * 1024 * 1024
    #: Encoded screen updates shared between sessions (raw, QUIC, LZ; never GLZ), in bytes of
    #: pixels and encodings kept for the newest few source versions; 0 turns sharing off.
    encode_cache_bytes: int = DEFAULT_ENCODE_CACHE_BYTES
    #: TLS: a second listener (``tls_host``, default ``host``) with this certificate and key;
    #: plain links then get NEED_SECURED, except for ``plaintext_channels`` (channel names).
    tls_port: int | None = None
    tls_host: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    plaintext_channels: frozenset[str] = frozenset()
    #: Seconds the ticket stays valid after it was set (None: until changed).
    ticket_lifetime: float | None = None
    #: The ticket admits one session: once a main channel has linked, it is spent.
    one_shot_ticket: bool = False
    #: Pre-generated RSA keys kept ready so a link never waits on key generation.
    rsa_key_pool: int = 4
    #: Worker threads encoding images off the event loop.
    encoder_threads: int = 2
    #: Compile the codec kernels at start-up (from numba's disk cache after the first run).
    warmup_encoders: bool = True
    #: Capture mode: per session, one pcap per channel and the display as video, in this
    #: directory (``None``: off, at no cost). See :mod:`spiceserver.capture`.
    capture_dir: str | None = None
    #: Session record: one JSON line per client event appended to this file (``None``: off).
    #: See :mod:`spiceserver.record`; embedding programs can also pass ``recorders``.
    record_path: str | None = None
    #: Size cap of the ``record_path`` file in bytes: once it is reached, one last line
    #: (``{"event": "record_stopped", ...}``) says so and nothing more is written.
    record_max_bytes: int = 64 * 1024 * 1024
    #: Events per second one session may add to the record once ``record_burst`` came at
    #: once; the rest are counted in a ``record_dropped`` event (spice-gtk sends tens a
    #: second; a KEY_SCANCODE flood thousands).
    record_rate: float = 1000.0
    record_burst: int = 10_000
    #: Log lines per second per message template once ``log_burst`` lines came at once
    #: (:mod:`spiceserver.logs`; dropped lines are counted in the next one): a client cannot
    #: make the log grow faster.  0 turns the limit off.
    log_rate: float = 5.0
    log_burst: int = 20
    #: Fault injection for client robustness tests: ``--fault`` specs (``"delay:display:0.5"``)
    #: or :class:`~spiceserver.faults.Fault` objects, stored as a tuple of Faults.  Empty: off,
    #: at no cost.  See :mod:`spiceserver.faults` and README "Fault injection".
    faults: Sequence[Fault | str] = ()
    #: Sound to the clients' playback channel (README "Sound"): ``"desktop"`` records the
    #: sound server's ``audio_source`` (default: the default sink's monitor) with ``parec``;
    #: ``"tone"`` a 440 Hz sine; ``"auto"`` desktop when a sound server answers, else off;
    #: ``"off"``: no playback channel is offered.  ``SpiceServer(sound=...)`` takes any
    #: :class:`~spiceserver.sources.audio.AudioSource` instead (a NumpyAudioSource, say).
    audio: str = "off"
    #: PulseAudio source name for ``audio="desktop"`` (None: ``@DEFAULT_MONITOR@``).
    audio_source: str | None = None
    #: Opus to clients that take it (else raw PCM to everyone).
    audio_opus: bool = True
    #: Per client: audio packets waiting for the connection are bounded by these bytes and
    #: this age in seconds; beyond either the oldest are dropped (latest-wins).
    audio_queue_bytes: int = 64 * 1024
    audio_max_delay: float = 0.2
    #: The client's microphone (record channel, README "Sound"): offered when there is a sink
    #: for it: with ``audio`` desktop (or auto finding a sound server) the null sink
    #: ``record_sink`` (its monitor is the microphone); ``SpiceServer(microphone=...)`` takes
    #: any :class:`~spiceserver.sinks.audio.RecordSink`.  False: never offered.  Opus from
    #: clients iff ``audio_opus`` and PyAV has libopus.
    record: bool = True
    record_sink: str = "spice_mic"
    #: Whether the source follows the monitor layout clients ask for (the agent's
    #: MONITORS_CONFIG: window sizes, several heads): ``"follow"`` applies it if the source
    #: can, ``"off"`` keeps the source as it is (README "Resize and several monitors").
    resize: str = "follow"
    #: Seconds after the last changed request before a layout is applied (a window being
    #: dragged sends many sizes; only the last is applied).
    resize_debounce: float = 0.25

    #: The built-in VDAgent on the main channel (README "Clipboard and files"): clipboard,
    #: monitors configs, file transfer.  False: MAIN_INIT says no agent, as before.
    agent: bool = True
    #: Largest clipboard data taken from or given to a client (bytes); larger is refused,
    #: with a log line.  Also bounds one client's agent reassembly and output queue.
    clipboard_max_bytes: int = CLIPBOARD_MAX_BYTES
    #: Seconds a client has to send the clipboard data the desktop asked for.
    clipboard_timeout: float = CLIPBOARD_TIMEOUT
    #: Where files dropped into a client go: a directory; "" (the default) the XDG download
    #: directory (``xdg-user-dir DOWNLOAD``, else ``~/Downloads``); None: file transfer off.
    #: ``SpiceServer(on_file=...)`` takes files instead.
    file_transfer_dir: str | None = ""
    #: Largest file accepted (bytes; bigger is refused NOT_ENOUGH_SPACE).
    file_transfer_max: int = 1024 * 1024 * 1024
    #: Transfers one session may have at once; seconds without data before one is dropped.
    file_transfer_max_active: int = 4
    file_transfer_timeout: float = 60.0

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__ (dataclasses' documented escape hatch).
        object.__setattr__(self, "faults", parse_faults(self.faults))
        if isinstance(self.image_compression, str):  # the CLI's names work here too
            if self.image_compression not in COMPRESSION_NAMES:
                raise ConfigError(
                    f"unknown image_compression {self.image_compression!r} "
                    f"({', '.join(COMPRESSION_NAMES)})"
                )
            object.__setattr__(self, "image_compression", COMPRESSION_NAMES[self.image_compression])
        for name in ("jpeg_wan_compression", "zlib_glz_wan_compression"):
            if getattr(self, name) not in JPEG_POLICIES:
                raise ConfigError(
                    f"unknown {name} {getattr(self, name)!r} ({', '.join(JPEG_POLICIES)})"
                )
        if self.streaming_video not in STREAMING_VIDEO_MODES:
            raise ConfigError(
                f"unknown streaming_video {self.streaming_video!r} "
                f"({', '.join(STREAMING_VIDEO_MODES)})"
            )
        if isinstance(self.video_codecs, str):
            object.__setattr__(self, "video_codecs", parse_video_codecs(self.video_codecs))
        else:
            object.__setattr__(
                self, "video_codecs", parse_video_codecs(",".join(self.video_codecs))
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError("jpeg_quality must be within 1..100")
        if self.lossless_refresh < 0:
            raise ConfigError("lossless_refresh cannot be negative")
        if self.password is None and not self.disable_ticketing:
            raise ConfigError("set a password or disable ticketing explicitly")
        if self.password is not None:
            if self.disable_ticketing:
                raise ConfigError("a password and disable_ticketing exclude each other")
            raw = self.password.encode()
            if not raw or len(raw) > MAX_PASSWORD_LENGTH or b"\0" in raw:
                raise ConfigError(
                    f"the password must be 1..{MAX_PASSWORD_LENGTH} bytes without NUL "
                    "(SPICE_MAX_PASSWORD_LENGTH)"
                )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} out of range")
        if self.max_fps <= 0:
            raise ConfigError("max_fps must be positive")
        if self.max_clients < 1:
            raise ConfigError("max_clients must be at least 1")
        if self.flood_pause < 0:
            raise ConfigError("flood_pause cannot be negative")
        if self.log_rate < 0 or self.log_burst < 1:
            raise ConfigError("log_rate cannot be negative and log_burst must be at least 1")
        buffers = (self.max_write_buffer, self.max_session_write_buffer)
        if min(*buffers, *self.max_write_buffers.values()) < 1:
            raise ConfigError("write buffer limits must be at least 1 byte")
        if self.record_max_bytes < 1 or self.record_rate <= 0 or self.record_burst < 1:
            raise ConfigError("record_max_bytes, record_rate and record_burst must be positive")
        if self.glz_dictionaries_per_session < 0 or self.glz_memory_budget < 0:
            raise ConfigError(
                "glz_dictionaries_per_session and glz_memory_budget cannot be negative"
            )
        per_address = (self.max_connections_per_address, self.max_unauthenticated_per_address)
        if min(self.max_connections, *per_address) < 1:
            raise ConfigError("connection limits must be at least 1")
        if not 0 <= self.ticket_check_spacing <= self.ticket_check_max_spacing:
            raise ConfigError("ticket_check_spacing must be within 0..ticket_check_max_spacing")
        if self.encode_cache_bytes < 0:
            raise ConfigError("encode_cache_bytes cannot be negative")
        if self.tls_port is not None and not (self.tls_cert and self.tls_key):
            raise ConfigError("TLS needs both a certificate and a key")
        if self.websocket_max_message < 1024:
            raise ConfigError("websocket_max_message must be at least 1024 bytes")
        if self.websocket_origins is not None and isinstance(self.websocket_origins, str):
            raise ConfigError("websocket_origins must be a list of origins")
        if self.audio not in AUDIO_MODES:
            raise ConfigError(f"unknown audio {self.audio!r} ({', '.join(AUDIO_MODES)})")
        if self.audio_queue_bytes < 4096 or self.audio_max_delay <= 0:
            raise ConfigError("audio_queue_bytes must be >= 4096, audio_max_delay positive")
        if not self.record_sink.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"record_sink {self.record_sink!r}: letters, digits, - and _ only")
        if not self.handshake_timeout > 0:
            raise ConfigError(f"handshake_timeout must be positive, not {self.handshake_timeout}")
        if self.clipboard_max_bytes < 1 or self.clipboard_timeout <= 0:
            raise ConfigError("clipboard_max_bytes and clipboard_timeout must be positive")
        if (
            self.file_transfer_max < 0
            or self.file_transfer_max_active < 1
            or self.file_transfer_timeout <= 0
        ):
            raise ConfigError(
                "file_transfer_max cannot be negative; file_transfer_max_active and "
                "file_transfer_timeout must be positive"
            )
        if self.ticket_lifetime is not None and self.ticket_lifetime <= 0:
            raise ConfigError("ticket_lifetime must be positive")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"unknown resize {self.resize!r} ({', '.join(RESIZE_MODES)})")
        if not 0 <= self.resize_debounce <= 10:
            raise ConfigError("resize_debounce must be within 0..10 seconds")
