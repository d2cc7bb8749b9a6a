"""The whole server stack in memory: no sockets, an injected clock.

:class:`MemoryTransport` stands in for an asyncio stream transport under the server's own
:class:`~spiceserver.server.transports.stream.StreamProtocol`, so a test drives exactly what a
socket would (sniffing, WebSocket, link, session, channels) and reads back what the server
wrote.  :class:`FakeClock` is the ``now`` the protocol objects see; tests move it by hand.
:class:`MemoryClient` is a SPICE client on top (the link as spice-gtk does it)::

    server = SpiceServer(source, password="pw", warmup_encoders=False)
    clock = FakeClock.install(server)
    main = MemoryClient(server)
    assert main.link(ChannelType.MAIN, "pw") == LinkError.OK

Timers (handshake timeout, slow refusals) still run on the event loop, so tests run inside one.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from spiceserver import SpiceServer
from spiceserver.protocol.enums import ChannelType, LinkError, MainServerMsg
from spiceserver.server.transports.stream import StreamProtocol
from tests.fakeclient import MessageSplitter, encrypt_ticket, link_message, parse_link_reply

__all__ = [
    "FakeClock",
    "MemoryClient",
    "MemoryTransport",
    "connect",
    "init_session_id",
    "key_ready",
    "linked",
    "session_id",
    "turns",
]


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.monotonic() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @classmethod
    def install(cls, server: SpiceServer) -> FakeClock:
        clock = cls()
        server.context.clock = clock
        server.context.ticket.set_at = clock.now
        return clock


class MemoryTransport:
    """The asyncio.Transport calls StreamProtocol and the outlets make, recorded."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.7", 40000)) -> None:
        self.peer = peer
        self.sent = bytearray()
        self.reading = True
        self.closing = False
        self.aborted = False
        self.high = 64 * 1024
        #: Pretend this many bytes are stuck in the kernel (a client that stopped reading).
        self.unsent = 0
        #: A client that stopped reading: what the server writes piles up in ``unsent``.
        self.stalled = False
        #: How many chunks the server handed over, in all (what a real transport keeps one
        #: object each for while they wait).
        self.chunks = 0
        self.protocol: StreamProtocol | None = None

    # asyncio.Transport
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": ("127.0.0.1", 5900)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high or self.high

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.chunks += 1
        if self.closing:
            return
        if self.stalled:
            self.unsent += len(data)
        else:
            self.sent += data

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def _lose(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.protocol is not None:
            self.protocol.connection_lost(None)

    # the test's side
    def take(self) -> bytes:
        """What the server wrote since the last call."""
        data, self.sent = bytes(self.sent), bytearray()
        return data


def connect(
    server: SpiceServer, peer: tuple[str, int] = ("127.0.0.7", 40000), *, secure: bool = False
) -> tuple[MemoryTransport, StreamProtocol]:
    """A new in-memory connection to ``server`` (which need not listen anywhere)."""
    transport = MemoryTransport(peer)
    protocol = StreamProtocol(server.context, secure=secure, web=server._web)
    transport.protocol = protocol
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return transport, protocol


class MemoryClient:
    """One SPICE channel connection, in memory, with the link as spice-gtk does it."""

    def __init__(self, server: SpiceServer, peer: tuple[str, int] = ("127.0.0.7", 40000)):
        self.transport, self.protocol = connect(server, peer)
        self.splitter = MessageSplitter()
        self._pending: list[tuple[int, bytes]] = []

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def link(
        self,
        channel_type: int,
        password: str,
        connection_id: int = 0,
        channel_id: int = 0,
        channel_caps: list[int] | None = None,
    ) -> int:
        """Link and authenticate; the SpiceLinkErr the server answered."""
        self.send(link_message(channel_type, channel_id, connection_id, channel_caps=channel_caps))
        reply = self.transport.take()
        if not reply:
            return -1  # nothing yet (e.g. waiting for an RSA key)
        link = parse_link_reply(reply)
        if link.error != LinkError.OK:
            return link.error
        self.send(struct.pack("<I", 1) + encrypt_ticket(link.public_key, password))
        result = self.transport.take()
        if len(result) < 4:
            return -1  # answered later (a slow refusal)
        (code,) = struct.unpack_from("<I", result)
        self._pending += self.splitter.feed(result[4:])
        return int(code)

    def messages(self) -> list[tuple[int, bytes]]:
        """(type, body) of every whole message the server wrote since the last call."""
        out, self._pending = self._pending, []
        return out + self.splitter.feed(self.transport.take())


def session_id(init_body: bytes) -> int:
    """MAIN INIT's session_id."""
    return int(struct.unpack_from("<I", init_body)[0])


# ---------------------------------------------------------------------- hostile-client kit


async def key_ready(server: SpiceServer) -> None:
    """Until an RSA key is ready (a worker thread makes them), so that a link is answered
    within the call that sends it."""
    server.context.keys.fill()
    for _ in range(1000):
        if server.context.keys._ready:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no RSA key within 5 s")


async def turns(done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the event loop run until ``done()``, for at most ``timeout`` seconds.  (A flooding
    client's backlog is taken one budget per step, the steps a millisecond or more apart.)"""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {timeout}s")
        await asyncio.sleep(0)


async def linked(
    server: SpiceServer,
    channel_type: int,
    password: str,
    *,
    connection_id: int = 0,
    peer: tuple[str, int] = ("127.0.0.7", 40000),
    channel_caps: list[int] | None = None,
) -> MemoryClient:
    """A channel linked with the right ticket (asserted)."""
    await key_ready(server)
    client = MemoryClient(server, peer)
    code = client.link(
        channel_type, password, connection_id=connection_id, channel_caps=channel_caps
    )
    assert code == LinkError.OK, code
    return client


def init_session_id(main: MemoryClient) -> int:
    """The session id of a main channel that just linked (from its INIT)."""
    return session_id(next(body for t, body in main.messages() if t == MainServerMsg.INIT))


# ---------------------------------------------------------------------- shared test set-ups

#: The ticket of :func:`make_server`'s servers.
PASSWORD = "hardening-pw"


def make_server(**options: Any) -> SpiceServer:
    """A server for in-memory tests: a 64x48 numpy source, raw images, no kernel warm-up."""
    from spiceserver import ImageCompression, NumpySource

    options.setdefault("image_compression", ImageCompression.OFF)
    return SpiceServer(
        NumpySource(64, 48), password=PASSWORD, warmup_encoders=False, port=0, **options
    )


async def ready(server: SpiceServer) -> SpiceServer:
    """``server`` with an RSA key ready, so a link is answered at once."""
    await key_ready(server)
    return server


async def main_at(
    server: SpiceServer, peer: tuple[str, int] = ("127.0.0.7", 40000)
) -> MemoryClient:
    """A linked main channel from ``peer``."""
    return await linked(server, ChannelType.MAIN, PASSWORD, peer=peer)
