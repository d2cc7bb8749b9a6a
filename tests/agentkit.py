"""A VDAgent client's side for tests: agent messages as spice-gtk builds them, and a parser of
what the server's agent sends back (spice-protocol:spice/vd_agent.h)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from spiceserver.protocol.agent import HEADER, MAX_DATA_SIZE
from spiceserver.protocol.enums import AgentCap, AgentMsg

#: What spice-gtk 0.42 announces (SPICE-REFERENCE-2 1.1: 0x35077).
GTK_CAPS = (
    AgentCap.MOUSE_STATE,
    AgentCap.MONITORS_CONFIG,
    AgentCap.REPLY,
    AgentCap.DISPLAY_CONFIG,
    AgentCap.CLIPBOARD_BY_DEMAND,
    AgentCap.CLIPBOARD_SELECTION,
    AgentCap.MONITORS_CONFIG_POSITION,
    AgentCap.FILE_XFER_DETAILED_ERRORS,
    AgentCap.CLIPBOARD_NO_RELEASE_ON_REGRAB,
    AgentCap.CLIPBOARD_GRAB_SERIAL,
)
#: What spice-html5 announces (src/main.js).
HTML5_CAPS = (AgentCap.MOUSE_STATE, AgentCap.MONITORS_CONFIG, AgentCap.REPLY)


def message(
    type_: int, payload: bytes = b"", *, protocol: int = 1, size: int | None = None
) -> bytes:
    """One whole agent message (header + payload)."""
    return HEADER.pack(protocol, type_, 0, len(payload) if size is None else size) + payload


def pieces(data: bytes, size: int = MAX_DATA_SIZE) -> list[bytes]:
    """``data`` cut as spice-gtk cuts a message into AGENT_DATA bodies."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def caps_message(caps: tuple[int, ...] = GTK_CAPS, request: bool = True) -> bytes:
    bits = 0
    for cap in caps:
        bits |= 1 << cap
    return message(AgentMsg.ANNOUNCE_CAPABILITIES, struct.pack("<II", int(request), bits))


def grab(selection: int, types: tuple[int, ...], serial: int | None = 0) -> bytes:
    body = struct.pack("<B3x", selection)
    if serial is not None:
        body += struct.pack("<I", serial)
    body += b"".join(struct.pack("<I", t) for t in types)
    return message(AgentMsg.CLIPBOARD_GRAB, body)


def request(selection: int, type_: int) -> bytes:
    return message(AgentMsg.CLIPBOARD_REQUEST, struct.pack("<B3xI", selection, type_))


def clipboard(selection: int, type_: int, data: bytes) -> bytes:
    return message(AgentMsg.CLIPBOARD, struct.pack("<B3xI", selection, type_) + data)


def release(selection: int) -> bytes:
    return message(AgentMsg.CLIPBOARD_RELEASE, struct.pack("<B3x", selection))


def monitors(
    heads: list[tuple[int, int, int, int]], mm: list[tuple[int, int]] | None = None
) -> bytes:
    """MONITORS_CONFIG of (width, height, x, y) heads (height first on the wire)."""
    flags = 1 | (2 if mm else 0)
    body = struct.pack("<II", len(heads), flags)
    for width, height, x, y in heads:
        body += struct.pack("<IIIii", height, width, 32, x, y)
    for height_mm, width_mm in mm or []:
        body += struct.pack("<HH", height_mm, width_mm)
    return message(AgentMsg.MONITORS_CONFIG, body)


def file_start(xfer_id: int, name: str, size: int) -> bytes:
    escaped = name.replace("\\", "\\\\").replace("\n", "\\n")
    text = f"[vdagent-file-xfer]\nname={escaped}\nsize={size}\n".encode() + b"\0"
    return message(AgentMsg.FILE_XFER_START, struct.pack("<I", xfer_id) + text)


def file_data(xfer_id: int, data: bytes) -> bytes:
    return message(AgentMsg.FILE_XFER_DATA, struct.pack("<IQ", xfer_id, len(data)) + data)


def file_status(xfer_id: int, result: int) -> bytes:
    return message(AgentMsg.FILE_XFER_STATUS, struct.pack("<II", xfer_id, result))


@dataclass
class Received:
    type: int
    payload: bytes


class Reassembler:
    """The client side of the server's agent stream (as spice-gtk reassembles it)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, piece: bytes) -> list[Received]:
        assert len(piece) <= MAX_DATA_SIZE
        self.buffer += piece
        out = []
        while len(self.buffer) >= HEADER.size:
            protocol, type_, _opaque, size = HEADER.unpack_from(self.buffer)
            assert protocol == 1
            if len(self.buffer) < HEADER.size + size:
                break
            out.append(Received(type_, bytes(self.buffer[HEADER.size : HEADER.size + size])))
            del self.buffer[: HEADER.size + size]
        return out
