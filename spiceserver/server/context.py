"""What a connection and its channel may use of the server, as one small object.

:class:`~spiceserver.server.server.SpiceServer` builds one :class:`ServerContext` and hands it
to every connection; connections hand it to their channel handlers.  Nothing below the server
imports the server module, so the layer has no import circle: ``server.py`` → ``connection.py``
→ ``channels/`` → ``context.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from spiceserver.record import RecordBudget, Recorder, stamp
from spiceserver.server.glz import GlzDictionaries
from spiceserver.server.layout import LayoutController
from spiceserver.server.security import AddressLimits, TicketGate

if TYPE_CHECKING:
    from spiceserver.capture import CaptureManager, ConnectionCapture
    from spiceserver.config import ServerConfig
    from spiceserver.crypto import KeyPool
    from spiceserver.protocol.events import InputEvent
    from spiceserver.server.agent import AgentServices
    from spiceserver.server.audio import AudioHub
    from spiceserver.server.encode_cache import EncodeCache
    from spiceserver.server.fault_injection import FaultInjector
    from spiceserver.server.microphone import MicrophoneHub
    from spiceserver.server.security import FailureTracker, Ticket
    from spiceserver.server.warmup import EncoderWarmup
    from spiceserver.session import Session, SessionRegistry
    from spiceserver.sources.base import FramebufferSource

__all__ = ["ChannelOutlet", "ServerContext"]

logger = logging.getLogger("spiceserver")


class ChannelOutlet(Protocol):
    """What a channel handler needs of its connection."""

    @property
    def name(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def writable(self) -> bool: ...
    @property
    def capture(self) -> ConnectionCapture | None: ...
    def flush(self) -> None: ...
    def buffered(self) -> int: ...
    def close(self, reason: str = ...) -> None: ...
    def abort(self, reason: str = ...) -> None: ...


@dataclass(eq=False)
class ServerContext:
    """The server's shared state and services, as connections and channels see them."""

    config: ServerConfig
    source: FramebufferSource
    sessions: SessionRegistry
    keys: KeyPool
    failures: FailureTracker
    #: Replaced as a whole by ``SpiceServer.set_ticket``.
    ticket: Ticket
    #: Worker threads: image encodes (RSA keys have threads of their own, in ``keys``).
    executor: Executor
    #: Encoded bands shared by sessions at the same source version (raw, QUIC, LZ).
    encode_cache: EncodeCache
    on_input: Callable[[InputEvent], None]
    tls_enabled: bool = False
    #: Codecs whose kernels are compiled; None: all, compiled on first use (see warmup.py).
    codecs_ready: set[str] | None = None
    #: The kernels' compilation, while the server already serves (None: not warming up).
    warmup: EncoderWarmup | None = None
    #: Seconds, monotonic: what the protocol objects are told ``now`` is (tests inject theirs).
    clock: Callable[[], float] = time.monotonic
    #: Session record: every client event, as dicts, to each of these (empty: off).
    recorders: list[Recorder] = field(default_factory=list)
    #: Capture mode (``capture_dir``): pcaps and video per session; None when off.
    captures: CaptureManager | None = None
    #: Fault injection (``faults``): deliberate misbehaviour for client tests; None when off.
    faults: FaultInjector | None = None
    #: Sound for the playback channels; None: audio off (no playback channel offered).
    audio: AudioHub | None = None
    #: The client's microphone for the record channels; None: no record channel offered.
    microphone: MicrophoneHub | None = None
    #: The built-in agent's shared parts (clipboard hub, file worker); None: ``agent=False``.
    agent: AgentServices | None = None
    #: Every open connection (linked or not).
    connections: set[Any] = field(default_factory=set)
    #: Display channels linked now: with fewer than two, nothing is shared through
    #: ``encode_cache``.
    displays: int = 0
    #: Connections taking a backlog of input step by step now (clients flooding): each
    #: pauses long enough between steps that together they have at most half of the loop.
    flooding: int = 0
    #: When each address's ticket is checked (paced once it has failed: ``failures``).
    gate: TicketGate = field(init=False)
    #: Connections per client address, and those of each still in the link stage.
    addresses: AddressLimits = field(init=False)
    #: The sessions' GLZ dictionaries, within their count and memory budget.
    glz: GlzDictionaries = field(init=False)
    #: Events per second each session may add to the session record.
    record_budget: RecordBudget = field(init=False)
    #: The clients' monitor layouts (agent MONITORS_CONFIG) applied to ``source``.
    layout: LayoutController = field(init=False)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _no_connections: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._no_connections.set()
        config = self.config
        self.gate = TicketGate(self.failures, lambda: self.clock())
        self.addresses = AddressLimits(
            config.max_connections_per_address, config.max_unauthenticated_per_address
        )
        self.glz = GlzDictionaries(config.glz_memory_budget, config.glz_dictionaries_per_session)
        self.record_budget = RecordBudget(config.record_rate, config.record_burst)
        self.layout = LayoutController(
            self.source, mode=config.resize, debounce=config.resize_debounce, track=self.track
        )

    # ------------------------------------------------------------------ connections

    def opened(self, connection: object) -> None:
        self.connections.add(connection)
        self._no_connections.clear()

    def closed(self, connection: object) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._no_connections.set()

    async def wait_no_connections(self) -> None:
        await self._no_connections.wait()

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task alive until it ends (cancelled when the server closes)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ sessions and input

    def end_session(self, session: Session) -> None:
        """The session's main channel closed: close its other channels and log its metrics."""
        if not session.alive:
            return
        for connection in self.sessions.end(session):
            connection.close("session ended (its main channel closed)")
        self.glz.release(session)  # freed now, not whenever the garbage collector runs
        self.layout.session_ended(session)
        dropped = self.record_budget.forget(session.id)
        if dropped and self.recorders:
            self._emit(_dropped(dropped), session.id, "main")
        logger.info("session %#010x ended: %s", session.id, session.metrics.summary())
        if self.captures is not None:
            self.captures.end_session(session.id)

    def deliver_input(self, event: InputEvent) -> None:
        try:
            self.on_input(event)
        except Exception:
            logger.exception("input callback failed on %s", event)

    # ------------------------------------------------------------------ session record

    def record(
        self,
        event: dict[str, Any],
        session: int | None = None,
        channel: str | None = None,
        channel_id: int | None = None,
    ) -> None:
        """Hand one event to every recorder, stamped with time, session and channel.  Callers
        test ``self.recorders`` first, so a server that records nothing pays one test.

        Each session records at most ``record_rate`` events a second after a burst of
        ``record_burst`` (links that succeeded and disconnects always): a flood of input
        cannot flood the record; a ``record_dropped`` event says how much was left out.
        """
        if channel_id is not None:
            event.setdefault("channel_id", channel_id)
        kind = event.get("event")
        structural = kind == "disconnect" or (kind == "link" and event.get("result") == "ok")
        if not structural:
            key = session if session in self.sessions.sessions else None
            recorded, dropped = self.record_budget.admit(key, self.clock())
            if not recorded:
                return
            if dropped:
                self._emit(_dropped(dropped), session, channel)
        self._emit(event, session, channel)

    def _emit(self, event: dict[str, Any], session: int | None, channel: str | None) -> None:
        event = stamp(event, session, channel)
        for recorder in list(self.recorders):
            try:
                recorder.record(event)
            except Exception:
                logger.exception("recorder %r failed; removed", recorder)
                self.recorders.remove(recorder)


def _dropped(count: int) -> dict[str, Any]:
    return {"event": "record_dropped", "dropped": count, "reason": "record_rate"}
