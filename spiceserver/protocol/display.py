"""The display channel (type 2), sans I/O.  Images arrive here already encoded.

Start-up (spice-server ``dcc_start``; spice-gtk ``spice_display_channel_up``): we send SET_ACK;
the client sends DISPLAY_INIT (its image cache and GLZ window); the owner then creates the
primary surface (SURFACE_CREATE + MONITORS_CONFIG when the client has the cap), draws it, and
sends MARK, without which spice-gtk widgets never become ready (pitfall 15).

Drawing layouts follow spice.proto (``DrawCopy``, ``DrawFill``, ``CopyBits``) with clip NONE and
no mask; rectangles are written top, left, bottom, right (pitfall 14).  Pointers inside a body
are offsets from the body start (pitfall 17): the one image of a DRAW_COPY sits right after the
57 fixed bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from spiceserver.protocol import messages as m
from spiceserver.protocol.channel import ChannelProtocol, Handler
from spiceserver.protocol.enums import (
    ROPD_OP_PUT,
    SURFACE_FLAG_PRIMARY,
    VIDEO_CODEC_CAPS,
    ChannelType,
    DisplayCap,
    DisplayServerMsg,
    ImageType,
    SurfaceFormat,
    VideoCodec,
    has_cap,
)
from spiceserver.protocol.events import CompressionPreferred, DisplayReady, StreamReported

__all__ = [
    "MAX_MONITORS",
    "MAX_STREAMS",
    "SERVER_DISPLAY_CAPS",
    "DisplayChannel",
    "EncodedImage",
    "HeadArea",
]

#: What we advertise: we send MONITORS_CONFIG to clients that know it, honour
#: PREFERRED_COMPRESSION and PREFERRED_VIDEO_CODEC_TYPE, and take STREAM_REPORTs (spice-gtk
#: sends reports and its codec preference only to a server with these caps:
#: spice-gtk:src/channel-display.c; pitfall 22: advertise only what is handled).
SERVER_DISPLAY_CAPS: tuple[int, ...] = (
    DisplayCap.MONITORS_CONFIG,
    DisplayCap.PREF_COMPRESSION,
    DisplayCap.STREAM_REPORT,
    DisplayCap.PREF_VIDEO_CODEC_TYPE,
)
#: Stream ids are below this (spice-gtk keeps a table of streams indexed by id; libspice
#: allocates at most 50: spice:server/video-stream.h NUM_STREAMS).
MAX_STREAMS = 64

_DRAW_COPY = struct.Struct("<I4iBI4iHBBiiI")  # 57 bytes, clip NONE, no mask
_COPY_BITS = struct.Struct("<I4iBii")  # 29 bytes, clip NONE
_DESCRIPTOR = struct.Struct("<QBBII")  # SpiceImageDescriptor, 18 bytes
PRIMARY_SURFACE = 0
#: spice-gtk's MONITORS_MAX: most heads one display channel may describe.
MAX_MONITORS = 256

#: A head as the display channel sends it: (x, y, width, height) of the primary surface.
HeadArea = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """One SpiceImage, ready for the wire.

    ``body`` is everything after the 18-byte descriptor (for QUIC: u32 data_size and the
    stream; for BITMAP: format, flags, size, stride, palette pointer and pixels).
    """

    type: ImageType
    width: int
    height: int
    body: tuple[bytes | memoryview, ...]
    flags: int = 0
    id: int = 0

    @property
    def size(self) -> int:
        return _DESCRIPTOR.size + sum(len(chunk) for chunk in self.body)


class DisplayChannel(ChannelProtocol):
    """Surface creation, drawing and MARK sequencing.

    A new primary surface must be drawn completely and followed by one MARK before spice-gtk
    reports the display ready (``spice-display.c`` ``display_handle_mark``): after
    :meth:`create_primary`, the owner draws and then calls :meth:`end_update`, which adds the
    MARK the first time.
    """

    channel_type = ChannelType.DISPLAY
    SERVER_CAPS = SERVER_DISPLAY_CAPS

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.ready: DisplayReady | None = None
        self.preferred_compression: int | None = None
        self.surface_size: tuple[int, int] | None = None
        #: A surface was created and its first complete update has not ended yet.
        self.mark_pending = False
        #: The MONITORS_CONFIG last sent for the current surface (areas, max_allowed).
        self.heads_sent: tuple[tuple[HeadArea, ...], int] | None = None
        self._next_image_id = 1
        #: PREFERRED_VIDEO_CODEC_TYPE: the client's codecs, best first (empty: no preference).
        self.preferred_video_codecs: tuple[VideoCodec, ...] = ()
        #: Streams created and not yet destroyed.
        self.streams: set[int] = set()

    @property
    def client_has_monitors_config(self) -> bool:
        return has_cap(self.client_channel_caps, DisplayCap.MONITORS_CONFIG)

    def start(self, now: float) -> None:
        self.start_acks(now)

    def create_primary(
        self,
        width: int,
        height: int,
        heads: Sequence[HeadArea] = (),
        max_allowed: int = 1,
    ) -> None:
        """SURFACE_CREATE for surface 0 (x8r8g8b8), then its MONITORS_CONFIG (see
        :meth:`send_monitors_config`; no heads: one covering the surface)."""
        if self.surface_size is not None:
            for stream_id in sorted(self.streams):  # streams live on the surface
                self.stream_destroy(stream_id)
            self.send(m.SurfaceDestroy(surface_id=PRIMARY_SURFACE))
        self.surface_size = (width, height)
        self.send(
            m.SurfaceCreate(
                surface_id=PRIMARY_SURFACE,
                width=width,
                height=height,
                format=SurfaceFormat.FMT_32_xRGB,
                flags=SURFACE_FLAG_PRIMARY,
            )
        )
        self.heads_sent = None
        self.send_monitors_config(heads, max_allowed)
        self.mark_pending = True

    def send_monitors_config(self, heads: Sequence[HeadArea], max_allowed: int = 1) -> None:
        """MONITORS_CONFIG: ``heads`` as (x, y, width, height) areas of the primary surface,
        monitor ids in order (a client shows one window per head: remote-viewer, spice-gtk's
        widget for ``(channel 0, monitor_id N)``, ``spice-gtk:src/spice-widget.c``
        ``get_display_id``).  As libspice-server, heads without a size are left out and flags
        are 0 (``spice:server/dcc-send.cpp`` ``marshall_monitors_config``); none left: one
        head covering the surface.  spice-gtk clamps ``max_allowed`` to 1..256 and the count
        to ``max_allowed`` (``spice-gtk:src/channel-display.c``
        ``display_handle_monitors_config``): both are kept within that here.  Only to clients
        with the MONITORS_CONFIG cap, and not again if unchanged since the surface was made.
        """
        if not self.client_has_monitors_config or self.surface_size is None:
            return
        areas: tuple[HeadArea, ...] = tuple(
            (x, y, w, h) for x, y, w, h in heads if w > 0 and h > 0
        )[:MAX_MONITORS] or ((0, 0, *self.surface_size),)
        max_allowed = max(len(areas), min(max_allowed, MAX_MONITORS))
        if (areas, max_allowed) == self.heads_sent:
            return
        self.heads_sent = (areas, max_allowed)
        self.send(
            m.MonitorsConfig(
                heads=tuple(
                    (monitor_id, PRIMARY_SURFACE, w, h, x, y, 0)
                    for monitor_id, (x, y, w, h) in enumerate(areas)
                ),
                max_allowed=max_allowed,
            )
        )

    def end_update(self) -> None:
        """The update drawn since the last call is complete: after a new surface's first one,
        send MARK."""
        if self.mark_pending:
            self.mark_pending = False
            self.send(m.Mark())

    def draw_copy(self, x: int, y: int, image: EncodedImage) -> None:
        """Copy ``image`` to the primary surface with its top-left corner at (x, y)."""
        w, h = image.width, image.height
        head = _DRAW_COPY.pack(
            PRIMARY_SURFACE,
            y, x, y + h, x + w,  # box: top, left, bottom, right
            0,  # clip NONE
            _DRAW_COPY.size,  # src_bitmap: offset of the image from the body start
            0, 0, h, w,  # src_area
            ROPD_OP_PUT,
            0,  # scale_mode (unused: src_area and box have the same size)
            0, 0, 0, 0,  # mask: flags, pos, bitmap = NULL
        )  # fmt: skip
        descriptor = _DESCRIPTOR.pack(image.id or self._take_id(), image.type, image.flags, w, h)
        self.send_raw(DisplayServerMsg.DRAW_COPY, (head, descriptor, *image.body))

    def copy_bits(self, src_x: int, src_y: int, x: int, y: int, width: int, height: int) -> None:
        """Copy a surface area whose top-left is (src_x, src_y) to the rectangle at (x, y)."""
        body = _COPY_BITS.pack(PRIMARY_SURFACE, y, x, y + height, x + width, 0, src_x, src_y)
        self.send_raw(DisplayServerMsg.COPY_BITS, (body,))

    # ------------------------------------------------------------------ video streams

    def video_codecs(self) -> tuple[VideoCodec, ...]:
        """The codecs the client decodes (its caps), in its preference order when it sent
        one.  Anything but MJPEG needs MULTI_CODEC too (spice:server/dcc.cpp
        ``dcc_create_video_encoder``)."""
        caps = self.client_channel_caps
        multi = has_cap(caps, DisplayCap.MULTI_CODEC)
        usable = [
            codec
            for codec, cap in VIDEO_CODEC_CAPS.items()
            if has_cap(caps, cap) and (multi or codec == VideoCodec.MJPEG)
        ]
        ranked = [codec for codec in self.preferred_video_codecs if codec in usable]
        return tuple(ranked + [codec for codec in usable if codec not in ranked])

    def stream_create(
        self,
        stream_id: int,
        codec: VideoCodec,
        box: m.Box,
        stamp: int,
        clip: tuple[m.Box, ...] | None = None,
    ) -> None:
        """STREAM_CREATE: frames of ``box``'s size (x, y, w, h) shown unscaled at ``box`` on
        the primary surface, rows top-down."""
        if not 0 <= stream_id < MAX_STREAMS or stream_id in self.streams:
            raise ValueError(f"stream id {stream_id} in use or out of range")
        self.streams.add(stream_id)
        _x, _y, w, h = box
        self.send(
            m.StreamCreate(
                surface_id=PRIMARY_SURFACE,
                id=stream_id,
                flags=m.STREAM_TOP_DOWN,
                codec=codec,
                stamp=stamp,
                stream_width=w,
                stream_height=h,
                src_width=w,
                src_height=h,
                dest=box,
                clip=clip,
            )
        )

    def stream_data(self, stream_id: int, mm_time: int, frame: bytes) -> None:
        """STREAM_DATA: one encoded frame, to be shown at ``mm_time`` (main channel clock)."""
        header = struct.pack("<III", stream_id, mm_time & 0xFFFF_FFFF, len(frame))
        self.send_raw(DisplayServerMsg.STREAM_DATA, (header, frame))

    def stream_clip(self, stream_id: int, clip: tuple[m.Box, ...] | None) -> None:
        """STREAM_CLIP: the stream paints only within ``clip`` (None: all its destination)."""
        self.send(m.StreamClip(id=stream_id, clip=clip))

    def stream_activate_report(
        self, stream_id: int, unique_id: int, window: int, timeout_ms: int
    ) -> bool:
        """Ask for STREAM_REPORTs, if the client sends them (cap STREAM_REPORT)."""
        if not has_cap(self.client_channel_caps, DisplayCap.STREAM_REPORT):
            return False
        self.send(m.StreamActivateReport(stream_id, unique_id, window, timeout_ms))
        return True

    def stream_destroy(self, stream_id: int) -> None:
        """STREAM_DESTROY: the client keeps the last frame painted on the surface."""
        if stream_id in self.streams:
            self.streams.discard(stream_id)
            self.send(m.StreamDestroy(id=stream_id))

    def _take_id(self) -> int:
        self._next_image_id += 1
        return self._next_image_id

    # ------------------------------------------------------------------ handlers

    def _on_init(self, message: m.DisplayInit, now: float) -> None:
        if self.ready is not None:
            return  # spice-gtk sends it once; a repeat changes nothing we rely on
        self.ready = DisplayReady(
            pixmap_cache_size=max(0, message.pixmap_cache_size),
            glz_window_size=max(0, message.glz_dictionary_window_size),
            glz_dictionary_id=message.glz_dictionary_id,
        )
        self._events.append(self.ready)

    def _on_preferred_compression(self, message: m.PreferredCompression, now: float) -> None:
        if message.image_compression == self.preferred_compression:
            return  # a repeat changes nothing: no event, so no log line or record either
        self.preferred_compression = message.image_compression
        self._events.append(CompressionPreferred(compression=message.image_compression))

    def _on_stream_report(self, message: m.StreamReport, now: float) -> None:
        if message.stream_id not in self.streams:
            return  # a report racing the stream's destruction: nothing to adjust
        self._events.append(
            StreamReported(
                stream_id=message.stream_id,
                unique_id=message.unique_id,
                num_frames=message.num_frames,
                num_drops=message.num_drops,
                last_frame_delay=message.last_frame_delay,
                start_frame_mm_time=message.start_frame_mm_time,
                end_frame_mm_time=message.end_frame_mm_time,
                audio_delay=message.audio_delay,
            )
        )

    def _on_preferred_video_codecs(self, message: m.PreferredVideoCodecType, now: float) -> None:
        known = {int(codec) for codec in VideoCodec}
        self.preferred_video_codecs = tuple(
            VideoCodec(code) for code in dict.fromkeys(message.codecs) if code in known
        )

    _handlers: ClassVar[dict[type[m.Message], Handler]] = {
        m.DisplayInit: _on_init,
        m.PreferredCompression: _on_preferred_compression,
        m.StreamReport: _on_stream_report,
        m.GlDrawDone: ChannelProtocol._ignore,
        m.PreferredVideoCodecType: _on_preferred_video_codecs,
    }
