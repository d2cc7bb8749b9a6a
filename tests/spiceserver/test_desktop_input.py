"""The pure parts of the desktop input: what a handler does before it has an X connection,
and what every backend shares (:class:`ThreadedInput`), with a recording backend.

The X side is covered by ``tests/interop/test_desktop.py`` against a real Xvfb.
"""

from __future__ import annotations

from spiceserver.desktop_input import X11Input, ignore_input
from spiceserver.injector import MAX_WHEEL_STEPS, ThreadedInput
from spiceserver.protocol.enums import KeyModifiers, MouseButton
from spiceserver.protocol.events import ButtonEvent, KeyEvent, LockState, WheelEvent


def test_view_only_and_unstarted_handlers_queue_nothing() -> None:
    handler = X11Input(":0", view_only=True)
    handler(KeyEvent(0x1E, True))
    assert handler._queue.empty()
    ignore_input(KeyEvent(0x1E, True))


class _Recording(ThreadedInput):
    """A backend that records what it would inject."""

    def __init__(self, locks: KeyModifiers | None) -> None:
        super().__init__()
        self.locks = locks
        self.done: list[tuple[str, object, bool]] = []

    def _key_target(self, scancode: int) -> int | None:
        return None if scancode == 0x73 else scancode

    def _press_key(self, target: object, pressed: bool) -> None:
        self.done.append(("key", target, pressed))

    def _button_target(self, button: MouseButton) -> int:
        return int(button)

    def _press_button(self, target: object, pressed: bool) -> None:
        self.done.append(("button", target, pressed))

    def _wheel(self, steps: int) -> None:
        self.done.append(("wheel", steps, True))

    def _read_locks(self) -> KeyModifiers | None:
        return self.locks


def test_threaded_input_releases_held_input_and_drops_unknown_releases() -> None:
    backend = _Recording(KeyModifiers(0))
    for event in [
        KeyEvent(0x1E, False),  # pressed before we started: dropped
        KeyEvent(0x73, True),  # no key on this backend: dropped
        KeyEvent(0x2A, True),
        ButtonEvent(MouseButton.LEFT, True, 0),
        WheelEvent(-1000),  # bounded
        LockState(KeyModifiers.NUM_LOCK),  # Num Lock differs: tapped
    ]:
        backend.inject(event)
    backend.release_all()
    assert backend.done == [
        ("key", 0x2A, True),
        ("button", 1, True),
        ("wheel", -MAX_WHEEL_STEPS, True),
        ("key", 0x45, True),
        ("key", 0x45, False),
        ("key", 0x2A, False),
        ("button", 1, False),
    ]


def test_threaded_input_without_a_lock_reader_ignores_client_locks() -> None:
    backend = _Recording(None)
    backend.inject(LockState(KeyModifiers.CAPS_LOCK))
    assert backend.done == []
