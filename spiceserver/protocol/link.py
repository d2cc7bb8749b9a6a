"""The link stage of one SPICE connection, sans I/O.

Theory of operation (spice-gtk ``spice_channel_send_link`` … ``spice_channel_recv_auth``;
spice-server ``reds_handle_read_header_done`` … ``reds_handle_ticket``)::

    HEADER --16 bytes--> MESSAGE --size bytes--> [event LinkRequest] --accept()--> AUTH
    AUTH --u32 mechanism (iff both sides have AUTH_SELECTION)--> TICKET
    TICKET --key-size bytes--> [event TicketReceived] --finish(OK)--> DONE
                                                  \\--refuse(code)--> CLOSED

Any violation queues a link error reply (when one is still meaningful), moves to CLOSED and
raises :class:`~spiceserver.errors.LinkRefused`.  Cryptography is not done here: the owner
hands :meth:`LinkProtocol.accept` the DER public key and checks the ticket it gets back.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from spiceserver.errors import LinkRefused
from spiceserver.protocol.enums import (
    SPICE_MAGIC,
    TICKET_PUBKEY_BYTES,
    VERSION_MAJOR,
    VERSION_MINOR,
    AuthMechanism,
    ChannelType,
    CommonCap,
    LinkError,
    caps_to_words,
    has_cap,
)

__all__ = [
    "SERVER_COMMON_CAPS",
    "LinkProtocol",
    "LinkRequest",
    "TicketReceived",
    "channel_name",
    "tls_required",
]

_HEADER = struct.Struct("<4sIII")  # SpiceLinkHeader
_MESS = struct.Struct("<IBBIII")  # SpiceLinkMess
_REPLY = struct.Struct(f"<I{TICKET_PUBKEY_BYTES}sIII")  # SpiceLinkReply
LINK_MESS_SIZE = _MESS.size  # 18
LINK_REPLY_SIZE = _REPLY.size  # 178
#: spice-server's bound on the header's size field (``reds_handle_read_header_done``).
DEFAULT_MAX_LINK_SIZE = 4096
_PIPELINE_ALLOWANCE = 65536
#: spice-server's bound on each caps count.
MAX_CAPS_WORDS = 1024
#: Common caps we advertise on every channel: AUTH_SELECTION | AUTH_SPICE | MINI_HEADER = 0x0B
#: (spice-server ``reds_channel_init_auth_caps``; no SASL).
SERVER_COMMON_CAPS: tuple[int, ...] = (
    CommonCap.PROTOCOL_AUTH_SELECTION,
    CommonCap.AUTH_SPICE,
    CommonCap.MINI_HEADER,
)


def channel_name(channel_type: int) -> str:
    """``main``, ``display``, … (``type-N`` for a type SPICE does not define)."""
    try:
        return ChannelType(channel_type).name.lower()
    except ValueError:
        return f"type-{channel_type}"


def tls_required(
    channel: str, *, secure: bool, tls_enabled: bool, plaintext_channels: frozenset[str]
) -> bool:
    """Whether a link must be refused NEED_SECURED: with TLS on, a plain link switches to the
    TLS port (spice-gtk reconnects there) unless its channel may stay in the clear
    (spice-server ``reds_find_channel`` + ``red_channel_test_remote_cap`` policy,
    ``--plaintext-channels`` as QEMU's ``plaintext-channel``)."""
    return tls_enabled and not secure and channel not in plaintext_channels


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """The client's SpiceLinkMess."""

    connection_id: int
    channel_type: int
    channel_id: int
    common_caps: tuple[int, ...]
    channel_caps: tuple[int, ...]
    minor_version: int

    @property
    def channel_name(self) -> str:
        return channel_name(self.channel_type)


@dataclass(frozen=True, slots=True)
class TicketReceived:
    """The RSA-OAEP encrypted ticket; the owner decrypts and checks it."""

    ciphertext: bytes
    mechanism: int


class _State(enum.Enum):
    HEADER = enum.auto()
    MESSAGE = enum.auto()
    DECIDING = enum.auto()
    MECHANISM = enum.auto()
    TICKET = enum.auto()
    CHECKING = enum.auto()
    DONE = enum.auto()
    CLOSED = enum.auto()


class LinkProtocol:
    """Parses one client's link stage and produces the server's replies."""

    def __init__(self, *, max_link_size: int = DEFAULT_MAX_LINK_SIZE) -> None:
        self._max_link_size = max_link_size
        # A client may pipeline its first messages behind the ticket; anything beyond this
        # before the link completes is abuse.
        self._max_buffer = max_link_size + _PIPELINE_ALLOWANCE
        self._state = _State.HEADER
        self._buffer = bytearray()
        self._out = bytearray()
        self._need = _HEADER.size
        self._mess_size = 0
        self._ticket_size = 0
        self._read_mechanism = False
        self._mechanism = int(AuthMechanism.SPICE)
        self.request: LinkRequest | None = None
        self.mini_header = False
        #: Offsets in the client's byte stream where each link message ended (header + mess,
        #: auth mechanism, ticket): capture cuts its replay there, one message per packet.
        self.client_boundaries: list[int] = []
        self._consumed = 0

    # ------------------------------------------------------------------ public interface

    @property
    def done(self) -> bool:
        """The link succeeded; what follows is framed channel traffic."""
        return self._state is _State.DONE

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    def receive_data(self, data: bytes) -> LinkRequest | TicketReceived | None:
        """Feed bytes; returns an event when one is complete.

        Bytes beyond what the current stage needs stay buffered (see :meth:`leftover`).  Never
        buffers more than the stage needs plus what one read delivers.
        """
        if self._state in (_State.CLOSED, _State.DONE):
            return None
        self._buffer += data
        if len(self._buffer) > self._max_buffer:
            raise self.refuse(
                LinkError.INVALID_DATA, f"{len(self._buffer)} bytes sent before the link completed"
            )
        return self._advance()

    def leftover(self) -> bytes:
        """Bytes received after the link stage (the first framed messages), handed over once."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def accept(
        self,
        public_key_der: bytes,
        *,
        common_caps: Sequence[int] = SERVER_COMMON_CAPS,
        channel_caps: Sequence[int] = (),
        ticket_size: int = 128,
    ) -> None:
        """Answer the LinkRequest with our key and capabilities (cap numbers, not words)."""
        self._expect(_State.DECIDING)
        assert self.request is not None
        if len(public_key_der) != TICKET_PUBKEY_BYTES:
            raise ValueError("the public key must be 162 bytes of DER SubjectPublicKeyInfo")
        common_words = caps_to_words(tuple(common_caps))
        channel_words = caps_to_words(tuple(channel_caps))
        caps = common_words + channel_words
        reply = _REPLY.pack(
            LinkError.OK, public_key_der, len(common_words), len(channel_words), LINK_REPLY_SIZE
        ) + struct.pack(f"<{len(caps)}I", *caps)
        self._out += _HEADER.pack(SPICE_MAGIC, VERSION_MAJOR, VERSION_MINOR, len(reply)) + reply
        client_common = self.request.common_caps
        # Safe rule (SPICE-REFERENCE 1.7): the mechanism word comes iff both advertised it.
        self._read_mechanism = has_cap(client_common, CommonCap.PROTOCOL_AUTH_SELECTION) and (
            CommonCap.PROTOCOL_AUTH_SELECTION in common_caps
        )
        # Mini header iff both sides advertised it (pitfall 2).
        self.mini_header = has_cap(client_common, CommonCap.MINI_HEADER) and (
            CommonCap.MINI_HEADER in common_caps
        )
        self._ticket_size = ticket_size
        if self._read_mechanism:
            self._goto(_State.MECHANISM, 4)
        else:
            self._goto(_State.TICKET, ticket_size)

    def refuse(self, code: LinkError, reason: str) -> LinkRefused:
        """Queue a link error and close; returns the exception for the caller to raise/log.

        Before our reply the error travels in a SpiceLinkReply (``reds_send_link_error``);
        after it, as the bare u32 link result.
        """
        if self._state in (_State.HEADER, _State.MESSAGE, _State.DECIDING):
            reply = _REPLY.pack(code, b"", 0, 0, 0)
            self._out += _HEADER.pack(SPICE_MAGIC, VERSION_MAJOR, VERSION_MINOR, len(reply))
            self._out += reply
        elif self._state is not _State.CLOSED:
            self._out += struct.pack("<I", code)
        self._state = _State.CLOSED
        self._buffer.clear()
        return LinkRefused(int(code), reason)

    def finish(self) -> None:
        """The ticket was good: send the OK link result; framed traffic follows."""
        self._expect(_State.CHECKING)
        self._out += struct.pack("<I", LinkError.OK)
        self._state = _State.DONE

    # ------------------------------------------------------------------ parsing

    def _advance(self) -> LinkRequest | TicketReceived | None:
        while len(self._buffer) >= self._need and self._state not in (
            _State.DECIDING,
            _State.CHECKING,
            _State.DONE,
            _State.CLOSED,
        ):
            chunk = bytes(self._buffer[: self._need])
            del self._buffer[: self._need]
            self._consumed += len(chunk)
            if self._state is not _State.HEADER:
                self.client_boundaries.append(self._consumed)
            event = self._handlers[self._state](self, chunk)
            if event is not None:
                return event
        return None

    def _on_header(self, chunk: bytes) -> None:
        magic, major, minor, size = _HEADER.unpack(chunk)
        if magic != SPICE_MAGIC:
            raise self.refuse(LinkError.INVALID_MAGIC, f"bad magic {magic!r}")
        if major != VERSION_MAJOR:
            raise self.refuse(LinkError.VERSION_MISMATCH, f"protocol version {major}.{minor}")
        if size < LINK_MESS_SIZE or size > self._max_link_size:
            raise self.refuse(
                LinkError.INVALID_DATA,
                f"link message size {size} outside {LINK_MESS_SIZE}..{self._max_link_size}",
            )
        self._minor = minor
        self._goto(_State.MESSAGE, size)

    def _on_message(self, chunk: bytes) -> LinkRequest:
        connection_id, channel_type, channel_id, n_common, n_channel, caps_offset = (
            _MESS.unpack_from(chunk)
        )
        if n_common > MAX_CAPS_WORDS or n_channel > MAX_CAPS_WORDS:
            raise self.refuse(LinkError.INVALID_DATA, "too many capability words")
        end = caps_offset + 4 * (n_common + n_channel)
        if caps_offset < LINK_MESS_SIZE or end > len(chunk):
            raise self.refuse(
                LinkError.INVALID_DATA,
                f"capabilities at {caps_offset}..{end} outside the {len(chunk)}-byte message",
            )
        words = struct.unpack_from(f"<{n_common + n_channel}I", chunk, caps_offset)
        self.request = LinkRequest(
            connection_id=connection_id,
            channel_type=channel_type,
            channel_id=channel_id,
            common_caps=tuple(words[:n_common]),
            channel_caps=tuple(words[n_common:]),
            minor_version=self._minor,
        )
        self._state = _State.DECIDING
        return self.request

    def _on_mechanism(self, chunk: bytes) -> None:
        (mechanism,) = struct.unpack("<I", chunk)
        if mechanism != AuthMechanism.SPICE:
            raise self.refuse(
                LinkError.INVALID_DATA, f"unsupported auth mechanism {mechanism} (SASL is not)"
            )
        self._mechanism = mechanism
        self._goto(_State.TICKET, self._ticket_size)

    def _on_ticket(self, chunk: bytes) -> TicketReceived:
        self._state = _State.CHECKING
        return TicketReceived(ciphertext=chunk, mechanism=self._mechanism)

    _handlers = {
        _State.HEADER: _on_header,
        _State.MESSAGE: _on_message,
        _State.MECHANISM: _on_mechanism,
        _State.TICKET: _on_ticket,
    }

    def _goto(self, state: _State, need: int) -> None:
        self._state = state
        self._need = need

    def _expect(self, state: _State) -> None:
        if self._state is not state:
            raise RuntimeError(f"link is in state {self._state.name}, not {state.name}")
