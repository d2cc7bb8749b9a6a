"""The embeddable asyncio SPICE server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from spiceserver.capture import CaptureManager
from spiceserver.config import ServerConfig
from spiceserver.crypto import KeyPool
from spiceserver.errors import ConfigError, LinkRefused
from spiceserver.faults import FaultInjector
from spiceserver.input import InputHandler, log_input
from spiceserver.protocol.channel import ChannelProtocol
from spiceserver.protocol.cursor import CursorChannel
from spiceserver.protocol.display import SERVER_DISPLAY_CAPS, DisplayChannel
from spiceserver.protocol.enums import ChannelType, KeyModifiers, LinkError
from spiceserver.protocol.events import InputEvent
from spiceserver.protocol.inputs import InputsChannel
from spiceserver.protocol.link import LinkRequest
from spiceserver.protocol.main import MainChannel
from spiceserver.record import JsonlRecorder, Recorder, enum_name, link_record, stamp
from spiceserver.server.connection import SpiceConnection
from spiceserver.server.encode_cache import EncodeCache
from spiceserver.server.handlers import (
    ChannelHandler,
    CursorHandler,
    DisplayHandler,
    InputsHandler,
    MainHandler,
)
from spiceserver.server.security import FailureTracker, Ticket, tls_context
from spiceserver.session import OFFERED_CHANNELS, Session, SessionRegistry
from spiceserver.sources.base import FramebufferSource

__all__ = ["SpiceServer"]

logger = logging.getLogger("spiceserver")

_CHANNELS: dict[int, tuple[type[ChannelProtocol], type[ChannelHandler]]] = {
    ChannelType.MAIN: (MainChannel, MainHandler),
    ChannelType.DISPLAY: (DisplayChannel, DisplayHandler),
    ChannelType.INPUTS: (InputsChannel, InputsHandler),
    ChannelType.CURSOR: (CursorChannel, CursorHandler),
}


def _raise_open_files_limit(connections: int) -> None:
    """Let the process hold ``max_connections`` sockets (plus files), up to the hard limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            logger.warning("only %d open files allowed: max_connections is effectively lower",
                           new)


def _warmup_encoders() -> None:
    import encoders

    encoders.warmup()


class SpiceServer:
    """Serves one framebuffer source to any number of SPICE clients.

    Example::

        source = NumpySource(640, 480)
        async with SpiceServer(source, password="secret", port=5900) as server:
            print(server.uri)
            await server.serve_forever()

    Options are :class:`~spiceserver.config.ServerConfig` fields, given either as a config or as
    keyword arguments.  ``on_input`` receives every client's input events on the event loop
    thread (default: they are logged).  ``recorders`` receive the session record (see
    :mod:`spiceserver.record`), besides the ``record_path`` file if configured.
    """

    def __init__(
        self,
        source: FramebufferSource,
        config: ServerConfig | None = None,
        *,
        on_input: InputHandler | None = None,
        recorders: Iterable[Recorder] = (),
        **options: Any,
    ) -> None:
        if config is None:
            config = ServerConfig(**options)
        elif options:
            config = dataclasses.replace(config, **options)
        self.config = config
        self.source = source
        self.on_input = on_input or log_input
        self.ticket = Ticket(
            password=None if config.password is None else config.password.encode(),
            lifetime=config.ticket_lifetime,
            one_shot=config.one_shot_ticket,
        )
        self.failures = FailureTracker()
        self._tls = (
            None
            if config.tls_port is None
            else tls_context(config.tls_cert or "", config.tls_key or "")
        )
        self._tls_server: asyncio.Server | None = None
        self.sessions = SessionRegistry(max_sessions=config.max_clients)
        #: Encoded bands shared by sessions at the same source version (raw, QUIC, LZ).
        self.encode_cache = EncodeCache(config.encode_cache_bytes)
        self.connections: set[SpiceConnection] = set()
        #: Display channels linked now: with fewer than two, nothing is shared through
        #: ``encode_cache``.
        self.displays = 0
        self.executor = ThreadPoolExecutor(
            max_workers=config.encoder_threads, thread_name_prefix="spice-encode"
        )
        self.keys = KeyPool(self.executor, config.rsa_key_pool)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        #: Session record: every client event, as dicts, to each of these (empty: off).
        self.recorders: list[Recorder] = list(recorders)
        if config.record_path is not None:
            try:
                self.recorders.append(JsonlRecorder(config.record_path))
            except OSError as exc:
                raise ConfigError(f"cannot write the session record: {exc}") from exc
        #: Capture mode (``capture_dir``): pcaps and video per session; None when off.
        self.captures = None if config.capture_dir is None else CaptureManager(config.capture_dir)
        #: Fault injection (``faults``): deliberate misbehaviour for client tests; None when off.
        self.faults = FaultInjector(config.faults) if config.faults else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen, and start the source; if either fails, what was started is stopped."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self.keys.fill()
        if self.config.warmup_encoders:
            # Compile (or load from numba's cache) every codec kernel before the first client,
            # in a worker thread, so no frame ever waits on the JIT.
            started = time.perf_counter()
            await loop.run_in_executor(self.executor, _warmup_encoders)
            logger.info("image encoders ready in %.2fs", time.perf_counter() - started)
        _raise_open_files_limit(self.config.max_connections)
        self.source.on_disconnect_request = self.disconnect_clients
        await self.source.start()
        self._server = await loop.create_server(
            lambda: SpiceConnection(self), self.config.host, self.config.port
        )
        if self._tls is not None:
            self._tls_server = await loop.create_server(
                lambda: SpiceConnection(self, secure=True),
                self.config.tls_host or self.config.host,
                self.config.tls_port,
                ssl=self._tls,
                ssl_handshake_timeout=self.config.handshake_timeout,
            )
            logger.info("TLS listening on port %d; plain links must switch to it (%s)",
                        self.tls_port,
                        "except " + ",".join(sorted(self.config.plaintext_channels))
                        if self.config.plaintext_channels else "all channels")
        logger.info("listening on %s (source %s %dx%d)", self.uri, self.source.kind,
                    *self.source.size)
        if self.faults is not None:
            self.faults.log_active()
        if self.captures is not None:
            logger.log(logging.INFO if self.captures.video_unavailable is None else logging.WARNING,
                       "%s", self.captures.describe())

    async def close(self) -> None:
        """Stop listening, disconnect every client, stop the source."""
        listeners = [s for s in (self._server, self._tls_server) if s is not None]
        for listener in listeners:
            listener.close()
        for connection in list(self.connections):
            connection.abort("server closing")
        for listener in listeners:
            await listener.wait_closed()
        self._server = self._tls_server = None
        if self.recorders:
            # The aborted connections' disconnects reach the record first (a TLS transport
            # needs more than one loop turn to report its connection lost).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._no_connections.wait()
            for recorder in self.recorders:
                recorder.close()
        await self.source.stop()
        if self.captures is not None:
            await self.captures.aclose()
        for task in list(self._tasks):
            task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.encode_cache.clear()
        self._closed.set()

    async def serve_forever(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> SpiceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        """The port actually listened on (useful with ``port=0``)."""
        if self._server is None or not self._server.sockets:
            return self.config.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def tls_port(self) -> int | None:
        """The TLS port actually listened on, if TLS is configured."""
        if self._tls_server is None or not self._tls_server.sockets:
            return self.config.tls_port
        return int(self._tls_server.sockets[0].getsockname()[1])

    @property
    def uri(self) -> str:
        """``spice://host:port`` (with ``?tls-port=`` when TLS is on), as remote-viewer takes."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        uri = f"spice://{host}:{self.port}"
        if self.config.tls_port is not None:
            uri += f"?tls-port={self.tls_port}"
        return uri

    def set_ticket(self, password: str | None, lifetime: float | None = None) -> None:
        """Replace the ticket (None: any ticket); linked clients stay connected."""
        if password is not None and not 0 < len(password.encode()) <= 60:
            raise ConfigError("the password must be 1..60 bytes")
        self.ticket = Ticket(
            password=None if password is None else password.encode(),
            lifetime=lifetime,
            one_shot=self.config.one_shot_ticket,
        )

    # ------------------------------------------------------------------ used by connections

    def channel_caps(self, channel_type: int) -> list[int]:
        if channel_type == ChannelType.DISPLAY:
            return list(SERVER_DISPLAY_CAPS)
        # Inputs: no KEY_SCANCODE cap needed; we accept KEY_SCANCODE anyway.
        return []

    def check_secure(self, connection: SpiceConnection) -> tuple[LinkError, str]:
        """With TLS on, a plain link must switch to the TLS port (spice-gtk reconnects)."""
        if self._tls is None or connection.secure or connection.request is None:
            return LinkError.OK, ""
        if connection.request.channel_name in self.config.plaintext_channels:
            return LinkError.OK, ""
        return LinkError.NEED_SECURED, "this channel must use TLS"

    def attach(
        self, connection: SpiceConnection, request: LinkRequest, mini_header: bool
    ) -> tuple[ChannelProtocol, ChannelHandler]:
        """A connection completed its link: give it its channel protocol and handler."""
        protocol_cls, handler_cls = _CHANNELS[request.channel_type]
        limits = self.config.channel_limits
        max_size = self.config.max_message_sizes.get(request.channel_name)
        if max_size is not None:
            limits = dataclasses.replace(limits, max_message_size=max_size)
        kwargs: dict[str, Any] = {
            "mini_header": mini_header,
            "common_caps": request.common_caps,
            "channel_caps": request.channel_caps,
            "limits": limits,
        }
        if request.channel_type == ChannelType.MAIN:
            session = self.sessions.create(connection)
            protocol: ChannelProtocol = MainChannel(
                session_id=session.id, channels=OFFERED_CHANNELS, name=self.config.name, **kwargs
            )
            logger.info("%s: session %#010x started", connection.name, session.id)
        else:
            session, replaced = self.sessions.attach(request, connection)
            if replaced is not None:
                logger.info("%s: replaces an older %s connection", connection.name,
                            request.channel_name)
                replaced.abort(f"replaced by a newer {request.channel_name} connection")
            protocol = protocol_cls(**kwargs)
        handler = handler_cls(self, connection, session)
        handler.channel = protocol  # type: ignore[attr-defined]
        session.metrics.channel_stats.append(protocol.stats)
        if self.faults is not None:
            connection.faults = self.faults.connection(connection, protocol, request.channel_name)
        if self.captures is not None and connection.capture is not None:
            self.captures.bind(connection.capture, session.id, request.channel_type,
                               request.channel_id)
        return protocol, handler

    def end_session(self, session: Session) -> None:
        if not session.alive:
            return
        for connection in self.sessions.end(session):
            connection.close("session ended (its main channel closed)")
        logger.info("session %#010x ended: %s", session.id, session.metrics.summary())
        if self.captures is not None:
            self.captures.end_session(session.id)

    def disconnect_clients(self) -> None:
        """End every client session (the source asked: ``FramebufferSource.request_disconnect``).
        Call on the loop thread."""
        sessions = list(self.sessions.sessions.values())
        logger.info("source %s asked to disconnect every client: ending %d session(s)",
                    self.source.kind, len(sessions))
        for session in sessions:
            session.main.close()  # flushes what is queued, then the client sees EOF
            self.end_session(session)

    def connection_opened(self, connection: SpiceConnection) -> None:
        self.connections.add(connection)
        self._no_connections.clear()

    def connection_closed(self, connection: SpiceConnection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._no_connections.set()
        handler = connection.handler
        if handler is not None and connection.request is not None:
            key = (connection.request.channel_type, connection.request.channel_id)
            if connection.request.channel_type != ChannelType.MAIN:
                self.sessions.detach(handler.session, key, connection)

    def log_refusal(self, connection: SpiceConnection, exc: LinkRefused) -> None:
        code = enum_name(LinkError, exc.code)
        logger.warning("%s: refused %s: %s", connection.name, code.upper(), exc.reason)
        self.record_link(connection, code, exc.reason)

    # ------------------------------------------------------------------ session record

    def record(self, event: dict[str, Any], connection: SpiceConnection | None = None) -> None:
        """Hand one event to every recorder, stamped with time, session and channel.  Callers
        test ``self.recorders`` first, so a server that records nothing pays one test."""
        session = channel = None
        if connection is not None:
            handler = connection.handler
            if handler is not None:
                session = handler.session.id
            elif connection.request is not None and connection.request.connection_id:
                session = connection.request.connection_id
            if connection.request is not None:
                channel = connection.request.channel_name
                event.setdefault("channel_id", connection.request.channel_id)
        event = stamp(event, session, channel)
        for recorder in list(self.recorders):
            try:
                recorder.record(event)
            except Exception:
                logger.exception("recorder %r failed; removed", recorder)
                self.recorders.remove(recorder)

    def record_link(self, connection: SpiceConnection, result: str, reason: str = "") -> None:
        """A link finished: ``ok``, or the SpiceLinkErr it was refused with and why."""
        request = connection.request
        if not self.recorders or request is None:
            return
        event = link_record(request.channel_type, request.channel_id, request.common_caps,
                            request.channel_caps, result, connection.peer)
        if reason:
            event["reason"] = reason
        self.record(event, connection)

    def set_key_modifiers(self, modifiers: KeyModifiers) -> None:
        """The host's lock keys (Caps/Num/Scroll): KEY_MODIFIERS to every inputs channel whose
        client was told otherwise.  Call on the loop thread; cheap to call repeatedly."""
        for connection in list(self.connections):
            handler = connection.handler
            if isinstance(handler, InputsHandler) and getattr(handler, "channel", None):
                handler.channel.set_modifiers(modifiers)
                connection.flush()

    def deliver_input(self, event: InputEvent) -> None:
        try:
            self.on_input(event)
        except Exception:
            logger.exception("input callback failed on %s", event)

    def track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


