"""Unit tests of the GNOME source's pieces that need no mutter: input translation, the D-Bus
reply helpers, the bound on unanswered input calls, and frame comparison.  The real thing
runs in tests/interop/test_gnome.py."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from spiceserver.gnome_input import EVDEV_BUTTONS, GnomeInput
from spiceserver.protocol.enums import MouseButton
from spiceserver.protocol.events import (
    ButtonEvent,
    KeyEvent,
    PointerMotion,
    PointerPosition,
    WheelEvent,
)
from spiceserver.sources.base import Rect
from spiceserver.sources.gnome import GnomeSource
from spiceserver.sources.mutter import (
    MAX_IN_FLIGHT,
    MutterSession,
    StreamInfo,
    _stream_info,
    primary_connector,
)

dbus_fast = pytest.importorskip("dbus_fast")  # the gnome extra, installed by tests/run.sh


class FakeSession:
    stream_path = "/org/gnome/Mutter/ScreenCast/Stream/u1"
    closed = False

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[Any]]] = []

    def notify(self, member: str, signature: str, body: list[Any]) -> bool:
        self.calls.append((member, signature, body))
        return True


class FakeSource:
    def __init__(self) -> None:
        self.session: FakeSession | None = FakeSession()


def handler() -> tuple[GnomeInput, FakeSession]:
    source = FakeSource()
    assert source.session is not None
    return GnomeInput(source), source.session  # type: ignore[arg-type]


def test_keys_go_in_as_evdev_codes_and_held_ones_are_released() -> None:
    gi, session = handler()
    for scancode, pressed in [(0x1E, True), (0xE048, True), (0xE11D, True), (0x1E, False)]:
        gi(KeyEvent(scancode=scancode, pressed=pressed))
    gi(KeyEvent(scancode=0x30, pressed=False))  # never pressed: mutter is not told
    gi(KeyEvent(scancode=0xE02A, pressed=True))  # a fake shift: no key at all
    assert session.calls == [
        ("NotifyKeyboardKeycode", "ub", [30, True]),  # KEY_A
        ("NotifyKeyboardKeycode", "ub", [103, True]),  # KEY_UP
        ("NotifyKeyboardKeycode", "ub", [119, True]),  # KEY_PAUSE
        ("NotifyKeyboardKeycode", "ub", [30, False]),
    ]
    session.calls.clear()
    gi(ButtonEvent(button=MouseButton.LEFT, pressed=True, buttons=1))
    gi.close()
    assert session.calls == [
        ("NotifyPointerButton", "ib", [0x110, True]),
        ("NotifyKeyboardKeycode", "ub", [103, False]),
        ("NotifyKeyboardKeycode", "ub", [119, False]),
        ("NotifyPointerButton", "ib", [0x110, False]),
    ]
    assert not gi.held_keys and not gi.held_buttons


def test_pointer_buttons_and_wheel() -> None:
    gi, session = handler()
    gi(PointerPosition(x=10, y=20, buttons=0))
    gi(PointerMotion(dx=-3, dy=4, buttons=0))
    for button in (MouseButton.LEFT, MouseButton.RIGHT, MouseButton.MIDDLE, MouseButton.SIDE):
        gi(ButtonEvent(button=button, pressed=True, buttons=0))
        gi(ButtonEvent(button=button, pressed=False, buttons=0))
    gi(WheelEvent(dy=-1))
    gi(WheelEvent(dy=500))
    assert session.calls[:2] == [
        ("NotifyPointerMotionAbsolute", "sdd", [FakeSession.stream_path, 10.0, 20.0]),
        ("NotifyPointerMotionRelative", "dd", [-3.0, 4.0]),
    ]
    buttons = [call[2] for call in session.calls[2:-2]]
    assert buttons == [
        [code, pressed] for code in (0x110, 0x111, 0x112, 0x113) for pressed in (True, False)
    ]
    assert session.calls[-2:] == [
        ("NotifyPointerAxisDiscrete", "ui", [0, -1]),
        ("NotifyPointerAxisDiscrete", "ui", [0, 32]),  # bounded
    ]
    assert set(EVDEV_BUTTONS) == {
        MouseButton.LEFT, MouseButton.RIGHT, MouseButton.MIDDLE, MouseButton.SIDE,
        MouseButton.EXTRA,
    }  # fmt: skip


def test_no_session_or_view_only_drops_input() -> None:
    source = FakeSource()
    source.session = None
    GnomeInput(source)(KeyEvent(scancode=0x1E, pressed=True))  # type: ignore[arg-type]
    viewer, session = handler()
    viewer.view_only = True
    viewer(KeyEvent(scancode=0x1E, pressed=True))
    assert session.calls == []


def test_display_config_and_stream_parameters() -> None:
    # GetCurrentState as mutter 43 --headless --virtual-monitor 1280x800 answers it.
    mode = ("1280x800@60.000", 1280, 800, 60.0, 1.0, [1.0], {})
    monitors = [(("Meta-0", "MetaVendor", "MetaVirtualMonitor", "0x00"), [mode], {})]
    two = [*monitors, (("Meta-1", "MetaVendor", "MetaVirtualMonitor", "0x01"), [mode], {})]
    logical = [(0, 0, 1.0, 0, False, [two[0][0]], {}), (1280, 0, 1.0, 0, True, [two[1][0]], {})]
    assert primary_connector([1, monitors, [], {}]) == "Meta-0"
    assert primary_connector([1, two, logical, {}]) == "Meta-1"
    variant = dbus_fast.Variant
    params = {"position": variant("(ii)", [0, 0]), "size": variant("(ii)", [1280, 800])}
    assert _stream_info(35, "Meta-0", params) == StreamInfo(35, "Meta-0", 0, 0, 1280, 800)
    assert _stream_info(35, "Meta-0", {}) == StreamInfo(35, "Meta-0")


def test_unanswered_input_calls_are_bounded() -> None:
    class StuckBus:
        def call(self, message: Any) -> asyncio.Future[Any]:
            return asyncio.get_running_loop().create_future()  # mutter never answers

        def disconnect(self) -> None:
            pass

    async def flood() -> tuple[int, int]:
        session = MutterSession(StuckBus(), "/s", "/st", StreamInfo(1, "Meta-0"))  # type: ignore[arg-type]
        sent = sum(session.notify("NotifyKeyboardKeycode", "ub", [30, True]) for _ in range(2000))
        return sent, session.in_flight

    assert asyncio.run(flood()) == (MAX_IN_FLIGHT, MAX_IN_FLIGHT)


class Recorder:
    def __init__(self) -> None:
        self.damage: list[Rect] = []
        self.resized: list[tuple[int, int]] = []

    def on_damage(self, rects: list[Rect]) -> None:
        self.damage.extend(rects)

    def on_resize(self, width: int, height: int) -> None:
        self.resized.append((width, height))

    def on_cursor(self, shape: object) -> None:
        pass

    def on_cursor_move(self, x: int, y: int) -> None:
        pass


def test_frames_are_compared_and_only_changes_reported() -> None:
    source = GnomeSource()
    recorder = Recorder()
    source.add_listener(recorder)
    held = np.zeros((200, 300, 4), dtype=np.uint8)
    source.frame = held.copy()
    same = held.copy()
    same[..., 3] = 99  # the padding byte is not a change
    held = source._compare(held, same)
    assert recorder.damage == []
    changed = held.copy()
    changed[50:60, 100:103, :3] = 255
    held = source._compare(held, changed)
    assert recorder.damage == [Rect(100, 50, 3, 10)]
    assert np.array_equal(source.frame[..., :3], changed[..., :3])
    bigger = np.full((400, 500, 4), 7, dtype=np.uint8)
    held = source._compare(held, bigger)
    assert recorder.resized == [(500, 400)] and source.size == (500, 400)
    assert source.stats["resizes"] == 1 and source.stats["updates"] == 1
