"""Session records: one JSON object per client event, for people testing SPICE clients.

Every link (channel, capabilities by name, auth result), mouse-mode request, preferred
compression, key (scancode and name), pointer position and motion, button, wheel, lock state,
agent message (with ``agent=False``), unknown or malformed message, and disconnect (with its
reason) becomes a dict
like ``{"t": 1700000000.123, "session": "0x1a2b3c4d", "channel": "inputs", "event": "key",
"scancode": 30, "key": "A", "pressed": true}``.  Recorders receive them on the event loop
thread: :class:`JsonlRecorder` writes ``--record FILE.jsonl``; :class:`MemoryRecorder` keeps
them for tests and lets a coroutine wait for one.

The built-in agent adds ``clipboard_grab`` (who offers a selection, and its types),
``clipboard_transfer`` (direction, selection, type and size: never the content),
``monitors_config`` (the client's enabled heads) and ``file_transfer`` (name, size, result).

The display adds its video streams: ``stream_create`` (id, codec, area), ``stream_clip`` (the
visible rectangles; none: all of it), ``stream_destroy`` (frames, bytes, why) and the
client's ``stream_report`` (every field of STREAM_REPORT; ``cannot_decode`` when it said it
cannot play the stream).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable, Iterable
from enum import IntEnum, IntFlag
from pathlib import Path
from typing import IO, Any, Protocol

from spiceserver.clipboard import ClipboardType, Selection
from spiceserver.protocol.enums import (
    ChannelType,
    CommonCap,
    DisplayCap,
    ImageCompression,
    InputsCap,
    KeyModifiers,
    LinkError,
    MainCap,
    MouseMode,
)
from spiceserver.protocol.events import (
    AgentMessage,
    ButtonEvent,
    ClientDisconnecting,
    CompressionPreferred,
    DisplayReady,
    KeyEvent,
    LockState,
    MouseModeRequested,
    PointerMotion,
    PointerPosition,
    StreamReported,
    WheelEvent,
)

__all__ = [
    "JsonlRecorder",
    "MemoryRecorder",
    "RecordBudget",
    "Recorder",
    "caps_names",
    "clipboard_grab_record",
    "clipboard_transfer_record",
    "event_record",
    "file_transfer_record",
    "input_record",
    "key_name",
    "link_record",
    "stream_record",
    "stream_report_record",
]

logger = logging.getLogger("spiceserver.record")

Event = dict[str, Any]


class Recorder(Protocol):
    def record(self, event: Event) -> None: ...

    def close(self) -> None: ...


# Set-1 make codes 0x01..0x58 (US layout legends), then the E0-prefixed keys.
_KEYS = (  # noqa: SIM905 - a legend reads best as one string
    "Escape 1 2 3 4 5 6 7 8 9 0 Minus Equal Backspace Tab Q W E R T Y U I O P BracketLeft "
    "BracketRight Enter ControlLeft A S D F G H J K L Semicolon Quote Backquote ShiftLeft "
    "Backslash Z X C V B N M Comma Period Slash ShiftRight KeypadMultiply AltLeft Space "
    "CapsLock F1 F2 F3 F4 F5 F6 F7 F8 F9 F10 NumLock ScrollLock Keypad7 Keypad8 Keypad9 "
    "KeypadMinus Keypad4 Keypad5 Keypad6 KeypadPlus Keypad1 Keypad2 Keypad3 Keypad0 "
    "KeypadDecimal SysRq - IntlBackslash F11 F12"
).split()
_E0_KEYS = {
    0x1C: "KeypadEnter", 0x1D: "ControlRight", 0x35: "KeypadDivide", 0x37: "PrintScreen",
    0x38: "AltRight", 0x47: "Home", 0x48: "ArrowUp", 0x49: "PageUp", 0x4B: "ArrowLeft",
    0x4D: "ArrowRight", 0x4F: "End", 0x50: "ArrowDown", 0x51: "PageDown", 0x52: "Insert",
    0x53: "Delete", 0x5B: "MetaLeft", 0x5C: "MetaRight", 0x5D: "ContextMenu",
}  # fmt: skip


def key_name(scancode: int) -> str:
    """A readable name for a set-1 scancode as :class:`KeyEvent` carries it."""
    if scancode == 0xE11D:
        return "Pause"
    if scancode & 0xFF00 == 0xE000:
        return _E0_KEYS.get(scancode & 0xFF, f"E0-{scancode & 0xFF:#04x}")
    if 1 <= scancode <= len(_KEYS) and _KEYS[scancode - 1] != "-":
        return _KEYS[scancode - 1]
    return f"{scancode:#04x}"


_CHANNEL_CAPS: dict[int, type[Any]] = {
    ChannelType.MAIN: MainCap, ChannelType.DISPLAY: DisplayCap, ChannelType.INPUTS: InputsCap,
}  # fmt: skip


def caps_names(words: tuple[int, ...], names: type[Any] | None) -> list[str]:
    """Capability words → names (``cap-N`` for numbers we have no name for)."""
    out = []
    for index, word in enumerate(words):
        for bit in range(32):
            if word >> bit & 1:
                number = index * 32 + bit
                try:
                    out.append(names(number).name.lower() if names else f"cap-{number}")
                except ValueError:
                    out.append(f"cap-{number}")
    return out


def link_record(
    channel_type: int,
    channel_id: int,
    common: tuple[int, ...],
    channel: tuple[int, ...],
    result: str,
    peer: str,
) -> Event:
    try:
        name = ChannelType(channel_type).name.lower()
    except ValueError:
        name = f"type-{channel_type}"
    return {
        "event": "link", "channel": name, "channel_id": channel_id, "peer": peer,
        "common_caps": caps_names(common, CommonCap),
        "channel_caps": caps_names(channel, _CHANNEL_CAPS.get(channel_type)),
        "result": result,
    }  # fmt: skip


def input_record(event: object) -> Event | None:
    """The record of an input event (None for events that are not input)."""
    match event:
        case KeyEvent(scancode=code, pressed=pressed):
            return {"event": "key", "scancode": code, "key": key_name(code), "pressed": pressed}
        case PointerPosition(x=x, y=y, buttons=buttons, display_id=display):
            return {
                "event": "pointer_position",
                "x": x,
                "y": y,
                "buttons": buttons,
                "display": display,
            }
        case PointerMotion(dx=dx, dy=dy, buttons=buttons):
            return {"event": "pointer_motion", "dx": dx, "dy": dy, "buttons": buttons}
        case ButtonEvent(button=button, pressed=pressed, buttons=buttons):
            return {
                "event": "button",
                "button": button.name.lower(),
                "pressed": pressed,
                "buttons": buttons,
            }
        case WheelEvent(dy=dy):
            return {"event": "wheel", "dy": dy}
        case LockState(modifiers=mods):
            return {
                "event": "lock_state",
                "locks": [enum_name(KeyModifiers, m) for m in KeyModifiers if m in mods],
            }
    return None


def event_record(event: object) -> Event | None:
    """The record of any event a channel protocol reports (None: not recorded)."""
    record = input_record(event)
    if record is not None:
        return record
    match event:
        case MouseModeRequested(mode=mode, granted=granted):
            return {
                "event": "mouse_mode_request",
                "mode": enum_name(MouseMode, mode),
                "granted": granted,
            }
        case CompressionPreferred(compression=compression):
            name = enum_name(ImageCompression, compression).replace("_", "-")
            return {"event": "preferred_compression", "compression": name}
        case DisplayReady(pixmap_cache_size=cache, glz_window_size=window):
            return {"event": "display_init", "pixmap_cache_size": cache, "glz_window_size": window}
        case AgentMessage(name=name, type=type_, size=size):
            return {"event": "agent_message", "message": name, "type": type_, "size": size}
        case ClientDisconnecting(reason=reason):
            return {"event": "client_disconnecting", "reason": enum_name(LinkError, reason)}
        case StreamReported():
            return stream_report_record(event)
    return None


def stream_report_record(report: StreamReported) -> Event:
    """STREAM_REPORT as the client sent it (spice.proto ``stream_report``)."""
    return {
        "event": "stream_report",
        "stream": report.stream_id,
        "unique_id": report.unique_id,
        "start_frame_mm_time": report.start_frame_mm_time,
        "end_frame_mm_time": report.end_frame_mm_time,
        "num_frames": report.num_frames,
        "num_drops": report.num_drops,
        "last_frame_delay": report.last_frame_delay,
        "audio_delay": None if report.audio_delay == 0xFFFF_FFFF else report.audio_delay,
        "cannot_decode": report.cannot_decode,
    }


def stream_record(event: str, stream_id: int, **fields: Any) -> Event:
    """``stream_create`` / ``stream_clip`` / ``stream_destroy`` of the display's stream."""
    return {"event": event, "stream": stream_id, **fields}


def _clipboard_names(selection: int, types: Iterable[int]) -> tuple[str, list[str]]:
    return enum_name(Selection, selection), [
        "none" if t == 0 else enum_name(ClipboardType, t) for t in types
    ]


def clipboard_grab_record(by: str, selection: int, types: Iterable[int]) -> Event:
    """``by`` ("client" or "desktop") owns ``selection`` now, offering ``types``."""
    name, type_names = _clipboard_names(selection, types)
    return {"event": "clipboard_grab", "by": by, "selection": name, "types": type_names}


def clipboard_transfer_record(direction: str, selection: int, type_: int, size: int) -> Event:
    """Clipboard data went ``direction`` ("to_client" / "from_client"): its size, never its
    content."""
    name, (type_name,) = _clipboard_names(selection, (type_,))
    return {
        "event": "clipboard_transfer",
        "direction": direction,
        "selection": name,
        "type": type_name,
        "size": size,
    }


def file_transfer_record(name: str, size: int, result: str) -> Event:
    """A file a client sent ended: its (saved) name, announced size and result."""
    return {"event": "file_transfer", "name": name, "size": size, "result": result}


def enum_name(enum: type[IntEnum] | type[IntFlag], value: int) -> str:
    """``value``'s name in ``enum``, lower case (the number itself if it has none).

    A flag combination is named by its members (``"server|client"``); a flag value with no
    member set (0, or only unknown bits) has no name in an ``IntFlag``, hence the number.
    """
    try:
        name = enum(value).name
    except ValueError:
        return str(value)
    return str(value) if name is None else name.lower()


class JsonlRecorder:
    """Appends one JSON line per event to a file, flushed per line (a crash loses nothing).

    The file never grows past ``max_bytes`` (None: no cap): the line that would come too near
    it is replaced by a last one, ``{"event": "record_stopped", "reason": ..., "bytes": ...}``,
    a WARNING is logged, and nothing more is written.  A file already that full gets nothing.
    """

    def __init__(self, path: str | Path, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8", buffering=1)
        #: Bytes in the file (what was there, and what we appended).
        self.size = self._file.tell()
        #: Events not written because the cap was reached.
        self.dropped = 0
        if max_bytes is not None and self.size + _STOP_ROOM >= max_bytes:
            logger.warning(
                "%s already holds %d bytes (record_max_bytes %d): nothing will be recorded",
                self.path,
                self.size,
                max_bytes,
            )
            self.close()

    def record(self, event: Event) -> None:
        if self._file is None:
            self.dropped += 1
            return
        line = json.dumps(event, separators=(",", ":")) + "\n"
        try:
            if self.max_bytes is not None and self.size + len(line) + _STOP_ROOM > self.max_bytes:
                self._stop(event)
                return
            self._file.write(line)
            self.size += len(line)  # json.dumps writes ASCII: characters are bytes
        except OSError as exc:  # disk full: say it once, keep serving
            logger.error("recording to %s stopped: %s", self.path, exc)
            self.close()

    def _stop(self, event: Event) -> None:
        assert self._file is not None and self.max_bytes is not None
        self.dropped += 1
        stop = {
            "t": event.get("t", round(time.time(), 6)),
            "event": "record_stopped",
            "reason": f"record_max_bytes ({self.max_bytes} bytes) reached",
            "bytes": self.size,
        }
        self._file.write(json.dumps(stop, separators=(",", ":")) + "\n")
        logger.warning(
            "recording to %s stopped: the file reached record_max_bytes (%d bytes)",
            self.path,
            self.max_bytes,
        )
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


#: Room kept under the cap for the record_stopped line (about 120 bytes).
_STOP_ROOM = 256


class RecordBudget:
    """How many events each session may add to the record: a burst of ``burst``, then
    ``rate`` per second (a client sending 4,000 keys in one message would otherwise write
    4,000 lines).  What is not recorded is counted, and said in the record
    (``record_dropped``) when the session may record again or ends.  ``key`` is a live
    session's id, or None for everything else (refused links): at most ``max_keys`` are
    remembered, least recently used forgotten first.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        #: key -> [tokens, last time, events dropped since the last one recorded]
        self._buckets: collections.OrderedDict[int | None, list[float]] = collections.OrderedDict()

    def admit(self, key: int | None, now: float) -> tuple[bool, int]:
        """Whether an event of ``key`` is recorded now, and how many were dropped before it
        (to be said first)."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = [float(self.burst), now, 0]
        else:
            bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if bucket[0] < 1.0:
            bucket[2] += 1
            return False, 0
        bucket[0] -= 1.0
        dropped, bucket[2] = int(bucket[2]), 0
        return True, dropped

    def forget(self, key: int | None) -> int:
        """The session ended: how many of its events were dropped and not said yet."""
        bucket = self._buckets.pop(key, None)
        return 0 if bucket is None else int(bucket[2])


class MemoryRecorder:
    """Keeps the newest events (up to ``limit``) and lets coroutines wait for one.

    Indices are absolute: event ``n`` is the n-th ever recorded, even after older ones were
    dropped, so a waiter's ``start`` never skips an event.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._events: list[Event] = []
        self.dropped = 0  #: events dropped from the front to stay within ``limit``
        self.limit = limit
        self._changed: asyncio.Event | None = None

    @property
    def events(self) -> list[Event]:
        """The kept events, oldest first (the first is number ``dropped``)."""
        return self._events

    def __len__(self) -> int:
        """How many events were ever recorded (the next event's index)."""
        return self.dropped + len(self._events)

    def record(self, event: Event) -> None:
        self._events.append(event)
        if len(self._events) > self.limit:
            half = self.limit // 2
            del self._events[:half]
            self.dropped += half
        if self._changed is not None:
            self._changed.set()

    def close(self) -> None:
        pass

    async def wait_for(
        self, predicate: Callable[[Event], bool], *, start: int = 0, timeout: float = 10.0
    ) -> Event:
        """The first recorded event from index ``start`` on that satisfies ``predicate``."""
        async with asyncio.timeout(timeout):
            index = start
            while True:
                index = max(index, self.dropped)
                while index < len(self):
                    event = self._events[index - self.dropped]
                    index += 1
                    if predicate(event):
                        return event
                self._changed = self._changed or asyncio.Event()
                self._changed.clear()
                await self._changed.wait()


def stamp(event: Event, session: int | None, channel: str | None) -> Event:
    """Add the time, session and channel to an event (in place) and return it."""
    event["t"] = round(time.time(), 6)
    if session is not None:
        event["session"] = f"{session:#010x}"
    if channel is not None:
        event.setdefault("channel", channel)
    return dict(sorted(event.items(), key=lambda kv: kv[0] != "t"))
