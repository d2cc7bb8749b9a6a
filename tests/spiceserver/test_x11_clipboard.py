"""The X11 clipboard bridge against a real Xvfb, with xclip (and small python-xlib clients) as
the desktop's programs.

Each test gets its own Xvfb, so selection owners never leak between tests.  The backend is
driven directly through the :class:`~spiceserver.clipboard.ClipboardBackend` protocol, as the
agent will drive it: ``client_grabbed`` with a fetch, ``read``, and a listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from spiceserver.clipboard import ClipboardType, Selection
from spiceserver.config import CLIPBOARD_MAX_BYTES, CLIPBOARD_TIMEOUT
from spiceserver.x11_clipboard import X11Clipboard
from tests.conftest import DATA, data_file, run
from tests.interop.clients import XorgDummy, Xvfb, have_xorg_dummy, x_env

TEXT = ClipboardType.UTF8_TEXT
PNG = ClipboardType.PNG
CLIPBOARD = Selection.CLIPBOARD
PRIMARY = Selection.PRIMARY
#: A bound for each xclip run and each awaited event.
STEP = 20.0


@pytest.fixture
def display(request: pytest.FixtureRequest) -> Iterator[str]:
    """A private Xvfb; ``parametrize("display", ["xvfb", "xorg"], indirect=True)`` runs a test
    on a real Xorg (dummy driver) too."""
    for tool in ("Xvfb", "xclip"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing (tests/run.sh installs it)", pytrace=False)
    kind = getattr(request, "param", "xvfb")
    if kind == "xorg" and not have_xorg_dummy():
        pytest.skip("Xorg with the dummy driver needs root and xserver-xorg-video-dummy")
    with (XorgDummy if kind == "xorg" else Xvfb)(320, 240) as name:
        yield name


#: Runs a test on Xvfb and on a real Xorg.
ON_BOTH_SERVERS = pytest.mark.parametrize("display", ["xvfb", "xorg"], indirect=True)


def big_text(size: int) -> bytes:
    """``size`` bytes of UTF-8 text with multi-byte characters, lines and no pattern."""
    rng = random.Random(size)
    words = ["clipboard", "grüße", "✓", "naïve", "日本語", "x" * 70, "\t", "\n"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words).encode() + b" "
    return bytes(out[:size]).decode("utf-8", "ignore").encode()


def png_bytes() -> bytes:
    return data_file(DATA / "corpus" / "testpattern_bars_1024x768.png").read_bytes()


class Listener:
    """Collects what the backend tells the server."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()

    def desktop_grabbed(self, selection: Selection, types: tuple[ClipboardType, ...]) -> None:
        self.events.put_nowait(("grabbed", selection, types))

    def desktop_released(self, selection: Selection) -> None:
        self.events.put_nowait(("released", selection))

    async def next(self, timeout: float = STEP) -> tuple[object, ...]:
        return await asyncio.wait_for(self.events.get(), timeout)


@contextlib.asynccontextmanager
async def backend(
    display: str, *, max_bytes: int = CLIPBOARD_MAX_BYTES, timeout: float = CLIPBOARD_TIMEOUT
) -> AsyncIterator[tuple[X11Clipboard, Listener]]:
    clipboard = X11Clipboard(display, max_bytes=max_bytes, timeout=timeout)
    listener = Listener()
    clipboard.attach(listener)
    try:
        yield clipboard, listener
    finally:
        await clipboard.close()


def serving(
    data: dict[ClipboardType, bytes],
) -> tuple[Callable[..., Awaitable[bytes | None]], list[ClipboardType]]:
    """A client's fetch handing out ``data``; the list records what was asked."""
    asked: list[ClipboardType] = []

    async def fetch(ctype: ClipboardType) -> bytes | None:
        asked.append(ctype)
        return data.get(ctype)

    return fetch, asked


async def xclip_out(display: str, *args: str) -> tuple[int, bytes]:
    """``xclip -o ARGS``: (exit status, stdout), bounded."""
    proc = await asyncio.create_subprocess_exec(
        "xclip",
        "-o",
        *args,
        env=x_env(display),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), STEP)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out


@contextlib.asynccontextmanager
async def xclip_in(
    display: str, data: bytes, *args: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``xclip -i ARGS`` owning a selection with ``data`` in the foreground, killed at the end."""
    proc = await asyncio.create_subprocess_exec(
        "xclip",
        "-i",
        "-quiet",
        *args,
        env=x_env(display),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    proc.stdin.write(data)
    await proc.stdin.drain()
    proc.stdin.close()
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


#: A selection owner that never answers: it takes the selection and then reads nothing.
SILENT_OWNER = """
import sys
from Xlib import X, display
d = display.Display(sys.argv[1])
w = d.screen().root.create_window(0, 0, 1, 1, 0, 0, window_class=X.InputOnly)
w.set_selection_owner(d.intern_atom(sys.argv[2]), X.CurrentTime)
d.sync()
print("owned", flush=True)
sys.stdin.read()
"""


#: A requestor that asks for CLIPBOARD, sees INCR announced, and never reads a chunk.
STALLED_REQUESTOR = """
import sys
from Xlib import X, display
d = display.Display(sys.argv[1])
w = d.screen().root.create_window(
    0, 0, 1, 1, 0, 0, window_class=X.InputOnly, event_mask=X.PropertyChangeMask
)
prop = d.intern_atom("DATA")
w.convert_selection(d.intern_atom("CLIPBOARD"), d.intern_atom("UTF8_STRING"), prop, 0)
d.flush()
while d.next_event().type != X.SelectionNotify:
    pass
print(d.get_atom_name(w.get_property(prop, X.AnyPropertyType, 0, 1).property_type), flush=True)
sys.stdin.read()
"""


#: A desktop program that changes the CLIPBOARD owner 10,000 times as fast as it can, then
#: exits (answering nothing).
OWNER_FLOOD = """
import sys
from Xlib import X, display
d = display.Display(sys.argv[1])
root = d.screen().root
wins = [root.create_window(0, 0, 1, 1, 0, 0, window_class=X.InputOnly) for _ in range(2)]
clipboard = d.intern_atom("CLIPBOARD")
for n in range(10_000):
    wins[n % 2].set_selection_owner(clipboard, X.CurrentTime)
d.sync()
print("done", flush=True)
"""


#: A selection owner that answers UTF8_STRING by INCR, one byte every 0.2 s, forever.
TRICKLING_OWNER = """
import sys, time
from Xlib import X, Xatom, display
from Xlib.protocol import event
d = display.Display(sys.argv[1])
w = d.screen().root.create_window(0, 0, 1, 1, 0, 0, window_class=X.InputOnly)
clipboard, utf8 = d.intern_atom("CLIPBOARD"), d.intern_atom("UTF8_STRING")
targets, incr = d.intern_atom("TARGETS"), d.intern_atom("INCR")
w.set_selection_owner(clipboard, X.CurrentTime)
d.sync()
print("owned", flush=True)
transfer = None
while True:
    ev = d.next_event()
    if ev.type == X.SelectionRequest:
        if ev.target == targets:
            ev.requestor.change_property(ev.property, Xatom.ATOM, 32, [targets, utf8])
        else:
            ev.requestor.change_attributes(event_mask=X.PropertyChangeMask)
            ev.requestor.change_property(ev.property, incr, 32, [1000])
            transfer = (ev.requestor.id, ev.property)
        ev.requestor.send_event(event.SelectionNotify(
            time=ev.time, requestor=ev.requestor, selection=ev.selection, target=ev.target,
            property=ev.property))
        d.flush()
    elif ev.type == X.PropertyNotify and ev.state == X.PropertyDelete:
        if (ev.window.id, ev.atom) == transfer:
            time.sleep(0.2)
            ev.window.change_property(ev.atom, utf8, 8, b"x")
            d.flush()
"""


async def python_xlib(script: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


@contextlib.asynccontextmanager
async def silent_owner(display: str, selection: str) -> AsyncIterator[None]:
    proc = await python_xlib(SILENT_OWNER, display, selection)
    assert proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), STEP) == b"owned\n"
        yield
    finally:
        proc.kill()
        await proc.wait()


async def grabbed(clipboard: X11Clipboard, display: str, selection: str) -> None:
    """Wait until our window owns ``selection`` (xclip lists our TARGETS)."""
    deadline = time.monotonic() + STEP
    while time.monotonic() < deadline:
        status, out = await xclip_out(display, "-selection", selection, "-t", "TARGETS")
        if status == 0 and b"TIMESTAMP" in out.split():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the backend never owned {selection}")


# ------------------------------------------------------------------------------ client → desktop


@ON_BOTH_SERVERS
def test_client_text_reaches_x_programs(display: str) -> None:
    text = "héllo ✓ wörld\nline two\n".encode()
    primary = b"primary text"

    async def scenario() -> None:
        async with backend(display) as (clipboard, _listener):
            fetch, asked = serving({TEXT: text})
            clipboard.client_grabbed(CLIPBOARD, (TEXT,), fetch)
            fetch_p, _ = serving({TEXT: primary})
            clipboard.client_grabbed(PRIMARY, (TEXT,), fetch_p)
            await grabbed(clipboard, display, "clipboard")
            status, out = await xclip_out(display, "-selection", "clipboard", "-t", "TARGETS")
            assert out.split() == [
                b"TARGETS",
                b"TIMESTAMP",
                b"UTF8_STRING",
                b"text/plain;charset=utf-8",
                b"text/plain;charset=UTF-8",
                b"STRING",
                b"TEXT",
                b"text/plain",
            ]
            for target in ("UTF8_STRING", "text/plain;charset=utf-8", "TEXT"):
                assert await xclip_out(display, "-selection", "clipboard", "-t", target) == (
                    0,
                    text,
                )
            latin1 = text.decode().encode("latin-1", "replace")  # ✓ has no Latin-1 form
            assert await xclip_out(display, "-selection", "clipboard", "-t", "STRING") == (
                0,
                latin1,
            )
            status, stamp = await xclip_out(display, "-selection", "clipboard", "-t", "TIMESTAMP")
            assert status == 0 and stamp
            # MULTIPLE is declined as a whole.
            status, _ = await xclip_out(display, "-selection", "clipboard", "-t", "MULTIPLE")
            assert status != 0
            # Not offered: refused (xclip exits 1), and the client is not asked for it.
            status, _ = await xclip_out(display, "-selection", "clipboard", "-t", "image/png")
            assert status != 0
            assert set(asked) == {TEXT}
            assert len(asked) == 1  # the data of one grab is fetched once
            await grabbed(clipboard, display, "primary")
            assert await xclip_out(display, "-selection", "primary", "-t", "UTF8_STRING") == (
                0,
                primary,
            )
            # A regrab with new data replaces the old without a release.
            fetch2, _ = serving({TEXT: b"second"})
            clipboard.client_grabbed(CLIPBOARD, (TEXT,), fetch2)
            deadline = time.monotonic() + STEP
            while (await xclip_out(display, "-selection", "clipboard"))[1] != b"second":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            clipboard.client_released(CLIPBOARD)
            deadline = time.monotonic() + STEP
            while (await xclip_out(display, "-selection", "clipboard", "-t", "TARGETS"))[0] == 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        # close() gave PRIMARY up.
        status, _ = await xclip_out(display, "-selection", "primary", "-t", "TARGETS")
        assert status != 0

    run(scenario(), timeout=120)


def test_client_png_reaches_x_programs_byte_exact(display: str) -> None:
    png = png_bytes()

    async def scenario() -> None:
        async with backend(display) as (clipboard, _listener):
            fetch, _ = serving({PNG: png})
            clipboard.client_grabbed(CLIPBOARD, (PNG,), fetch)
            await grabbed(clipboard, display, "clipboard")
            _, targets = await xclip_out(display, "-selection", "clipboard", "-t", "TARGETS")
            assert targets.split() == [b"TARGETS", b"TIMESTAMP", b"image/png"]
            status, out = await xclip_out(display, "-selection", "clipboard", "-t", "image/png")
            assert status == 0 and out == png
            status, _ = await xclip_out(display, "-selection", "clipboard", "-t", "UTF8_STRING")
            assert status != 0
            # Other image types go by their MIME atoms (all of spice-vdagent's names for BMP).
            bmp, jpeg = b"BM" + bytes(range(256)) * 4, b"\xff\xd8\xff" + bytes(300)
            fetch, _ = serving({ClipboardType.BMP: bmp, ClipboardType.JPG: jpeg})
            clipboard.client_grabbed(CLIPBOARD, (ClipboardType.BMP, ClipboardType.JPG), fetch)
            expected = [b"TARGETS", b"TIMESTAMP", b"image/bmp", b"image/x-bmp", b"image/x-MS-bmp"]
            expected += [b"image/x-win-bitmap", b"image/jpeg"]
            deadline = time.monotonic() + STEP
            while (await xclip_out(display, "-selection", "clipboard", "-t", "TARGETS"))[
                1
            ].split() != expected:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            for target, data in (("image/x-MS-bmp", bmp), ("image/jpeg", jpeg)):
                assert await xclip_out(display, "-selection", "clipboard", "-t", target) == (
                    0,
                    data,
                )
        async with backend(display) as (clipboard, listener):
            async with xclip_in(
                display, b"\xff\xd8\xff", "-selection", "clipboard", "-t", "image/jpeg"
            ):
                assert await listener.next() == ("grabbed", CLIPBOARD, (ClipboardType.JPG,))
                assert await clipboard.read(CLIPBOARD, ClipboardType.JPG) == b"\xff\xd8\xff"

    run(scenario(), timeout=120)


@ON_BOTH_SERVERS
def test_five_megabytes_both_ways_by_incr(display: str, caplog: pytest.LogCaptureFixture) -> None:
    text = big_text(5 * 1024 * 1024)
    desktop_text = text[::-1].decode("utf-8", "ignore").encode()
    caplog.set_level(logging.DEBUG, "spiceserver.clipboard")

    async def scenario() -> None:
        async with backend(display) as (clipboard, listener):
            fetch, _ = serving({TEXT: text})
            clipboard.client_grabbed(CLIPBOARD, (TEXT,), fetch)
            await grabbed(clipboard, display, "clipboard")
            assert await xclip_out(display, "-selection", "clipboard", "-t", "UTF8_STRING") == (
                0,
                text,
            )
            assert f"sending {len(text)} bytes by INCR" in caplog.text
            async with xclip_in(display, desktop_text, "-selection", "clipboard"):
                assert await listener.next() == ("grabbed", CLIPBOARD, (TEXT,))
                assert await clipboard.read(CLIPBOARD, TEXT) == desktop_text
            assert "X CLIPBOARD: receiving" in caplog.text and "by INCR" in caplog.text

    run(scenario(), timeout=120)


# ------------------------------------------------------------------------------ desktop → client


def test_desktop_text_reaches_the_server(display: str, event_loop_name: str) -> None:
    async def scenario() -> None:
        async with backend(display) as (clipboard, listener):
            async with xclip_in(display, "from the desktop ✓".encode(), "-selection", "clipboard"):
                assert await listener.next() == ("grabbed", CLIPBOARD, (TEXT,))
                assert await clipboard.read(CLIPBOARD, TEXT) == "from the desktop ✓".encode()
                assert await clipboard.read(CLIPBOARD, PNG) is None  # not offered
                async with xclip_in(display, b"primary one"):
                    assert await listener.next() == ("grabbed", PRIMARY, (TEXT,))
                    assert await clipboard.read(PRIMARY, TEXT) == b"primary one"
                assert await listener.next() == ("released", PRIMARY)
            assert await listener.next() == ("released", CLIPBOARD)
            assert await clipboard.read(CLIPBOARD, TEXT) is None  # no owner
            # An owner with only Latin-1 STRING: the server still gets UTF-8.
            async with xclip_in(
                display, "café".encode("latin-1"), "-selection", "clipboard", "-t", "STRING"
            ):
                assert await listener.next() == ("grabbed", CLIPBOARD, (TEXT,))
                assert await clipboard.read(CLIPBOARD, TEXT) == "café".encode()

    run(scenario(), timeout=120, loop=event_loop_name)


@ON_BOTH_SERVERS
def test_an_owner_from_before_the_start_is_offered(display: str) -> None:
    async def scenario() -> None:
        async with xclip_in(display, b"already there", "-selection", "clipboard"):
            # xclip owns it once it answers; the backend starts only then.
            deadline = time.monotonic() + STEP
            while (await xclip_out(display, "-selection", "clipboard"))[1] != b"already there":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            async with backend(display) as (clipboard, listener):
                assert await listener.next() == ("grabbed", CLIPBOARD, (TEXT,))
                assert await clipboard.read(CLIPBOARD, TEXT) == b"already there"

    run(scenario(), timeout=60)


@ON_BOTH_SERVERS
def test_desktop_png_reaches_the_server_byte_exact(display: str) -> None:
    png = png_bytes()

    async def scenario() -> None:
        async with backend(display) as (clipboard, listener):
            async with xclip_in(display, png, "-selection", "clipboard", "-t", "image/png"):
                assert await listener.next() == ("grabbed", CLIPBOARD, (PNG,))
                assert await clipboard.read(CLIPBOARD, PNG) == png
                assert await clipboard.read(CLIPBOARD, TEXT) is None

    run(scenario(), timeout=120)


def test_our_own_ownership_changes_are_not_reported(display: str) -> None:
    async def scenario() -> None:
        async with backend(display) as (clipboard, listener):
            fetch, _ = serving({TEXT: b"client"})
            clipboard.client_grabbed(CLIPBOARD, (TEXT,), fetch)
            await grabbed(clipboard, display, "clipboard")
            assert await clipboard.read(CLIPBOARD, TEXT) is None  # ours, not the desktop's
            clipboard.client_released(CLIPBOARD)
            # A desktop program on PRIMARY is the first thing reported: our grab and our
            # release of CLIPBOARD were not.
            async with xclip_in(display, b"p"):
                assert await listener.next() == ("grabbed", PRIMARY, (TEXT,))
                # A desktop program taking CLIPBOARD from the client is reported.
                clipboard.client_grabbed(CLIPBOARD, (TEXT,), fetch)
                await grabbed(clipboard, display, "clipboard")
                async with xclip_in(display, b"taken", "-selection", "clipboard"):
                    assert await listener.next() == ("grabbed", CLIPBOARD, (TEXT,))
                    assert await clipboard.read(CLIPBOARD, TEXT) == b"taken"

    run(scenario(), timeout=120)


# ------------------------------------------------------------------------------ bounds


def test_a_flood_of_desktop_owner_changes_is_coalesced(display: str) -> None:
    async def scenario() -> None:
        async with backend(display, timeout=1.0) as (clipboard, listener):
            flood = await python_xlib(OWNER_FLOOD, display)
            assert flood.stdout is not None
            assert await asyncio.wait_for(flood.stdout.readline(), STEP) == b"done\n"
            await asyncio.wait_for(flood.wait(), STEP)
            # Nothing was offered (the flooder answers no TARGETS), and then its owner left.
            async with xclip_in(display, b"after the flood", "-selection", "clipboard"):
                while (event := await listener.next()) != ("grabbed", CLIPBOARD, (TEXT,)):
                    assert event == ("released", CLIPBOARD), event
                assert await clipboard.read(CLIPBOARD, TEXT) == b"after the flood"

    run(scenario(), timeout=60)


def test_a_flood_of_client_grabs_ends_in_the_last_one(display: str) -> None:
    async def scenario() -> None:
        async with backend(display) as (clipboard, listener):
            asked: list[int] = []

            def offer(n: int) -> Callable[[ClipboardType], Awaitable[bytes | None]]:
                async def fetch(ctype: ClipboardType) -> bytes | None:
                    asked.append(n)
                    return b"grab %d" % n

                return fetch

            for n in range(10_000):  # as fast as the loop can call: coalesced, not queued
                clipboard.client_grabbed(CLIPBOARD, (TEXT,), offer(n))
                if n % 1000 == 0:
                    clipboard.client_released(CLIPBOARD)
            await grabbed(clipboard, display, "clipboard")
            deadline = time.monotonic() + STEP
            while (await xclip_out(display, "-selection", "clipboard"))[1] != b"grab 9999":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert asked == [9999]  # no earlier grab was ever asked for its data
            assert listener.events.empty()  # our own grabs are never reported back

    run(scenario(), timeout=60)


def test_an_owner_that_never_answers_blocks_nothing(display: str) -> None:
    async def scenario() -> None:
        async with backend(display, timeout=1.5) as (clipboard, listener):
            fetch, _ = serving({TEXT: b"served meanwhile"})
            clipboard.client_grabbed(PRIMARY, (TEXT,), fetch)
            await grabbed(clipboard, display, "primary")
            async with silent_owner(display, "CLIPBOARD"):
                start = time.monotonic()
                stuck = asyncio.create_task(clipboard.read(CLIPBOARD, TEXT))
                # Meanwhile we keep serving PRIMARY to a desktop program ...
                assert await xclip_out(display, "-selection", "primary") == (
                    0,
                    b"served meanwhile",
                )
                assert not stuck.done()
                # ... and another read queued behind the stuck one ends too.
                second = asyncio.create_task(clipboard.read(CLIPBOARD, TEXT))
                assert await stuck is None
                elapsed = time.monotonic() - start
                assert elapsed < 1.5 * 3 + 1  # its TARGETS, then the read: a timeout each
                assert await second is None
            # The owner is gone; a program that answers is read normally again.
            async with xclip_in(display, b"works again", "-selection", "clipboard"):
                while (event := await listener.next()) != ("grabbed", CLIPBOARD, (TEXT,)):
                    assert event[0] == "released", event
                assert await clipboard.read(CLIPBOARD, TEXT) == b"works again"

    run(scenario(), timeout=120)


def test_a_trickling_incr_owner_is_cut_off(display: str) -> None:
    async def scenario() -> None:
        async with backend(display, timeout=0.5) as (clipboard, listener):
            owner = await python_xlib(TRICKLING_OWNER, display)
            try:
                assert owner.stdout is not None
                assert await asyncio.wait_for(owner.stdout.readline(), STEP) == b"owned\n"
                assert await listener.next() == ("grabbed", CLIPBOARD, (TEXT,))
                start = time.monotonic()
                # Each chunk comes within the timeout, but the whole read gets 4 timeouts.
                assert await clipboard.read(CLIPBOARD, TEXT) is None
                assert 1.9 < time.monotonic() - start < 3.5
            finally:
                owner.kill()
                await owner.wait()

    run(scenario(), timeout=60)


def test_reads_are_bounded_and_close_ends_them(display: str) -> None:
    async def scenario() -> None:
        async with backend(display, timeout=5.0) as (clipboard, _listener):
            async with silent_owner(display, "CLIPBOARD"):
                reads = [asyncio.create_task(clipboard.read(CLIPBOARD, TEXT)) for _ in range(4)]
                await asyncio.sleep(0)  # let them queue
                start = time.monotonic()
                assert await clipboard.read(CLIPBOARD, TEXT) is None  # the fifth: at once
                assert time.monotonic() - start < 0.5
                assert not any(read.done() for read in reads)
                await clipboard.close()
                assert await asyncio.gather(*reads) == [None] * 4
                assert time.monotonic() - start < 2.5
                assert await clipboard.read(CLIPBOARD, TEXT) is None  # closed

    run(scenario(), timeout=60)


def test_a_requestor_that_stops_reading_incr_is_dropped(
    display: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "spiceserver.clipboard")
    text = big_text(1024 * 1024)

    async def scenario() -> None:
        async with backend(display, timeout=1.0) as (clipboard, _listener):
            fetch, _ = serving({TEXT: text})
            clipboard.client_grabbed(CLIPBOARD, (TEXT,), fetch)
            await grabbed(clipboard, display, "clipboard")
            stalled = await python_xlib(STALLED_REQUESTOR, display)
            try:
                assert stalled.stdout is not None
                line = await asyncio.wait_for(stalled.stdout.readline(), STEP)
                assert line == b"INCR\n"
                # Served meanwhile, in full, to a requestor that reads.
                assert await xclip_out(display, "-selection", "clipboard") == (0, text)
                deadline = time.monotonic() + STEP
                while "stopped reading an INCR transfer" not in caplog.text:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            finally:
                stalled.kill()
                await stalled.wait()

    run(scenario(), timeout=60)


def test_a_fetch_that_times_out_is_refused(display: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "spiceserver.clipboard")

    async def scenario() -> None:
        async with backend(display, timeout=0.25) as (clipboard, _listener):  # fetches get 1 s
            never = asyncio.Event()

            async def fetch(ctype: ClipboardType) -> bytes | None:
                await never.wait()
                return b"too late"

            clipboard.client_grabbed(CLIPBOARD, (TEXT,), fetch)
            await grabbed(clipboard, display, "clipboard")
            start = time.monotonic()
            # xclip asks UTF8_STRING, then STRING: one fetch, one timeout, both refused.
            status, out = await xclip_out(display, "-selection", "clipboard")
            assert status != 0 and out == b""
            assert 0.9 < time.monotonic() - start < 2.5
            assert caplog.text.count("did not hand over") == 1

    run(scenario(), timeout=60)


def test_the_size_cap_holds_both_ways(display: str, caplog: pytest.LogCaptureFixture) -> None:
    cap = 100_000
    caplog.set_level(logging.WARNING, "spiceserver.clipboard")

    async def scenario() -> None:
        async with backend(display, max_bytes=cap) as (clipboard, listener):
            fetch, _ = serving({TEXT: b"x" * (cap + 1)})
            clipboard.client_grabbed(CLIPBOARD, (TEXT,), fetch)
            await grabbed(clipboard, display, "clipboard")
            status, out = await xclip_out(display, "-selection", "clipboard")
            assert status != 0 and out == b""
            assert "client UTF8_TEXT data of 100001 bytes is over the cap" in caplog.text
            # At the cap exactly: served.
            fetch, _ = serving({TEXT: b"y" * cap})
            clipboard.client_grabbed(CLIPBOARD, (TEXT,), fetch)
            deadline = time.monotonic() + STEP
            while (got := await xclip_out(display, "-selection", "clipboard")) != (0, b"y" * cap):
                assert time.monotonic() < deadline, got[0]
                await asyncio.sleep(0.02)
            # From the desktop, in one property and by INCR (xclip uses INCR above ~1 MB).
            for size in (cap + 1, 3 * 1024 * 1024):
                async with xclip_in(display, b"z" * size, "-selection", "clipboard"):
                    assert await listener.next() == ("grabbed", CLIPBOARD, (TEXT,))
                    start = time.monotonic()
                    assert await clipboard.read(CLIPBOARD, TEXT) is None
                    assert time.monotonic() - start < 3
                assert await listener.next() == ("released", CLIPBOARD)
            assert "X CLIPBOARD data of 100001 bytes is over the cap" in caplog.text
            assert "X CLIPBOARD data (INCR) of" in caplog.text
            # Nothing got stuck: a small copy still comes through.
            async with xclip_in(display, b"small", "-selection", "clipboard"):
                assert await listener.next() == ("grabbed", CLIPBOARD, (TEXT,))
                # More reads than the property pool holds: the quarantined one is not needed.
                for _ in range(12):
                    assert await clipboard.read(CLIPBOARD, TEXT) == b"small"

    run(scenario(), timeout=120)


def test_a_lost_x_connection_makes_the_backend_inert(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "spiceserver.clipboard")
    xvfb = Xvfb(320, 240)
    name = xvfb.start()

    async def scenario() -> None:
        try:
            async with backend(name) as (clipboard, _listener):
                fetch, _ = serving({TEXT: b"x"})
                clipboard.client_grabbed(CLIPBOARD, (TEXT,), fetch)
                xvfb.stop()
                deadline = time.monotonic() + STEP
                while "lost the X connection" not in caplog.text:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                assert await clipboard.read(CLIPBOARD, TEXT) is None
                clipboard.client_grabbed(PRIMARY, (TEXT,), fetch)  # ignored, no error
        finally:
            xvfb.stop()
        assert caplog.text.count("lost the X connection") == 1

    run(scenario(), timeout=60)
