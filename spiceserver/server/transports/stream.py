"""Stream sockets (TCP, TLS, Unix) carrying SPICE, or WebSocket and HTTP on the same port.

Every accepted socket gets a :class:`StreamProtocol`.  It looks at the first four bytes, as
libspice-server does (``spice:server/reds.cpp`` ``reds_handle_read_magic_done``,
``server/websocket.c``): ``REDQ`` is a SPICE link; ``GET `` is HTTP, which becomes a WebSocket
carrying the SPICE stream (spice-html5 connects so, with no websockify) or, with ``--web``, a
request for a file of the web client; another HTTP method gets 405; anything else goes to the
SPICE link stage, which answers INVALID_MAGIC.  Over TLS the same happens after the handshake
(``wss://`` on the TLS port).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from spiceserver.protocol.enums import SPICE_MAGIC
from spiceserver.server.connection import SpiceConnection
from spiceserver.server.context import ServerContext

if TYPE_CHECKING:
    from spiceserver.server.transports.web import WebRoot

__all__ = ["COALESCE_BELOW", "StreamOutlet", "StreamProtocol", "coalesce"]

logger = logging.getLogger("spiceserver.connection")

#: First bytes of the HTTP methods we recognise (to answer 405 instead of INVALID_MAGIC).
_HTTP_METHODS = (b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC")
_SNIFF_BYTES = 4
_KNOWN_STARTS = (SPICE_MAGIC, b"GET ", *_HTTP_METHODS)


#: Chunks smaller than this are joined with their small neighbours before the transport gets
#: them: a transport keeps one object per chunk (tens of bytes each, and a 6-byte header is a
#: chunk), so thousands of small unread messages would cost many times their size in memory.
#: Joined, what the transport reports unsent is what it holds.
COALESCE_BELOW = 4096


def coalesce(chunks: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
    """``chunks`` with each run of small ones joined into one (large ones pass uncopied)."""
    out: list[bytes | memoryview] = []
    run: list[bytes | memoryview] = []
    for chunk in chunks:
        if len(chunk) < COALESCE_BELOW:
            run.append(chunk)
            continue
        if run:
            out.append(run[0] if len(run) == 1 else b"".join(run))
            run = []
        out.append(chunk)
    if run:
        out.append(run[0] if len(run) == 1 else b"".join(run))
    return out


class StreamOutlet:
    """A connection's outlet straight onto an asyncio stream transport."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.client_address: tuple[str, int] | None = None
        self.server_address: str | None = None
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
            self.address = str(peer[0])
            self.client_address = (str(peer[0]), int(peer[1]))
            if isinstance(local, tuple) and local:
                self.server_address = str(local[0])
        else:  # a Unix socket: the peer has no address worth naming
            self.peer = self.address = "unix"

    def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        self.transport.writelines(coalesce(chunks))

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def pause_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class StreamProtocol(asyncio.Protocol):
    """One accepted socket: sniff, then feed the SPICE connection directly or via WebSocket."""

    def __init__(
        self, context: ServerContext, *, secure: bool = False, web: WebRoot | None = None
    ) -> None:
        self.context = context
        self.secure = secure
        self.web = web
        self.connection: SpiceConnection | None = None
        self._sniffed = bytearray()
        #: Where bytes go once the first ones were looked at (SPICE or the WebSocket layer).
        self._receive: Callable[[bytes], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        assert isinstance(transport, asyncio.Transport) or hasattr(transport, "writelines")
        stream: asyncio.Transport = transport  # type: ignore[assignment]
        stream.set_write_buffer_limits(high=self.context.config.write_buffer_high)
        connection = SpiceConnection(self.context, StreamOutlet(stream), secure=self.secure)
        if connection.opened():
            self.connection = connection

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection is None:
            return
        if self._receive is None:
            self._sniffed += data
            sniffed = bytes(self._sniffed)
            if len(sniffed) < _SNIFF_BYTES and any(s.startswith(sniffed) for s in _KNOWN_STARTS):
                return  # too early to tell
            data, self._sniffed = bytes(self._sniffed), bytearray()
            self._receive = self._route(connection, data[:_SNIFF_BYTES])
        self._receive(data)

    def _route(self, connection: SpiceConnection, head: bytes) -> Callable[[bytes], None]:
        config = self.context.config
        if head == SPICE_MAGIC or not config.websocket:
            return connection.data_received
        from spiceserver.server.transports.websocket import WebSocketLayer

        if head == b"GET ":
            layer = WebSocketLayer(connection, self.web)
            return layer.data_received
        if head in _HTTP_METHODS:
            return WebSocketLayer(connection, self.web, method_not_allowed=True).data_received
        return connection.data_received

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.connection.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.connection is not None:
            self.connection.pause_writing()

    def resume_writing(self) -> None:
        if self.connection is not None:
            self.connection.resume_writing()
