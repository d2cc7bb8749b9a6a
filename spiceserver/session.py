"""Sessions: which connections belong to which client (pure bookkeeping, no I/O).

A main-channel link starts a session with a random non-zero id (MAIN INIT ``session_id``);
every other channel must link with that id as its ``connection_id`` (SPICE-REFERENCE 1.8).
Like a plain reimplementation should (pitfall 12), a non-zero id on a main link is not a
migration: it simply starts a new session.
"""

from __future__ import annotations

import collections
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from spiceserver.bandwidth import LinkEstimate
from spiceserver.protocol.channel import ChannelStats
from spiceserver.protocol.enums import ChannelType, LinkError
from spiceserver.protocol.link import LinkRequest

__all__ = ["Session", "SessionMetrics", "SessionRegistry"]


@dataclass(slots=True)
class SessionMetrics:
    """What the one-line session summary reports."""

    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    draws: int = 0
    bytes_by_codec: collections.Counter[str] = field(default_factory=collections.Counter)
    encode_seconds: float = 0.0
    #: Draws whose image another session had encoded (the server's encode cache).
    shared_draws: int = 0
    #: Scrolls sent as COPY_BITS (moves on the client instead of images).
    copy_bits: int = 0
    input_events: int = 0
    #: The session's channels' counters (ACK lag and round-trip samples live there).
    channel_stats: list[ChannelStats] = field(default_factory=list)
    #: Round trip and bandwidth (net test at connect, then ACKs and backpressure).
    link: LinkEstimate = field(default_factory=LinkEstimate)
    #: Areas sent lossy and re-sent losslessly once still (``lossless_refresh``).
    lossless_refreshes: int = 0
    #: Video streams created, their frames, and the seconds they lived (ended ones, plus the
    #: live one's since ``stream_started``).
    streams: int = 0
    stream_frames: int = 0
    stream_seconds: float = 0.0
    stream_started: float | None = None
    #: STREAM_CLIPs sent (something came over a stream, or went away).
    stream_clips: int = 0

    def _stream_time(self, now: float) -> float:
        seconds = self.stream_seconds
        if self.stream_started is not None:
            seconds += max(0.0, now - self.stream_started)
        return seconds

    def stream_fps(self, now: float) -> float:
        seconds = self._stream_time(now)
        return self.stream_frames / seconds if seconds > 0 else 0.0

    def stream_bps(self, now: float) -> float:
        """Bits per second of stream frames while streams played."""
        seconds = self._stream_time(now)
        size = sum(n for codec, n in self.bytes_by_codec.items() if codec.startswith("stream-"))
        return size * 8 / seconds if seconds > 0 else 0.0

    def summary(self, now: float | None = None) -> str:
        elapsed = max(1e-9, (now or time.monotonic()) - self.started)
        codecs = ",".join(f"{k}={v}" for k, v in sorted(self.bytes_by_codec.items())) or "none"
        encode_ms = 1000 * self.encode_seconds / self.frames if self.frames else 0.0
        lag = _median([x for stats in self.channel_stats for x in stats.ack_lag])
        rtt = _median([x for stats in self.channel_stats for x in stats.rtt])
        return (
            f"{elapsed:.1f}s fps={self.frames / elapsed:.1f} frames={self.frames} "
            f"draws={self.draws} shared={self.shared_draws} copy_bits={self.copy_bits} "
            f"bytes[{codecs}] refreshes={self.lossless_refreshes} "
            f"streams={self.streams} stream_frames={self.stream_frames} "
            f"stream_fps={self.stream_fps(time.monotonic()):.1f} "
            f"stream_kbps={self.stream_bps(time.monotonic()) / 1000:.0f} "
            f"stream_clips={self.stream_clips} "
            f"encode={encode_ms:.2f}ms/frame "
            f"ack_lag={lag * 1000:.1f}ms rtt={rtt * 1000:.1f}ms inputs={self.input_events} "
            f"{self.link.summary(now)}"
        )


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


@dataclass(eq=False, slots=True)
class Session:
    """One client: its main connection and the secondary channels linked to it."""

    id: int
    main: Any
    channels: dict[tuple[int, int], Any] = field(default_factory=dict)
    metrics: SessionMetrics = field(default_factory=SessionMetrics)
    #: GLZ dictionaries by DISPLAY_INIT glz_dictionary_id, shared by the session's displays.
    glz_dictionaries: dict[int, Any] = field(default_factory=dict)
    alive: bool = True


class SessionRegistry:
    """Live sessions by id.  ``offered`` is what CHANNELS_LIST offers, (type, id) pairs: the
    only secondary channels that may link."""

    def __init__(
        self, offered: tuple[tuple[int, int], ...], max_sessions: int | None = None
    ) -> None:
        self.sessions: dict[int, Session] = {}
        self.offered = offered
        #: Most live sessions (``ServerConfig.max_clients``); None: no limit.
        self.max_sessions = max_sessions

    def check(self, request: LinkRequest, *, authenticated: bool = True) -> tuple[LinkError, str]:
        """Whether a link may proceed: before its ticket was checked (``authenticated``
        False) only what is the same for every client (channel offered, server full); after
        it, whether the session it names is live.  So before authentication a live session id
        and an unknown one get the same answer (spice-server checks the id after the ticket
        too: ``spice:server/reds.cpp`` ``reds_handle_other_links``)."""
        channel = (request.channel_type, request.channel_id)
        if request.channel_type == ChannelType.MAIN:
            if request.channel_id != 0:
                return LinkError.CHANNEL_NOT_AVAILABLE, "only main channel 0 exists"
            if self.max_sessions is not None and len(self.sessions) >= self.max_sessions:
                # SpiceLinkErr has no "server full": ERROR is the generic refusal, which
                # spice-gtk reports as a link error (not as a wrong password).
                return LinkError.ERROR, f"{len(self.sessions)} clients already (max_clients)"
            return LinkError.OK, ""
        if channel not in self.offered:
            return LinkError.CHANNEL_NOT_AVAILABLE, f"{request.channel_name} is not offered"
        if not authenticated:
            return LinkError.OK, ""
        session = self.sessions.get(request.connection_id)
        if session is None or not session.alive:
            return LinkError.BAD_CONNECTION_ID, (
                f"connection id {request.connection_id:#x} is no live session"
            )
        return LinkError.OK, ""

    def create(self, main: Any) -> Session:
        while True:
            session_id = secrets.randbits(32)
            if session_id and session_id not in self.sessions:
                break
        session = Session(id=session_id, main=main)
        self.sessions[session_id] = session
        return session

    def attach(self, request: LinkRequest, connection: Any) -> tuple[Session, Any | None]:
        """Add a secondary channel; returns the session and a connection it replaces."""
        session = self.sessions[request.connection_id]
        key = (request.channel_type, request.channel_id)
        replaced = session.channels.get(key)
        session.channels[key] = connection
        return session, replaced

    def detach(self, session: Session, key: tuple[int, int], connection: Any) -> None:
        if session.channels.get(key) is connection:
            del session.channels[key]

    def end(self, session: Session) -> list[Any]:
        """Forget a session; returns its secondary connections, to be closed."""
        session.alive = False
        self.sessions.pop(session.id, None)
        return list(session.channels.values())
