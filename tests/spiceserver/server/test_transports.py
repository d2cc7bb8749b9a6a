"""Transports, in memory: SPICE, WebSocket and HTTP sniffed on one port, and their bad input.

Everything here runs the server's real StreamProtocol over :class:`tests.memory.MemoryTransport`
(no sockets), with websockets' own sans-I/O client as the browser.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from spiceserver import ConfigError, NumpySource, SpiceServer
from spiceserver.protocol.enums import ChannelType, LinkError, MainServerMsg
from spiceserver.server.transports.websocket import MAX_CONTROL_FRAMES_PER_SECOND
from tests.conftest import run
from tests.fakeclient import frame, link_message, parse_link_reply
from tests.memory import FakeClock, MemoryClient, connect, session_id

PASSWORD = "memory-pw"


def make_server(**options: object) -> SpiceServer:
    source = NumpySource(64, 48)
    return SpiceServer(source, password=PASSWORD, warmup_encoders=False, port=0, **options)  # type: ignore[arg-type]


async def started(server: SpiceServer) -> SpiceServer:
    server.context.keys.fill()
    await server.context.keys.take()  # one key ready, so links answer at once
    server.context.keys.fill()
    return server


class Browser:
    """websockets' sans-I/O client over an in-memory connection to the server."""

    def __init__(
        self,
        server: SpiceServer,
        path: str = "/websockify",
        origin: str | None = None,
        subprotocols: tuple[str, ...] | None = ("binary",),
    ) -> None:
        self.transport, self.protocol = connect(server)
        self.client = ClientProtocol(
            parse_uri(f"ws://127.0.0.1:5900{path}"),
            subprotocols=None if subprotocols is None else list(subprotocols),  # type: ignore[arg-type]
            origin=origin,  # type: ignore[arg-type]
        )
        request = self.client.connect()
        self.client.send_request(request)
        self._push()
        self.response = self._events()[0]

    def _push(self) -> None:
        for data in self.client.data_to_send():
            if data:
                self.protocol.data_received(data)

    def _events(self) -> list[object]:
        self.client.receive_data(self.transport.take())
        return self.client.events_received()

    def send(self, data: bytes) -> None:
        self.client.send_binary(data)
        self._push()

    def received(self) -> bytes:
        """SPICE bytes the server sent since the last call (payloads of its frames)."""
        return b"".join(
            e.data
            for e in self._events()
            if isinstance(e, Frame) and e.opcode in (Opcode.BINARY, Opcode.CONT)
        )


# ---------------------------------------------------------------------- SPICE in memory


def test_main_and_display_link_in_memory_with_an_injected_clock() -> None:
    async def scenario() -> None:
        server = await started(make_server())
        clock = FakeClock.install(server)
        main = MemoryClient(server)
        assert main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
        (init_type, init), *_ = main.messages()
        assert init_type == MainServerMsg.INIT
        sid = session_id(init)
        assert [s.id for s in server.sessions()] == [sid]
        clock.advance(1.5)
        main.send(frame(104))  # ATTACH_CHANNELS
        lists = [body for type_, body in main.messages() if type_ == MainServerMsg.CHANNELS_LIST]
        assert lists == [struct.pack("<I", 3) + bytes([2, 0, 3, 0, 4, 0])]
        main.send(frame(3, struct.pack("<IQ", 1, 0)))  # PONG for INIT's PING, 1.5 s later
        stats = server.context.sessions.sessions[sid].metrics.channel_stats[0]
        assert list(stats.rtt) == [1.5]  # measured on the injected clock
        display = MemoryClient(server, ("127.0.0.7", 40001))
        assert display.link(ChannelType.DISPLAY, PASSWORD, connection_id=sid) == LinkError.OK
        assert server.sessions()[0].channels == ("main", "display")
        await server.close()

    run(scenario())


def test_wrong_ticket_in_memory_is_refused() -> None:
    async def scenario() -> None:
        server = await started(make_server())
        client = MemoryClient(server)
        assert client.link(ChannelType.MAIN, "wrong") == LinkError.PERMISSION_DENIED
        assert client.transport.closing
        await server.close()

    run(scenario())


# ---------------------------------------------------------------------- WebSocket


def test_websocket_upgrade_carries_the_spice_link() -> None:
    async def scenario() -> None:
        server = await started(make_server())
        browser = Browser(server)
        response = browser.response
        assert isinstance(response, Response) and response.status_code == 101
        assert response.headers["Sec-WebSocket-Protocol"] == "binary"
        browser.send(link_message(ChannelType.MAIN, common_caps=[0, 3]))
        reply = parse_link_reply(browser.received())
        assert reply.error == LinkError.OK and len(reply.public_key) == 162
        await server.close()

    run(scenario())


def test_websocket_without_subprotocol_and_on_any_path_is_accepted() -> None:
    async def scenario() -> None:
        server = await started(make_server())
        browser = Browser(server, path="/", subprotocols=None)
        assert isinstance(browser.response, Response)
        assert browser.response.status_code == 101
        await server.close()

    run(scenario())


def test_websocket_with_another_subprotocol_or_origin_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        server = await started(make_server(websocket_origins=("https://good.example",)))
        with caplog.at_level(logging.WARNING, "spiceserver"):
            chat = Browser(server, subprotocols=("chat",), origin="https://good.example")
            evil = Browser(server, origin="https://evil.example")
            good = Browser(server, origin="https://good.example")
        assert isinstance(chat.response, Response) and chat.response.status_code == 400
        assert isinstance(evil.response, Response) and evil.response.status_code == 403
        assert isinstance(good.response, Response) and good.response.status_code == 101
        assert chat.transport.closing and evil.transport.closing and not good.transport.closing
        refusals = [r for r in caplog.records if "upgrade refused" in r.getMessage()]
        assert len(refusals) == 2 and "evil.example" in refusals[1].getMessage()
        await server.close()

    run(scenario())


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nbroken header line\r\n\r\n", 400),
        (b"GET nonsense\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /spice_auto.html HTTP/1.1\r\n\r\n", 405),
    ],
)
def test_bad_http_gets_an_error_a_log_line_and_a_closed_connection(
    request_bytes: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        server = await started(make_server())
        transport, protocol = connect(server)
        with caplog.at_level(logging.INFO, "spiceserver"):
            for start in range(0, len(request_bytes), 1000):  # as a socket would deliver it
                protocol.data_received(request_bytes[start : start + 1000])
        answer = transport.take()
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
        assert transport.closing
        lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert not server.context.connections
        await server.close()

    run(scenario())


def test_garbage_that_is_not_http_is_refused_as_spice() -> None:
    async def scenario() -> None:
        server = await started(make_server())
        transport, protocol = connect(server)
        hello = b"\x16\x03\x01\x02\x00" + b"garbage" * 3  # a TLS hello on the plain port
        protocol.data_received(hello)
        assert parse_link_reply(transport.take()).error == LinkError.INVALID_MAGIC
        assert transport.closing
        await server.close()

    run(scenario())


def test_a_frame_announcing_2_to_the_63_bytes_closes_only_that_connection() -> None:
    async def scenario() -> None:
        server = await started(make_server())
        browser = Browser(server)
        other = Browser(server)
        # FIN|BINARY, MASK|127, a 63-bit length, a mask key, and no payload.
        browser.protocol.data_received(b"\x82\xff" + struct.pack("!Q", 2**63 - 1) + os.urandom(4))
        assert browser.transport.closing
        close = [e for e in browser._events() if isinstance(e, Frame)]
        assert close and close[0].opcode is Opcode.CLOSE
        assert struct.unpack("!H", close[0].data[:2])[0] == 1009  # message too big
        assert not other.transport.closing
        other.send(link_message(ChannelType.MAIN, common_caps=[0, 3]))
        assert parse_link_reply(other.received()).error == LinkError.OK
        await server.close()

    run(scenario())


def test_a_ping_flood_closes_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        server = await started(make_server())
        browser = Browser(server)
        with caplog.at_level(logging.WARNING, "spiceserver"):
            for _ in range(MAX_CONTROL_FRAMES_PER_SECOND + 10):
                browser.client.send_ping(b"x")
            browser._push()
        assert browser.transport.aborted
        assert any("control frames" in r.getMessage() for r in caplog.records)
        await server.close()

    run(scenario())


def test_a_websocket_client_that_stops_reading_is_closed() -> None:
    async def scenario() -> None:
        server = await started(make_server(max_write_buffer=1 << 20))
        browser = Browser(server)
        browser.transport.unsent = 2 << 20  # the kernel holds 2 MiB it cannot send
        browser.client.send_ping(b"p")  # any reply from the server now exceeds the cap
        browser._push()
        assert browser.transport.aborted
        await server.close()

    run(scenario())


# ---------------------------------------------------------------------- the web client


@pytest.fixture
def web_root(tmp_path: Path) -> Path:
    root = tmp_path / "web"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<p>index</p>")
    (root / "app.js").write_text("console.log(1)")
    (root / "sub" / "page.html").write_text("<p>sub</p>")
    (root / ".secret").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    return root


def http_get(server: SpiceServer, target: str) -> tuple[int, dict[str, str], bytes, bool]:
    transport, protocol = connect(server)
    protocol.data_received(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = transport.take().partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body, transport.closing


@pytest.mark.parametrize(
    ("target", "status", "body", "content_type"),
    [
        ("/", 200, b"<p>index</p>", "text/html; charset=utf-8"),
        ("/app.js?x=1", 200, b"console.log(1)", "text/javascript; charset=utf-8"),
        ("/sub/page.html", 200, b"<p>sub</p>", "text/html; charset=utf-8"),
        ("/sub/", 404, None, None),  # no index there, and no listing
        ("/../outside.txt", 404, None, None),
        ("/sub/../../outside.txt", 404, None, None),
        ("/%2e%2e/outside.txt", 404, None, None),
        ("/..%2foutside.txt", 404, None, None),
        ("/link.txt", 404, None, None),  # a symlink leading out
        ("/.secret", 404, None, None),
        ("/app.js%00.html", 404, None, None),
        ("//etc/passwd", 404, None, None),
        ("/missing.js", 404, None, None),
    ],
)
def test_web_root_serves_files_inside_it_only(
    web_root: Path, target: str, status: int, body: bytes | None, content_type: str | None
) -> None:
    async def scenario() -> None:
        server = await started(make_server(web_root=str(web_root)))
        got_status, headers, got_body, closed = http_get(server, target)
        assert got_status == status
        assert closed
        if body is not None:
            assert got_body == body
            assert headers["content-type"] == content_type
            assert headers["content-length"] == str(len(body))
            assert headers["x-content-type-options"] == "nosniff"
        else:
            assert b"hidden" not in got_body and b"outside" not in got_body
        await server.close()

    run(scenario())


def test_without_a_web_root_a_plain_get_is_404() -> None:
    async def scenario() -> None:
        server = await started(make_server())
        status, _, _, closed = http_get(server, "/spice_auto.html")
        assert status == 404 and closed
        await server.close()

    run(scenario())


def test_websocket_can_be_turned_off() -> None:
    async def scenario() -> None:
        server = await started(make_server(websocket=False))
        transport, protocol = connect(server)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert parse_link_reply(transport.take()).error == LinkError.INVALID_MAGIC
        await server.close()

    run(scenario())


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "options",
    [
        {"faults": ["delay:smartcard:1"]},
        {"plaintext_channels": frozenset({"bogus"})},
        {"max_message_sizes": {"usbredir": 10}},
    ],
)
def test_options_naming_channels_we_do_not_serve_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="unknown channels"):
        make_server(**options)


def test_a_unix_socket_listener_links(tmp_path: Path) -> None:
    import asyncio

    async def scenario() -> None:
        path = tmp_path / "spice.sock"
        async with make_server(unix_path=str(path)) as server:
            assert server.uri == f"spice+unix://{path}"
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(link_message(ChannelType.MAIN))
            header = await reader.readexactly(16)
            body = await reader.readexactly(struct.unpack_from("<I", header, 12)[0])
            assert parse_link_reply(header + body).error == LinkError.OK
            writer.close()
        assert not path.exists()

    run(scenario())
