"""Video streams for one display client: which regions play like a video, and how each
stream fares.  Pure bookkeeping, time passed in; the update loop (update_loop.py) encodes and
sends.

**Detection** (libspice's rules, ``spice:server/video-stream.h`` and ``video-stream.cpp``,
made quicker): a rectangle the source damages again and again, the same one each time, each
update at most :data:`DETECTION_MAX_DELTA` after the last, for at least :data:`START_SECONDS`
at :data:`START_FPS` or more, and at least :data:`MIN_AREA` pixels (libspice:
``RED_STREAM_MIN_SIZE`` 96×96, 20 frames each ≤ 200 ms apart).  With ``streaming_video
= filter`` (QEMU's default) its pixels must also look photographic (codecs.classify: gradual or
smooth): text scrolling in a terminal stays lossless.

**Lifecycle**: damage inside the stream's rectangle becomes its next frame (latest wins: one
frame is encoded from the pixels of the moment, none queue).  Damage that crosses its edge
is something over the video (a window, a menu): its part of the rectangle is cut out of the
stream's visible region, sent to the client as STREAM_CLIP, and goes as lossless images; the
stream plays on around it.  libspice does the same (``spice:server/display-channel.cpp``
``streams_update_visible_region`` excludes every other drawable from the stream's clip), and
gives the area back when a frame of the stream covers it again
(``spice:server/video-stream.cpp`` ``attach_stream``): here, damage inside the
rectangle that reaches the visible region is a frame, and uncovers the hidden parts it
covers (an X server reports no damage under a window, so the window went away); damage
only within the hidden part is the covering window's own, sent as images.  spice-gtk
applies the clip when it shows a frame (``spice-gtk:src/channel-display.c``
``stream_display_frame``), so frames already queued respect it too; spice-html5 ignores
clips (``display.js`` draws each frame whole), but a frame holds the screen's pixels, the
window's included, so it shows them lossy until the lossless repaint.  A stream clipped to
less than :data:`MIN_VISIBLE` of its area or into more than :data:`MAX_CLIP_RECTS`
rectangles ends (the video moved, or is mostly hidden), as does a second of stillness
(``RED_STREAM_TIMEOUT``).  An ended stream's area is then repainted losslessly, so the screen
settles to exact pixels (libspice ``dcc_detach_stream_gracefully`` does the same upgrade).

**Rate control** from STREAM_REPORT (``spice:server/mjpeg-encoder.c`` steps quality and frame
rate the same way): drops or late frames step the JPEG quality down, then the frame rate; a
run of clean reports steps them back up.  And from the link estimate (bandwidth.py), all the
while the stream plays (:meth:`VideoStream.follow_link`; libspice only starts from it,
``get_initial_bit_rate``): a stream may use :data:`LINK_SHARE` of it.  Its frames' measured
size says how many a second fit; fewer than the report's rate caps the frame rate (a frame
not sent is never encoded: frames drop, none queue), fewer than :data:`LINK_MIN_FPS` steps
MJPEG quality down (back up once twice the full rate fits), and an H.264/VP8/VP9 encoder
whose bit rate is far from the share is rebuilt at it (a keyframe: not more often than
:data:`BIT_RATE_HOLD`).  A report of ``num_frames 0, num_drops 0xFFFFFFFF``
(the client cannot decode the stream) ends it and that codec is not tried again for the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spiceserver.protocol.enums import VideoCodec
from spiceserver.protocol.events import StreamReported
from spiceserver.server.channels.display.lossy import contains, intersection, subtract
from spiceserver.sources.base import Rect

__all__ = [
    "DETECTION_MAX_DELTA",
    "MIN_AREA",
    "STREAM_TIMEOUT",
    "StreamDetector",
    "VideoStream",
    "choose_codec",
    "initial_bit_rate",
]

#: Smallest area streamed, in pixels (spice:server/video-stream.h RED_STREAM_MIN_SIZE).
MIN_AREA = 96 * 96
#: Longest gap between two updates of a candidate (libspice DETECTION_MAX_DELTA, 200 ms).
DETECTION_MAX_DELTA = 0.2
#: A candidate streams once updated for this long ...
START_SECONDS = 0.5
#: ... at this rate or more ...
START_FPS = 10.0
#: ... and at least this often (libspice waits for 20 frames: ~0.7 s at 30 fps).
START_FRAMES = 6
#: From this many updates on, a candidate's frames go as JPEG images (where the client takes
#: lossy ones: the stream would be lossy too) rather than lossless ones: the ~0.5 s of
#: detection of a 320x240 clip were 16 QUIC images, 1.8 MB.  Not from the first: one
#: update of an area (a dialog appearing, a photo opened) stays lossless.
CANDIDATE_LOSSY_FRAMES = 2
#: A stream not updated for this long ends (libspice RED_STREAM_TIMEOUT, 1 s).
STREAM_TIMEOUT = 1.0
#: A region the filter refused is not looked at again for this long.
REJECT_SECONDS = 2.0
#: Candidates tracked at once (the oldest go first).
MAX_CANDIDATES = 16
#: STREAM_ACTIVATE_REPORT: a report every this many frames or milliseconds (libspice
#: RED_STREAM_CLIENT_REPORT_WINDOW 5, RED_STREAM_CLIENT_REPORT_TIMEOUT 1000).
REPORT_WINDOW = 5
REPORT_TIMEOUT_MS = 1000
#: A stream clipped to less than this share of its area ends ...
MIN_VISIBLE = 0.25
#: ... and so does one whose visible region takes more rectangles than this.
MAX_CLIP_RECTS = 16
#: MJPEG quality steps, best first, and the frame-rate caps (frames per second), best first.
QUALITIES = (80, 70, 60, 50, 40, 30, 20)
FRAME_RATES = (30.0, 20.0, 15.0, 10.0, 5.0)
#: Clean reports in a row before a step back up.
CLEAN_REPORTS_TO_RAISE = 3
#: ``--video-codecs`` names.
CODEC_NAMES: dict[str, VideoCodec] = {
    "mjpeg": VideoCodec.MJPEG,
    "vp8": VideoCodec.VP8,
    "h264": VideoCodec.H264,
    "vp9": VideoCodec.VP9,
}
#: The share of the link's estimate a stream may use (libspice keeps 20 % for the rest).
LINK_SHARE = 0.8
#: Below this many frames a second within the share, MJPEG quality steps down ...
LINK_MIN_FPS = 10.0
#: ... at most once in this many seconds (the next frames' size must show the step's effect).
LINK_STEP_SECONDS = 0.5
#: An encoder's bit rate is rebuilt when the share is off by this factor either way ...
BIT_RATE_SLACK = 1.3
#: ... at most once in this many seconds.
BIT_RATE_HOLD = 2.0
#: Weight of the newest frame in the running mean of frame sizes.
FRAME_SIZE_WEIGHT = 0.25
#: Bits per pixel and frame a stream starts with (PyAV codecs): 1080p30 ~9 Mbit/s, 320x240
#: ~0.35 Mbit/s; never above 80 % of the link's estimate (libspice get_initial_bit_rate
#: keeps 20 % for other traffic), never below :data:`MIN_BIT_RATE`.
BITS_PER_PIXEL = 0.15
MIN_BIT_RATE = 200_000


def initial_bit_rate(rect: Rect, link_bps: float | None) -> int:
    rate = rect.area * 30 * BITS_PER_PIXEL
    if link_bps is not None:
        rate = min(rate, LINK_SHARE * link_bps)
    return int(max(MIN_BIT_RATE, rate))


def choose_codec(
    client: tuple[VideoCodec, ...],
    client_ranked: bool,
    server: tuple[str, ...],
    refused: set[VideoCodec],
    available: frozenset[VideoCodec] = frozenset({VideoCodec.MJPEG}),
) -> VideoCodec | None:
    """The stream codec: among those the client decodes (``client``, in its preference
    order when ``client_ranked``) and the server encodes (``available``) and allows
    (``server``, in its order), not ``refused``; the client's order first, as libspice
    (``dcc_create_video_encoder``)."""
    allowed = [CODEC_NAMES[name] for name in server if CODEC_NAMES.get(name) in available]
    usable = [codec for codec in allowed if codec in client and codec not in refused]
    if client_ranked:
        usable.sort(key=client.index)
    return usable[0] if usable else None


@dataclass(slots=True)
class _Candidate:
    rect: Rect
    first: float
    last: float
    frames: int = 1
    rejected_until: float = 0.0


class StreamDetector:
    """Rectangles damaged like a video (see the module's rules)."""

    def __init__(self) -> None:
        self._candidates: dict[Rect, _Candidate] = {}

    def damaged(self, rects: list[Rect], now: float) -> None:
        for rect in rects:
            if rect.area < MIN_AREA:
                continue
            candidate = self._candidates.get(rect)
            if candidate is None or now - candidate.last > DETECTION_MAX_DELTA:
                rejected = candidate.rejected_until if candidate else 0.0
                self._candidates[rect] = _Candidate(rect, now, now, rejected_until=rejected)
            elif now > candidate.last:  # several reports in one instant are one update
                candidate.frames += 1
                candidate.last = now
        if len(self._candidates) > MAX_CANDIDATES:
            oldest = sorted(self._candidates.values(), key=lambda c: c.last)
            for candidate in oldest[: len(oldest) - MAX_CANDIDATES]:
                del self._candidates[candidate.rect]

    def candidate(self, now: float) -> Rect | None:
        """The largest rectangle that plays like a video now (None: none)."""
        best: _Candidate | None = None
        for c in self._candidates.values():
            span = c.last - c.first
            if (
                now - c.last <= DETECTION_MAX_DELTA
                and now >= c.rejected_until
                and c.frames >= START_FRAMES
                and span >= START_SECONDS - 1e-6
                and (c.frames - 1) / span >= START_FPS - 1e-6
                and (best is None or c.rect.area > best.rect.area)
            ):
                best = c
        return None if best is None else best.rect

    def playing(self, now: float) -> list[Rect]:
        """Rectangles updated like a video now, not (yet) streamed: at least
        :data:`CANDIDATE_LOSSY_FRAMES` updates, the latest one just now, not refused by the
        filter."""
        return [
            c.rect
            for c in self._candidates.values()
            if c.frames >= CANDIDATE_LOSSY_FRAMES
            and now - c.last <= DETECTION_MAX_DELTA
            and now >= c.rejected_until
        ]

    def reject(self, rect: Rect, now: float) -> None:
        """The filter refused ``rect`` (not photographic): leave it for a while."""
        candidate = self._candidates.get(rect)
        if candidate is not None:
            candidate.rejected_until = now + REJECT_SECONDS

    def forget(self, rect: Rect) -> None:
        self._candidates.pop(rect, None)

    def clear(self) -> None:
        self._candidates.clear()


@dataclass(slots=True)
class VideoStream:
    """One stream sent to the client: its area, codec, and rate control state."""

    id: int
    rect: Rect
    codec: VideoCodec
    #: Last damage inside the area (the stream ends :data:`STREAM_TIMEOUT` after it).
    last_damage: float
    #: Damage since the last frame: a frame is owed.
    pending: bool = True
    #: When the last frame was sent (None: none yet).
    last_frame: float | None = None
    frames: int = 0
    bytes: int = 0
    #: Steps into QUALITIES and FRAME_RATES (0: best).
    quality_step: int = 0
    rate_step: int = 0
    clean_reports: int = 0
    #: The unique_id of the latest STREAM_ACTIVATE_REPORT (reports of another are stale).
    report_id: int = 0
    started: float = 0.0
    max_quality: int = QUALITIES[0]
    qualities: tuple[int, ...] = field(default=QUALITIES)
    #: Its frame encoder (video.py): state of an inter-frame codec lives here.
    encoder: Any = None
    #: The encoder's bit rate (H.264, VP8, VP9) and when it was set; a new one the encoder
    #: is to be rebuilt at before its next frame (None: keep it).
    bit_rate: int = 0
    bit_rate_at: float = 0.0
    rebuild_bit_rate: int | None = None
    #: Rate control from the link: the share in bits per second (None: no estimate), the
    #: frame rate it allows, MJPEG's quality step from it, when that last moved.
    link_budget: float | None = None
    link_fps: float | None = None
    link_quality_step: int = 0
    link_step_at: float = 0.0
    #: Running mean of the frames' size in bits (0: no frame yet) and frames at this quality.
    frame_bits: float = 0.0
    frames_at_quality: int = 0
    #: Parts of ``rect`` something covers (cut out of its clip), and the clip the client
    #: was last sent (None: all of it).
    hidden: list[Rect] = field(default_factory=list)
    client_clip: tuple[tuple[int, int, int, int], ...] | None = None

    @property
    def quality(self) -> int:
        step = max(self.quality_step, self.link_quality_step)
        return min(self.max_quality, self.qualities[step])

    @property
    def min_interval(self) -> float:
        interval = 1.0 / FRAME_RATES[self.rate_step]
        if self.link_fps is not None:
            interval = max(interval, 1.0 / self.link_fps)
        return interval

    @property
    def throttled(self) -> bool:
        """Its frame rate is capped below the update loop's (by reports or the link)."""
        return self.rate_step > 0 or (self.link_fps is not None and self.link_fps < FRAME_RATES[0])

    def damaged(self, now: float) -> None:
        self.pending = True
        self.last_damage = now

    def visible(self) -> list[Rect]:
        """Its rectangle less the hidden parts: disjoint rectangles."""
        parts = [self.rect]
        for hidden in self.hidden:
            parts = [part for rect in parts for part in subtract(rect, hidden)]
        return parts

    def clip(self) -> tuple[tuple[int, int, int, int], ...] | None:
        """STREAM_CLIP's rectangles (x, y, w, h); None: all of it (clip NONE)."""
        if not self.hidden:
            return None
        return tuple((r.x, r.y, r.width, r.height) for r in self.visible())

    def cover(self, rect: Rect) -> None:
        """``rect`` lies over the video: cut its part out of the clip."""
        cut = intersection(rect, self.rect)
        if cut is None or any(contains(hidden, cut) for hidden in self.hidden):
            return
        self.hidden = [hidden for hidden in self.hidden if not contains(cut, hidden)]
        self.hidden.append(cut)

    def uncover(self, rect: Rect) -> list[Rect]:
        """A frame paints ``rect``: hidden parts within it are the video's again.  Returns
        them."""
        shown = [cut for hidden in self.hidden if (cut := intersection(hidden, rect))]
        if shown:
            self.hidden = [part for hidden in self.hidden for part in subtract(hidden, rect)]
        return shown

    def clip_owed(self) -> bool:
        """The client's clip differs from :meth:`clip` (a STREAM_CLIP is owed); from now on
        it is taken as sent."""
        clip = self.clip()
        if clip == self.client_clip:
            return False
        self.client_clip = clip
        return True

    def clipped_away(self) -> bool:
        """Too little of it is visible, or in too many pieces (see the module's rules)."""
        if not self.hidden:
            return False
        if len(self.hidden) > 4 * MAX_CLIP_RECTS:  # bounds the bookkeeping too
            return True
        visible = self.visible()
        area = sum(part.area for part in visible)
        return area < MIN_VISIBLE * self.rect.area or len(visible) > MAX_CLIP_RECTS

    def frame_due(self, now: float, max_fps: float) -> bool:
        """A frame is owed and the frame-rate cap allows it now."""
        if not self.pending:
            return False
        at = self.next_frame_at(max_fps)
        return at is not None and now >= at

    def next_frame_at(self, max_fps: float) -> float | None:
        """When a pending frame may go (None: none pending)."""
        if not self.pending:
            return None
        if self.last_frame is None or not self.throttled:
            return 0.0  # the update loop paces to max_fps already
        # The cap from rate control, less the update loop's slot headroom (jitter).
        return self.last_frame + max(self.min_interval, 1.0 / max_fps) * 0.95

    def sent(self, size: int, now: float) -> None:
        self.pending = False
        self.last_frame = now
        self.frames += 1
        self.bytes += size
        bits = size * 8.0
        if self.frame_bits:
            bits = FRAME_SIZE_WEIGHT * bits + (1 - FRAME_SIZE_WEIGHT) * self.frame_bits
        self.frame_bits = bits
        self.frames_at_quality += 1

    def follow_link(self, link_bps: float | None, now: float) -> int | None:
        """Rate control from the link's estimate (see the module's rules); returns the bit
        rate to rebuild the encoder at (also kept in :attr:`rebuild_bit_rate` until its next
        frame), or None to keep it."""
        if link_bps is None:
            self.link_budget = self.link_fps = None
            return None
        budget = self.link_budget = LINK_SHARE * link_bps
        if self.frame_bits:  # at least one a second: below that, latest-wins drops them
            self.link_fps = max(1.0, budget / self.frame_bits)
        if self.codec == VideoCodec.MJPEG:
            self._link_quality(now)
            return None
        wanted = int(max(MIN_BIT_RATE, min(self.natural_bit_rate, budget)))
        off = max(wanted, self.bit_rate) / max(1, min(wanted, self.bit_rate))
        if off < BIT_RATE_SLACK or now - self.bit_rate_at < BIT_RATE_HOLD:
            return None
        self.bit_rate, self.bit_rate_at = wanted, now
        self.frame_bits = 0.0  # the rebuilt encoder's frames differ: measure afresh
        self.rebuild_bit_rate = wanted
        return wanted

    @property
    def natural_bit_rate(self) -> float:
        """The bit rate it starts with on an unknown link (BITS_PER_PIXEL at 30 fps)."""
        return self.rect.area * 30 * BITS_PER_PIXEL

    def _link_quality(self, now: float) -> None:
        fps = self.link_fps
        if fps is None or now - self.link_step_at < LINK_STEP_SECONDS:
            return
        if self.frames_at_quality < 2:
            return  # the size of frames at this quality is not known yet
        step = self.link_quality_step
        if fps < LINK_MIN_FPS and step < len(self.qualities) - 1:
            step += 1
        elif fps > 2 * FRAME_RATES[0] and step > 0:
            step -= 1
        else:
            return
        self.link_quality_step, self.link_step_at = step, now
        self.frames_at_quality = 0

    def timed_out(self, now: float) -> bool:
        return now - self.last_damage >= STREAM_TIMEOUT

    def report(self, report: StreamReported) -> None:
        """Rate control: drops or late frames step down (quality first, then frame rate);
        :data:`CLEAN_REPORTS_TO_RAISE` clean reports in a row step back up."""
        if report.unique_id != self.report_id:
            return
        late = report.last_frame_delay < 0
        if report.num_drops > 0 or late:
            self.clean_reports = 0
            mjpeg = self.codec == VideoCodec.MJPEG  # the others: frame rate only
            if mjpeg and self.quality_step < len(self.qualities) - 1:
                self.quality_step += 1
                self.frames_at_quality = 0
            elif self.rate_step < len(FRAME_RATES) - 1:
                self.rate_step += 1
            return
        self.clean_reports += 1
        if self.clean_reports >= CLEAN_REPORTS_TO_RAISE:
            self.clean_reports = 0
            if self.rate_step > 0:
                self.rate_step -= 1
            elif self.quality_step > 0:
                self.quality_step -= 1
                self.frames_at_quality = 0
