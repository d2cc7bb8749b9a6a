"""The built-in agent's stream (spiceserver.protocol.agent): framing, checks, caps, serials,
tokens, output pieces; hostile streams and a fuzz run."""

from __future__ import annotations

import os
import struct
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.errors import AgentProtocolError, ProtocolError
from spiceserver.protocol import messages as m
from spiceserver.protocol.agent import (
    MAX_DATA_SIZE,
    SERVER_CAPS,
    TOKENS_TO_SEND,
    WINDOW_SIZE,
    AgentStream,
    parse_file_xfer_start,
)
from spiceserver.protocol.enums import (
    AgentCap,
    AgentMsg,
    FileXferStatus,
    MainCap,
    MainClientMsg,
    MainServerMsg,
)
from spiceserver.protocol.events import (
    AgentCapabilities,
    AgentDropped,
    AgentMonitor,
    ClipboardData,
    ClipboardGrab,
    ClipboardRelease,
    ClipboardRequest,
    FileXferCancelled,
    FileXferData,
    FileXferStart,
    MaxClipboard,
    MonitorsConfig,
)
from spiceserver.protocol.main import MainChannel
from tests import agentkit as ak
from tests.fakeclient import MessageSplitter, frame

EXAMPLES = int(os.environ.get("SPICESERVER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed(stream: AgentStream, data: bytes) -> list[object]:
    """Send ``data`` as AGENT_DATA pieces, returning tokens as a client would get them."""
    for piece in ak.pieces(data):
        stream.receive(piece)
        stream.tokens_to_return()
    return stream.events()


def out(stream: AgentStream) -> list[ak.Received]:
    client = ak.Reassembler()
    received = []
    for piece in stream.pieces(1 << 30):
        received += client.feed(piece)
    return received


def negotiated(caps: tuple[int, ...] = ak.GTK_CAPS, **options: object) -> AgentStream:
    stream = AgentStream(**options)  # type: ignore[arg-type]
    stream.start(0xFFFF_FFFF)
    events = feed(stream, ak.caps_message(caps))
    assert events == [AgentCapabilities(frozenset(caps), True)]
    out(stream)  # our announcement
    return stream


def test_caps_reply_announces_exactly_what_is_parsed() -> None:
    stream = AgentStream()
    stream.start(0xFFFF_FFFF)
    feed(stream, ak.caps_message())
    [reply] = out(stream)
    assert reply.type == AgentMsg.ANNOUNCE_CAPABILITIES
    request, bits = struct.unpack("<II", reply.payload)
    assert request == 0
    assert {bit for bit in range(32) if bits >> bit & 1} == set(SERVER_CAPS)
    # A second announcement without request=1 gets no reply.
    feed(stream, ak.caps_message(request=False))
    assert out(stream) == []


def test_file_transfer_off_is_announced() -> None:
    stream = AgentStream(file_xfer=False)
    stream.start(1000)
    feed(stream, ak.caps_message())
    [reply] = out(stream)
    assert struct.unpack("<II", reply.payload)[1] >> AgentCap.FILE_XFER_DISABLED & 1
    feed(stream, ak.file_start(7, "a.txt", 3))
    [status] = out(stream)
    assert struct.unpack("<II", status.payload) == (7, FileXferStatus.DISABLED)


def test_client_grabs_with_serials_as_spice_vdagent() -> None:
    stream = negotiated()
    assert feed(stream, ak.grab(0, (1, 2), serial=0)) == [ClipboardGrab(0, (1, 2))]
    assert feed(stream, ak.grab(0, (1,), serial=1)) == [ClipboardGrab(0, (1,))]
    assert feed(stream, ak.grab(0, (1,), serial=7)) == []  # a race it lost: discarded
    assert feed(stream, ak.grab(1, (1,), serial=0)) == [ClipboardGrab(1, (1,))]  # per selection
    # Our grab takes serial 2; the client's grab crossing it with 2 is "counter - 1": it wins.
    assert stream.grab(0, (1,))
    [ours] = out(stream)
    assert struct.unpack_from("<B3xI", ours.payload) == (0, 2)
    assert feed(stream, ak.grab(0, (1,), serial=2)) == [ClipboardGrab(0, (1,))]
    assert feed(stream, ak.grab(0, (1,), serial=3)) == [ClipboardGrab(0, (1,))]


def test_caps_with_request_reset_serials() -> None:
    stream = negotiated()
    feed(stream, ak.grab(0, (1,), serial=0))
    feed(stream, ak.caps_message())  # the client's agent side restarted
    out(stream)
    assert feed(stream, ak.grab(0, (1,), serial=0)) == [ClipboardGrab(0, (1,))]


def test_regrab_without_release_and_with_release_for_old_clients() -> None:
    stream = negotiated()
    stream.grab(0, (1,))
    out(stream)
    stream.grab(0, (2,))
    assert [r.type for r in out(stream)] == [AgentMsg.CLIPBOARD_GRAB]  # NO_RELEASE_ON_REGRAB
    old = negotiated(tuple(c for c in ak.GTK_CAPS if c != AgentCap.CLIPBOARD_NO_RELEASE_ON_REGRAB))
    old.grab(0, (1,))
    out(old)
    old.grab(0, (2,))
    assert [r.type for r in out(old)] == [AgentMsg.CLIPBOARD_RELEASE, AgentMsg.CLIPBOARD_GRAB]


def test_an_unsent_grab_is_replaced_and_its_serial_reused() -> None:
    stream = negotiated()
    for types in ((1,), (2,), (1, 2)):
        stream.grab(0, types)
    [grab] = out(stream)
    assert struct.unpack("<B3xIII", grab.payload) == (0, 0, 1, 2)
    # A release of a grab that never left sends nothing at all.
    stream.grab(1, (1,))
    stream.release(1)
    assert out(stream) == []
    assert feed(stream, ak.grab(1, (1,), serial=0)) == [ClipboardGrab(1, (1,))]


def test_request_clipboard_release_and_max_clipboard() -> None:
    stream = negotiated()
    events = feed(
        stream,
        ak.request(1, 1)
        + ak.clipboard(0, 2, b"\x89PNG")
        + ak.release(1)
        + ak.message(AgentMsg.MAX_CLIPBOARD, struct.pack("<i", 5)),
    )
    assert events == [
        ClipboardRequest(1, 1),
        ClipboardData(0, 2, b"\x89PNG"),
        ClipboardRelease(1),
        MaxClipboard(5),
    ]
    stream.clipboard(1, 1, b"123456")  # over the client's MAX_CLIPBOARD: answered NONE
    [answer] = out(stream)
    assert answer.payload == struct.pack("<B3xI", 1, 0)


def test_selection_byte_only_when_both_sides_announced_it() -> None:
    caps = (AgentCap.CLIPBOARD_BY_DEMAND,)  # an old client: no selection, no serial
    stream = negotiated(caps)
    assert feed(stream, ak.message(AgentMsg.CLIPBOARD_GRAB, struct.pack("<I", 1))) == [
        ClipboardGrab(0, (1,))
    ]
    assert stream.grab(0, (1,)) and not stream.grab(1, (1,))  # PRIMARY cannot be named
    [grab] = out(stream)
    assert grab.payload == struct.pack("<I", 1)


def test_html5_gets_no_clipboard_and_small_messages() -> None:
    stream = negotiated(ak.HTML5_CAPS)
    assert not stream.grab(0, (1,))
    assert not stream.clipboard(0, 1, b"x" * 5000)
    feed(stream, ak.monitors([(1280, 720, 0, 0)]))
    stream.file_status(1, FileXferStatus.NOT_ENOUGH_SPACE, free=5)
    pieces = stream.pieces(1 << 30)
    assert pieces and all(len(p) <= MAX_DATA_SIZE for p in pieces)
    client = ak.Reassembler()
    for piece in pieces:  # spice-html5 parses each piece as one whole message
        assert len(client.feed(piece)) == 1
    # No DETAILED_ERRORS: NOT_ENOUGH_SPACE goes as plain ERROR without details.
    status = ak.Reassembler().feed(pieces[-1])[0]
    assert struct.unpack("<II", status.payload) == (1, FileXferStatus.ERROR)


def test_monitors_config_height_first_sparse_and_physical_size() -> None:
    stream = negotiated()
    body = struct.pack("<II", 3, 3)
    body += struct.pack("<IIIii", 720, 1280, 32, 0, 0)
    body += struct.pack("<IIIii", 0, 0, 32, 0, 0)  # a disabled display
    body += struct.pack("<IIIii", 600, 800, 32, 1280, 0)
    body += struct.pack("<HHHHHH", 170, 300, 0, 0, 100, 200)
    events = feed(stream, ak.message(AgentMsg.MONITORS_CONFIG, body))
    assert events == [
        MonitorsConfig(
            (
                AgentMonitor(0, 1280, 720, 32, 0, 0, 300, 170),
                AgentMonitor(1, 0, 0, 32, 0, 0, 0, 0),
                AgentMonitor(2, 800, 600, 32, 1280, 0, 200, 100),
            ),
            3,
        )
    ]
    [reply] = out(stream)
    assert (reply.type, reply.payload) == (AgentMsg.REPLY, struct.pack("<II", 2, 1))


def test_monitors_config_over_256_or_truncated_is_refused() -> None:
    stream = negotiated()
    events = feed(stream, ak.message(AgentMsg.MONITORS_CONFIG, struct.pack("<II", 257, 0)))
    assert [type(e) for e in events] == [AgentDropped]
    events = feed(
        stream, ak.message(AgentMsg.MONITORS_CONFIG, struct.pack("<II", 2, 0) + b"x" * 20)
    )
    assert [type(e) for e in events] == [AgentDropped]
    assert [struct.unpack("<II", r.payload) for r in out(stream)] == [(2, 2), (2, 2)]


def test_file_transfer_messages() -> None:
    stream = negotiated()
    events = feed(
        stream,
        ak.file_start(3, "report 1.pdf", 10)
        + ak.file_data(3, b"0123456789")
        + ak.file_status(3, FileXferStatus.CANCELLED),
    )
    assert events == [
        FileXferStart(3, "report 1.pdf", 10),
        FileXferData(3, b"0123456789"),
        FileXferCancelled(3, FileXferStatus.CANCELLED),
    ]
    # A data size field that lies: dropped, the transfer fails.
    events = feed(stream, ak.message(AgentMsg.FILE_XFER_DATA, struct.pack("<IQ", 4, 99) + b"ab"))
    assert [type(e) for e in events] == [AgentDropped, FileXferCancelled]
    stream.file_status(5, FileXferStatus.NOT_ENOUGH_SPACE, free=1234)
    statuses = [r.payload for r in out(stream)]
    assert statuses[0] == struct.pack("<IIBI", 4, FileXferStatus.ERROR, 0, 13)
    assert statuses[1] == struct.pack("<IIQ", 5, FileXferStatus.NOT_ENOUGH_SPACE, 1234)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"[vdagent-file-xfer]\nname=a b.txt\nsize=5\n\0", ("a b.txt", 5)),
        (b"[vdagent-file-xfer]\nname=\\sx\\\\y\nsize=0\nfile-xfer-nr=1\n\0", (" x\\y", 0)),
        (b"# c\n[vdagent-file-xfer]\nsize = 7\nname = ../../etc/passwd\n", ("../../etc/passwd", 7)),
        (b"[vdagent-file-xfer]\nname=x\n", "file transfer without a valid size"),
        (b"[vdagent-file-xfer]\nsize=1\n", "file transfer without a name"),
        (b"[other]\nname=x\nsize=1\n", "file transfer without a name"),
        (b"[vdagent-file-xfer]\nname=x\nsize=-1\n", "file transfer without a valid size"),
        (b"[vdagent-file-xfer]\nname=x\nsize=1e9\n", "file transfer without a valid size"),
        (b"[vdagent-file-xfer]\nname=\\q\nsize=1\n", "file transfer without a name"),
        (b"[vdagent-file-xfer]\nname=\xff\nsize=1\n", "file transfer header is not UTF-8"),
        (
            b"[vdagent-file-xfer]\nname=x\nsize=1\njunk\n",
            "malformed line in the file transfer header",
        ),
        (b"x" * 9000, "file transfer header of 9000 bytes"),
    ],
)
def test_file_xfer_start_key_file(text: bytes, expected: object) -> None:
    assert parse_file_xfer_start(text) == expected


def test_bad_start_is_answered_with_error() -> None:
    stream = negotiated()
    events = feed(stream, ak.message(AgentMsg.FILE_XFER_START, struct.pack("<I", 9) + b"junk"))
    assert [type(e) for e in events] == [AgentDropped]
    [status] = out(stream)
    assert struct.unpack_from("<II", status.payload) == (9, FileXferStatus.ERROR)


def test_wrong_protocol_breaks_the_stream() -> None:
    stream = negotiated()
    with pytest.raises(AgentProtocolError):
        feed(stream, ak.message(AgentMsg.REPLY, b"\0" * 8, protocol=2))


@pytest.mark.parametrize(
    "data",
    [
        ak.message(AgentMsg.CLIPBOARD_REQUEST, b"\0" * 9),  # exact size 8 with the selection
        ak.message(AgentMsg.CLIPBOARD_RELEASE, b""),  # needs the selection
        ak.message(AgentMsg.CLIPBOARD_GRAB, b"\0" * 4),  # selection but no serial
        ak.message(AgentMsg.CLIPBOARD_GRAB, b"\0" * 10),  # types not whole u32s
        ak.message(AgentMsg.MAX_CLIPBOARD, b"\0" * 5),
        ak.message(AgentMsg.FILE_XFER_DATA, b"\0" * 11),
        ak.message(AgentMsg.MOUSE_STATE, b"\0" * 13),  # right size, ignored: inputs has it
        ak.message(AgentMsg.DISPLAY_CONFIG, b"\0" * 8),
        ak.message(99, b"abc"),
        ak.message(AgentMsg.CLIPBOARD, struct.pack("<B3xI", 7, 1)),  # unknown selection
    ],
)
def test_wrong_sizes_and_unknown_types_are_dropped_and_the_stream_goes_on(data: bytes) -> None:
    stream = negotiated()
    events = feed(stream, data + ak.release(0))
    assert [type(e) for e in events] == [AgentDropped, ClipboardRelease]


def test_oversized_message_is_skipped_without_buffering() -> None:
    stream = negotiated(max_message_size=100_000)
    pieces = ak.pieces(ak.clipboard(0, 1, b"x" * 3_000_000))
    tracemalloc.start()
    for piece in pieces:
        stream.receive(piece)
        stream.tokens_to_return()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    events = stream.events()
    assert peak < 1_000_000  # the 3 MB message was never held (the test's copy aside)
    assert events == [AgentDropped(AgentMsg.CLIPBOARD, 3_000_008, events[0].reason, selection=0)]
    assert feed(stream, ak.release(0)) == [ClipboardRelease(0)]


def test_client_tokens_are_returned_every_five_and_overrun_breaks() -> None:
    stream = AgentStream()
    returned = []
    for _ in range(12):
        stream.receive(ak.release(0)[:10])  # partial header pieces count as messages
        returned.append(stream.tokens_to_return())
    assert returned == [0, 0, 0, 0, 5] * 2 + [0, 0]
    stream.hold(True)
    for _ in range(WINDOW_SIZE - 2):
        stream.receive(b"")
    assert stream.tokens_to_return() == 0
    with pytest.raises(AgentProtocolError):
        stream.receive(b"")  # an 11th piece without tokens
    stream2 = AgentStream()
    stream2.hold(True)
    for _ in range(WINDOW_SIZE):
        stream2.receive(b"")
    stream2.hold(False)
    assert stream2.tokens_to_return() == WINDOW_SIZE


def test_server_pieces_honour_tokens_and_start_new_pieces_per_message() -> None:
    stream = AgentStream()
    stream.start(0)
    feed(stream, ak.caps_message())
    assert stream.pieces(1 << 30) == []  # no tokens yet
    stream.add_tokens(1)
    assert len(stream.pieces(1 << 30)) == 1
    stream.add_tokens(1000)
    stream.grab(0, (1,))
    stream.clipboard(0, 1, b"y" * 5000)
    stream.reply(2, 1)
    pieces = stream.pieces(1 << 30)
    # grab (1 piece), clipboard 5028 bytes (3 pieces), reply (1): no piece mixes two messages
    assert [len(p) for p in pieces] == [32, 2048, 2048, 5028 - 4096, 28]


def test_ten_thousand_grabs_stay_bounded_and_fast() -> None:
    stream = negotiated(max_queue_bytes=64 * 1024)
    started = time.perf_counter()
    for i in range(10_000):
        feed(stream, ak.grab(i % 2, (1, 2), serial=i // 2))  # racing ours: some discarded
        stream.grab(i % 2, (1,))  # and the desktop answering each one
    assert time.perf_counter() - started < 5
    assert stream.queued_bytes <= 2 * 64  # latest wins: one grab per selection waits
    assert len(out(stream)) == 2


def test_main_channel_init_tokens_and_agent_reappearing() -> None:
    main = MainChannel(
        session_id=1,
        channels=(),
        mini_header=True,
        channel_caps=(1 << MainCap.AGENT_CONNECTED_TOKENS,),
        agent=AgentStream(),
    )
    main.start(0.0)
    splitter = MessageSplitter()
    init = splitter.feed(b"".join(bytes(c) for c in main.data_to_send()))[0]
    fields = struct.unpack_from("<8I", init[1])
    assert (fields[4], fields[5]) == (1, WINDOW_SIZE)
    main.receive_data(frame(MainClientMsg.AGENT_START, struct.pack("<I", 0xFFFFFFFF)), now=0.0)
    data = ak.caps_message()
    for _ in range(TOKENS_TO_SEND):
        main.receive_data(frame(MainClientMsg.AGENT_DATA, data), now=0.0)
    events = main.events_received()
    assert all(isinstance(e, AgentCapabilities) for e in events) and len(events) == 5
    main.send_agent(1 << 20)
    sent = splitter.feed(b"".join(bytes(c) for c in main.data_to_send()))
    assert (MainServerMsg.AGENT_TOKEN, struct.pack("<I", 5)) in sent
    assert sum(t == MainServerMsg.AGENT_DATA for t, _ in sent) == 5
    main.set_agent_connected(False)
    main.set_agent_connected(True)
    sent = splitter.feed(b"".join(bytes(c) for c in main.data_to_send()))
    assert [t for t, _ in sent] == [
        MainServerMsg.AGENT_DISCONNECTED,
        MainServerMsg.AGENT_CONNECTED_TOKENS,
    ]
    assert m.AgentConnectedTokens.unpack(sent[1][1]).num_tokens == WINDOW_SIZE


# ---------------------------------------------------------------------- fuzzing

_VALID = st.sampled_from(
    [
        ak.caps_message(),
        ak.grab(0, (1, 2), 0),
        ak.grab(1, (1,), 5),
        ak.request(0, 1),
        ak.clipboard(0, 1, b"text"),
        ak.release(1),
        ak.monitors([(640, 480, 0, 0), (800, 600, 640, 0)], [(1, 2), (3, 4)]),
        ak.file_start(1, "x", 3),
        ak.file_data(1, b"abc"),
        ak.file_status(1, 1),
        ak.message(AgentMsg.MAX_CLIPBOARD, struct.pack("<i", -1)),
    ]
)


@FUZZ
@given(st.lists(_VALID, max_size=12), st.integers(1, 64))
def test_fuzz_any_cut_of_valid_messages_gives_the_same_events(
    messages: list[bytes], cut: int
) -> None:
    data = b"".join(messages)
    whole = AgentStream()
    cut_stream = AgentStream()
    expected = []
    for message in messages:
        expected += feed(whole, message)
    got = []
    for i in range(0, len(data), cut):
        cut_stream.receive(data[i : i + cut])
        cut_stream.tokens_to_return()
        got += cut_stream.events()
    assert got == expected


@FUZZ
@given(
    st.lists(
        st.one_of(
            _VALID,
            st.binary(max_size=64),
            st.builds(
                lambda t, p, s: ak.message(t, p, size=s),
                st.integers(0, 20),
                st.binary(max_size=40),
                st.one_of(st.none(), st.integers(0, 1 << 32 - 1)),
            ),
        ),
        max_size=10,
    )
)
def test_fuzz_garbage_gives_events_or_agent_protocol_error(chunks: list[bytes]) -> None:
    stream = negotiated(max_message_size=4096, max_queue_bytes=64 * 1024)
    try:
        for chunk in chunks:
            feed(stream, chunk)
            stream.pieces(1 << 20)
    except AgentProtocolError:
        pass
    assert stream.queued_bytes <= 64 * 1024


def test_display_config_is_answered_not_applied() -> None:
    stream = negotiated()
    events = feed(stream, ak.message(AgentMsg.DISPLAY_CONFIG, struct.pack("<II", 7, 32)))
    assert [type(e) for e in events] == [AgentDropped]
    [reply] = out(stream)
    assert struct.unpack("<II", reply.payload) == (AgentMsg.DISPLAY_CONFIG, 2)


@FUZZ
@given(st.lists(st.binary(max_size=3000), max_size=12), st.booleans())
def test_fuzz_main_channel_with_the_agent(pieces: list[bytes], valid_header: bool) -> None:
    """Any AGENT_DATA bodies through the main channel: events or a ProtocolError."""
    main = MainChannel(session_id=1, channels=(), mini_header=True, agent=AgentStream())
    main.start(0.0)
    main.receive_data(frame(MainClientMsg.AGENT_START, struct.pack("<I", 5)), now=0.0)
    try:
        for piece in pieces:
            if valid_header:
                piece = ak.message(AgentMsg.CLIPBOARD_GRAB, piece)[:3000]
            main.receive_data(frame(MainClientMsg.AGENT_DATA, piece), now=0.0)
            main.events_received()
            main.send_agent(1 << 20)
            main.data_to_send()
    except ProtocolError:
        pass
