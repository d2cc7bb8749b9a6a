"""The X desktop follows monitor layouts through RandR, on a real Xorg (dummy video driver).

Each test gets its own X server (``-displayfd`` picks the number).  What the X server did is
read with ``xrandr`` and with a python-xlib connection of the test's own; expected pixels come
from ImageMagick's ``import``, never from the source's own grabber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pytest

from spiceserver.sources.base import Head
from spiceserver.sources.desktop import DesktopSource, open_display
from tests.interop.clients import (
    GtkClient,
    XorgDummy,
    Xvfb,
    _kill,
    have_tools,
    have_xorg_dummy,
    x_env,
)
from tests.interop.serverthread import ServerThread
from tests.interop.test_desktop import PASSWORD, settled_screen, x

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not have_tools("Xvfb", "xterm", "xsetroot", "import", "xrandr"),
        reason="Xvfb, xterm, xsetroot, ImageMagick or xrandr missing",
    ),
]

WIDTH, HEIGHT = 1024, 768
TIMEOUT = 20.0


@pytest.fixture
def xorg() -> Iterator[str]:
    """A private Xorg on the dummy driver (VideoRam for 2 × 1920×1080, RandR 1.5)."""
    assert have_xorg_dummy(), "these tests need root, Xorg and xserver-xorg-video-dummy"
    with XorgDummy(WIDTH, HEIGHT) as name:
        yield name


# ------------------------------------------------------------------------------------ helpers


def xrandr(display: str, *args: str) -> str:
    return x(display, "xrandr", *args)


def current_size(display: str) -> tuple[int, int]:
    match = re.search(r"current (\d+) x (\d+)", xrandr(display))
    assert match, xrandr(display)
    return int(match[1]), int(match[2])


def listed_monitors(display: str) -> list[tuple[int, int, int, int]]:
    """``xrandr --listmonitors`` as (x, y, width, height), in its order."""
    text = xrandr(display, "--listmonitors")
    count = int(re.search(r"Monitors: (\d+)", text)[1])  # type: ignore[index]
    found = [
        (int(m[3]), int(m[4]), int(m[1]), int(m[2]))
        for m in re.finditer(r"(\d+)/\d+x(\d+)/\d+\+(\d+)\+(\d+)", text)
    ]
    assert len(found) == count, text
    return found


def rects(heads: tuple[Head, ...]) -> list[tuple[int, int, int, int]]:
    return [(h.x, h.y, h.width, h.height) for h in heads]


def modes_and_stamp(display: str) -> tuple[dict[int, str], int]:
    """The X server's modes (id → name) and the time its configuration last changed."""
    conn = open_display(display)
    try:
        res = conn.screen().root.xrandr_get_screen_resources_current()
        names, offset, modes = res.names, 0, {}
        for mode in res.modes:
            modes[mode.id] = names[offset : offset + mode.name_length]
            offset += mode.name_length
        return modes, res.timestamp
    finally:
        conn.close()


class Recorder:
    """A source listener that keeps the resize and heads notifications, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_damage(self, rects: list[Any]) -> None: ...

    def on_scroll(self, rect: Any, dy: int, damage: list[Any]) -> None: ...

    def on_cursor(self, shape: Any) -> None: ...

    def on_cursor_move(self, x: int, y: int) -> None: ...

    def on_resize(self, width: int, height: int) -> None:
        self.calls.append(("resize", (width, height)))

    def on_heads(self, heads: tuple[Head, ...]) -> None:
        self.calls.append(("heads", rects(heads)))


@contextlib.asynccontextmanager
async def started(display: str) -> AsyncIterator[tuple[DesktopSource, Recorder]]:
    """A started desktop source on ``display`` with a :class:`Recorder` listening."""
    source = DesktopSource(display)
    recorder = Recorder()
    source.add_listener(recorder)
    await source.start()
    try:
        yield source, recorder
    finally:
        await source.stop()


async def until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait (the loop running) until ``check`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def frame_is_the_x_screen(source: DesktopSource, display: str) -> None:
    """The source's frame equals a screenshot of the X screen (the screen settled first)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        expected = await asyncio.to_thread(settled_screen, display)
        frame = source.frame
        if frame.shape[:2] == expected.shape[:2] and np.array_equal(frame[..., :3], expected):
            return
        assert time.monotonic() < deadline, (
            f"the frame {frame.shape} never equalled the X screen {expected.shape}"
        )
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------------- tests


def test_one_head_sets_the_screen_and_restore_puts_it_back(xorg: str) -> None:
    original_modes, _ = modes_and_stamp(xorg)

    async def scenario() -> None:
        async with started(xorg) as (source, recorder):
            assert rects(source.heads()) == [(0, 0, WIDTH, HEIGHT)]
            assert await source.apply_layout((Head(0, 0, 1280, 720, 340, 190),))
            # apply_layout returns once the frame and the heads show the new layout.
            assert source.frame.shape == (720, 1280, 4)
            assert rects(source.heads()) == [(0, 0, 1280, 720)]
            assert recorder.calls == [("resize", (1280, 720)), ("heads", [(0, 0, 1280, 720)])]
            assert current_size(xorg) == (1280, 720)
            assert re.search(r"DUMMY0 connected primary 1280x720\+0\+0", xrandr(xorg))
            assert listed_monitors(xorg) == [(0, 0, 1280, 720)]
            x(xorg, "xsetroot", "-solid", "#2266aa")
            await frame_is_the_x_screen(source, xorg)

            # The same layout again: nothing is sent to the X server.
            _, stamp = modes_and_stamp(xorg)
            assert await source.apply_layout((Head(0, 0, 1280, 720),))
            assert modes_and_stamp(xorg)[1] == stamp
            assert source.frame.shape == (720, 1280, 4)

            # A width that is no multiple of 8 is kept exactly.
            assert await source.apply_layout((Head(0, 0, 1283, 721),))
            assert current_size(xorg) == (1283, 721) and source.size == (1283, 721)
            modes, _ = modes_and_stamp(xorg)
            assert "1283x721" in modes.values()
            assert "1280x720" not in modes.values()  # ours, no longer used: deleted

            await source.restore_layout()
            await until(lambda: source.size == (WIDTH, HEIGHT), "the original frame size")
            assert current_size(xorg) == (WIDTH, HEIGHT)
            assert re.search(r"DUMMY0 connected primary 1024x768\+0\+0", xrandr(xorg))
            assert modes_and_stamp(xorg)[0] == original_modes  # our modes are gone
            assert rects(source.heads()) == [(0, 0, WIDTH, HEIGHT)]
            await frame_is_the_x_screen(source, xorg)

    asyncio.run(scenario())


def test_two_heads_give_two_monitors_and_two_heads(xorg: str) -> None:
    original_modes, _ = modes_and_stamp(xorg)
    two = (Head(0, 0, 1280, 720, 340, 190), Head(1280, 0, 800, 600, 210, 160))

    async def scenario() -> None:
        async with started(xorg) as (source, recorder):
            assert await source.apply_layout(two)
            assert listed_monitors(xorg) == [(0, 0, 1280, 720), (1280, 0, 800, 600)]
            assert current_size(xorg) == (2080, 720)
            assert source.frame.shape == (720, 2080, 4)
            heads = source.heads()
            assert rects(heads) == [(0, 0, 1280, 720), (1280, 0, 800, 600)]
            assert all(h.width_mm > 0 and h.height_mm > 0 for h in heads)
            assert recorder.calls[-2:] == [("resize", (2080, 720)), ("heads", rects(heads))]
            x(xorg, "xsetroot", "-solid", "#994411")
            await frame_is_the_x_screen(source, xorg)

            # Same size, other monitors: the heads follow without a resize.
            recorder.calls.clear()
            assert await source.apply_layout((Head(0, 0, 1040, 720), Head(1040, 0, 1040, 720)))
            assert listed_monitors(xorg) == [(0, 0, 1040, 720), (1040, 0, 1040, 720)]
            assert recorder.calls == [("heads", [(0, 0, 1040, 720), (1040, 0, 1040, 720)])]

            # Back to one head: the second output is switched off.
            assert await source.apply_layout((Head(0, 0, 1600, 900),))
            assert listed_monitors(xorg) == [(0, 0, 1600, 900)]
            assert not re.search(r"^DUMMY1 .*\d+x\d+\+\d+\+\d+", xrandr(xorg), re.MULTILINE)
            assert rects(source.heads()) == [(0, 0, 1600, 900)]

            await source.restore_layout()
            await until(lambda: source.size == (WIDTH, HEIGHT), "the original frame size")
            assert listed_monitors(xorg) == [(0, 0, WIDTH, HEIGHT)]
            assert modes_and_stamp(xorg)[0] == original_modes

    asyncio.run(scenario())


def test_stop_puts_the_original_layout_back(xorg: str) -> None:
    async def scenario() -> None:
        async with started(xorg) as (source, _recorder):
            assert await source.apply_layout((Head(0, 0, 800, 600),))
            assert current_size(xorg) == (800, 600)

    asyncio.run(scenario())
    assert current_size(xorg) == (WIDTH, HEIGHT)
    assert listed_monitors(xorg) == [(0, 0, WIDTH, HEIGHT)]


def test_xvfb_cannot_follow_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    with Xvfb(WIDTH, HEIGHT) as display:
        _, stamp = modes_and_stamp(display)

        async def scenario() -> None:
            async with started(display) as (source, _recorder):
                with caplog.at_level(logging.INFO, logger="spiceserver"):
                    assert not await source.apply_layout((Head(0, 0, 1280, 720),))
                    assert not await source.apply_layout((Head(0, 0, 800, 600),))
                assert source.size == (WIDTH, HEIGHT)

        asyncio.run(scenario())
        said = [r for r in caplog.records if "not supported" in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in caplog.records]
        assert said[0].levelno == logging.INFO
        assert "fixed-size" in said[0].getMessage()
        assert current_size(display) == (WIDTH, HEIGHT)
        assert modes_and_stamp(display)[1] == stamp  # nothing was changed


def test_a_spice_gtk_client_follows_layout_changes(xorg: str) -> None:
    """Through the server: an ``xrandr`` change on the desktop, then a layout the source sets,
    each reach spice-gtk as a new surface of the new size, pixel-exact with the X screen."""
    x(xorg, "xsetroot", "-solid", "#336699")
    source = DesktopSource(xorg)
    with (
        ServerThread(source, password=PASSWORD) as st,
        GtkClient(st.uri, PASSWORD) as client,
    ):
        client.wait_channel_open("display", timeout=TIMEOUT)
        client.wait_for_frame(settled_screen(xorg), timeout=30)

        # Someone on the desktop changes the mode: the client gets an 800x600 surface.
        xrandr(xorg, "--output", "DUMMY0", "--mode", "800x600")
        client.wait_for(
            "primary-create", lambda e: (e["width"], e["height"]) == (800, 600), timeout=TIMEOUT
        )
        x(xorg, "xsetroot", "-solid", "#aa3300")
        expected = settled_screen(xorg)
        assert expected.shape[:2] == (600, 800)
        client.wait_for_frame(expected, timeout=30)

        # The source sets two heads (what a client's monitors config asks for).
        assert st.run(source.apply_layout((Head(0, 0, 1280, 720), Head(1280, 0, 640, 480))))
        client.wait_for(
            "primary-create", lambda e: (e["width"], e["height"]) == (1920, 720), timeout=TIMEOUT
        )
        assert listed_monitors(xorg) == [(0, 0, 1280, 720), (1280, 0, 640, 480)]
        x(xorg, "xsetroot", "-solid", "#118844")
        client.wait_for_frame(settled_screen(xorg), timeout=30)

    # The server closed: the desktop is as it was before the first layout of ours.
    assert current_size(xorg) == (800, 600)
    assert listed_monitors(xorg) == [(0, 0, 800, 600)]


def test_capture_survives_layout_changes_while_the_screen_is_drawn(xorg: str) -> None:
    """Grabs race with shrinking screens (a grab of the old size fails): the capture thread
    follows the new size and goes on."""
    drawer = subprocess.Popen(
        ["xterm", "-geometry", "200x80+0+0", "-e", "sh", "-c",
         "while :; do date +%N; sleep 0.002; done"],
        env=x_env(xorg), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip

    async def scenario() -> None:
        async with started(xorg) as (source, _recorder):
            for i in range(12):
                size = ((1600, 900), (640, 480), (1280, 1024))[i % 3]
                assert await source.apply_layout((Head(0, 0, *size),))
                assert source.size == size
            await source.restore_layout()
            await until(lambda: source.size == (WIDTH, HEIGHT), "the original frame size")
            _kill(drawer)
            assert source._thread is not None and source._thread.is_alive()
            await frame_is_the_x_screen(source, xorg)

    try:
        asyncio.run(scenario())
    finally:
        _kill(drawer)
