"""The display channel's server side: when to send what.

Damage from the source merges in a :class:`~spiceserver.region.DirtyRegion` while the client
is busy (ACK window closed, or the transport above its high-water mark); each update reads the
pixels at send time, so a slow client gets the newest pixels and never a queue of stale frames.
Updates are paced to ``max_fps`` on a schedule; a new surface is drawn whole, then MARKed
(``DisplayChannel.end_update``).  Encoding is :mod:`.encode`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiceserver.pacing import next_slot
from spiceserver.protocol.display import MAX_STREAMS, DisplayChannel
from spiceserver.protocol.enums import VideoCodec
from spiceserver.protocol.events import (
    CompressionPreferred,
    DisplayReady,
    PongReceived,
    StreamReported,
)
from spiceserver.protocol.messages import CursorShape
from spiceserver.record import stream_record
from spiceserver.region import DirtyRegion, split_rows
from spiceserver.scroll import PendingMoves, Scroll
from spiceserver.server.channels.display.encode import (
    Encoded,
    encode_bands,
    encode_inline,
    encodes_inline,
    read_for_encode,
    read_in_areas,
)
from spiceserver.server.channels.display.lossy import (
    JpegBudget,
    LossyAreas,
    overlaps,
    subtract,
    wan_allowed,
)
from spiceserver.server.channels.display.stream_control import StreamControl, encode_frame
from spiceserver.server.channels.display.streams import (
    STREAM_TIMEOUT,
    StreamDetector,
    VideoStream,
)
from spiceserver.server.codecs import (
    CODECS,
    MIN_SAMPLED_PIXELS,
    CodecSettings,
    ImageEncoder,
    jpeg_available,
)
from spiceserver.server.fault_injection import FrameFault, ImageCorrupter
from spiceserver.sources.base import Head, Rect

__all__ = ["MAX_BAND_PIXELS", "DisplayHandler"]

logger = logging.getLogger("spiceserver.channels")

#: Raw bitmaps are cut into bands of at most this many pixels (1 MiB), so one update never
#: sits in a single multi-megabyte message and the ACK window keeps its meaning.
MAX_BAND_PIXELS = 256 * 1024
#: Update slots are this fraction of ``1 / max_fps`` apart: a client may get up to 5% more
#: than ``max_fps`` updates from a faster source, and never loses frames of a source ticking
#: at ``max_fps`` to timer jitter.
PACING_HEADROOM = 0.95
#: Longest wait for the start-up PING's answer before the first frame (a client that never
#: answers still gets its frame; spice-gtk answers within a round trip).
SETTLE_TIMEOUT = 0.5
#: Longest wait for the session's net test before the first frame, with JPEG on "auto": at
#: 2 Mbit/s it takes about half a second, and decides between a JPEG and a QUIC first frame.
NET_TEST_TIMEOUT = 1.5
#: Lossless refreshes go out one area per round trip (see lossy.py) ...
REFRESH_AREAS = 1
#: ... and a client that does not answer that PING within this many seconds is taken to
#: have drawn them anyway (so its areas still get their refresh).
DELIVERY_TIMEOUT = 10.0
#: Longest wait for kernels loading from numba's cache before a first frame (seconds).
CACHED_WARMUP_WAIT = 2.0


class DisplayHandler(StreamControl):
    """Sends screen updates: damage merges while the client is busy; pixels read at send time
    (its video streams: :class:`~.stream_control.StreamControl`)."""

    protocol = DisplayChannel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dirty = DirtyRegion()
        self.need_surface = True
        config = self.context.config
        self.encoder = ImageEncoder(config.image_compression, ready=self.context.codecs_ready)
        self.encoder.settings = CodecSettings(jpeg_quality=config.jpeg_quality)
        #: Areas this client holds lossy, re-sent losslessly once still (lossy.py).
        self.lossy = LossyAreas(config.lossless_refresh)
        self.jpeg_budget = JpegBudget(config.jpeg_quality)
        self._jpeg = config.jpeg_wan_compression != "never" and jpeg_available()
        self._refresh_timer: asyncio.TimerHandle | None = None
        #: The PING after the latest update with lossy or refresh bands, and when it went.
        self._delivery: tuple[int, float] | None = None
        #: Video streams (streams.py): candidates, the live stream, codecs the client
        #: said it cannot decode.
        self.detector = StreamDetector()
        self.stream: VideoStream | None = None
        self._refused_codecs: set[VideoCodec] = set()
        self._stream_ids = itertools.cycle(range(MAX_STREAMS))
        self._report_ids = itertools.count(1)
        self._wake = asyncio.Event()
        #: The update task waits for damage (see _may_send_now), and its next pacing slot.
        self._parked = False
        self._next_slot = 0.0
        #: The update task's loop (set before it first parks): its clock times the slots.
        self._loop: asyncio.AbstractEventLoop | None = None
        # Slots slightly closer than 1/max_fps: see _update_loop.
        self._min_interval = PACING_HEADROOM / self.context.config.max_fps
        #: An update is being read, encoded or sent (tests wait for it to end).
        self.updating = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._counted = False
        self._whole_surface_next = False
        self._heads_changed = False
        self._settled: asyncio.Future[None] | None = None
        #: The source version (FramebufferSource.version) whose pixels the client was last
        #: sent: every damage reported up to it has gone out.
        self.sent_version = -1
        self._sent = asyncio.Event()  # replaced after each update: every waiter wakes
        #: Source scrolls to send as COPY_BITS, and when that is right (see PendingMoves).
        self.moves = PendingMoves()
        #: Fault injection: damages images between encoder and wire (a copy; cached encodings
        #: stay intact).  None when off.
        faults = self.context.faults
        self.corrupt_image: ImageCorrupter | None = (
            None if faults is None else faults.image_corrupter(self.connection.name)
        )
        #: Fault injection on stream frames (--fault drop-frames, delay-frames); None: off.
        self.frame_fault: FrameFault | None = (
            None if faults is None else faults.frame_fault(self.connection.name)
        )

    def start(self, now: float) -> None:
        self.channel.start(now)
        # A PING right away: its PONG comes after whatever the client sends as it sets the
        # channel up, PREFERRED_COMPRESSION included (spice-gtk:src/channel-display.c
        # spice_display_channel_up sends DISPLAY_INIT, then the preference, before it reads
        # anything), so waiting for it lets the first frame use the client's codec.
        self._settled = asyncio.ensure_future(self.round_trip())
        self._settled.add_done_callback(_consume)
        self.context.source.add_listener(self)
        self.context.displays += 1
        self._counted = True

    def on_events(self, events: list[Any], now: float) -> None:
        super().on_events(events, now)
        for event in events:
            delivery = self._delivery
            if isinstance(event, PongReceived) and delivery and event.id == delivery[0]:
                self._delivery = None
                self.lossy.delivered(now)
            elif isinstance(event, DisplayReady) and self._task is None:
                self._attach_glz(event)
                name = f"display {self.connection.name}"
                self._task = asyncio.create_task(self._run(), name=name)
            elif isinstance(event, StreamReported):
                self._stream_reported(event, now)
            elif isinstance(event, CompressionPreferred):
                accepted = self.encoder.prefer(event.compression)
                logger.info(
                    "%s: client prefers image compression %d%s",
                    self.connection.name,
                    event.compression,
                    "" if accepted else " (not supported, ignored)",
                )
        self._wake.set()  # an ACK may have reopened the window

    def _attach_glz(self, ready: DisplayReady) -> None:
        """Share the session's GLZ dictionary (spice-gtk keeps one window per session).

        ``context.glz`` keeps a bounded number per session within a memory budget and drops
        them when the session ends (``spiceserver/server/glz.py``); the encoder only borrows
        one, so nothing here keeps it alive.  Without one, LZ is sent instead.
        """
        if ready.glz_window_size <= 0:
            return  # spice-html5: no GLZ at all (pitfall 23)
        width, height = self.context.source.size
        dictionary = self.context.glz.attach(
            self.session,
            ready.glz_dictionary_id,
            ready.glz_window_size,
            self.connection,
            frame_pixels=width * height,
        )
        if dictionary is not None:
            self.encoder.borrow_glz(dictionary)

    # Source listener: called on the loop thread.
    def on_damage(self, rects: list[Rect]) -> None:
        now = self.context.clock()
        self.moves.damaged(self.context.source.version)
        if self.stream is not None:
            rects = self._stream_damage(self.stream, rects, now)
        elif self._may_stream():
            self.detector.damaged(rects, now)
        self.dirty.add(rects)
        if self.lossy:
            self.lossy.damaged(rects, now)
        if self._may_send_now(now):
            self._send_now()
        else:
            self._wake.set()

    def _may_send_now(self, now: float) -> bool:
        """Whether this damage may go out right here, in the source's callback, instead of
        a wake-up of the update task: a small change (a typed glyph, a clock's digits) the
        task would send at once anyway.  That wake-up is a loop iteration on the path of
        every small change: from the loop applying the change to the update starting took
        0.095 ms with it, 0.073 without (``bench_desktop --trace-hops``, medians of 3
        interleaved rounds; the Python between the two is most of what is left).

        Only while the task waits for damage (nothing in progress, its pacing slot come),
        the client has room, and the update needs nothing but an image encoded on the loop
        (no new surface, monitors, stream or lossy areas)."""
        if not self._parked or self.need_surface or self._heads_changed:
            return False
        if self._whole_surface_next:
            return False
        if self.stream is not None or self.lossy or not self.connection.writable:
            return False
        # (the loop kept: asyncio.get_running_loop() is a getpid() system call in 3.11)
        if self._loop is None or self._loop.time() < self._next_slot:
            return False
        pixels = sum(rect.area for rect in self.dirty.rects())
        if not encodes_inline(self.context, self.encoder, pixels):
            return False
        return self.detector.candidate(now) is None  # no stream would start

    def _send_now(self) -> None:
        """:meth:`_send_update` done synchronously (see :meth:`_may_send_now`); a failure
        closes this connection only, as the task's would."""
        try:
            if self._send_small():
                pass
            elif (update := self._begin_update()) is not None:
                try:
                    encoded = encode_inline(
                        self.encoder,
                        update.snapshots,
                        update.lossless,
                        update.candidates,
                    )
                finally:
                    if update.staged:  # tiny updates are never staged; should one ever be
                        self.encoder.unstage_glz()
                self._finish_update(update, encoded, None)
        except Exception:
            logger.exception("%s: display update failed, closing", self.connection.name)
            self.connection.abort("display update failed")
            return
        loop_time = asyncio.get_running_loop().time()
        self._next_slot = next_slot(self._next_slot, loop_time, self._min_interval)
        self._arm_refresh()

    def _send_small(self) -> bool:
        """The commonest update in the fewest steps: one small damaged rectangle, nothing
        else owed (no moves, no fault injection), read, encoded and written here; False
        when the update needs :meth:`_begin_update` and :meth:`_finish_update`.  What they
        would add is nothing for such an update, but on a CPU cold from an idle spell each
        step costs microseconds: from the update's start to its encode took 0.050-0.059 ms
        through them, 0.023-0.029 here (``bench_desktop --trace-hops``, 3 interleaved
        rounds of 60 changes)."""
        rects = self.dirty.rects()
        if len(rects) != 1 or len(self.moves) or self.corrupt_image is not None:
            return False
        source = self.context.source
        size = source.size
        rect = rects[0].clip(*size)
        if rect is None or rect.area > MIN_SAMPLED_PIXELS:  # (never sampled, never lossy)
            return False
        self.dirty.clear()
        version = source.version
        pixels = source.read(rect)
        self.moves.read(version)  # no await since the dirty region was taken (PendingMoves)
        self._update_zlib_glz()
        started = time.perf_counter()
        image, codec = self.encoder.encode_small(pixels)
        self.channel.draw_copy(rect.x, rect.y, image)
        self.channel.end_update()
        self.connection.flush()
        metrics = self.session.metrics
        metrics.encode_seconds += time.perf_counter() - started
        metrics.bytes_by_codec[codec] += image.size
        metrics.draws += 1
        metrics.frames += 1
        self._update_sent(version, size, [(rect, pixels)], [])
        return True

    def on_heads(self, heads: tuple[Head, ...]) -> None:
        """A new monitor layout: a new MONITORS_CONFIG (with the surface, if it changed size:
        ``on_resize`` came first)."""
        self._heads_changed = True
        self._wake.set()

    def on_resize(self, width: int, height: int) -> None:
        self.context.glz.follow_frame(self.session, width * height)  # one frame, as attached
        self.detector.clear()  # the stream itself goes with the surface (_create_surface)
        self.moves.reset()
        self.need_surface = True
        self.dirty.clear()
        self.lossy.clear()  # the new surface is drawn whole
        self._wake.set()

    def on_scroll(self, rect: Rect, dy: int, damage: list[Rect]) -> None:
        # A COPY_BITS when this client holds what the move reads, else damage of rect.
        version, pending = self.context.source.version, self.dirty.rects()
        self.dirty.add(self.moves.scrolled(Scroll(rect, dy), damage, version, pending))
        stream = self.stream
        if stream is not None and any(overlaps(rect, part) for part in stream.visible()):
            self._end_stream(self.context.clock(), "moved")  # no longer one stream
        # (A move only within what covers the stream, a terminal over the video scrolling,
        # leaves it be: spice-gtk paints no frame there, its clip says so.)
        if self.lossy:  # a move carries lossy pixels along: the whole area waits again
            self.lossy.moved(rect, self.context.clock())
        self._wake.set()

    def on_cursor(self, shape: CursorShape | None) -> None: ...

    def on_cursor_move(self, x: int, y: int) -> None: ...

    def on_writable(self) -> None:
        self._wake.set()

    def closed(self) -> None:
        super().closed()
        self._closed = True
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
        self.context.source.remove_listener(self)
        if self._counted:
            self._counted = False
            self.context.displays -= 1
            if self.context.displays < 2:
                self.context.encode_cache.clear()  # a lone display no longer shares
        if self._task is not None:
            self._task.cancel()
        self._sent.set()  # wake waiters, who find the connection closed

    async def wait_sent(self, version: int) -> None:
        """Until pixels of source ``version`` (or newer) went out to this client."""
        while self.sent_version < version:
            if self._closed:
                raise ConnectionError(f"{self.connection.name}: closed")
            await self._sent.wait()

    async def _run(self) -> None:
        try:
            await self._update_loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: display update failed, closing", self.connection.name)
            self.connection.abort("display update failed")

    async def _update_loop(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        # Slots slightly closer than 1/max_fps: with exactly 1/max_fps, a source ticking at
        # max_fps keeps whatever phase it has against the slots, and once a slot falls just
        # before the ticks its jitter merges frames (one client in ten sat at 20 fps for
        # seconds in bench_clients).  The headroom pulls the slots ahead of the ticks.
        min_interval = self._min_interval
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(SETTLE_TIMEOUT):
                if self._settled is not None:
                    await asyncio.shield(self._settled)
        if self._jpeg and self.context.config.jpeg_wan_compression == "auto":
            tested = loop.create_future()
            self.session.metrics.link.when_tested(lambda: _resolve(tested))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(NET_TEST_TIMEOUT):
                    await tested
        warmup = self.context.warmup
        if warmup is not None and warmup.quick and not warmup.done:
            # The kernels load from numba's cache in about a second: a first frame in the
            # client's codec is worth that wait (a cold cache takes ~10 s: no waiting then).
            # Only for the codecs it may use: the mode's (warm_order) load first.
            codecs = self.encoder.codecs_for(*self.context.source.size)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CACHED_WARMUP_WAIT):
                    await warmup.wait_for(codecs)
        self._next_slot = loop.time()
        while not self._closed:
            self._parked = True  # from here, small damage may go out right away (send_now)
            try:
                await self._wake.wait()
            finally:
                self._parked = False
            self._wake.clear()
            if not self.connection.writable:
                continue  # woken again by an ACK or resume_writing
            if self.need_surface:
                self._create_surface()
            elif self._heads_changed:
                self._heads_changed = False
                self.channel.send_monitors_config(*self._monitors())
                self.connection.flush()
            wait = self._next_slot - loop.time()
            if wait > 0 and not self.channel.mark_pending:
                await asyncio.sleep(wait)
            # Slots follow a schedule, so a source ticking at max_fps is never throttled by
            # jitter; after a pause a few slots are banked (pacing.BURST), so the pieces a
            # program draws a change in go out back to back instead of a frame apart.
            self._next_slot = next_slot(self._next_slot, loop.time(), min_interval)
            self.updating = True
            try:
                await self._send_update()
            finally:
                self.updating = False
            self._arm_refresh()
            if self.dirty:
                self._wake.set()

    def _monitors(self) -> tuple[list[tuple[int, int, int, int]], int]:
        """The source's heads as areas of its frame (clipped to it), and ``max_allowed``."""
        width, height = self.context.source.size
        areas = [
            (r.x, r.y, r.width, r.height)
            for head in self.context.source.heads()
            if (r := Rect(head.x, head.y, head.width, head.height).clip(width, height))
        ]
        return areas, self.context.layout.max_heads(len(areas))

    def _create_surface(self) -> None:
        width, height = self.context.source.size
        self._heads_changed = False
        self._stream_gone(self.context.clock(), "surface")  # create_primary destroys it
        self.channel.create_primary(width, height, *self._monitors())
        self.need_surface = False
        self._whole_surface_next = True
        self.moves.reset()
        self.dirty.clear()
        self.dirty.add([Rect(0, 0, width, height)])

    def _update_policy(self) -> None:
        """JPEG and zlib-GLZ allowed for the next update (the link may have changed)."""
        config = self.context.config
        caps, link = self.channel.client_channel_caps, self.session.metrics.link
        self.encoder.lossy = wan_allowed(config.jpeg_wan_compression, caps, link, self._jpeg)
        self._update_zlib_glz()

    def _update_zlib_glz(self) -> None:
        """zlib around GLZ allowed for the next update (the only policy a small one needs)."""
        self.encoder.zlib_glz = wan_allowed(
            self.context.config.zlib_glz_wan_compression,
            self.channel.client_channel_caps,
            self.session.metrics.link,
            True,
        )

    def _set_jpeg_quality(self, bands: list[Rect], lossless: list[bool] | None) -> None:
        """The quality this update's JPEGs get: its first paint within the link's budget
        (lossy.JpegBudget); counted over every band that may go lossy (bands that turn out
        lossless only make it cautious)."""
        pixels = sum(
            band.area for i, band in enumerate(bands) if lossless is None or not lossless[i]
        )
        quality = self.jpeg_budget.quality(pixels, self.session.metrics.link.bandwidth())
        if quality != self.encoder.settings.jpeg_quality:
            self.encoder.settings = CodecSettings(jpeg_quality=quality)
            logger.debug("JPEG quality %d for %d pixels", quality, pixels)

    def _arm_refresh(self) -> None:
        """Wake the loop when the next lossy area falls due for its lossless copy."""
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
            self._refresh_timer = None
        due = self.lossy.next_due()
        if self._delivery is not None:  # woken by the PONG, or give up on it
            due = self._delivery[1] + DELIVERY_TIMEOUT
        stream = self.stream
        if stream is not None:  # its next frame, or its end
            times = [due, stream.last_damage + STREAM_TIMEOUT]
            times.append(stream.next_frame_at(self.context.config.max_fps))
            due = min(t for t in times if t is not None)
        if due is not None and not self._closed:
            delay = max(0.0, due - self.context.clock())
            self._refresh_timer = asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _send_update(self) -> None:
        """One update: queued moves, then the dirty region read now, encoded, drawn."""
        update = self._begin_update()
        if update is None:
            return
        # staged: no stream frame, and the very list, whose bands may be swapped for copies
        snapshots = update.snapshots if update.staged else update.snapshots[: len(update.bands)]
        try:
            encoded = await encode_bands(
                self.context,
                self.encoder,
                snapshots,
                update.version,
                self.session.metrics,
                update.lossless,
                update.candidates,
                update.staged,
            )
        finally:
            if update.staged:  # not encoded (another codec, a failure): the room goes back
                self.encoder.unstage_glz()
        frame_bytes = None if update.frame is None else await update.frame
        self._finish_update(update, encoded, frame_bytes)

    def _begin_update(self) -> _Update | None:
        """The update's first half, up to its encode: queued moves sent, the dirty region
        taken and read; None when the moves (or a STREAM_CLIP) were the whole update."""
        source = self.context.source
        now = self.context.clock()
        if self.stream is not None and self.stream.timed_out(now):
            self._end_stream(now, "still")
        elif self.stream is None:
            self._start_stream(now)
        if self.lossy:
            if self._delivery is not None and now - self._delivery[1] > DELIVERY_TIMEOUT:
                self._delivery = None  # no PONG: taken as drawn
                self.lossy.delivered(now)
            if self._delivery is None:
                refresh = self.lossy.take_due(now, REFRESH_AREAS)
                if refresh:  # through the dirty region: merged with damage, latest-wins
                    self.dirty.add(refresh)
                    self.session.metrics.lossless_refreshes += len(refresh)
        rects = self.dirty.take()
        stream = self.stream
        if stream is not None:  # rate control from the link, as it is now
            stream.follow_link(self.session.metrics.link.bandwidth(now), now)
        frame_due = stream is not None and stream.frame_due(now, self.context.config.max_fps)
        if stream is not None:  # its visible area goes as the stream's frames
            for visible in stream.visible():
                rects = [part for rect in rects for part in subtract(rect, visible)]
            if stream.clip_owed():  # before this update's frame and images
                clip = stream.client_clip
                self.channel.stream_clip(stream.id, clip)
                self.session.metrics.stream_clips += 1
                if self.context.recorders:
                    boxes = None if clip is None else [list(box) for box in clip]
                    self.record(stream_record("stream_clip", stream.id, visible=boxes))
        # Queued moves go out after the previous update's draws and before this one's:
        # the order PendingMoves relies on.
        moves = self._send_moves()
        if not rects and not frame_due:
            if moves:  # the moves are the whole update: the client holds moves.version
                self._update_sent(self.moves.version, source.size, [], moves)
            else:
                self.connection.flush()  # a STREAM_CLIP, if any
            return None
        size = source.size
        if self._whole_surface_next:
            # A new surface is sent as one image, as libspice-server does
            # (spice:server/dcc.cpp dcc_push_surface_image): tools that save the first
            # invalidated frame, spicy-screenshot among them, then hold all of it.
            self._whole_surface_next = False
            areas = [(Rect(0, 0, *size), [Rect(0, 0, *size)])]
        else:
            areas = [
                (clipped, split_rows(clipped, MAX_BAND_PIXELS))
                for rect in rects
                if (clipped := rect.clip(*size)) is not None
            ]
        bands = [band for _, area_bands in areas for band in area_bands]
        version = source.version  # these pixels hold every change up to here
        # Sessions at the same version share one read of each band (see encode_cache);
        # a lone display has nobody to share with, and skips the cache's copies.
        read, cache = source.read, self.context.encode_cache
        staged = False
        if self.context.displays > 1:
            snapshots = [(band, cache.read(version, band, read)) for band in bands]
        elif stream is None:  # the stream's frame is read too, as a copy of its own
            snapshots, staged = read_for_encode(read, source.read_into, self.encoder, areas)
        else:
            snapshots = read_in_areas(read, areas)
        frame: asyncio.Future[bytes] | None = None
        if stream is not None and frame_due:  # read with the bands: one version
            stream.pending = False  # damage from here on owes the next frame
            stream_pixels = read(stream.rect)
            snapshots.append((stream.rect, stream_pixels))
            rebuild, stream.rebuild_bit_rate = stream.rebuild_bit_rate, None
            frame = asyncio.get_running_loop().run_in_executor(
                self.context.executor, encode_frame, stream, stream_pixels, rebuild
            )
        self.moves.read(version)  # no await since dirty.take(): see PendingMoves
        self._update_policy()
        lossless = [self.lossy.forced_lossless(band) for band in bands] if self.lossy else None
        if self.encoder.lossy:
            self._set_jpeg_quality(bands, lossless)
        candidates = self._candidate_bands(bands, now)
        started = time.perf_counter()
        return _Update(
            version, size, bands, snapshots, moves, stream, frame, lossless, candidates, started,
            staged,
        )  # fmt: skip

    def _finish_update(
        self, update: _Update, encoded: list[Encoded], frame_bytes: bytes | None
    ) -> None:
        """The update's second half: its images (and stream frame) drawn and written."""
        metrics = self.session.metrics
        metrics.encode_seconds += time.perf_counter() - update.started
        stream, size = update.stream, update.size
        if self._closed:
            return
        if stream is not None and frame_bytes is not None and stream is self.stream:
            self._send_frame(stream, frame_bytes, self.context.clock())
        # Even if the source was resized meanwhile, these images are sent (to the old
        # surface, destroyed right after): GLZ ids must reach the client without a gap.
        now = self.context.clock()
        tracked = False
        jpeg_pixels = jpeg_bytes = 0
        for band, image, codec in encoded:
            if self.corrupt_image is not None:  # fault injection (--fault corrupt-image)
                image = self.corrupt_image(image)
            self.channel.draw_copy(band.x, band.y, image)
            metrics.bytes_by_codec[codec] += image.size
            metrics.draws += 1
            lossy = CODECS[codec].lossy
            if codec == "jpeg":
                jpeg_pixels, jpeg_bytes = jpeg_pixels + band.area, jpeg_bytes + image.size
            if lossy or self.lossy:
                tracked = True
                self.lossy.sent(band, lossy)  # still from its delivery (the PING below)
        self.lossy.update_done(now)
        if jpeg_pixels:
            self.jpeg_budget.observed(jpeg_pixels, jpeg_bytes, self.encoder.settings.jpeg_quality)
        self.channel.end_update()
        if tracked:  # its PONG: the client has drawn this update
            self._delivery = (self.channel.ping(now), now)
        metrics.frames += 1
        self._update_sent(update.version, size, update.snapshots, update.moves)

    def _send_moves(self) -> list[Scroll]:
        """Send the queued moves as COPY_BITS (not flushed)."""
        moves = self.moves.take()
        for move in moves:
            dest, source = move.dest, move.source
            self.channel.copy_bits(source.x, source.y, dest.x, dest.y, dest.width, dest.height)
        self.session.metrics.copy_bits += len(moves)
        return moves

    def _update_sent(
        self,
        version: int,
        size: tuple[int, int],
        snapshots: list[tuple[Rect, np.ndarray]],
        moves: list[Scroll],
    ) -> None:
        """An update is queued: write it, note the version the client now holds (waking
        ``wait_sent``), and hand it to capture mode as a video frame."""
        self.connection.flush()
        self.sent_version = version
        self._sent.set()
        self._sent = asyncio.Event()
        capture = self.connection.capture
        if capture is not None:
            copies = [(move.dest, move.source.x, move.source.y) for move in moves]
            capture.display_update(size, snapshots, copies)


@dataclass(slots=True)
class _Update:
    """An update between its read and its encode (DisplayHandler._begin_update)."""

    version: int
    size: tuple[int, int]
    bands: list[Rect]
    #: The bands' pixels, then the stream frame's (when one is due).
    snapshots: list[tuple[Rect, np.ndarray]]
    moves: list[Scroll]
    stream: VideoStream | None
    frame: asyncio.Future[bytes] | None
    lossless: list[bool] | None
    candidates: list[bool] | None
    started: float
    #: The bands were read into room lent by the GLZ dictionary (encode.read_for_encode).
    staged: bool = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _consume(future: asyncio.Future[None]) -> None:
    """A round trip nobody awaits any more (the channel closed first) is not an error."""
    if not future.cancelled():
        future.exception()
