"""The session record of a real spice-gtk session: keys, pointer, buttons with the right values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spiceserver.testing import RunningServer
from tests.interop.clients import GtkClient

pytestmark = pytest.mark.interop


def test_spice_gtk_input_appears_in_the_record(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    with (
        RunningServer("pattern:640x480", record_path=str(path)) as spice,
        GtkClient(spice.uri, spice.password) as client,
    ):
        client.wait_channel_open("inputs")
        spice.wait_client_frame()
        keys = [
            (0x2A, "ShiftLeft", 0x2A),
            (0x10, "Q", 0x10),
            (0x148, "ArrowUp", 0xE048),
            (0x11D, "ControlRight", 0xE01D),
            (0x135, "KeypadDivide", 0xE035),
        ]
        for gtk_code, _, _ in keys:
            client.key_press_and_release(gtk_code)
        client.position(321, 123)
        client.button_press(3, 0)
        client.button_release(3, 4)
        client.button_press(4, 0)  # wheel up
        client.button_release(4, 0)
        start = 0
        for _, name, scancode in keys:
            for pressed in (True, False):
                event = spice.wait_for_event("key", key=name, pressed=pressed, start=start)
                assert event["scancode"] == scancode and event["channel"] == "inputs"
                start = spice.events.index(event) + 1
        spice.wait_for_event("pointer_position", x=321, y=123, display=0)
        spice.wait_for_event("button", button="right", pressed=True, buttons=4)
        spice.wait_for_event("button", button="right", pressed=False, buttons=0)
        spice.wait_for_event("wheel", dy=-1)

        client.request_mouse_mode(1)  # server mode: relative motion from here on
        spice.wait_for_event("mouse_mode_request", mode="server", granted=True)
        client.motion(7, -5)
        spice.wait_for_event("pointer_motion", dx=7, dy=-5)
        session = spice.events[0]["session"]
        links = {e["channel"]: e for e in spice.events if e["event"] == "link"}
        assert set(links) == {"main", "display", "inputs", "cursor"}
        assert all(link["result"] == "ok" for link in links.values())
        assert {"protocol_auth_selection", "mini_header"} <= set(links["main"]["common_caps"])
    # the file has the same session, ending with every channel's disconnect
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(line["session"] == session for line in lines)
    closed = {e["channel"] for e in lines if e["event"] == "disconnect"}
    assert closed == {"main", "display", "inputs", "cursor"}
