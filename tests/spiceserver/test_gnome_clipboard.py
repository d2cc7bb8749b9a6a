"""GnomeClipboard against a fake mutter session: MIME mapping, signals, pipes, bounds.

The real peers (mutter, wl-copy, wl-paste, spice-gtk) are in
``tests/interop/test_gnome_clipboard.py``; this covers what they cannot show on demand: an
owner that never writes, data over the cap, a client that never answers, malformed signals.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from dbus_fast import MessageType, Variant

from spiceserver.clipboard import ClipboardType, Selection
from spiceserver.gnome_clipboard import GnomeClipboard, mime_types_for, types_from_mimes

PATH = "/org/gnome/Mutter/RemoteDesktop/Session/u1"
IFACE = "org.gnome.Mutter.RemoteDesktop.Session"
WL_COPY_TEXT = ["UTF8_STRING", "STRING", "TEXT", "text/plain;charset=utf-8", "text/plain"]


class FakeBus:
    """Answers session methods; ``pipes`` gives SelectionRead/SelectionWrite their fd."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.handlers: list[Callable[[Any], None]] = []
        self.on_read: Callable[[str], int] | None = None
        self.written: dict[int, int] = {}  # serial → read end of the pipe handed out
        self.delay = 0.0  # before answering SelectionRead
        self.hold: asyncio.Event | None = None  # SetSelection answers once it is set

    async def call(self, message: Any) -> Any:
        self.calls.append((message.member, list(message.body)))
        fds: list[int] = []
        body: list[Any] = []
        if message.member == "SetSelection" and self.hold is not None:
            await self.hold.wait()
        if message.member == "SelectionRead":
            assert self.on_read is not None
            await asyncio.sleep(self.delay)
            fds, body = [self.on_read(message.body[0])], [0]
        elif message.member == "SelectionWrite":
            r, w = os.pipe()
            self.written[message.body[0]] = r
            fds, body = [w], [0]
        return SimpleNamespace(
            message_type=MessageType.METHOD_RETURN, body=body, unix_fds=fds, error_name=None
        )

    def add_message_handler(self, handler: Callable[[Any], None]) -> None:
        self.handlers.append(handler)

    def remove_message_handler(self, handler: Callable[[Any], None]) -> None:
        self.handlers.remove(handler)

    def signal(self, member: str, *body: Any) -> None:
        message = SimpleNamespace(
            message_type=MessageType.SIGNAL, path=PATH, interface=IFACE, member=member,
            body=list(body), unix_fds=[],
        )  # fmt: skip
        for handler in list(self.handlers):
            handler(message)

    def members(self) -> list[str]:
        return [member for member, _ in self.calls]


class FakeSource:
    def __init__(self) -> None:
        self.session = SimpleNamespace(bus=FakeBus(), session_path=PATH, closed=False)
        self.listeners: list[Callable[[Any], None]] = []

    def add_session_listener(self, listener: Callable[[Any], None]) -> None:
        self.listeners.append(listener)

    def remove_session_listener(self, listener: Callable[[Any], None]) -> None:
        self.listeners.remove(listener)


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, Selection, tuple[ClipboardType, ...]]] = []

    def desktop_grabbed(self, selection: Selection, types: tuple[ClipboardType, ...]) -> None:
        self.events.append(("grabbed", selection, types))

    def desktop_released(self, selection: Selection) -> None:
        self.events.append(("released", selection, ()))


async def drain(fd: int) -> bytes:
    """The pipe's contents until EOF, read while the loop writes it (a pipe holds 64 KiB)."""
    os.set_blocking(fd, False)
    received = bytearray()
    for _ in range(5000):
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            await asyncio.sleep(0.001)
            continue
        if not chunk:
            break
        received += chunk
    os.close(fd)
    return bytes(received)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def attached(
    max_bytes: int = 1 << 20, timeout: float = 1.0
) -> tuple[GnomeClipboard, FakeBus, Listener]:
    source = FakeSource()
    clipboard = GnomeClipboard(source, max_bytes=max_bytes, timeout=timeout)  # type: ignore[arg-type]
    listener = Listener()
    clipboard.attach(listener)
    await settle()
    bus = source.session.bus
    assert bus.members() == ["EnableClipboard"]
    return clipboard, bus, listener


def owner(mimes: list[str] | None, ours: bool = False, wrapped: bool = True) -> dict[str, Any]:
    if mimes is None:
        return {}
    value = Variant("(as)", [mimes]) if wrapped else Variant("as", mimes)
    return {"mime-types": value, "session-is-owner": Variant("b", ours)}


def test_mime_types_map_to_vdagent_types() -> None:
    assert types_from_mimes(WL_COPY_TEXT) == (ClipboardType.UTF8_TEXT,)
    assert types_from_mimes(["image/png", "text/html", "image/jpeg"]) == (
        ClipboardType.PNG,
        ClipboardType.JPG,
    )
    assert types_from_mimes(["TEXT", "text/html"]) == ()
    assert mime_types_for((ClipboardType.UTF8_TEXT, ClipboardType.PNG)) == [
        "text/plain;charset=utf-8", "UTF8_STRING", "text/plain", "image/png",
    ]  # fmt: skip


def test_owner_changes_reach_the_listener() -> None:
    async def run() -> list[Any]:
        clipboard, bus, listener = await attached()
        bus.signal("SelectionOwnerChanged", owner(WL_COPY_TEXT))  # mutter's (as)
        bus.signal("SelectionOwnerChanged", owner(["image/png"], wrapped=False))  # the XML's as
        bus.signal("SelectionOwnerChanged", owner(["text/plain"], ours=True))  # our own grab
        bus.signal("SelectionOwnerChanged", owner(None))  # nobody
        bus.signal("SelectionOwnerChanged", "not a dict")  # malformed: ignored
        bus.signal("SelectionTransfer")  # malformed: ignored
        await clipboard.close()
        assert bus.members()[-1] == "DisableClipboard"
        return listener.events

    assert asyncio.run(run()) == [
        ("grabbed", Selection.CLIPBOARD, (ClipboardType.UTF8_TEXT,)),
        ("grabbed", Selection.CLIPBOARD, (ClipboardType.PNG,)),
        ("released", Selection.CLIPBOARD, ()),
    ]


def test_reads_come_through_the_pipe_bounded() -> None:
    async def run() -> None:
        clipboard, bus, _listener = await attached(max_bytes=200_000, timeout=0.05)
        payloads = {"image/png": b"\x89PNG" * 40_000, "STRING": "grüße".encode("latin-1")}
        held: list[int] = []
        feeders: list[asyncio.Future[None]] = []

        def on_read(mime: str) -> int:
            r, w = os.pipe()
            if mime == "text/plain":  # an owner that never writes nor closes
                held.append(w)
                return r
            data = payloads[mime]

            async def feed() -> None:  # a slow owner, many pipe buffers' worth
                os.set_blocking(w, False)
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(w, view[:65536]) :]
                    except BlockingIOError:
                        await asyncio.sleep(0.001)
                    except BrokenPipeError:
                        break  # the reader stopped at the cap
                os.close(w)

            feeders.append(asyncio.ensure_future(feed()))
            return r

        bus.on_read = on_read
        bus.signal("SelectionOwnerChanged", owner(["image/png"]))
        assert await clipboard.read(Selection.CLIPBOARD, ClipboardType.PNG) == payloads["image/png"]
        assert await clipboard.read(Selection.PRIMARY, ClipboardType.PNG) is None
        assert await clipboard.read(Selection.CLIPBOARD, ClipboardType.JPG) is None
        payloads["image/png"] = b"x" * 200_001
        assert await clipboard.read(Selection.CLIPBOARD, ClipboardType.PNG) is None  # cap
        bus.signal("SelectionOwnerChanged", owner(["STRING", "TEXT"]))
        got = await clipboard.read(Selection.CLIPBOARD, ClipboardType.UTF8_TEXT)
        assert got == "grüße".encode()  # Latin-1 STRING as UTF-8
        bus.signal("SelectionOwnerChanged", owner(["text/plain"]))
        started = asyncio.get_running_loop().time()
        assert await clipboard.read(Selection.CLIPBOARD, ClipboardType.UTF8_TEXT) is None
        assert asyncio.get_running_loop().time() - started < 1.0  # 4 × 0.05 s
        for fd in held:
            os.close(fd)
        await clipboard.close()

    asyncio.run(run())


def test_an_owner_change_sent_before_our_grab_was_taken_is_ignored() -> None:
    async def run() -> list[Any]:
        clipboard, bus, listener = await attached()
        bus.hold = asyncio.Event()

        async def fetch(ctype: ClipboardType) -> bytes | None:
            return b"client"

        clipboard.client_grabbed(Selection.CLIPBOARD, (ClipboardType.UTF8_TEXT,), fetch)
        await settle()
        bus.signal("SelectionOwnerChanged", owner(["text/plain"]))  # before mutter took it
        bus.hold.set()
        await settle()
        bus.signal("SelectionTransfer", "text/plain", 3)  # still ours: served
        for _ in range(100):
            if 3 in bus.written:
                break
            await asyncio.sleep(0.005)
        assert await drain(bus.written[3]) == b"client"
        bus.signal("SelectionOwnerChanged", owner(["text/plain"]))  # a program took it since
        await clipboard.close()
        return listener.events

    assert asyncio.run(run()) == [("grabbed", Selection.CLIPBOARD, (ClipboardType.UTF8_TEXT,))]


def test_a_pipe_that_comes_too_late_is_closed() -> None:
    async def run() -> None:
        clipboard, bus, _listener = await attached(timeout=0.05)
        ends: list[int] = []

        def on_read(mime: str) -> int:
            r, w = os.pipe()
            ends.append(w)
            return r

        bus.on_read, bus.delay = on_read, 0.3
        bus.signal("SelectionOwnerChanged", owner(["text/plain"]))
        assert await clipboard.read(Selection.CLIPBOARD, ClipboardType.UTF8_TEXT) is None
        await asyncio.sleep(0.4)  # mutter's answer came meanwhile: its pipe is closed
        with pytest.raises(BrokenPipeError):
            os.write(ends[0], b"x")
        os.close(ends[0])
        await clipboard.close()

    asyncio.run(run())


def test_transfers_fetch_from_the_client_and_write_the_pipe() -> None:
    async def run() -> None:
        clipboard, bus, _listener = await attached(max_bytes=5_000_000, timeout=0.05)
        big = b"t" * 3_000_000
        asked: list[ClipboardType] = []
        stuck = asyncio.Event()

        async def fetch(ctype: ClipboardType) -> bytes | None:
            asked.append(ctype)
            if ctype == ClipboardType.PNG:
                await stuck.wait()  # a client that never answers
            return big

        clipboard.client_grabbed(
            Selection.CLIPBOARD, (ClipboardType.UTF8_TEXT, ClipboardType.PNG), fetch
        )
        clipboard.client_grabbed(Selection.PRIMARY, (ClipboardType.UTF8_TEXT,), fetch)  # no-op
        await settle()
        set_selection = [body for member, body in bus.calls if member == "SetSelection"]
        assert [list(b[0]["mime-types"].value) for b in set_selection] == [
            ["text/plain;charset=utf-8", "UTF8_STRING", "text/plain", "image/png"]
        ]
        bus.signal("SelectionTransfer", "UTF8_STRING", 7)
        await settle()
        for _ in range(200):
            if 7 in bus.written:
                break
            await asyncio.sleep(0.005)
        assert await drain(bus.written[7]) == big
        bus.signal("SelectionTransfer", "image/png", 8)  # fetch times out: failed
        bus.signal("SelectionTransfer", "image/bmp", 9)  # not offered: failed at once
        await asyncio.sleep(0.4)
        done = [body for member, body in bus.calls if member == "SelectionWriteDone"]
        assert sorted(done) == [[7, True], [8, False], [9, False]]
        assert 8 not in bus.written and 9 not in bus.written
        assert asked == [ClipboardType.UTF8_TEXT, ClipboardType.PNG]
        clipboard.client_released(Selection.CLIPBOARD)
        await settle()
        assert bus.calls[-1] == ("SetSelection", [{}])
        await clipboard.close()

    asyncio.run(run())


def test_a_new_session_gets_the_clipboard_and_the_client_grab() -> None:
    async def run() -> None:
        source = FakeSource()
        clipboard = GnomeClipboard(source, timeout=1.0)  # type: ignore[arg-type]
        clipboard.attach(Listener())

        async def fetch(ctype: ClipboardType) -> bytes | None:
            return b"x"

        clipboard.client_grabbed(Selection.CLIPBOARD, (ClipboardType.PNG,), fetch)
        await settle()
        new = SimpleNamespace(bus=FakeBus(), session_path=PATH, closed=False)
        for listener in source.listeners:
            listener(new)
        await settle()
        member, body = new.bus.calls[0]
        assert member == "EnableClipboard" and list(body[0]["mime-types"].value) == ["image/png"]
        assert clipboard._on_message not in source.session.bus.handlers
        await clipboard.close()
        assert source.listeners == []

    asyncio.run(run())


@pytest.mark.parametrize("max_bytes, timeout", [(0, 1.0), (10, 0.0)])
def test_bad_limits_are_refused(max_bytes: int, timeout: float) -> None:
    from spiceserver.errors import ConfigError

    with pytest.raises(ConfigError):
        GnomeClipboard(FakeSource(), max_bytes=max_bytes, timeout=timeout)  # type: ignore[arg-type]
