"""WebSocket (RFC 6455) carrying a SPICE byte stream, and plain HTTP GETs for the web client.

Built on the ``websockets`` library's sans-I/O :class:`~websockets.server.ServerProtocol`: it
parses the HTTP request and the frames, answers pings and closes.  As libspice-server does
(``spice:server/websocket.c``): the subprotocol ``binary`` is accepted when offered (another
one is refused); BINARY and TEXT payloads are both the SPICE stream as raw bytes; frame
boundaries mean nothing (spice-html5 buffers, ``spice-html5:src/spiceconn.js``); each write
goes out as one BINARY frame.  Any path is accepted for the upgrade (spice_auto.html asks for
``/websockify``).  Pages served from elsewhere may connect — the ticket is the gate — unless
``ServerConfig.websocket_origins`` names the allowed origins.

A GET without an upgrade is a request for a file of the web client (``--web``), else 404.
Limits: the request must fit ``MAX_REQUEST_BYTES`` and arrive within the handshake timeout
(the SPICE connection's own timer); a message may not exceed ``websocket_max_message``; a
flood of control frames closes the connection; output counts against ``max_write_buffer``
like any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from websockets.datastructures import Headers
from websockets.exceptions import InvalidOrigin, NegotiationError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol

from spiceserver.server.connection import Outlet, SpiceConnection

if TYPE_CHECKING:
    from spiceserver.server.transports.web import WebRoot

__all__ = ["MAX_CONTROL_FRAMES_PER_SECOND", "MAX_REQUEST_BYTES", "WebSocketLayer"]

logger = logging.getLogger("spiceserver.websocket")

#: Largest HTTP request head (libspice-server reads at most 4 KiB; browsers send ~1 KiB).
MAX_REQUEST_BYTES = 8192
#: Input is handed to the frame parser in slices this big, so a flood of tiny frames is
#: checked (and stopped) after at most this many bytes' worth of work.
_SLICE = 4096
#: Pings and other control frames a client may send per second; more closes the connection.
MAX_CONTROL_FRAMES_PER_SECOND = 256
_BINARY = Subprotocol("binary")


class WebSocketLayer:
    """Between a stream transport and a :class:`SpiceConnection`: upgrade, then frames.

    Until the upgrade the connection writes to the raw stream (it writes nothing then); after
    it, the layer becomes the connection's :class:`Outlet`.
    """

    def __init__(
        self, connection: SpiceConnection, web: WebRoot | None, *, method_not_allowed: bool = False
    ) -> None:
        self.connection = connection
        self.web = web
        self.stream: Outlet = connection.outlet
        config = connection.context.config
        origins: Sequence[Origin | None] | None = None
        if config.websocket_origins is not None:
            origins = [Origin(origin) for origin in config.websocket_origins]
        self.protocol = ServerProtocol(
            origins=origins,
            select_subprotocol=_select_subprotocol,
            max_size=config.websocket_max_message,
            logger=logger,
        )
        self._request_bytes = 0
        self._upgraded = False
        self._finished = False
        self._window_start = 0.0
        self._control_frames = 0
        if method_not_allowed:
            self._reply_and_close(
                405, "Method Not Allowed", b"only GET is served here\n", "a request that is not GET"
            )

    # ------------------------------------------------------------------ Outlet (after upgrade)

    @property
    def peer(self) -> str:
        return self.stream.peer

    @property
    def address(self) -> str:
        return self.stream.address

    @property
    def client_address(self) -> tuple[str, int] | None:
        return self.stream.client_address

    @property
    def server_address(self) -> str | None:
        return self.stream.server_address

    def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        if self.protocol.state is not State.OPEN:
            return
        self.protocol.send_binary(b"".join(chunks))
        self._send_pending()

    def buffered(self) -> int:
        return self.stream.buffered()

    def pause_reading(self) -> None:
        self.stream.pause_reading()

    def resume_reading(self) -> None:
        self.stream.resume_reading()

    def close(self) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._send_pending()
        self.stream.close()

    def abort(self) -> None:
        self.stream.abort()

    def is_closing(self) -> bool:
        return self.stream.is_closing()

    # ------------------------------------------------------------------ input

    def data_received(self, data: bytes) -> None:
        if self._finished:
            return
        if not self._upgraded:
            self._request_bytes += len(data)
            if self._request_bytes > MAX_REQUEST_BYTES:
                self._reply_and_close(
                    431,
                    "Request Header Fields Too Large",
                    b"",
                    f"an HTTP request over {MAX_REQUEST_BYTES} bytes",
                )
                return
        for start in range(0, len(data), _SLICE):
            self.protocol.receive_data(data[start : start + _SLICE])
            for event in self.protocol.events_received():
                if isinstance(event, Request):
                    self._on_request(event)
                elif isinstance(event, Frame):
                    self._on_frame(event)
                if self._finished:
                    return
            if self._failed():
                return
            self._send_pending()

    def _failed(self) -> bool:
        """The client broke the protocol: one log line, the close frame, closed."""
        protocol = self.protocol
        if not self._upgraded and protocol.handshake_exc is not None:
            self._reply_and_close(
                400,
                "Bad Request",
                b"bad HTTP request\n",
                f"bad HTTP request ({protocol.handshake_exc})",
            )
            return True
        if self._upgraded and protocol.parser_exc is not None:
            self._finished = True
            logger.warning(
                "%s: WebSocket protocol error, closing: %s", self.peer, protocol.parser_exc
            )
            self.connection.close_reason = f"WebSocket protocol error: {protocol.parser_exc}"
            self._send_pending()
            self.stream.close()
            return True
        return False

    def _on_request(self, request: Request) -> None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            self._serve_file(request)
            return
        response = self.protocol.accept(request)
        if response.status_code != 101:
            reason = (
                response.body.decode(errors="replace").splitlines()[0]
                if response.body
                else response.reason_phrase
            )
            if isinstance(self.protocol.handshake_exc, InvalidOrigin):
                reason = f"origin {request.headers.get('Origin')!r} is not allowed"
            self._finished = True
            logger.warning(
                "%s: WebSocket upgrade refused (%d): %s", self.peer, response.status_code, reason
            )
            self.connection.close_reason = f"WebSocket upgrade refused: {reason}"
            self.protocol.send_response(response)
            self._send_pending()
            self.stream.close()
            return
        self.protocol.send_response(response)
        self._send_pending()
        self._upgraded = True
        self.connection.outlet = self
        logger.debug(
            "%s: WebSocket %s (subprotocol %s)", self.peer, request.path, self.protocol.subprotocol
        )

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
            if frame.data:
                self.connection.data_received(bytes(frame.data))
            return
        # PING, PONG, CLOSE: the protocol answers them; bound how many a client may send.
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._control_frames = now, 0
        self._control_frames += 1
        if self._control_frames > MAX_CONTROL_FRAMES_PER_SECOND:
            self._finished = True
            logger.warning(
                "%s: closing: more than %d WebSocket control frames per second",
                self.peer,
                MAX_CONTROL_FRAMES_PER_SECOND,
            )
            self.connection.abort("WebSocket control frame flood")
        elif frame.opcode is Opcode.CLOSE:
            self._finished = True
            self._send_pending()
            self.stream.close()

    # ------------------------------------------------------------------ output

    def _send_pending(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.stream.write((data,))
        unsent = self.stream.buffered()
        if unsent > self.connection.context.config.max_write_buffer:
            logger.warning(
                "%s: closing: client stopped reading (%d bytes unsent)", self.peer, unsent
            )
            self._finished = True
            self.connection.abort("client stopped reading (max_write_buffer)")

    def _serve_file(self, request: Request) -> None:
        headers: dict[str, str] = {}
        if self.web is None:
            status, reason, body = 404, "Not Found", b"no web client is served here\n"
        else:
            status, reason, body, headers = self.web.get(request.path)
        self._finished = True
        response = Response(status, reason, _headers(len(body), headers), body)
        self.protocol.send_response(response)
        self._send_pending()
        if status != 200:
            logger.info("%s: HTTP GET %s: %d", self.peer, request.path[:200], status)
        self.connection.close_reason = f"HTTP GET answered {status}"
        self.stream.close()

    def _reply_and_close(self, status: int, reason: str, body: bytes, why: str) -> None:
        """Answer a request we refuse, without the protocol (it may have given up)."""
        self._finished = True
        logger.warning("%s: refused: %s (HTTP %d)", self.peer, why, status)
        self.connection.close_reason = f"HTTP {status}: {why}"
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
        )
        self.stream.write((head.encode(), body))
        self.stream.close()


def _select_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """``binary`` when offered, none when none is (libspice-server accepts both), else refuse."""
    if not offered:
        return None
    if _BINARY in offered:
        return _BINARY
    raise NegotiationError(f"unsupported subprotocol {', '.join(offered)}; expected binary")


def _headers(length: int, extra: dict[str, str]) -> Headers:
    headers = Headers()
    headers["Content-Length"] = str(length)
    headers["Connection"] = "close"
    for name, value in extra.items():
        headers[name] = value
    return headers
