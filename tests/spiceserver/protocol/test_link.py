"""The link stage, against the bytes spice-gtk sends (SPICE-REFERENCE 1.2-1.7)."""

from __future__ import annotations

import struct

import pytest

from spiceserver.crypto import RsaKey, check_ticket, generate_key, public_key_der
from spiceserver.errors import LinkRefused
from spiceserver.protocol.enums import ChannelType, CommonCap, LinkError
from spiceserver.protocol.link import LinkProtocol, LinkRequest, TicketReceived
from tests.fakeclient import LinkReply, encrypt_ticket, link_message, parse_link_reply

SERVER_CAPS = [CommonCap.PROTOCOL_AUTH_SELECTION, CommonCap.AUTH_SPICE, CommonCap.MINI_HEADER]


@pytest.fixture(scope="module")
def key() -> RsaKey:
    return generate_key()


def accept(link: LinkProtocol, key: RsaKey) -> LinkReply:
    link.accept(public_key_der(key), common_caps=SERVER_CAPS, channel_caps=[])
    return parse_link_reply(link.data_to_send())


def test_auth_selection_path(key: RsaKey) -> None:
    link = LinkProtocol()
    request = link.receive_data(link_message(ChannelType.MAIN))
    assert isinstance(request, LinkRequest)
    assert request.channel_type == ChannelType.MAIN and request.connection_id == 0
    reply = accept(link, key)
    assert reply.error == 0
    assert len(reply.public_key) == 162
    assert reply.common_caps == (0x0B,)  # AUTH_SELECTION | AUTH_SPICE | MINI_HEADER
    assert link.mini_header
    # Mechanism word, then the 128-byte ticket, then one pipelined message.
    ticket = encrypt_ticket(reply.public_key, "secret")
    event = link.receive_data(struct.pack("<I", 1) + ticket + b"\x68\x00\x00\x00\x00\x00")
    assert isinstance(event, TicketReceived)
    assert check_ticket(key, event.ciphertext, b"secret")
    assert not check_ticket(key, event.ciphertext, b"secreT")
    link.finish()
    assert link.data_to_send() == b"\0\0\0\0"
    assert link.done
    assert link.leftover() == b"\x68\x00\x00\x00\x00\x00"


def test_legacy_path_without_auth_selection(key: RsaKey) -> None:
    """A client that does not advertise AUTH_SELECTION sends the ticket at once."""
    link = LinkProtocol()
    link.receive_data(link_message(ChannelType.MAIN, common_caps=[]))
    reply = accept(link, key)
    assert not link.mini_header  # the client did not advertise MINI_HEADER
    event = link.receive_data(encrypt_ticket(reply.public_key, "pw"))
    assert isinstance(event, TicketReceived)
    assert check_ticket(key, event.ciphertext, b"pw")


def test_ticket_arriving_byte_by_byte(key: RsaKey) -> None:
    link = LinkProtocol()
    data = link_message(ChannelType.DISPLAY, connection_id=7)
    events = [link.receive_data(data[i : i + 1]) for i in range(len(data))]
    assert isinstance(events[-1], LinkRequest) and not any(events[:-1])
    reply = accept(link, key)
    stream = struct.pack("<I", 1) + encrypt_ticket(reply.public_key, "x")
    events = [link.receive_data(stream[i : i + 1]) for i in range(len(stream))]
    assert isinstance(events[-1], TicketReceived)


def test_ticketing_disabled_still_needs_a_decryptable_ticket(key: RsaKey) -> None:
    reply_key = public_key_der(key)
    assert check_ticket(key, encrypt_ticket(reply_key, ""), None)
    assert not check_ticket(key, bytes(128), None)


def test_password_of_60_bytes(key: RsaKey) -> None:
    password = "p" * 60
    assert check_ticket(key, encrypt_ticket(public_key_der(key), password), password.encode())


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (link_message(ChannelType.MAIN, magic=b"XXXX"), LinkError.INVALID_MAGIC),
        (link_message(ChannelType.MAIN, major=1), LinkError.VERSION_MISMATCH),
        (struct.pack("<4sIII", b"REDQ", 2, 2, 10), LinkError.INVALID_DATA),
        (struct.pack("<4sIII", b"REDQ", 2, 2, 5000), LinkError.INVALID_DATA),
        # caps_offset pointing past the message
        (
            struct.pack("<4sIII", b"REDQ", 2, 2, 18) + struct.pack("<IBBIII", 0, 1, 0, 1, 0, 18),
            LinkError.INVALID_DATA,
        ),
        # caps count above spice-server's bound
        (
            struct.pack("<4sIII", b"REDQ", 2, 2, 18) + struct.pack("<IBBIII", 0, 1, 0, 2000, 0, 18),
            LinkError.INVALID_DATA,
        ),
    ],
)
def test_bad_link_messages_are_refused_with_a_reply(data: bytes, code: LinkError) -> None:
    link = LinkProtocol()
    with pytest.raises(LinkRefused) as info:
        link.receive_data(data)
    assert info.value.code == code
    assert parse_link_reply(link.data_to_send()).error == code
    assert link.closed
    assert link.receive_data(b"more") is None


def test_refusal_after_reply_is_a_bare_result(key: RsaKey) -> None:
    link = LinkProtocol()
    link.receive_data(link_message(ChannelType.MAIN))
    accept(link, key)
    event = link.receive_data(struct.pack("<I", 1) + bytes(128))
    assert isinstance(event, TicketReceived)
    link.refuse(LinkError.PERMISSION_DENIED, "wrong ticket")
    assert link.data_to_send() == struct.pack("<I", LinkError.PERMISSION_DENIED)


def test_sasl_mechanism_is_refused(key: RsaKey) -> None:
    link = LinkProtocol()
    link.receive_data(link_message(ChannelType.MAIN))
    accept(link, key)
    with pytest.raises(LinkRefused) as info:
        link.receive_data(struct.pack("<I", 2))
    assert info.value.code == LinkError.INVALID_DATA


def test_flood_before_link_completes_is_refused() -> None:
    link = LinkProtocol()
    with pytest.raises(LinkRefused):
        link.receive_data(link_message(ChannelType.MAIN) + bytes(200_000))
