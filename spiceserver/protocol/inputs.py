"""The inputs channel (type 3), sans I/O: keys, pointer, lock state.

Key codes (spice-gtk ``spice_make_scancode``): KEY_DOWN/KEY_UP carry PC AT set-1 bytes packed
LSB first into a u32 (E0 keys as ``0xE0 | code << 8``); KEY_SCANCODE carries raw bytes, press
and release together for a quick key press.  The client stops sending pointer motion once 8
MOTION/POSITION messages are unacknowledged: we answer one MOUSE_MOTION_ACK per 4 (pitfall 33).
Every key and button the client holds is tracked, so that :meth:`InputsChannel.release_all`
can let go of them when the client disappears.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from spiceserver.errors import DecodeError
from spiceserver.protocol import messages as m
from spiceserver.protocol.channel import ChannelProtocol, Handler
from spiceserver.protocol.enums import (
    MOTION_ACK_BUNCH,
    ChannelType,
    KeyModifiers,
    MouseButton,
)
from spiceserver.protocol.events import (
    ButtonEvent,
    InputEvent,
    KeyEvent,
    LockState,
    PointerMotion,
    PointerPosition,
    WheelEvent,
)

__all__ = ["InputsChannel", "iter_scancodes", "parse_scancodes"]

_WHEEL = {MouseButton.UP: -1, MouseButton.DOWN: 1}
_MAX_HELD_KEYS = 256


def parse_scancodes(data: bytes) -> list[KeyEvent]:
    """Split set-1 scancode bytes into key events (``0xE0xx`` for E0 keys, ``0xE11D`` Pause)."""
    return list(iter_scancodes(data))


def iter_scancodes(data: bytes) -> Iterator[KeyEvent]:
    """The key events of set-1 scancode bytes, one at a time (a DecodeError where the bytes
    stop making sense)."""
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0xE0:
            if i + 1 >= len(data):
                raise DecodeError("E0 prefix without a scancode")
            code = data[i + 1]
            yield KeyEvent(scancode=0xE000 | (code & 0x7F), pressed=not code & 0x80)
            i += 2
        elif byte == 0xE1:
            if i + 2 >= len(data):
                raise DecodeError("E1 prefix without two scancode bytes")
            code = data[i + 1]
            yield KeyEvent(scancode=0xE100 | (code & 0x7F), pressed=not code & 0x80)
            i += 3
        elif byte == 0:
            raise DecodeError("scancode 0")
        else:
            yield KeyEvent(scancode=byte & 0x7F, pressed=not byte & 0x80)
            i += 1


def _code_bytes(code: int) -> bytes:
    """The bytes of a KEY_DOWN/KEY_UP u32, LSB first up to the first zero byte."""
    out = bytearray()
    while code & 0xFF:
        out.append(code & 0xFF)
        code >>= 8
    return bytes(out)


class InputsChannel(ChannelProtocol):
    channel_type = ChannelType.INPUTS

    def __init__(self, *, modifiers: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.modifiers = KeyModifiers(modifiers)
        self._motion_count = 0
        self.held_keys: set[int] = set()
        self.buttons = 0
        #: The lock state the client last reported (None before its first KEY_MODIFIERS).
        self.client_modifiers: KeyModifiers | None = None
        #: Key events of a KEY_SCANCODE not handed over yet (up to ~4,000 in one message).
        self._scancodes: Iterator[KeyEvent] | None = None

    def start(self, now: float) -> None:
        """INPUTS INIT with our lock state (spice-server pushes it on connect)."""
        self.set_time(now)
        self.send(m.InputsInit(keyboard_modifiers=int(self.modifiers)))

    def set_modifiers(self, modifiers: KeyModifiers) -> None:
        """Tell the client our lock-key state changed."""
        if modifiers != self.modifiers:
            self.modifiers = modifiers
            self.send(m.ServerKeyModifiers(modifiers=int(modifiers)))

    def release_all(self) -> list[InputEvent]:
        """Release events for every key and button still held (client gone)."""
        events: list[InputEvent] = [
            KeyEvent(scancode=code, pressed=False) for code in sorted(self.held_keys)
        ]
        for button in (
            MouseButton.LEFT,
            MouseButton.MIDDLE,
            MouseButton.RIGHT,
            MouseButton.SIDE,
            MouseButton.EXTRA,
        ):
            mask = 1 << (button - 1)
            if self.buttons & mask:
                self.buttons &= ~mask
                events.append(ButtonEvent(button=button, pressed=False, buttons=self.buttons))
        self.held_keys.clear()
        return events

    # ------------------------------------------------------------------ handlers

    def _key(self, event: KeyEvent) -> None:
        if event.pressed:
            if len(self.held_keys) < _MAX_HELD_KEYS:
                self.held_keys.add(event.scancode)
        else:
            self.held_keys.discard(event.scancode)
        self._events.append(event)

    def _on_key(self, message: m.KeyDown | m.KeyUp, now: float) -> None:
        parsed = parse_scancodes(_code_bytes(message.code))
        if len(parsed) != 1:
            raise DecodeError(f"key code {message.code:#x} is not one key")
        pressed = isinstance(message, m.KeyDown)
        self._key(KeyEvent(scancode=parsed[0].scancode, pressed=pressed))

    def _on_key_scancode(self, message: m.KeyScancode, now: float) -> None:
        self._scancodes = iter_scancodes(message.data)  # made as they are handed over

    def _backlog(self, room: int) -> bool:
        scancodes = self._scancodes
        if scancodes is None:
            return False
        if room <= 0:
            return True
        for made, event in enumerate(scancodes, 1):
            self._key(event)
            if made >= room:
                return True
        self._scancodes = None
        return False

    def _on_key_modifiers(self, message: m.ClientKeyModifiers, now: float) -> None:
        # Reported on change only: spice-gtk repeats its state, a hostile client floods it.
        locks = KeyModifiers(message.modifiers & 0x7)
        if locks != self.client_modifiers:
            self.client_modifiers = locks
            self._events.append(LockState(modifiers=locks))

    def _motion_ack(self) -> None:
        self._motion_count += 1
        if self._motion_count % MOTION_ACK_BUNCH == 0:
            self.send(m.MouseMotionAck())

    def _on_motion(self, message: m.MouseMotion, now: float) -> None:
        self._motion_ack()
        self._events.append(
            PointerMotion(dx=message.dx, dy=message.dy, buttons=message.buttons_state)
        )

    def _on_position(self, message: m.MousePosition, now: float) -> None:
        self._motion_ack()
        self._events.append(
            PointerPosition(
                x=message.x,
                y=message.y,
                buttons=message.buttons_state,
                display_id=message.display_id,
            )
        )

    def _on_button(self, message: m.MousePress | m.MouseRelease, now: float) -> None:
        pressed = isinstance(message, m.MousePress)
        try:
            button = MouseButton(message.button)
        except ValueError:
            raise DecodeError(f"unknown mouse button {message.button}") from None
        if button is MouseButton.INVALID:
            raise DecodeError("mouse button 0")
        if button in _WHEEL:
            # The widget sends PRESS then RELEASE for each wheel step; the press is the step.
            if pressed:
                self._events.append(WheelEvent(dy=_WHEEL[button]))
            return
        mask = 1 << (button - 1)
        self.buttons = self.buttons | mask if pressed else self.buttons & ~mask
        self._events.append(
            ButtonEvent(button=button, pressed=pressed, buttons=message.buttons_state)
        )

    _handlers: ClassVar[dict[type[m.Message], Handler]] = {
        m.KeyDown: _on_key,
        m.KeyUp: _on_key,
        m.KeyScancode: _on_key_scancode,
        m.ClientKeyModifiers: _on_key_modifiers,
        m.MouseMotion: _on_motion,
        m.MousePosition: _on_position,
        m.MousePress: _on_button,
        m.MouseRelease: _on_button,
    }
