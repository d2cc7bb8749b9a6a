"""A minimal SPICE client for unit and loopback tests (the real-client tests use spice-gtk).

It builds link messages the way spice-gtk does (``spice_channel_send_link``), encrypts the
ticket with RSA-OAEP(SHA-1), and splits the server's framed messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from spiceserver.protocol.enums import CommonCap, caps_to_words

SPICE_GTK_COMMON_CAPS = [CommonCap.PROTOCOL_AUTH_SELECTION, CommonCap.MINI_HEADER]


def link_message(
    channel_type: int,
    channel_id: int = 0,
    connection_id: int = 0,
    common_caps: list[int] | None = None,
    channel_caps: list[int] | None = None,
    major: int = 2,
    magic: bytes = b"REDQ",
) -> bytes:
    common = caps_to_words(SPICE_GTK_COMMON_CAPS if common_caps is None else common_caps)
    channel = caps_to_words(channel_caps or [])
    caps = common + channel
    mess = struct.pack(
        "<IBBIII", connection_id, channel_type, channel_id, len(common), len(channel), 18
    ) + struct.pack(f"<{len(caps)}I", *caps)
    return struct.pack("<4sIII", magic, major, 2, len(mess)) + mess


@dataclass
class LinkReply:
    error: int
    public_key: bytes
    common_caps: tuple[int, ...]
    channel_caps: tuple[int, ...]


def parse_link_reply(data: bytes) -> LinkReply:
    magic, major, _minor, size = struct.unpack_from("<4sIII", data)
    assert magic == b"REDQ" and major == 2
    body = data[16 : 16 + size]
    error, key, n_common, n_channel, offset = struct.unpack_from("<I162sIII", body)
    words = struct.unpack_from(f"<{n_common + n_channel}I", body, offset) if error == 0 else ()
    return LinkReply(error, key, tuple(words[:n_common]), tuple(words[n_common:]))


def encrypt_ticket(public_key_der: bytes, password: str) -> bytes:
    key = serialization.load_der_public_key(public_key_der)
    return key.encrypt(  # type: ignore[union-attr]
        password.encode() + b"\0",
        padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    )


def frame(type_: int, body: bytes = b"") -> bytes:
    """A client message with the mini header."""
    return struct.pack("<HI", type_, len(body)) + body


@dataclass
class MessageSplitter:
    """Splits mini-header server traffic into (type, body)."""

    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        out = []
        while len(self.buffer) >= 6:
            type_, size = struct.unpack_from("<HI", self.buffer)
            if len(self.buffer) < 6 + size:
                break
            out.append((type_, bytes(self.buffer[6 : 6 + size])))
            del self.buffer[: 6 + size]
        return out


class LoopbackClient:
    """One channel connection over a real socket, for server-level tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.splitter = MessageSplitter()
        self.pending: list[tuple[int, bytes]] = []
        self.reply: LinkReply | None = None

    @classmethod
    async def open(
        cls, port: int, ssl: object = None, *, source: str | None = None
    ) -> LoopbackClient:
        """Connect to 127.0.0.1:``port``, from the loopback address ``source`` if given (any of
        127.0.0.0/8: another client address, for the server's per-address limits)."""
        local = None if source is None else (source, 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl, local_addr=local)
        return cls(reader, writer)

    async def link(
        self,
        channel_type: int,
        password: str,
        *,
        connection_id: int = 0,
        channel_id: int = 0,
        common_caps: list[int] | None = None,
    ) -> int:
        """Run the link stage; returns the link result (0 = OK) or the reply's error."""
        caps = SPICE_GTK_COMMON_CAPS if common_caps is None else common_caps
        self.writer.write(link_message(channel_type, channel_id, connection_id, caps))
        header = await self.reader.readexactly(16)
        size = struct.unpack_from("<I", header, 12)[0]
        self.reply = parse_link_reply(header + await self.reader.readexactly(size))
        if self.reply.error:
            return self.reply.error
        if CommonCap.PROTOCOL_AUTH_SELECTION in caps:
            self.writer.write(struct.pack("<I", 1))
        self.writer.write(encrypt_ticket(self.reply.public_key, password))
        (result,) = struct.unpack("<I", await self.reader.readexactly(4))
        return int(result)

    def send(self, type_: int, body: bytes = b"") -> None:
        self.writer.write(frame(type_, body))

    async def receive(self, type_: int, timeout: float = 10.0) -> bytes:
        """The body of the next message of ``type_`` (others are kept in ``pending``)."""
        async with asyncio.timeout(timeout):
            while True:
                for i, (t, body) in enumerate(self.pending):
                    if t == type_:
                        del self.pending[i]
                        return body
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                self.pending.extend(self.splitter.feed(data))

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        async with asyncio.timeout(timeout):
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionError:
                pass
        return True

    async def close(self) -> None:
        self.writer.close()
        # OSError: ConnectionError, and TLS's "application data after close notify" when the
        # server was still sending (the main channel's net test PING, say).
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
