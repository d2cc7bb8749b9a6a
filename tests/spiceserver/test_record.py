"""The session record over loopback: what a client did, as JSON lines, with the right values."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from pathlib import Path
from typing import Any

import pytest

from spiceserver import NumpySource, SpiceServer
from spiceserver.protocol.enums import ChannelType, KeyModifiers, LinkError, MouseMode
from spiceserver.protocol.events import LockState, MouseModeRequested
from spiceserver.record import (
    JsonlRecorder,
    MemoryRecorder,
    caps_names,
    enum_name,
    event_record,
    key_name,
)
from tests.conftest import run
from tests.fakeclient import LoopbackClient
from tests.spiceserver.server.test_loopback import PASSWORD, open_session


def matcher(**fields: Any) -> Any:
    return lambda event: all(event.get(k) == v for k, v in fields.items())


def test_key_names_cover_plain_e0_and_pause() -> None:
    assert [key_name(c) for c in (0x1E, 0x2A, 0xE048, 0xE01D, 0xE11D, 0x59, 0xE0FF)] == [
        "A",
        "ShiftLeft",
        "ArrowUp",
        "ControlRight",
        "Pause",
        "0x59",
        "E0-0xff",
    ]
    assert caps_names((0b1011,), None) == ["cap-0", "cap-1", "cap-3"]


def test_enum_names_of_flags_and_unknown_values() -> None:
    """A flag value with no member bit has no name: it is recorded as its number."""
    assert [enum_name(MouseMode, v) for v in (2, 3, 0, 4)] == ["client", "server|client", "0", "4"]
    assert enum_name(LinkError, 99) == "99"
    assert event_record(MouseModeRequested(mode=0, granted=False)) == {
        "event": "mouse_mode_request",
        "mode": "0",
        "granted": False,
    }
    locks = KeyModifiers.CAPS_LOCK | KeyModifiers.NUM_LOCK
    assert event_record(LockState(locks)) == {
        "event": "lock_state",
        "locks": ["num_lock", "caps_lock"],
    }


def test_links_inputs_agent_unknown_messages_and_disconnects(
    event_loop_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "session.jsonl"

    async def scenario() -> list[dict[str, Any]]:
        memory = MemoryRecorder()
        source = NumpySource(64, 48)
        async with SpiceServer(
            source,
            password=PASSWORD,
            port=0,
            recorders=[memory],
            record_path=str(path),
            agent=False,  # AGENT_DATA is then only noted
        ) as server:
            main, session_id = await open_session(server.port)
            sid = f"{session_id:#010x}"
            await memory.wait_for(matcher(event="link", channel="main", result="ok"))
            main.send(105, struct.pack("<H", 1))  # MOUSE_MODE_REQUEST server
            main.send(107, b"\x00" * 20)  # AGENT_DATA (no agent claimed: noted)

            inputs = await LoopbackClient.open(server.port)
            assert await inputs.link(ChannelType.INPUTS, PASSWORD, connection_id=session_id) == 0
            inputs.send(101, struct.pack("<I", 0x1E))  # KEY_DOWN A
            inputs.send(101, struct.pack("<I", 0x48E0))  # KEY_DOWN E0 48: arrow up
            inputs.send(102, struct.pack("<I", 0x9E))  # KEY_UP A
            inputs.send(112, struct.pack("<IIHB", 10, 20, 0, 0))  # MOUSE_POSITION
            inputs.send(111, struct.pack("<iiH", -3, 4, 0))  # MOUSE_MOTION
            inputs.send(113, struct.pack("<BH", 1, 1))  # MOUSE_PRESS left
            inputs.send(114, struct.pack("<BH", 1, 0))  # MOUSE_RELEASE left
            inputs.send(113, struct.pack("<BH", 5, 0))  # wheel down
            await memory.wait_for(matcher(event="wheel"))
            inputs.send(199, b"xyz")  # no such message: recorded, then the channel closes
            assert await inputs.closed_by_server()
            await memory.wait_for(matcher(event="disconnect", channel="inputs"))

            wrong = await LoopbackClient.open(server.port)
            result = await wrong.link(ChannelType.DISPLAY, "wrong", connection_id=session_id)
            assert result == LinkError.PERMISSION_DENIED
            await memory.wait_for(matcher(event="link", result="permission_denied"))
            await main.close()
            await memory.wait_for(matcher(event="disconnect", channel="main"))
        events = [e for e in memory.events if e.get("session") == sid]
        assert all(isinstance(e["t"], float) for e in events)
        return events

    events = run(scenario(), loop=event_loop_name)

    def strip(event: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in event.items() if k not in ("t", "session", "peer", "channel_id")}

    got = [strip(e) for e in events]
    main_link = got[0]
    assert main_link["event"] == "link" and main_link["channel"] == "main"
    assert "mini_header" in main_link["common_caps"]
    assert main_link["result"] == "ok"
    rest = [e for e in got[1:] if e["event"] not in ("link", "display_init")]
    assert rest == [
        {"event": "mouse_mode_request", "channel": "main", "mode": "server", "granted": True},
        {
            "event": "agent_message",
            "channel": "main",
            "message": "agent_data",
            "type": 107,
            "size": 20,
        },
        {"event": "key", "channel": "inputs", "scancode": 0x1E, "key": "A", "pressed": True},
        {
            "event": "key",
            "channel": "inputs",
            "scancode": 0xE048,
            "key": "ArrowUp",
            "pressed": True,
        },
        {"event": "key", "channel": "inputs", "scancode": 0x1E, "key": "A", "pressed": False},
        {
            "event": "pointer_position",
            "channel": "inputs",
            "x": 10,
            "y": 20,
            "buttons": 0,
            "display": 0,
        },
        {"event": "pointer_motion", "channel": "inputs", "dx": -3, "dy": 4, "buttons": 0},
        {"event": "button", "channel": "inputs", "button": "left", "pressed": True, "buttons": 1},
        {"event": "button", "channel": "inputs", "button": "left", "pressed": False, "buttons": 0},
        {"event": "wheel", "channel": "inputs", "dy": 1},
        {"event": "unknown_message", "channel": "inputs", "type": 199, "size": 3},
        {
            "event": "disconnect",
            "channel": "inputs",
            "reason": "protocol error: unknown message type 199 on the INPUTS channel",
        },
        {"event": "disconnect", "channel": "main", "reason": "client closed the connection"},
    ]
    refused = [e for e in got if e.get("result") == "permission_denied"]
    assert refused and refused[0]["channel"] == "display"
    assert "ticket" in refused[0]["reason"] and PASSWORD not in json.dumps(got)

    # The file holds the same events, one JSON object per line.
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e for e in lines if e.get("session") == events[0]["session"]] == events


def test_memory_recorder_indices_survive_trimming() -> None:
    async def scenario() -> None:
        memory = MemoryRecorder(limit=10)
        for n in range(10):
            memory.record({"n": n})
        waiter = asyncio.create_task(memory.wait_for(lambda e: True, start=len(memory)))
        await asyncio.sleep(0)
        memory.record({"n": 10})  # trims the oldest half: the waiter's index stays right
        assert (await waiter)["n"] == 10
        assert len(memory) == 11 and memory.dropped == 5 and memory.events[0]["n"] == 5
        assert (await memory.wait_for(lambda e: e["n"] >= 6, start=0))["n"] == 6

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_record_file_stops_at_its_size_cap_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "record.jsonl"
    recorder = JsonlRecorder(path, max_bytes=10_000)
    with caplog.at_level(logging.WARNING, logger="spiceserver.record"):
        for n in range(1000):  # ~60 KB of key events
            recorder.record({"t": 1.0, "event": "key", "scancode": n, "pressed": True})
    recorder.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert path.stat().st_size <= 10_000
    assert lines[-1]["event"] == "record_stopped" and "record_max_bytes" in lines[-1]["reason"]
    assert all(line["event"] == "key" for line in lines[:-1])
    assert recorder.dropped == 1000 - (len(lines) - 1)
    assert sum("record_max_bytes" in r.getMessage() for r in caplog.records) == 1
    again = JsonlRecorder(path, max_bytes=10_000)  # the file is full: nothing is added
    again.record({"event": "key"})
    again.close()
    assert len(path.read_text().splitlines()) == len(lines)
