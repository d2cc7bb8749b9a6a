"""The served display as an H.264 MP4, encoded through PyAV on a worker thread.

Why this shape: the video must show what the *client* was sent, so its frames are built from the
very pixel snapshots handed to the image encoder (never re-read from the source, which may have
moved on), painted onto a canvas that mirrors the client's surface.  One video frame is written
per screen update (one pass of the display update loop: one or more DRAW_COPYs, then possibly a
MARK), stamped with the update's wall-clock time, so idle time costs nothing and the timeline
matches the pcap's.

Threads: :meth:`VideoWriter.update` runs on the event loop and paints the snapshots onto the
canvas (a copy proportional to the update, like the read that produced them).  A worker thread
takes a copy of the canvas when it is free and encodes it; PyAV releases the GIL while FFmpeg
converts and encodes.  Only when an update arrives before the worker has taken the previous one
does the event loop copy the canvas, into a bounded queue (:data:`MAX_QUEUE` frames and
:data:`QUEUE_BYTES`); when that is full, the waiting frame merges into the new one (counted, and
logged when the file closes).  So a slow encoder costs frames, never unbounded memory.

Format: H.264 (libx264, ``ultrafast`` + ``zerolatency``: no lookahead, so no frames pile up in
the encoder) in fragmented MP4 (``frag_keyframe+empty_moov``), so the file is written as the
session runs, stays playable if the process dies, and its index never grows in memory.  4:2:0
chroma when the surface's width and height are even (what every player plays); 4:4:4 otherwise,
because 4:2:0 cannot represent odd sizes and the video must keep the surface's exact size.
Timestamps are in milliseconds from the first frame (time base 1/1000, variable frame rate).
"""

from __future__ import annotations

import collections
import contextlib
import fractions
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["VideoWriter", "video_unavailable_reason"]

logger = logging.getLogger("spiceserver.capture")

CODEC = "libx264"
#: Keyframe interval in frames; also the fragment length, so the most the muxer holds.
GOP_SIZE = 120
#: Time base of the stream: milliseconds.
TIME_BASE = fractions.Fraction(1, 1000)
#: Most frames queued for the encoder, and the most bytes they may take.
MAX_QUEUE = 8
QUEUE_BYTES = 32 * 1024 * 1024
ENCODER_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}
MUXER_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


class RectLike(Protocol):
    @property
    def x(self) -> int: ...

    @property
    def y(self) -> int: ...


def video_unavailable_reason() -> str | None:
    """Why no video can be written here (``None``: PyAV with libx264 is available)."""
    try:
        import av
    except ImportError:
        return "PyAV is not installed (pip install av; in a clone: pip install -e '.[capture]')"
    try:
        av.codec.Codec(CODEC, "w")
    except Exception as exc:  # PyAV raises its own UnknownCodecError / ValueError
        return f"this PyAV build has no {CODEC} encoder ({exc})"
    return None


class VideoWriter:
    """One MP4 file at one surface size, fed from the event loop, encoded on its own thread.

    Args:
        path: the file to create.
        width: surface width in pixels.
        height: surface height in pixels.
        on_done: called from the worker thread once the file is closed (or failed).
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        on_done: Callable[[VideoWriter], None] | None = None,
    ) -> None:
        self.path = path
        self.width = width
        self.height = height
        self.frames_written = 0
        #: Updates folded into a later frame because the encoder was still busy.
        self.frames_merged = 0
        self.error: BaseException | None = None
        self.canvas = np.zeros((height, width, 4), dtype=np.uint8)
        self._on_done = on_done
        self._cond = threading.Condition()
        self._pending: float | None = None  # wall-clock time of the newest unencoded update
        #: Older frames waiting for the encoder, copied from the canvas: bounded by
        #: QUEUE_BYTES (at least one frame), so a slow encoder costs frames, never memory.
        self._queue: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self.max_queue = max(1, min(MAX_QUEUE, QUEUE_BYTES // max(1, self.canvas.nbytes)))
        self._first: float | None = None
        self._last_pts = -1
        self._finishing = False
        self._thread = threading.Thread(target=self._run, name=f"capture-video {path.name}")
        self._thread.start()

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def update(
        self,
        snapshots: Iterable[tuple[RectLike, np.ndarray]],
        ts: float,
        copies: Iterable[tuple[RectLike, int, int]] = (),
    ) -> None:
        """Paint the pixels the client was sent, and queue a frame stamped ``ts``.

        ``copies`` (COPY_BITS: destination box with ``width`` and ``height``, src_x, src_y)
        move canvas pixels first, in order, as the client did before the snapshots' draws.
        """
        with self._cond:
            if self._finishing:
                return
            if self._pending is not None:
                # The worker has not taken the previous update yet: keep its frame as a copy
                # while the queue has room; otherwise it merges into this one.
                if len(self._queue) < self.max_queue:
                    self._queue.append((self._pending, self.canvas.copy()))
                else:
                    self.frames_merged += 1
            canvas = self.canvas
            for box, src_x, src_y in copies:
                w, h = _copy_size(box, canvas, src_x, src_y)
                # numpy copies an overlapping source out first, as the client's canvas does.
                canvas[box.y : box.y + h, box.x : box.x + w] = canvas[
                    src_y : src_y + h, src_x : src_x + w
                ]
            for rect, pixels in snapshots:
                # Clipped to the canvas: a snapshot never exceeds its surface, but a bad one
                # must not stop the video.
                height, width = pixels.shape[:2]
                target = canvas[rect.y : rect.y + height, rect.x : rect.x + width]
                target[...] = pixels[: target.shape[0], : target.shape[1]]
            self._pending = ts
            self._cond.notify()

    def finish(self) -> None:
        """Encode what is queued, then close the file (on the worker thread; returns at once)."""
        with self._cond:
            self._finishing = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to close the file; whether it did within ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        container: Any = None
        try:
            import av

            container = av.open(str(self.path), "w", format="mp4", options=MUXER_OPTIONS)
            stream = container.add_stream(CODEC, options=ENCODER_OPTIONS)
            stream.width = self.width
            stream.height = self.height
            even = self.width % 2 == 0 and self.height % 2 == 0
            stream.pix_fmt = "yuv420p" if even else "yuv444p"
            stream.codec_context.time_base = TIME_BASE
            stream.codec_context.gop_size = GOP_SIZE
            while True:
                # Pixels are copied straight into the frame with numpy, which releases the GIL
                # while copying (VideoFrame.from_ndarray holds it for milliseconds, which the
                # event loop would feel).
                frame = av.VideoFrame(self.width, self.height, "bgra")
                plane = frame.planes[0]
                target = np.frombuffer(memoryview(plane), np.uint8, self.height * plane.line_size)
                target = target.reshape(self.height, plane.line_size)[:, : self.width * 4]
                with self._cond:
                    while not self._queue and self._pending is None and not self._finishing:
                        self._cond.wait()
                    if self._queue:
                        ts, pixels = self._queue.popleft()
                    elif self._pending is not None:
                        ts = self._pending
                        self._pending = None
                        pixels = self.canvas
                    else:
                        break  # finishing, nothing left
                    if pixels is self.canvas:
                        target[...] = pixels.reshape(self.height, self.width * 4)
                if pixels is not self.canvas:  # a queued copy: nobody else writes it
                    target[...] = pixels.reshape(self.height, self.width * 4)
                del target, plane, pixels
                frame.pts = self._pts(ts)
                frame.time_base = TIME_BASE
                for packet in stream.encode(frame):
                    container.mux(packet)
                self.frames_written += 1
            for packet in stream.encode(None):
                container.mux(packet)
            container.close()
            container = None
            merged = (
                f" ({self.frames_merged} updates merged into later frames: encoder behind)"
                if self.frames_merged
                else ""
            )
            logger.info(
                "capture: %s: %d frames at %dx%d%s",
                self.path,
                self.frames_written,
                self.width,
                self.height,
                merged,
            )
        except Exception as exc:
            self.error = exc
            logger.warning("capture: video %s failed, no more video for it: %s", self.path, exc)
            with self._cond:
                self._finishing = True
                self._queue.clear()
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()
        finally:
            if self._on_done is not None:
                try:
                    self._on_done(self)
                except Exception:
                    logger.exception("capture: video completion callback failed")

    def _pts(self, ts: float) -> int:
        """Milliseconds since the first frame, strictly increasing (MP4 needs unique times)."""
        if self._first is None:
            self._first = ts
        pts = max(round((ts - self._first) * 1000), self._last_pts + 1)
        self._last_pts = pts
        return pts


def _copy_size(box: Any, canvas: np.ndarray, src_x: int, src_y: int) -> tuple[int, int]:
    """A COPY_BITS box's size, cut so that source and destination stay on the canvas."""
    height, width = canvas.shape[:2]
    w = min(box.width, width - box.x, width - src_x)
    h = min(box.height, height - box.y, height - src_y)
    if min(box.x, box.y, src_x, src_y) < 0:
        return 0, 0
    return max(0, w), max(0, h)
