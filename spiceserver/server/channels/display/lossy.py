"""Lossy images for one display client: when they are allowed, and the areas still owed a
lossless copy.

**Policy** (``jpeg_wan_compression``, libspice's ``jpeg-wan-compression``): ``never``;
``always``; ``auto`` (the default): while the session's link is slow (below 10 Mbit/s,
:mod:`spiceserver.bandwidth`), as libspice decides in ``display_channel_update_compression``
(``spice:server/display-channel.cpp``).  In every case only to a client that can decode JPEG and
left the choice to the server:

* it advertises ``SPICE_DISPLAY_CAP_CODEC_MJPEG`` (a JPEG decoder: spice-gtk and spice-html5
  do; SPICE has no cap for JPEG images, and capsaicin, which cannot decode them, advertises no
  display caps at all);
* its image compression is an auto mode (``codecs.MODES``): a client that sent
  PREFERRED_COMPRESSION lz, glz, quic or off (spice-gtk ``--spice-preferred-compression``), or
  a server started with one of those, gets lossless images only.

``zlib_glz_wan_compression`` (libspice's ``zlib-glz-wan-compression``) follows the same
policy for ZLIB_GLZ_RGB: GLZ streams deflated at level 3 when that is smaller (text and UI
frames of tests/data/corpus: 37-61 % smaller at 1-7 ms per 1080p frame, measured).

**Lossless refresh** (andris's rule): an area sent lossy is re-sent losslessly once it has been
still for ``lossless_refresh`` seconds, through the normal update path (it joins the dirty
region, so it merges with new damage and latest-wins holds), so a still screen always ends
pixel-exact.  Still counts from the client's PONG to a PING sent after the lossy image (on a
slow link the image takes a while to arrive), and the refresh goes out one area per round
trip: a refresh (a 1080p photo is ~2.5 MB of QUIC, 10 s at 2 Mbit/s) never queues more
than one band ahead of new damage.  :class:`LossyAreas` keeps those areas; pure bookkeeping,
time passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from spiceserver.bandwidth import LinkEstimate
from spiceserver.protocol.enums import DisplayCap, has_cap
from spiceserver.sources.base import Rect

__all__ = [
    "JpegBudget",
    "LossyAreas",
    "contains",
    "intersection",
    "overlaps",
    "subtract",
    "wan_allowed",
]


def wan_allowed(
    policy: str, client_caps: tuple[int, ...], link: LinkEstimate, available: bool
) -> bool:
    """Whether this client may get a WAN codec now under ``policy``: JPEG
    (``jpeg_wan_compression``; the auto-mode check is the codec choice's,
    ``codecs.CompressionMode.lossy``) or zlib around GLZ (``zlib_glz_wan_compression``,
    which capsaicin cannot decode either)."""
    if policy == "never" or not available:
        return False
    if not has_cap(client_caps, DisplayCap.CODEC_MJPEG):
        return False
    return policy == "always" or link.low_bandwidth()


#: JPEG bytes at a quality, relative to quality 85: libjpeg-turbo through simplejpeg, 4:2:0,
#: tests/data/corpus/photo_dune_1920x1080.png (298,615 bytes at 85; PSNR 39.1 dB at 85,
#: 36.1 at 60, 33.4 at 30).  The curve's shape is that of libjpeg's scaled quantisation
#: tables, so it holds roughly for any photo; the bytes per pixel are learnt per session.
JPEG_SIZE_VS_85 = (
    (100, 4.6), (95, 1.86), (90, 1.26), (85, 1.0), (80, 0.85), (75, 0.745), (70, 0.68),
    (65, 0.62), (60, 0.57), (55, 0.535), (50, 0.505), (45, 0.476), (40, 0.44), (35, 0.41),
    (30, 0.375),
)  # fmt: skip
#: A lossy first paint should take at most this much of the link: it is there to be seen at
#: once, the lossless refresh brings the exact pixels later.  (At 2 Mbit/s a 1080p photo at
#: quality 85 is 299 KB, 1.2 s on the wire; at 45, 142 KB: shown in well under a second.)
FIRST_PAINT_SECONDS = 0.5
#: Never below this quality (PSNR of the photo above: 33 dB).
MIN_JPEG_QUALITY = 30
#: Bytes per pixel at quality 85 before a session has seen any JPEG of its own: a detailed
#: photo's (the corpus photo: 0.144).
PRIOR_BYTES_PER_PIXEL = 0.15
#: Areas smaller than this teach the budget nothing (headers dominate).
MIN_LEARN_PIXELS = 64 * 64


class JpegBudget:
    """JPEG quality for one update, so that its lossy pixels reach the client within
    :data:`FIRST_PAINT_SECONDS` at the link's bandwidth, never above the configured
    ``ceiling`` (``--jpeg-quality``) nor below :data:`MIN_JPEG_QUALITY`.

    libspice sends JPEG at a fixed quality (85); on a 2 Mbit/s link its 1080p photo takes
    over a second to appear.  Bytes are predicted from the area and the bytes per pixel this
    session's earlier JPEGs took (scaled to quality 85 by :data:`JPEG_SIZE_VS_85`), so a
    smooth gradient keeps a high quality where a detailed photo cannot.  Pure: no clock.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.bytes_per_pixel_85 = PRIOR_BYTES_PER_PIXEL

    def quality(self, lossy_pixels: int, bandwidth_bps: float | None) -> int:
        if bandwidth_bps is None or lossy_pixels <= 0:
            return self.ceiling
        budget = bandwidth_bps / 8 * FIRST_PAINT_SECONDS
        at_85 = lossy_pixels * self.bytes_per_pixel_85
        if at_85 * _relative_size(self.ceiling) <= budget:
            return self.ceiling
        for quality, relative in JPEG_SIZE_VS_85:
            if quality < self.ceiling and at_85 * relative <= budget:
                return quality
        return min(self.ceiling, MIN_JPEG_QUALITY)

    def observed(self, pixels: int, nbytes: int, quality: int) -> None:
        """An update's JPEG images: ``pixels`` in all, ``nbytes`` long, at ``quality``."""
        if pixels < MIN_LEARN_PIXELS:
            return
        relative = _relative_size(quality)
        sample = nbytes / pixels / relative
        # Half weight: one odd area (a flat sky) does not swing the next photo's quality.
        self.bytes_per_pixel_85 = (self.bytes_per_pixel_85 + sample) / 2


def _relative_size(quality: int) -> float:
    """:data:`JPEG_SIZE_VS_85` at ``quality``, interpolated."""
    above = JPEG_SIZE_VS_85[0]
    for point in JPEG_SIZE_VS_85:
        if quality >= point[0]:
            if point is above:
                return point[1]
            span = above[0] - point[0]
            return point[1] + (above[1] - point[1]) * (quality - point[0]) / span
        above = point
    return JPEG_SIZE_VS_85[-1][1]


def subtract(rect: Rect, cut: Rect) -> list[Rect]:
    """``rect`` minus ``cut``: up to four rectangles (bands above and below, sides between)."""
    x0, y0 = max(rect.x, cut.x), max(rect.y, cut.y)
    x1, y1 = min(rect.right, cut.right), min(rect.bottom, cut.bottom)
    if x0 >= x1 or y0 >= y1:
        return [rect]
    parts = []
    if rect.y < y0:
        parts.append(Rect(rect.x, rect.y, rect.width, y0 - rect.y))
    if y1 < rect.bottom:
        parts.append(Rect(rect.x, y1, rect.width, rect.bottom - y1))
    if rect.x < x0:
        parts.append(Rect(rect.x, y0, x0 - rect.x, y1 - y0))
    if x1 < rect.right:
        parts.append(Rect(x1, y0, rect.right - x1, y1 - y0))
    return parts


def overlaps(a: Rect, b: Rect) -> bool:
    return a.x < b.right and b.x < a.right and a.y < b.bottom and b.y < a.bottom


def intersection(a: Rect, b: Rect) -> Rect | None:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.right, b.right), min(a.bottom, b.bottom)
    return Rect(x0, y0, x1 - x0, y1 - y0) if x0 < x1 and y0 < y1 else None


def contains(outer: Rect, inner: Rect) -> bool:
    return (
        outer.x <= inner.x
        and outer.y <= inner.y
        and inner.right <= outer.right
        and inner.bottom <= outer.bottom
    )


@dataclass(slots=True)
class _Area:
    rect: Rect
    #: When the client had it (its PONG came) or it was last damaged: it is still since
    #: then.  None: sent, not yet known to be drawn.
    since: float | None
    #: Due: in the dirty region, to be sent losslessly by the next update.
    due: bool = False


class LossyAreas:
    """The areas a client holds lossy, at most ``max_areas`` rectangles (beyond that they
    merge into their bounding box: a larger refresh, never a missed one)."""

    def __init__(self, still: float, max_areas: int = 64) -> None:
        self.still = still
        self.max_areas = max_areas
        self._areas: list[_Area] = []

    def __bool__(self) -> bool:
        return bool(self._areas)

    def rects(self) -> list[Rect]:
        return [area.rect for area in self._areas]

    def sent(self, band: Rect, lossy: bool, now: float | None = None) -> None:
        """``band`` went out, lossy or not: it replaces what the client held there.  A lossy
        one waits for :meth:`delivered` (``now`` None) or counts as still from ``now``."""
        self._cut(band)
        if lossy:
            self._areas.append(_Area(band, now))
            if len(self._areas) > self.max_areas:
                bbox = self._areas[0].rect
                for area in self._areas[1:]:
                    bbox = bbox.union(area.rect)
                self._areas = [_Area(bbox, now)]

    def delivered(self, now: float) -> None:
        """The client has drawn everything sent so far (a PONG): still from ``now``."""
        for area in self._areas:
            if area.since is None:
                area.since = now

    def damaged(self, rects: list[Rect], now: float) -> None:
        """Damage: the areas it touches are not still (whatever is sent next replaces them)."""
        for area in self._areas:
            moving = not area.due and area.since is not None
            if moving and any(overlaps(area.rect, rect) for rect in rects):
                area.since = now

    def moved(self, rect: Rect, now: float) -> None:
        """A COPY_BITS within ``rect``: lossy pixels it carries may land anywhere in it, so
        all of it is lossy now (refreshed once still)."""
        if any(overlaps(area.rect, rect) for area in self._areas):
            self.sent(rect, True, now)

    def take_due(self, now: float, limit: int | None = None) -> list[Rect]:
        """Up to ``limit`` areas still for ``still`` seconds, oldest first, now due (they
        stay until sent losslessly)."""
        waiting = sorted(
            (area for area in self._areas if not area.due and area.since is not None),
            key=lambda area: area.since or 0.0,
        )
        due = []
        for area in waiting[:limit]:
            if area.since is not None and now - area.since >= self.still - 1e-3:  # jitter
                area.due = True
                due.append(area.rect)
        return due

    def next_due(self) -> float | None:
        """When the next area falls due (None: none waiting, or none delivered yet)."""
        times = [
            area.since + self.still
            for area in self._areas
            if not area.due and area.since is not None
        ]
        return min(times) if times else None

    def forced_lossless(self, band: Rect) -> bool:
        """Whether ``band`` covers an area due for its lossless refresh."""
        return any(area.due and overlaps(area.rect, band) for area in self._areas)

    def update_done(self, now: float) -> None:
        """After an update: a due area it did not cover (the surface changed meanwhile)
        starts waiting again rather than staying due for ever."""
        for area in self._areas:
            if area.due:
                area.due, area.since = False, now

    def clear(self) -> None:
        self._areas = []

    def _cut(self, band: Rect) -> None:
        areas = []
        for area in self._areas:
            if not overlaps(area.rect, band):
                areas.append(area)
                continue
            areas.extend(_Area(part, area.since, area.due) for part in subtract(area.rect, band))
        self._areas = areas
