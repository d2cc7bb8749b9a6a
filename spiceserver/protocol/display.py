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
    ChannelType,
    DisplayCap,
    DisplayServerMsg,
    ImageType,
    SurfaceFormat,
    has_cap,
)
from spiceserver.protocol.events import CompressionPreferred, DisplayReady

__all__ = ["MAX_MONITORS", "SERVER_DISPLAY_CAPS", "DisplayChannel", "EncodedImage", "HeadArea"]

#: What we advertise: we send MONITORS_CONFIG to clients that know it, and honour
#: PREFERRED_COMPRESSION (pitfall 22: advertise only what is handled).
SERVER_DISPLAY_CAPS: tuple[int, ...] = (DisplayCap.MONITORS_CONFIG, DisplayCap.PREF_COMPRESSION)

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

    _handlers: ClassVar[dict[type[m.Message], Handler]] = {
        m.DisplayInit: _on_init,
        m.PreferredCompression: _on_preferred_compression,
        m.StreamReport: ChannelProtocol._ignore,  # we never create streams
        m.GlDrawDone: ChannelProtocol._ignore,
        m.PreferredVideoCodecType: ChannelProtocol._ignore,
    }
