"""Server-side behaviour of each channel: what to start with and what to do with its events."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from spiceserver.imaging import ImageEncoder, encode_shared, is_photographic, shared_codec_key
from spiceserver.protocol.cursor import CursorChannel
from spiceserver.protocol.display import DisplayChannel
from spiceserver.protocol.events import (
    ClientDisconnecting,
    CompressionPreferred,
    DisplayReady,
    InputEvent,
    MouseModeChanged,
    PongReceived,
)
from spiceserver.protocol.inputs import InputsChannel
from spiceserver.protocol.main import MainChannel
from spiceserver.protocol.messages import CursorShape
from spiceserver.record import event_record
from spiceserver.region import DirtyRegion, split_rows
from spiceserver.scroll import PendingMoves, Scroll
from spiceserver.sources.base import Rect

if TYPE_CHECKING:
    import numpy as np

    from spiceserver.faults import ImageCorrupter
    from spiceserver.protocol.display import EncodedImage
    from spiceserver.server.connection import SpiceConnection
    from spiceserver.server.server import SpiceServer
    from spiceserver.session import Session

__all__ = ["ChannelHandler", "CursorHandler", "DisplayHandler", "InputsHandler", "MainHandler"]

logger = logging.getLogger("spiceserver.channels")

#: Raw bitmaps are cut into bands of at most this many pixels (1 MiB), so one update never
#: sits in a single multi-megabyte message and the ACK window keeps its meaning.
MAX_BAND_PIXELS = 256 * 1024
#: Update slots are this fraction of ``1 / max_fps`` apart: a client may get up to 5% more
#: than ``max_fps`` updates from a faster source, and never loses frames of a source ticking
#: at ``max_fps`` to timer jitter.
PACING_HEADROOM = 0.95


class ChannelHandler:
    def __init__(self, server: SpiceServer, connection: SpiceConnection, session: Session) -> None:
        self.server = server
        self.connection = connection
        self.session = session
        self._pongs: dict[int, asyncio.Future[None]] = {}

    def start(self, now: float) -> None: ...

    async def round_trip(self) -> None:
        """PING the client and wait for its PONG: afterwards it has handled every message sent
        before (spice-gtk handles a channel's messages in order, drawing included)."""
        channel: Any = getattr(self, "channel", None)
        if channel is None or self.connection.closed:
            raise ConnectionError(f"{self.connection.name}: not connected")
        future = asyncio.get_running_loop().create_future()
        ping_id = channel.ping(asyncio.get_running_loop().time())
        self._pongs[ping_id] = future
        self.connection.flush()
        try:
            await future
        finally:
            self._pongs.pop(ping_id, None)

    def fail_round_trips(self) -> None:
        """The connection is gone: every :meth:`round_trip` still waiting raises."""
        for future in self._pongs.values():
            if not future.done():
                future.set_exception(ConnectionError(f"{self.connection.name}: closed"))
        self._pongs.clear()

    def on_events(self, events: list[Any], now: float) -> None:
        if self.server.recorders:
            for event in events:
                record = event_record(event)
                if record is not None:
                    self.server.record(record, self.connection)
        for event in events:
            if isinstance(event, ClientDisconnecting):
                logger.info("%s: client is disconnecting (reason %d)", self.connection.name,
                            event.reason)
            elif isinstance(event, PongReceived):
                future = self._pongs.pop(event.id, None)
                if future is not None and not future.done():
                    future.set_result(None)

    def on_writable(self) -> None: ...

    def closed(self) -> None: ...


class MainHandler(ChannelHandler):
    channel: MainChannel

    def start(self, now: float) -> None:
        self.channel.start(now)

    def on_events(self, events: list[Any], now: float) -> None:
        super().on_events(events, now)
        for event in events:
            if isinstance(event, MouseModeChanged):
                logger.info("%s: mouse mode %s", self.connection.name,
                            "client" if event.mode == 2 else "server")

    def closed(self) -> None:
        self.server.end_session(self.session)


class InputsHandler(ChannelHandler):
    channel: InputsChannel

    def start(self, now: float) -> None:
        self.channel.start(now)

    def on_events(self, events: list[Any], now: float) -> None:
        super().on_events(events, now)
        for event in events:
            if isinstance(event, InputEvent):
                self.session.metrics.input_events += 1
                self.server.deliver_input(event)

    def closed(self) -> None:
        for event in self.channel.release_all():
            self.server.deliver_input(event)


class CursorHandler(ChannelHandler):
    """Cursor shape and position, latest-wins: a client that is not reading gets only the
    newest shape and position once it reads again, never a backlog."""

    channel: CursorChannel
    _NOTHING: Any = object()

    def start(self, now: float) -> None:
        self._pending_shape: Any = self._NOTHING
        self._pending_move: tuple[int, int] | None = None
        self.channel.start(now, self.server.source.cursor)
        self.server.source.add_listener(self)

    def on_cursor(self, shape: CursorShape | None) -> None:
        self._pending_shape = shape
        self._pending_move = None  # the new shape comes with the current position
        self._send_pending()

    def on_cursor_move(self, x: int, y: int) -> None:
        self._pending_move = (x, y)
        self._send_pending()

    def on_events(self, events: list[Any], now: float) -> None:
        super().on_events(events, now)
        self._send_pending()  # an ACK may have reopened the window

    def on_writable(self) -> None:
        self._send_pending()

    def _send_pending(self) -> None:
        if not self.connection.writable:
            return
        if self._pending_shape is not self._NOTHING:
            shape, self._pending_shape = self._pending_shape, self._NOTHING
            if shape is None:
                self.channel.hide()
            else:
                self.channel.set_shape(shape)
        if self._pending_move is not None:
            self.channel.move(*self._pending_move)
            self._pending_move = None
        self.connection.flush()

    def on_damage(self, rects: list[Rect]) -> None: ...

    def on_resize(self, width: int, height: int) -> None: ...

    def on_scroll(self, rect: Rect, dy: int, damage: list[Rect]) -> None: ...

    def closed(self) -> None:
        self.server.source.remove_listener(self)


class DisplayHandler(ChannelHandler):
    """Sends screen updates: damage merges while the client is busy; pixels read at send time."""

    channel: DisplayChannel

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.dirty = DirtyRegion()
        self.need_surface = True
        self.encoder = ImageEncoder(self.server.config.image_compression)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: The source version (FramebufferSource.version) whose pixels the client was last
        #: sent: every damage reported up to it has gone out.
        self.sent_version = -1
        self._sent = asyncio.Event()  # replaced after each update: every waiter wakes
        #: Source scrolls to send as COPY_BITS, and when that is right (see PendingMoves).
        self.moves = PendingMoves()
        #: Fault injection: damages images between encoder and wire (a copy; cached encodings
        #: stay intact).  None when off.
        self.corrupt_image: ImageCorrupter | None = (
            None if self.server.faults is None
            else self.server.faults.image_corrupter(self.connection.name)
        )

    def start(self, now: float) -> None:
        self.channel.start(now)
        self.server.source.add_listener(self)
        self.server.displays += 1
        self._counted = True

    _counted = False

    def on_events(self, events: list[Any], now: float) -> None:
        super().on_events(events, now)
        for event in events:
            if isinstance(event, DisplayReady) and self._task is None:
                self._attach_glz(event)
                name = f"display {self.connection.name}"
                self._task = asyncio.create_task(self._run(), name=name)
            elif isinstance(event, CompressionPreferred):
                accepted = self.encoder.prefer(event.compression)
                logger.info("%s: client prefers image compression %d%s", self.connection.name,
                            event.compression, "" if accepted else " (not supported, ignored)")
        self._wake.set()  # an ACK may have reopened the window

    def _attach_glz(self, ready: DisplayReady) -> None:
        """Share the session's GLZ dictionary (spice-gtk keeps one window per session)."""
        if ready.glz_window_size <= 0:
            return  # spice-html5: no GLZ at all (pitfall 23)
        from encoders import GlzDictionary

        dictionaries = self.session.glz_dictionaries
        if ready.glz_dictionary_id not in dictionaries:
            dictionaries[ready.glz_dictionary_id] = GlzDictionary(ready.glz_window_size)
        self.encoder.glz = dictionaries[ready.glz_dictionary_id]

    # Source listener: called on the loop thread.
    def on_damage(self, rects: list[Rect]) -> None:
        self.moves.damaged(self.server.source.version)
        self.dirty.add(rects)
        self._wake.set()

    def on_resize(self, width: int, height: int) -> None:
        self.moves.reset()
        self.need_surface = True
        self.dirty.clear()
        self._wake.set()

    def on_scroll(self, rect: Rect, dy: int, damage: list[Rect]) -> None:
        # A COPY_BITS when this client holds what the move reads, else damage of rect.
        version, pending = self.server.source.version, self.dirty.rects()
        self.dirty.add(self.moves.scrolled(Scroll(rect, dy), damage, version, pending))
        self._wake.set()

    def on_cursor(self, shape: CursorShape | None) -> None: ...

    def on_cursor_move(self, x: int, y: int) -> None: ...

    def on_writable(self) -> None:
        self._wake.set()

    def closed(self) -> None:
        self._closed = True
        self.server.source.remove_listener(self)
        if self._counted:
            self.server.displays -= 1
            self._counted = False
            if self.server.displays < 2:
                self.server.encode_cache.clear()  # a lone display no longer shares
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
            self.connection.abort()

    async def _update_loop(self) -> None:
        loop = asyncio.get_running_loop()
        # Slots slightly closer than 1/max_fps: with exactly 1/max_fps, a source ticking at
        # max_fps keeps whatever phase it has against the slots, and once a slot falls just
        # before the ticks its jitter merges frames (one client in ten sat at 20 fps for
        # seconds in bench_clients).  The headroom pulls the slots ahead of the ticks.
        min_interval = PACING_HEADROOM / self.server.config.max_fps
        next_slot = loop.time()
        mark_pending = False
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            if not self.connection.writable:
                continue  # woken again by an ACK or resume_writing
            if self.need_surface:
                width, height = self.server.source.size
                self.channel.create_primary(width, height)
                self.need_surface = False
                self.moves.reset()
                self.dirty.clear()
                self.dirty.add([Rect(0, 0, width, height)])
                mark_pending = True
            wait = next_slot - loop.time()
            if wait > 0 and not mark_pending:
                await asyncio.sleep(wait)
            # Slots follow a schedule, so a source ticking at max_fps is never throttled by
            # jitter; a late update does not push the schedule back more than one slot.
            next_slot = max(next_slot + min_interval, loop.time())
            rects = self.dirty.take()
            # Queued moves go out after the previous update's draws and before this one's:
            # the order PendingMoves relies on.
            moves = self._send_moves()
            if not rects:
                if moves:  # the moves are the whole update: the client holds moves.version
                    self._update_sent(self.moves.version, self.server.source.size, [], moves)
                continue
            size = self.server.source.size
            bands = [
                band
                for rect in rects
                if (clipped := rect.clip(*size)) is not None
                for band in split_rows(clipped, MAX_BAND_PIXELS)
            ]
            version = self.server.source.version  # these pixels hold every change up to here
            # Sessions at the same version share one read of each band (see encode_cache);
            # a lone display has nobody to share with, and skips the cache's copies.
            read, cache = self.server.source.read, self.server.encode_cache
            if self.server.displays > 1:
                snapshots = [(band, cache.read(version, band, read)) for band in bands]
            else:
                snapshots = [(band, read(band)) for band in bands]
            self.moves.read(version)  # no await since dirty.take(): see PendingMoves
            started = time.perf_counter()
            encoded = await self._encode_all(snapshots, version)
            self.session.metrics.encode_seconds += time.perf_counter() - started
            if self._closed:
                return
            # Even if the source was resized meanwhile, these images are sent (to the old
            # surface, destroyed right after): GLZ ids must reach the client without a gap.
            metrics = self.session.metrics
            for band, image, codec in encoded:
                if self.corrupt_image is not None:  # fault injection (--fault corrupt-image)
                    image = self.corrupt_image(image)
                self.channel.draw_copy(band.x, band.y, image)
                metrics.bytes_by_codec[codec] += image.size
                metrics.draws += 1
            if mark_pending:
                self.channel.mark()
                mark_pending = False
            metrics.frames += 1
            self._update_sent(version, size, snapshots, moves)
            if self.dirty:
                self._wake.set()

    def _send_moves(self) -> list[Scroll]:
        """Send the queued moves as COPY_BITS (not flushed)."""
        moves = self.moves.take()
        for move in moves:
            dest, source = move.dest, move.source
            self.channel.copy_bits(source.x, source.y, dest.x, dest.y, dest.width, dest.height)
        self.session.metrics.copy_bits += len(moves)
        return moves

    def _update_sent(self, version: int, size: tuple[int, int],
                     snapshots: list[tuple[Rect, np.ndarray]], moves: list[Scroll]) -> None:
        """An update is queued: write it, note the version the client now holds (waking
        ``wait_sent``), and hand it to capture mode as a video frame."""
        self.connection.flush()
        self.sent_version = version
        self._sent.set()
        self._sent = asyncio.Event()
        if self.connection.capture is not None:
            self.connection.capture.display_update(size, snapshots, _copies(moves))

    async def _encode_all(
        self, snapshots: list[tuple[Rect, np.ndarray]], version: int
    ) -> list[tuple[Rect, EncodedImage, str]]:
        """Encode every band on the worker threads; results in band order.

        GLZ bands go to one worker in order (their ids must reach the client in sequence).
        Bands of the other codecs come from the server's encode cache, shared with every
        session asking for the same band at the same ``version`` (each uncached one is a
        worker job of its own); those the cache cannot share are dealt out to the workers so
        a full frame uses every core.
        """
        loop = asyncio.get_running_loop()
        executor = self.server.executor
        cache = self.server.encode_cache
        codecs = [
            self.encoder.choose(
                pixels, functools.partial(cache.photographic, version, band, test=is_photographic)
            )
            for band, pixels in snapshots
        ]
        glz = [i for i, codec in enumerate(codecs) if codec == "glz"]
        shared: dict[int, asyncio.Future[EncodedImage]] = {}
        hits = cache.stats.hits
        for i, codec in enumerate(codecs):
            key = shared_codec_key(codec)
            if key is not None:
                band, pixels = snapshots[i]
                start = functools.partial(
                    loop.run_in_executor, executor, encode_shared, pixels, codec
                )
                future = cache.encoding(version, band, pixels, key, start)
                if future is not None:
                    shared[i] = future
        self.session.metrics.shared_draws += cache.stats.hits - hits
        rest = [i for i, codec in enumerate(codecs) if codec != "glz" and i not in shared]
        workers = max(1, self.server.config.encoder_threads)
        groups = [glz] if glz else []
        groups += [rest[k::workers] for k in range(workers) if rest[k::workers]]
        results: list[tuple[Rect, EncodedImage, str] | None] = [None] * len(snapshots)

        def encode(indices: list[int]) -> None:
            for i in indices:
                band, pixels = snapshots[i]
                image, codec = self.encoder.encode(pixels, codecs[i])
                results[i] = (band, image, codec)

        # Shielded: this session leaving must not cancel an encode other sessions await.
        await asyncio.gather(*(loop.run_in_executor(executor, encode, g) for g in groups),
                             *(asyncio.shield(future) for future in shared.values()))
        for i, future in shared.items():
            results[i] = (snapshots[i][0], future.result(), codecs[i])
        return [result for result in results if result is not None]


def _copies(moves: list[Scroll]) -> list[tuple[Rect, int, int]]:
    """Moves as COPY_BITS parameters: (destination box, src_x, src_y)."""
    return [(move.dest, move.source.x, move.source.y) for move in moves]
