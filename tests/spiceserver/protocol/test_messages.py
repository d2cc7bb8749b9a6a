"""Message declarations: ids pinned to spice/enums.h, strict decoding, exact layouts."""

from __future__ import annotations

import struct

import pytest

from spiceserver.errors import DecodeError, UnexpectedMessage
from spiceserver.protocol import messages as m
from spiceserver.protocol.enums import ChannelType

# Typed in from spice-protocol spice/enums.h, not derived from our enums.
ENUMS_H = {
    (None, "server", 3): "SetAck",
    (None, "server", 4): "Ping",
    (None, "client", 1): "AckSync",
    (None, "client", 2): "Ack",
    (None, "client", 3): "Pong",
    (ChannelType.MAIN, "server", 103): "MainInit",
    (ChannelType.MAIN, "server", 104): "ChannelsList",
    (ChannelType.MAIN, "server", 105): "MouseModeMsg",
    (ChannelType.MAIN, "server", 106): "MultiMediaTime",
    (ChannelType.MAIN, "server", 113): "Name",
    (ChannelType.MAIN, "server", 114): "Uuid",
    (ChannelType.MAIN, "client", 104): "AttachChannels",
    (ChannelType.MAIN, "client", 105): "MouseModeRequest",
    (ChannelType.DISPLAY, "server", 102): "Mark",
    (ChannelType.DISPLAY, "server", 314): "SurfaceCreate",
    (ChannelType.DISPLAY, "server", 317): "MonitorsConfig",
    (ChannelType.DISPLAY, "client", 101): "DisplayInit",
    (ChannelType.DISPLAY, "client", 103): "PreferredCompression",
    (ChannelType.INPUTS, "server", 101): "InputsInit",
    (ChannelType.INPUTS, "server", 111): "MouseMotionAck",
    (ChannelType.INPUTS, "client", 101): "KeyDown",
    (ChannelType.INPUTS, "client", 102): "KeyUp",
    (ChannelType.INPUTS, "client", 104): "KeyScancode",
    (ChannelType.INPUTS, "client", 111): "MouseMotion",
    (ChannelType.INPUTS, "client", 112): "MousePosition",
    (ChannelType.INPUTS, "client", 113): "MousePress",
    (ChannelType.INPUTS, "client", 114): "MouseRelease",
    (ChannelType.CURSOR, "server", 101): "CursorInit",
    (ChannelType.CURSOR, "server", 103): "CursorSet",
    (ChannelType.CURSOR, "server", 104): "CursorMove",
    (ChannelType.CURSOR, "server", 105): "CursorHide",
}


@pytest.mark.parametrize(("key", "name"), ENUMS_H.items())
def test_ids_match_enums_h(key: tuple[ChannelType | None, str, int], name: str) -> None:
    channel, direction, type_ = key
    assert m.REGISTRY[(direction, channel, type_)].__name__ == name


# Body sizes from spice.proto / the generated demarshaller (SPICE-REFERENCE tables).
SIZES = {
    m.AckSync: 4, m.Ack: 0, m.Pong: 12, m.DisplayInit: 14, m.PreferredCompression: 1,
    m.KeyDown: 4, m.KeyUp: 4, m.ClientKeyModifiers: 2, m.MouseMotion: 10, m.MousePosition: 11,
    m.MousePress: 3, m.MouseRelease: 3, m.MouseModeRequest: 2, m.AttachChannels: 0,
    m.StreamReport: 32, m.ClientDisconnecting: 12, m.AgentStart: 4, m.ClientInfo: 8,
}  # fmt: skip


@pytest.mark.parametrize("cls", m.all_client_messages(), ids=lambda c: c.__name__)
def test_client_messages_reject_short_and_long_bodies(cls: type[m.Message]) -> None:
    size = cls._STRUCT.size
    if cls in SIZES:
        assert size == SIZES[cls]
    if size:
        with pytest.raises(DecodeError):
            cls.unpack(bytes(size - 1))
    if not cls._TAIL:
        with pytest.raises(DecodeError):
            cls.unpack(bytes(size + 1))


def test_unknown_type_is_unexpected() -> None:
    with pytest.raises(UnexpectedMessage):
        m.decode_client_message(ChannelType.INPUTS, 199, b"")
    with pytest.raises(UnexpectedMessage):
        m.decode_client_message(ChannelType.INPUTS, 50, b"")


def test_server_layouts() -> None:
    init = m.MainInit(
        session_id=5,
        display_channels_hint=1,
        supported_mouse_modes=3,
        current_mouse_mode=2,
        agent_connected=0,
        agent_tokens=0,
        multi_media_time=9,
        ram_hint=10,
    )
    assert init.pack() == struct.pack("<8I", 5, 1, 3, 2, 0, 0, 9, 10)
    assert m.MouseModeMsg(supported_modes=3, current_mode=2).pack() == b"\3\0\2\0"
    assert m.ChannelsList(channels=((2, 0), (3, 0))).pack() == b"\2\0\0\0\2\0\3\0"
    assert len(m.SurfaceCreate(surface_id=0, width=1, height=1, format=32, flags=1).pack()) == 20
    heads = m.MonitorsConfig(heads=((0, 0, 640, 480, 0, 0, 0),)).pack()
    assert heads[:4] == b"\1\0\1\0" and len(heads) == 4 + 28
    assert m.Name(name="x").pack() == b"\2\0\0\0x\0"
    ping = m.Ping(id=1, timestamp=2).pack()
    assert ping == struct.pack("<IQ", 1, 2)
    # CURSOR INIT: i16 x, i16 y, u16 trail length, u16 trail freq, u8 visible, Cursor.
    assert m.CursorInit(x=1, y=2, visible=0, shape=None).pack() == struct.pack(
        "<hhHHBH", 1, 2, 0, 0, 0, 1
    )
    shape = m.CursorShape(unique=9, width=1, height=1, hot_x=0, hot_y=0, pixels=b"\1\2\3\4")
    body = m.CursorSet(x=0, y=0, visible=1, shape=shape).pack()
    assert body == struct.pack("<hhBHQBHHHH", 0, 0, 1, 0, 9, 0, 1, 1, 0, 0) + b"\1\2\3\4"
