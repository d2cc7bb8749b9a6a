"""The embeddable asyncio SPICE server."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from spiceserver.config import ServerConfig
from spiceserver.crypto import KeyPool
from spiceserver.errors import LinkRefused
from spiceserver.input import InputHandler, log_input
from spiceserver.protocol.channel import ChannelProtocol
from spiceserver.protocol.cursor import CursorChannel
from spiceserver.protocol.display import SERVER_DISPLAY_CAPS, DisplayChannel
from spiceserver.protocol.enums import ChannelType, LinkError
from spiceserver.protocol.events import InputEvent
from spiceserver.protocol.inputs import InputsChannel
from spiceserver.protocol.link import LinkRequest
from spiceserver.protocol.main import MainChannel
from spiceserver.server.connection import SpiceConnection
from spiceserver.server.handlers import (
    ChannelHandler,
    CursorHandler,
    DisplayHandler,
    InputsHandler,
    MainHandler,
)
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
    thread (default: they are logged).
    """

    def __init__(
        self,
        source: FramebufferSource,
        config: ServerConfig | None = None,
        *,
        on_input: InputHandler | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            config = ServerConfig(**options)
        elif options:
            config = dataclasses.replace(config, **options)
        self.config = config
        self.source = source
        self.on_input = on_input or log_input
        self.password_bytes = None if config.password is None else config.password.encode()
        self.sessions = SessionRegistry()
        self.connections: set[SpiceConnection] = set()
        self.executor = ThreadPoolExecutor(
            max_workers=config.encoder_threads, thread_name_prefix="spice-encode"
        )
        self.keys = KeyPool(self.executor, config.rsa_key_pool)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen, and start the source."""
        loop = asyncio.get_running_loop()
        self.keys.fill()
        if self.config.warmup_encoders:
            # Compile (or load from numba's cache) every codec kernel before the first client,
            # in a worker thread, so no frame ever waits on the JIT.
            started = time.perf_counter()
            await loop.run_in_executor(self.executor, _warmup_encoders)
            logger.info("image encoders ready in %.2fs", time.perf_counter() - started)
        await self.source.start()
        self._server = await loop.create_server(
            lambda: SpiceConnection(self), self.config.host, self.config.port
        )
        logger.info("listening on %s (source %s %dx%d)", self.uri, self.source.kind,
                    *self.source.size)

    async def close(self) -> None:
        """Stop listening, disconnect every client, stop the source."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await self.source.stop()
        for task in list(self._tasks):
            task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
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
    def uri(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"spice://{host}:{self.port}"

    # ------------------------------------------------------------------ used by connections

    def channel_caps(self, channel_type: int) -> list[int]:
        if channel_type == ChannelType.DISPLAY:
            return list(SERVER_DISPLAY_CAPS)
        # Inputs: no KEY_SCANCODE cap needed; we accept KEY_SCANCODE anyway.
        return []

    def check_secure(self, connection: SpiceConnection) -> tuple[LinkError, str]:
        """Hook for TLS policy (NEED_SECURED); plain links are fine without TLS."""
        return LinkError.OK, ""

    def ticket_expired(self) -> bool:
        return False

    def attach(
        self, connection: SpiceConnection, request: LinkRequest, mini_header: bool
    ) -> tuple[ChannelProtocol, ChannelHandler]:
        """A connection completed its link: give it its channel protocol and handler."""
        protocol_cls, handler_cls = _CHANNELS[request.channel_type]
        kwargs: dict[str, Any] = {
            "mini_header": mini_header,
            "common_caps": request.common_caps,
            "channel_caps": request.channel_caps,
            "limits": self.config.channel_limits,
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
                replaced.abort()
            protocol = protocol_cls(**kwargs)
        handler = handler_cls(self, connection, session)
        handler.channel = protocol  # type: ignore[attr-defined]
        session.metrics.channel_stats.append(protocol.stats)
        return protocol, handler

    def end_session(self, session: Session) -> None:
        if not session.alive:
            return
        for connection in self.sessions.end(session):
            connection.close()
        logger.info("session %#010x ended: %s", session.id, session.metrics.summary())

    def connection_opened(self, connection: SpiceConnection) -> None:
        self.connections.add(connection)

    def connection_closed(self, connection: SpiceConnection) -> None:
        self.connections.discard(connection)
        handler = connection.handler
        if handler is not None and connection.request is not None:
            key = (connection.request.channel_type, connection.request.channel_id)
            if connection.request.channel_type != ChannelType.MAIN:
                self.sessions.detach(handler.session, key, connection)

    def log_refusal(self, connection: SpiceConnection, exc: LinkRefused) -> None:
        try:
            code = LinkError(exc.code).name
        except ValueError:
            code = str(exc.code)
        logger.warning("%s: refused %s: %s", connection.name, code, exc.reason)

    def deliver_input(self, event: InputEvent) -> None:
        try:
            self.on_input(event)
        except Exception:
            logger.exception("input callback failed on %s", event)

    def track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


