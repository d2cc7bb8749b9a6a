"""Per-channel state machines driven in memory, bytes in and bytes out."""

from __future__ import annotations

import struct

import pytest

from spiceserver.errors import DecodeError, MessageTooLarge, UnexpectedMessage
from spiceserver.protocol import messages as m
from spiceserver.protocol.channel import ChannelLimits, ChannelProtocol
from spiceserver.protocol.cursor import CursorChannel
from spiceserver.protocol.display import DisplayChannel, EncodedImage
from spiceserver.protocol.enums import DisplayCap, ImageType, MainCap, MouseButton, caps_to_words
from spiceserver.protocol.events import (
    AgentMessage,
    ButtonEvent,
    CompressionPreferred,
    DisplayReady,
    KeyEvent,
    MouseModeChanged,
    MouseModeRequested,
    PointerPosition,
    WheelEvent,
)
from spiceserver.protocol.inputs import InputsChannel, parse_scancodes
from spiceserver.protocol.main import MainChannel
from spiceserver.server.registry import offered_channels
from tests.fakeclient import MessageSplitter, frame


def drain(channel: object) -> list[tuple[int, bytes]]:
    out = b"".join(bytes(c) for c in channel.data_to_send())  # type: ignore[attr-defined]
    return MessageSplitter().feed(out)


def feed(channel: ChannelProtocol, data: bytes) -> list[object]:
    """Every event ``data`` makes, taken as the server does: one budget per loop turn."""
    events: list[object] = []
    more = channel.receive_data(data, now=0.0)
    events += channel.events_received()
    while more:
        more = channel.receive_data(b"", now=0.0)
        events += channel.events_received()
    return events


def test_main_sends_init_then_channels_list_only_after_attach() -> None:
    main = MainChannel(
        session_id=0xABC,
        channels=offered_channels(),
        mini_header=True,
        channel_caps=tuple(caps_to_words([MainCap.NAME_AND_UUID])),
    )
    main.start(now=12.5)
    sent = drain(main)
    assert [t for t, _ in sent][:3] == [103, 113, 114]  # INIT, NAME, UUID
    assert 104 not in [t for t, _ in sent]
    init = struct.unpack("<8I", sent[0][1])
    assert init[0] == 0xABC and init[2] == 3 and init[3] == 2 and init[4] == 0
    main.receive_data(frame(104), now=13.0)
    assert drain(main) == [(104, struct.pack("<I", 3) + bytes([2, 0, 3, 0, 4, 0]))]


def test_mouse_mode_request_is_answered_only_when_the_mode_changes() -> None:
    main = MainChannel(session_id=1, channels=(), mini_header=True)
    main.receive_data(frame(105, struct.pack("<H", 1)), now=0.0)
    assert main.events_received() == [
        MouseModeRequested(mode=1, granted=True),
        MouseModeChanged(mode=1),
    ]
    assert drain(main) == [(105, struct.pack("<HH", 3, 1))]
    main.receive_data(frame(105, struct.pack("<H", 4)), now=0.0)  # no such mode: refused
    assert main.events_received() == [MouseModeRequested(mode=4, granted=False)]
    assert drain(main) == []  # nothing changed: no reply (spice-server reds_set_mouse_mode)
    events = feed(main, frame(105, struct.pack("<H", 1)) * 1000)  # the same, again
    assert len(events) == 1000 and MouseModeChanged(mode=1) not in events
    assert drain(main) == []
    main.receive_data(frame(105, struct.pack("<H", 2)), now=0.0)
    assert drain(main) == [(105, struct.pack("<HH", 3, 2))]


def test_repeated_attach_channels_gets_one_channels_list() -> None:
    main = MainChannel(session_id=1, channels=offered_channels(), mini_header=True)
    feed(main, frame(104) * 1000)
    assert [t for t, _ in drain(main)] == [104]
    main.receive_data(frame(104), now=1.0)
    assert drain(main) == []


def test_one_key_scancode_message_is_handed_over_in_event_budgets() -> None:
    limits = ChannelLimits(max_message_size=4096, max_events_per_call=256)
    inputs = InputsChannel(mini_header=True, limits=limits)
    data = bytes([0x1E, 0x9E]) * 2048  # 4 KiB: 4,096 key events in one message
    more = inputs.receive_data(frame(104, data) + frame(104, b"\x1e\x9e"), now=0.0)
    batches = []
    while True:
        events = inputs.events_received()
        batches.append(len(events))
        if not more:
            break
        more = inputs.receive_data(b"", now=0.0)  # the next loop turn
    assert max(batches) == 256 and sum(batches) == 4098
    assert len(batches) >= 4098 // 256


def test_legal_burst_of_largest_messages_fits_the_receive_buffer() -> None:
    # Eight 64 KiB AGENT_DATA back to back, arriving in reads of 256 KiB (asyncio, uvloop).
    main = MainChannel(session_id=1, channels=(), mini_header=True)
    assert main.limits.receive_buffer_limit == 64 * 1024 + 18 + 256 * 1024
    stream = frame(107, b"a" * 65536) * 8
    for start in range(0, len(stream), 256 * 1024):
        main.receive_data(stream[start : start + 256 * 1024], now=0.0)
    assert [e.size for e in main.events_received()] == [65536] * 8
    with pytest.raises(MessageTooLarge):  # more than one read on top of a partial message
        main.receive_data(b"\x00" * (main.limits.receive_buffer_limit + 1), now=0.0)


def test_agent_messages_are_noted_and_unknown_types_carry_type_and_size() -> None:
    main = MainChannel(session_id=1, channels=(), mini_header=True)
    main.receive_data(frame(107, b"x" * 30) + frame(106, struct.pack("<I", 10)), now=0.0)
    assert main.events_received() == [
        AgentMessage("agent_data", 107, 30),
        AgentMessage("agent_start", 106, 4),
    ]
    with pytest.raises(UnexpectedMessage) as raised:
        main.receive_data(frame(199, b"abc"), now=0.0)
    assert (raised.value.message_type, raised.value.size) == (199, 3)


def test_ack_window_closes_and_reopens() -> None:
    display = DisplayChannel(mini_header=True, limits=ChannelLimits(ack_window=4))
    display.start(now=0.0)
    assert drain(display)[0] == (3, struct.pack("<II", 1, 4))  # SET_ACK
    display.receive_data(frame(1, struct.pack("<I", 1)), now=0.0)  # ACK_SYNC
    for _ in range(9):
        assert display.can_send()
        display.send(m.Mark())
    assert not display.can_send()  # 9 unacked > 2 * 4
    display.data_to_send(now=0.25)  # written: the ACK lag runs from here
    display.receive_data(frame(2), now=0.5)  # ACK
    assert display.can_send()
    assert list(display.stats.ack_lag) == [0.25]


def test_ack_for_an_old_generation_is_ignored() -> None:
    display = DisplayChannel(mini_header=True, limits=ChannelLimits(ack_window=1))
    display.start(now=0.0)
    for _ in range(3):
        display.send(m.Mark())
    display.receive_data(frame(2), now=0.0)  # no ACK_SYNC yet
    assert not display.can_send()


def test_display_init_and_drawing_layout() -> None:
    display = DisplayChannel(
        mini_header=True, channel_caps=tuple(caps_to_words([DisplayCap.MONITORS_CONFIG]))
    )
    display.start(now=0.0)
    drain(display)
    display.receive_data(frame(101, struct.pack("<BqBi", 1, 1000, 1, 5000)), now=0.0)
    assert display.events_received() == [
        DisplayReady(pixmap_cache_size=1000, glz_window_size=5000, glz_dictionary_id=1)
    ]
    display.create_primary(640, 480)
    display.draw_copy(10, 20, EncodedImage(ImageType.BITMAP, 3, 2, (b"\xaa" * 5,), id=77))
    display.end_update()
    display.end_update()  # MARK once per new surface
    msgs = drain(display)
    assert [t for t, _ in msgs] == [314, 317, 304, 102]
    body = msgs[2][1]
    assert struct.unpack_from("<I4i", body) == (0, 20, 10, 22, 13)  # top, left, bottom, right
    assert struct.unpack_from("<BI4iHB", body, 20) == (0, 57, 0, 0, 2, 3, 8, 0)
    assert struct.unpack_from("<QBBII", body, 57) == (77, 0, 0, 3, 2)
    assert body[75:] == b"\xaa" * 5


def test_display_without_monitors_config_cap_gets_none() -> None:
    display = DisplayChannel(mini_header=True)
    display.create_primary(8, 8)
    assert [t for t, _ in drain(display)] == [314]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x1e\x9e", [KeyEvent(0x1E, True), KeyEvent(0x1E, False)]),
        (b"\xe0\x1d\xe0\x9d", [KeyEvent(0xE01D, True), KeyEvent(0xE01D, False)]),
        (b"\xe1\x1d\x45", [KeyEvent(0xE11D, True)]),
    ],
)
def test_scancode_bytes(data: bytes, expected: list[KeyEvent]) -> None:
    assert parse_scancodes(data) == expected


def test_inputs_keys_e0_and_release_on_disconnect() -> None:
    inputs = InputsChannel(mini_header=True)
    inputs.start(now=0.0)
    assert drain(inputs) == [(101, b"\0\0")]
    inputs.receive_data(frame(101, struct.pack("<I", 0x1DE0)), now=0.0)  # right Ctrl down
    inputs.receive_data(frame(101, struct.pack("<I", 0x2A)), now=0.0)  # left Shift down
    inputs.receive_data(frame(102, struct.pack("<I", 0xAA)), now=0.0)  # left Shift up
    inputs.receive_data(frame(113, struct.pack("<BH", 1, 1)), now=0.0)  # left button
    assert inputs.events_received() == [
        KeyEvent(0xE01D, True),
        KeyEvent(0x2A, True),
        KeyEvent(0x2A, False),
        ButtonEvent(MouseButton.LEFT, True, 1),
    ]
    assert inputs.release_all() == [
        KeyEvent(0xE01D, False),
        ButtonEvent(MouseButton.LEFT, False, 0),
    ]


def test_wheel_and_motion_ack_every_four() -> None:
    inputs = InputsChannel(mini_header=True)
    inputs.receive_data(
        frame(113, struct.pack("<BH", 4, 8))
        + frame(114, struct.pack("<BH", 4, 0))
        + frame(113, struct.pack("<BH", 5, 16)),
        now=0.0,
    )
    assert inputs.events_received() == [WheelEvent(-1), WheelEvent(1)]
    for i in range(8):
        inputs.receive_data(frame(112, struct.pack("<IIHB", i, 2 * i, 0, 0)), now=0.0)
    events = inputs.events_received()
    assert events[-1] == PointerPosition(7, 14, 0, 0)
    assert [t for t, _ in drain(inputs)] == [111, 111]


@pytest.mark.parametrize(
    "data",
    [
        frame(101, b"\0\0"),  # short KEY_DOWN
        frame(113, struct.pack("<BH", 9, 0)),  # unknown button
        frame(199),  # unknown type
        frame(101, struct.pack("<I", 0)),  # key code 0
    ],
)
def test_malformed_inputs_raise_protocol_errors(data: bytes) -> None:
    inputs = InputsChannel(mini_header=True)
    with pytest.raises((DecodeError, UnexpectedMessage)):
        inputs.receive_data(data, now=0.0)


def test_message_size_limit_is_checked_before_buffering() -> None:
    inputs = InputsChannel(mini_header=True, limits=ChannelLimits(max_message_size=100))
    with pytest.raises(MessageTooLarge):
        inputs.receive_data(struct.pack("<HI", 104, 1 << 30), now=0.0)


def test_full_header_serials_start_at_one() -> None:
    cursor = CursorChannel(mini_header=False)
    cursor.start(now=0.0, shape=None)
    data = b"".join(bytes(c) for c in cursor.data_to_send())
    serial1, type1, size1, _ = struct.unpack_from("<QHII", data)
    serial2, type2, _, _ = struct.unpack_from("<QHII", data, 18 + size1)
    assert (serial1, type1, serial2, type2) == (1, 3, 2, 101)


def test_cursor_shapes_are_cached_on_the_client_and_evicted_with_inval_one() -> None:
    from spiceserver.protocol.cursor import CLIENT_CURSOR_CACHE_SIZE
    from spiceserver.protocol.messages import CursorShape

    def shape(unique: int) -> CursorShape:
        return CursorShape(
            unique=unique,
            width=1,
            height=1,
            hot_x=0,
            hot_y=0,
            pixels=bytes([unique & 0xFF, 0, 0, 255]),
        )

    cursor = CursorChannel(mini_header=True)
    cursor.start(now=0.0, shape=None)
    drain(cursor)
    cursor.set_shape(shape(5))
    cursor.set_shape(shape(5))
    (t1, first), (t2, again) = drain(cursor)
    assert (t1, t2) == (103, 103)  # SET
    assert struct.unpack_from("<H", first, 5)[0] == 2 and len(first) == 5 + 19 + 4  # CACHE_ME
    assert struct.unpack_from("<H", again, 5)[0] == 4 and len(again) == 5 + 19  # FROM_CACHE
    for unique in range(100, 100 + CLIENT_CURSOR_CACHE_SIZE):
        cursor.set_shape(shape(unique))
    sent = drain(cursor)
    assert sent[-2] == (107, struct.pack("<Q", 5))  # INVAL_ONE: the oldest shape goes first
    cursor.set_shape(shape(0))  # unique 0: never cached
    assert struct.unpack_from("<H", drain(cursor)[0][1], 5)[0] == 0
    other = CursorShape(
        unique=100 + CLIENT_CURSOR_CACHE_SIZE - 1,
        width=1,
        height=1,
        hot_x=0,
        hot_y=0,
        pixels=b"\x01\x02\x03\xff",
    )
    cursor.set_shape(other)  # another image under a cached unique: dropped, then sent whole
    (t1, inval), (t2, again) = drain(cursor)
    assert (t1, inval) == (107, struct.pack("<Q", other.unique))
    assert struct.unpack_from("<H", again, 5)[0] == 2 and again.endswith(other.pixels)


def test_repeated_preferred_compression_is_one_event() -> None:
    display = DisplayChannel(mini_header=True)
    display.start(now=0.0)
    events = feed(display, frame(103, b"\x03") * 1000 + frame(103, b"\x07"))
    assert events == [CompressionPreferred(3), CompressionPreferred(7)]
