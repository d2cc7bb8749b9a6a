"""The display channel's video streams: when one starts, what its frames are, when it ends.

The base of :class:`~spiceserver.server.channels.display.update_loop.DisplayHandler`, which
calls these from its update loop; the detection and the rules are :mod:`.streams`'.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import numpy as np

from spiceserver.protocol.display import DisplayChannel
from spiceserver.protocol.enums import DisplayCap, VideoCodec, has_cap
from spiceserver.protocol.events import StreamReported
from spiceserver.protocol.main import mm_time
from spiceserver.record import stream_record
from spiceserver.server.channels.base import ChannelHandler
from spiceserver.server.channels.display.lossy import LossyAreas, contains, overlaps
from spiceserver.server.channels.display.streams import (
    REPORT_TIMEOUT_MS,
    REPORT_WINDOW,
    StreamDetector,
    VideoStream,
    choose_codec,
    initial_bit_rate,
)
from spiceserver.server.channels.display.video import FrameEncoder, av_available, make_encoder
from spiceserver.server.codecs import MODES, ImageEncoder, classify
from spiceserver.server.fault_injection import FrameFault
from spiceserver.sources.base import Rect

__all__ = ["STREAM_LATENCY", "StreamControl", "encode_frame"]

logger = logging.getLogger("spiceserver.channels")

#: Stream frames are stamped this far ahead of the mm-clock, plus the round trip: a frame
#: stamped in the past is late and spice-gtk drops it (spice-gtk:src/channel-display.c).
STREAM_LATENCY = 0.1

#: Stream codecs this server encodes (H.264, VP8 and VP9 need PyAV and an even size).
_ENCODABLE = frozenset(VideoCodec) - {VideoCodec.H265}
_MJPEG_ONLY = frozenset({VideoCodec.MJPEG})


def encode_frame(stream: VideoStream, pixels: np.ndarray, rebuild: int | None) -> bytes:
    """A stream's next frame, on a worker thread; first its encoder rebuilt at bit rate
    ``rebuild`` (rate control from the link: opening one takes milliseconds, not for the
    loop).  The update loop awaits each frame before the next: one at a time per stream."""
    if rebuild is not None:
        rect = stream.rect
        try:
            stream.encoder = make_encoder(stream.codec, rect.width, rect.height, rebuild)
        except Exception:  # keep the one that works
            logger.exception("stream %d: rebuilding its encoder failed", stream.id)
        else:
            logger.debug("stream %d: bit rate %d from the link", stream.id, rebuild)
    encoder: FrameEncoder = stream.encoder
    return encoder.encode(pixels, stream.quality)


class StreamControl(ChannelHandler[DisplayChannel]):
    """The live stream of a display (at most one) and the decisions about it."""

    # Set up by DisplayHandler.__init__.
    encoder: ImageEncoder
    detector: StreamDetector
    lossy: LossyAreas
    stream: VideoStream | None
    frame_fault: FrameFault | None
    _jpeg: bool
    _refused_codecs: set[VideoCodec]
    _stream_ids: itertools.cycle[int]
    _report_ids: itertools.count[int]
    _wake: asyncio.Event

    def _may_stream(self) -> bool:
        """Streams are lossy: only where JPEG may go (an auto image compression, JPEG not
        "never", simplejpeg there) and ``streaming_video`` is not off."""
        config = self.context.config
        return (
            config.streaming_video != "off"
            and self._jpeg
            and MODES[self.encoder.compression].lossy is not None
        )

    def _candidate_bands(self, bands: list[Rect], now: float) -> list[bool] | None:
        """Which bands are frames of a stream candidate, to go lossy as its stream would
        (JPEG, refreshed losslessly once still): where this client may get a stream and
        decodes JPEG (CODEC_MJPEG), whatever the link.  None: none."""
        if not self._may_stream() or not has_cap(
            self.channel.client_channel_caps, DisplayCap.CODEC_MJPEG
        ):
            return None
        playing = self.detector.playing(now)
        if not playing:
            return None
        return [any(contains(rect, band) for rect in playing) for band in bands]

    def _stream_damage(self, stream: VideoStream, rects: list[Rect], now: float) -> list[Rect]:
        """Damage inside the stream owes it a frame (and uncovers what it paints); damage
        across its edge covers part of it (the stream is clipped), damage only within the
        covered part is the cover's own (streams.py has the rules).  Returns the damage
        that goes as images."""
        area = stream.rect
        rest = []
        for rect in rects:
            if not contains(area, rect):
                rest.append(rect)
                if overlaps(area, rect):
                    stream.cover(rect)
            elif stream.hidden and not any(overlaps(rect, part) for part in stream.visible()):
                rest.append(rect)
            else:
                stream.damaged(now)
                for part in stream.uncover(rect):
                    self.lossy.sent(part, False)  # the stream paints it again
        if stream.clipped_away():
            self._end_stream(now, "covered")
            self.detector.damaged(rects, now)
        return rest

    def _start_stream(self, now: float) -> None:
        """Create a stream for the detector's candidate, if this client may get one."""
        if not self._may_stream():
            return
        rect = self.detector.candidate(now)
        if rect is None:
            return
        channel, config = self.channel, self.context.config
        ranked = bool(channel.preferred_video_codecs)
        available = _ENCODABLE if rect.width % 2 == 0 and rect.height % 2 == 0 else _MJPEG_ONLY
        if available is _ENCODABLE and not av_available():
            available = _MJPEG_ONLY
        codec = choose_codec(
            channel.video_codecs(), ranked, config.video_codecs, self._refused_codecs, available
        )
        if codec is None or rect.clip(*self.context.source.size) != rect:
            self.detector.forget(rect)
            return
        if config.streaming_video == "filter":
            kind = classify(self.context.source.read(rect))
            if not (kind.gradual or kind.smooth):
                self.detector.reject(rect, now)
                return
        self.detector.forget(rect)
        link = self.session.metrics.link
        bit_rate = initial_bit_rate(rect, link.bandwidth(now))
        try:
            encoder = make_encoder(codec, rect.width, rect.height, bit_rate)
        except Exception:  # an FFmpeg build without the encoder, say: not this codec
            logger.exception("%s: no %s encoder", self.connection.name, codec.name)
            self._refused_codecs.add(codec)
            return
        stream_id, report_id = next(self._stream_ids), next(self._report_ids)
        channel.stream_create(
            stream_id, codec, (rect.x, rect.y, rect.width, rect.height), mm_time(now)
        )
        channel.stream_activate_report(stream_id, report_id, REPORT_WINDOW, REPORT_TIMEOUT_MS)
        self.stream = VideoStream(
            stream_id,
            rect,
            codec,
            last_damage=now,
            report_id=report_id,
            started=now,
            max_quality=config.jpeg_quality,
            encoder=encoder,
            bit_rate=bit_rate,
            bit_rate_at=now,
        )
        self.lossy.sent(rect, False)  # the stream paints it from here on
        metrics = self.session.metrics
        metrics.streams += 1
        metrics.stream_started = now
        if self.context.recorders:
            area = [rect.x, rect.y, rect.width, rect.height]
            name = codec.name.lower()
            self.record(stream_record("stream_create", stream_id, codec=name, rect=area))
        logger.info(
            "%s: stream %d (%s) for %dx%d at %d,%d",
            self.connection.name,
            stream_id,
            codec.name,
            rect.width,
            rect.height,
            rect.x,
            rect.y,
        )

    def _send_frame(self, stream: VideoStream, frame: bytes, now: float) -> None:
        link = self.session.metrics.link
        latency = STREAM_LATENCY + (link.round_trip or 0.0)
        fault = self.frame_fault
        if fault is not None:  # fault injection: as if sent, for pacing and rate control
            if fault.drop():
                stream.sent(len(frame), now)
                return
            latency += fault.shift
        self.channel.stream_data(stream.id, mm_time(now + latency), frame)
        stream.sent(len(frame), now)
        metrics = self.session.metrics
        metrics.stream_frames += 1
        metrics.bytes_by_codec[f"stream-{stream.codec.name.lower()}"] += len(frame) + 12

    def _stream_gone(self, now: float, reason: str) -> VideoStream | None:
        """Forget the live stream (its metrics kept); returns it."""
        stream, self.stream = self.stream, None
        metrics = self.session.metrics
        if stream is not None and self.context.recorders:
            frames, size = stream.frames, stream.bytes
            self.record(
                stream_record("stream_destroy", stream.id, frames=frames, bytes=size, reason=reason)
            )
        if stream is not None and metrics.stream_started is not None:
            # Its playing time: up to its last update, not its timeout (fps while it played).
            metrics.stream_seconds += max(0.0, stream.last_damage - metrics.stream_started)
            metrics.stream_started = None
        return stream

    def _end_stream(self, now: float, reason: str, refuse: bool = False) -> None:
        """STREAM_DESTROY; the client keeps its last (lossy) frame, so the area is due for its
        lossless refresh at once (libspice dcc_detach_stream_gracefully re-sends it too)."""
        stream = self._stream_gone(now, reason)
        if stream is None:
            return
        self.channel.stream_destroy(stream.id)
        if refuse:
            self._refused_codecs.add(stream.codec)
        self.lossy.sent(stream.rect, True, now - self.lossy.still)
        logger.info(
            "%s: stream %d ended after %d frames (%d bytes)%s",
            self.connection.name,
            stream.id,
            stream.frames,
            stream.bytes,
            ": the client cannot decode it" if refuse else "",
        )
        self._wake.set()

    def _stream_reported(self, report: StreamReported, now: float) -> None:
        stream = self.stream
        if stream is None or report.stream_id != stream.id:
            return
        if report.cannot_decode:
            self._end_stream(now, "cannot_decode", refuse=True)
            return
        stream.report(report)
        logger.debug(
            "%s: stream %d report: %d frames, %d drops, delay %d ms -> quality %d, %.0f fps",
            self.connection.name,
            stream.id,
            report.num_frames,
            report.num_drops,
            report.last_frame_delay,
            stream.quality,
            1 / stream.min_interval,
        )
