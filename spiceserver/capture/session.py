"""Capture mode's bookkeeping: which file each connection's bytes and each display's frames go to.

Why this exists: when a client shows something wrong, the first questions are what went over
the wire and what the screen looked like.  With ``capture_dir`` set, every session gets a
directory ``session-<id>/`` holding one pcap per channel (see :mod:`.pcap`) and the served
display as video (see :mod:`.video`).

Lifecycle, driven by the asyncio layer (``spiceserver.server``):

1. Each new connection gets a :class:`ConnectionCapture`.  During the link stage its session is
   unknown (a main channel's session does not exist yet), so the few link messages are kept in
   memory; the link stage's size is bounded by ``max_link_size`` and :data:`MAX_LINK_BYTES`.
2. When the link completes, :meth:`CaptureManager.bind` opens ``<channel>.pcap`` in the
   session's directory, writes the fake TCP handshake and the buffered link messages, and from
   then on every ``sent``/``received`` call writes its records at once (into a 64 KiB file
   buffer that is written out when full and every :data:`FLUSH_INTERVAL`).
3. The display handler hands each update's COPY_BITS and encoded snapshots to
   :meth:`display_update`.
4. Closing the connection writes a FIN exchange and closes its files; ending the session closes
   all of them.  Refused links are not written (they never reach a session).

Failures (disk full, permission denied) are logged once and switch off capture for that session
only; the session itself carries on.  When ``capture_dir`` is unset none of this exists: the
server's hooks test ``connection.capture is not None`` and do nothing else.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spiceserver.capture.pcap import CLIENT, SERVER, PcapFile, TcpFlow
from spiceserver.capture.video import RectLike, VideoWriter, video_unavailable_reason
from spiceserver.protocol.enums import ChannelType

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CaptureManager", "ConnectionCapture", "SessionCapture", "VideoStats"]

logger = logging.getLogger("spiceserver.capture")

#: Most bytes kept from a connection's link stage before it has a session (far above any real
#: link: a SpiceLinkMess, a 128-byte ticket and the replies).
MAX_LINK_BYTES = 64 * 1024
#: pcap buffers are written out this often (seconds), so a capture is readable while it runs.
FLUSH_INTERVAL = 1.0
#: Finished videos remembered in :attr:`CaptureManager.videos`.
MAX_VIDEO_STATS = 1000
#: File buffer per pcap.
BUFFER_SIZE = 64 * 1024
#: How long closing the server waits for video workers to finish their files.
VIDEO_CLOSE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class VideoStats:
    """One finished video file."""

    path: Path
    width: int
    height: int
    frames: int
    merged: int
    error: str | None


class CaptureManager:
    """Server-wide capture state: the output directory and the live sessions' captures.

    Args:
        directory: where ``session-<id>/`` directories are created (made if missing).
        video: whether to write the display video (if PyAV is available).
    """

    def __init__(self, directory: str | os.PathLike[str], *, video: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.video_unavailable = video_unavailable_reason() if video else "disabled"
        self.sessions: dict[int, SessionCapture] = {}
        #: The latest finished video files, oldest first (for tests and summaries).
        self.videos: collections.deque[VideoStats] = collections.deque(maxlen=MAX_VIDEO_STATS)
        self._writers: set[VideoWriter] = set()
        self._flush_timer: asyncio.TimerHandle | None = None

    def describe(self) -> str:
        video = (
            "display video as display.mp4"
            if self.video_unavailable is None
            else f"no display video: {self.video_unavailable}"
        )
        return (
            f"capturing sessions to {self.directory}/session-<id>/: one pcap per channel, {video}"
        )

    def connection(self) -> ConnectionCapture:
        """A capture for a connection that has just been accepted."""
        return ConnectionCapture(self)

    def bind(
        self,
        capture: ConnectionCapture,
        session_id: int,
        channel_type: int,
        channel_id: int,
        link_boundaries: Sequence[int] = (),
    ) -> None:
        """The connection linked as ``channel_type``/``channel_id`` of session ``session_id``;
        ``link_boundaries`` are the offsets in the client's stream where each link message
        ended (``LinkProtocol.client_boundaries``)."""
        session = self.sessions.get(session_id)
        if session is None:
            if channel_type != ChannelType.MAIN:
                capture.disable()  # the session's capture failed or was never made
                return
            session = self.sessions[session_id] = SessionCapture(self, session_id)
        session.bind(capture, channel_type, channel_id, link_boundaries)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._flush)

    def end_session(self, session_id: int) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            session.close()

    async def aclose(self) -> None:
        """Close every session's files and wait (off the loop, bounded) for the videos."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for session_id in list(self.sessions):
            self.end_session(session_id)
        writers = list(self._writers)
        if writers:
            deadline = time.monotonic() + VIDEO_CLOSE_TIMEOUT

            def join_all() -> None:
                for writer in writers:
                    writer.join(max(0.0, deadline - time.monotonic()))

            await asyncio.to_thread(join_all)
            late = [w.path.name for w in writers if not w.done]
            if late:
                logger.warning(
                    "capture: video still being written after %.0fs: %s",
                    VIDEO_CLOSE_TIMEOUT,
                    ", ".join(late),
                )

    # ------------------------------------------------------------------ used by the parts

    def _flush(self) -> None:
        """Every FLUSH_INTERVAL while sessions are captured: write out the pcap buffers."""
        self._flush_timer = None
        for session in list(self.sessions.values()):
            for member in session.members:
                member.flush()
        if self.sessions:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._flush)

    def _video_started(self, writer: VideoWriter) -> None:
        self._writers.add(writer)

    def _video_done(self, writer: VideoWriter) -> None:
        # Worker thread: list.append and set.discard are atomic under the GIL.
        self.videos.append(
            VideoStats(
                writer.path,
                writer.width,
                writer.height,
                writer.frames_written,
                writer.frames_merged,
                None if writer.error is None else str(writer.error),
            )
        )
        self._writers.discard(writer)


class SessionCapture:
    """One session's directory and the captures writing into it."""

    def __init__(self, manager: CaptureManager, session_id: int) -> None:
        self.manager = manager
        self.session_id = session_id
        self.directory = manager.directory / f"session-{session_id:08x}"
        self.members: list[ConnectionCapture] = []
        self.failed = False
        self.video_failed = False

    def bind(
        self,
        capture: ConnectionCapture,
        channel_type: int,
        channel_id: int,
        link_boundaries: Sequence[int] = (),
    ) -> None:
        if self.failed:
            capture.disable()
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            stem = _channel_stem(channel_type, channel_id)
            file = PcapFile(self.create(stem, ".pcap"), BUFFER_SIZE)
        except Exception as exc:
            self.fail(exc)
            capture.disable()
            return
        self.members.append(capture)
        capture.attach(self, file, stem, channel_type == ChannelType.DISPLAY, link_boundaries)

    def create(self, stem: str, suffix: str) -> io.FileIO:
        """A new, unbuffered file ``stem + suffix`` (``stem.2 + suffix``, … if that exists)."""
        n = 1
        while True:
            name = f"{stem}{suffix}" if n == 1 else f"{stem}.{n}{suffix}"
            try:
                return io.FileIO(self.directory / name, "xb")
            except FileExistsError:
                n += 1

    def video_path(self, stem: str) -> Path:
        """Reserve ``stem.mp4`` (``stem.2.mp4``, … for later surface sizes)."""
        with self.create(stem, ".mp4") as file:
            return Path(str(file.name))

    def fail(self, exc: BaseException) -> None:
        """Log once, then stop capturing this session (the session itself goes on)."""
        if self.failed:
            return
        self.failed = True
        logger.warning(
            "capture: session %#010x: %s; capture disabled for this session", self.session_id, exc
        )
        for member in self.members:
            member.disable()

    def close(self) -> None:
        for member in self.members:
            member.close()
        self.members.clear()


class ConnectionCapture:
    """One connection: its fake TCP flow in a pcap, and for a display channel, its video.

    Every public method swallows its own errors (reporting them to the session), because they
    run inside the connection's I/O callbacks.
    """

    def __init__(self, manager: CaptureManager) -> None:
        self._manager = manager
        self._session: SessionCapture | None = None
        self._file: PcapFile | None = None
        self._flow: TcpFlow | None = None
        self._stem = ""
        self._display = False
        self._video: VideoWriter | None = None
        #: Link-stage records kept until the session is known: (time, direction, bytes).
        self._pending: list[tuple[float, int, bytes]] | None = []
        self._pending_bytes = 0
        self._client: tuple[str | None, int] = (None, 0)
        self._server: str | None = None
        self._opened = time.time()
        self.active = True

    def opened(self, client: tuple[str, int] | None, server: str | None) -> None:
        """The socket is connected: remember the real addresses for the fake packets (None
        for a Unix socket: the fake flow then uses placeholder addresses)."""
        self._opened = time.time()
        if client is not None:
            self._client = client
        self._server = server

    def received(self, data: bytes) -> None:
        """Bytes the client sent (after TLS decryption, were there TLS)."""
        if self.active:
            self._record(CLIENT, (data,))

    def sent(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Bytes handed to the transport, in order."""
        if self.active:
            self._record(SERVER, chunks)

    def display_update(
        self,
        size: tuple[int, int],
        snapshots: Iterable[tuple[RectLike, np.ndarray]],
        copies: Sequence[tuple[RectLike, int, int]] = (),
    ) -> None:
        """One screen update went out: ``copies`` are its COPY_BITS (destination box, src_x,
        src_y), sent first, and ``snapshots`` the encoded pixels, by rectangle."""
        if not self.active or not self._display or self._session is None:
            return
        session = self._session
        if session.video_failed or self._manager.video_unavailable is not None:
            return
        try:
            video = self._video
            if video is not None and (video.error is not None or video.size != size):
                video.finish()
                if video.error is not None:
                    session.video_failed = True
                    self._video = None
                    return
                video = None
            if video is None:
                video = self._video = VideoWriter(
                    session.video_path(self._stem),
                    size[0],
                    size[1],
                    on_done=self._manager._video_done,
                )
                self._manager._video_started(video)
            video.update(snapshots, time.time(), copies)
        except Exception as exc:
            session.video_failed = True
            logger.warning("capture: session %#010x: video stopped: %s", session.session_id, exc)

    def close(self) -> None:
        """The connection is gone: end the fake TCP flow, close the files."""
        if self._video is not None:
            self._video.finish()
            self._video = None
        if self._file is not None and self.active and self._flow is not None:
            try:
                self._flow.close(time.time())
                self._file.close()
            except Exception as exc:
                self._fail(exc)
        self.disable()

    # ------------------------------------------------------------------ used by the session

    def attach(
        self,
        session: SessionCapture,
        file: PcapFile,
        stem: str,
        display: bool,
        link_boundaries: Sequence[int] = (),
    ) -> None:
        """Start writing into ``file``: the handshake, then the link stage kept so far, cut
        into one segment per link message (Wireshark's SPICE dissector reads one link-stage
        message per packet, and the server may have received several in one read)."""
        self._session = session
        self._file = file
        self._stem = stem
        self._display = display
        pending, self._pending = self._pending or [], None
        try:
            self._flow = TcpFlow(file, self._client, self._server)
            self._flow.open(self._opened)
            cuts = list(link_boundaries)
            offset = 0  # into the client's stream
            for ts, direction, data in pending:
                if direction == CLIENT:
                    start = offset
                    offset += len(data)
                    for piece in _cut(data, start, cuts):
                        self._flow.data(CLIENT, (piece,), ts)
                else:
                    self._flow.data(direction, (data,), ts)
        except Exception as exc:
            self._fail(exc)

    def flush(self) -> None:
        """Write out the pcap's buffer (called periodically by the manager)."""
        if self.active and self._file is not None:
            try:
                self._file.flush()
            except Exception as exc:
                self._fail(exc)

    def disable(self) -> None:
        """Stop writing (idempotent); close the pcap without further records."""
        self.active = False
        self._pending = None
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except Exception as exc:  # e.g. the last buffered write hits a full disk
                logger.debug("capture: closing %s: %s", getattr(file.raw, "name", "?"), exc)
        if self._video is not None:
            self._video.finish()
            self._video = None

    # ------------------------------------------------------------------ private

    def _record(self, direction: int, chunks: Sequence[bytes | memoryview]) -> None:
        now = time.time()
        flow = self._flow
        if flow is None:
            self._keep(now, direction, chunks)
            return
        try:
            flow.data(direction, chunks, now)
        except Exception as exc:
            self._fail(exc)

    def _keep(self, now: float, direction: int, chunks: Sequence[bytes | memoryview]) -> None:
        if self._pending is None:
            return
        data = b"".join(chunks)
        self._pending_bytes += len(data)
        if self._pending_bytes > MAX_LINK_BYTES:
            self.disable()  # not a SPICE link we would accept anyway
            return
        self._pending.append((now, direction, data))

    def _fail(self, exc: BaseException) -> None:
        if self._session is not None:
            self._session.fail(exc)
        else:
            logger.warning("capture: %s; capture disabled for this connection", exc)
        self.disable()


def _cut(data: bytes, start: int, cuts: list[int]) -> list[bytes]:
    """``data`` (at ``start`` in its stream) split at the stream offsets in ``cuts``."""
    pieces = []
    position = 0
    for cut in cuts:
        if start + position < cut < start + len(data):
            pieces.append(data[position : cut - start])
            position = cut - start
    pieces.append(data[position:])
    return pieces


def _channel_stem(channel_type: int, channel_id: int) -> str:
    try:
        name = ChannelType(channel_type).name.lower()
    except ValueError:
        name = f"type-{channel_type}"
    return name if channel_id == 0 else f"{name}-{channel_id}"
