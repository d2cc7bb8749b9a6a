"""The GNOME Wayland source and input against a real headless mutter, PipeWire and spice-gtk.

Each test gets its own session (:class:`tests.interop.gnome.GnomeSession`: mutter, pipewire,
wireplumber and a foot terminal as an unprivileged user, about a second to start).  Expected
pixels come from an independent screen cast (``gnome_shot.py``: Gio and its own pipewiresrc
in Debian's python3), typed text from the terminal's ``cat``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from spiceserver.errors import ConfigError
from spiceserver.gnome_input import GnomeInput
from spiceserver.sources.gnome import GnomeSource
from spiceserver.sources.mutter import MutterSession
from tests.conftest import ROOT
from tests.interop.clients import BUTTON_LEFT, GtkClient, _kill, _poll_until
from tests.interop.gnome import (
    GnomeSession,
    bare_bus,
    have_gnome_tools,
    rotate_monitor,
    screenshot,
)
from tests.interop.serverthread import ServerThread

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not have_gnome_tools(), reason="needs root and mutter, pipewire, wireplumber, foot"
    ),
]

PASSWORD = "gnome"
SHIFT = 0x2A


@pytest.fixture
def gnome() -> Iterator[GnomeSession]:
    with GnomeSession(1280, 800) as session:
        yield session
        print(session.logs())  # shown when the test failed


@contextlib.contextmanager
def served(gnome: GnomeSession) -> Iterator[tuple[ServerThread, GtkClient, GnomeSource]]:
    source = GnomeSource(bus_address=gnome.bus_address, pipewire_remote=gnome.pipewire_remote)
    with (
        ServerThread(source, password=PASSWORD, on_input=GnomeInput(source)) as st,
        GtkClient(st.uri, PASSWORD) as client,
    ):
        for channel in ("main", "display", "inputs", "cursor"):
            client.wait_channel_open(channel, timeout=20)
        yield st, client, source


def type_keys(client: GtkClient, keys: list[int | tuple[int, int]]) -> None:
    for key in keys:
        if isinstance(key, tuple):  # (modifier, key)
            client.key_press(key[0])
            client.key_press_and_release(key[1])
            client.key_release(key[0])
        else:
            client.key_press_and_release(key)


def test_client_frame_equals_an_independent_screen_cast(gnome: GnomeSession) -> None:
    with served(gnome) as (_st, client, source):
        expected = screenshot(gnome)
        assert source.size == (1280, 800)
        client.wait_for_frame(expected, timeout=20)
        # Something changes in the session: the client follows, to the pixel.
        type_keys(client, [0x23, 0x17])  # "hi", echoed by the terminal
        assert _poll_until(lambda: not np.array_equal(screenshot(gnome), expected), 20)
        client.wait_for_frame(screenshot(gnome), timeout=20)


def test_typed_keys_arrive_as_characters(gnome: GnomeSession) -> None:
    with served(gnome) as (_st, client, _source):
        client.wait_for("mark", timeout=20)
        keys: list[int | tuple[int, int]] = [
            (SHIFT, 0x23), 0x17, (SHIFT, 0x02), 0x39,  # "Hi! "
            (0x36, 0x1E), 0x135, 0x37,  # right Shift + a, E0 keypad divide, keypad *
            0x148, 0x14B,  # E0 arrows: the terminal sends ESC [ A, ESC [ D
            0x11C,  # E0 keypad Enter ends the line
        ]  # fmt: skip
        type_keys(client, keys)
        assert _poll_until(lambda: gnome.typed.endswith("\n"), 20), repr(gnome.typed)
        assert gnome.typed == "Hi! A/*\x1b[A\x1b[D\n"


def cursor_box(before: np.ndarray, after: np.ndarray, near: tuple[int, int]) -> tuple[int, int]:
    """Top-left of the pixels that differ between two frames within 64 px of ``near``."""
    x, y = near
    y0, x0 = max(0, y - 64), max(0, x - 64)
    diff = np.any(before[y0 : y + 64, x0 : x + 64, :3] != after[y0 : y + 64, x0 : x + 64, :3], 2)
    rows, cols = np.flatnonzero(diff.any(1)), np.flatnonzero(diff.any(0))
    assert rows.size, f"no pointer drawn near {near}"
    return x0 + int(cols[0]), y0 + int(rows[0])


def test_absolute_pointer_and_click_land_on_the_right_pixel(gnome: GnomeSession) -> None:
    with served(gnome) as (_st, client, _source):
        client.wait_for("mark", timeout=20)
        # The pointer is drawn into the frames: after moving it between two spots of the
        # desktop background, each spot's changed pixels start at the same offset from
        # where it was sent (its hot spot), to the pixel, so the position is exact.
        spots = [(100, 700), (1111, 655)]
        shots = []
        for spot in [*spots, spots[0]]:
            previous = client.dump_frame()
            client.position(*spot)
            assert _poll_until(lambda p=previous: not np.array_equal(client.dump_frame(), p), 20)
            shots.append(screenshot(gnome))
        offsets = {
            (cursor_box(shots[0], shots[1], spot)[0] - spot[0],
             cursor_box(shots[0], shots[1], spot)[1] - spot[1])
            for spot in spots
        }  # fmt: skip
        assert len(offsets) == 1, offsets
        (dx, dy) = offsets.pop()
        assert -16 <= dx <= 0 and -16 <= dy <= 0, (dx, dy)
        # A click in the terminal: mutter focuses the window, and the terminal (told to report
        # clicks with ESC [ ? 1000 h) writes where it landed; Enter sends the line to cat.
        x0, y0, cell_w, cell_h = terminal_grid(shots[0])
        col, row = 12, 7
        client.position(x0 + col * cell_w + cell_w // 2, y0 + row * cell_h + cell_h // 2)
        client.button_press(BUTTON_LEFT, 0)
        client.button_release(BUTTON_LEFT, 1)
        client.key_press_and_release(0x1C)
        assert _poll_until(lambda: gnome.typed.endswith("\n"), 20), repr(gnome.typed)
        report = gnome.typed.split("\x1b[M")[1]
        assert (ord(report[1]) - 33, ord(report[2]) - 33) == (col, row), repr(gnome.typed)


def terminal_grid(frame: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, cell width, cell height) of the terminal's text grid: its text cursor is the
    only thing drawn in the (empty) text area, a box around cell 0, 0."""
    background = frame[frame.shape[0] // 2 - 100, frame.shape[1] // 2, :3]  # inside the window
    dark = np.all(frame[..., :3] == background, axis=2)
    rows = np.flatnonzero(dark.sum(1) > 300)
    cols = np.flatnonzero(dark.sum(0) > 300)
    area = ~dark[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    ys, xs = np.flatnonzero(area.any(1)), np.flatnonzero(area.any(0))
    assert ys.size, "no text cursor in the terminal"
    x, y = int(cols[0] + xs[0]), int(rows[0] + ys[0])
    return x, y, int(xs[-1] - xs[0]) + 1, int(ys[-1] - ys[0]) + 1


def test_errors_name_what_is_missing() -> None:
    async def open_session(address: str) -> None:
        await MutterSession.open(address)

    with bare_bus(allow_root=False) as address:
        with pytest.raises(ConfigError, match="refused the connection"):
            asyncio.run(open_session(address))
    with bare_bus(allow_root=True) as address:
        with pytest.raises(ConfigError, match="RemoteDesktop is not on the session bus"):
            asyncio.run(open_session(address))
    with pytest.raises(ConfigError, match="cannot connect to the D-Bus session bus"):
        asyncio.run(open_session("unix:path=/nonexistent/bus"))


def serve_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "spiceserver", "serve", "--listen", "127.0.0.1:0",
         "--disable-ticketing", "--log-level", "info", *args],
        env=dict(env, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def test_without_pipewire_the_server_does_not_start() -> None:
    with GnomeSession(pipewire=False) as gnome:
        proc = serve_cli(gnome.env(), "--source", "gnome")
        try:
            output, _ = proc.communicate(timeout=60)
        finally:
            _kill(proc)
        assert proc.returncode == 2, output
        assert "PipeWire" in output, output


def test_source_desktop_picks_gnome_in_a_wayland_session(gnome: GnomeSession) -> None:
    env = gnome.env()
    env.pop("DISPLAY", None)
    proc = serve_cli(env, "--source", "desktop")
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        port = 0
        for line in proc.stdout:  # bounded: the server prints its address or exits
            lines.append(line)
            if match := re.search(r"spice://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
                break
        assert port, "".join(lines)
        assert any("desktop: GNOME Wayland session" in line for line in lines), lines
        with GtkClient(f"spice://127.0.0.1:{port}") as client:
            client.wait_for_frame(screenshot(gnome), timeout=30)
    finally:
        _kill(proc)


def test_a_monitor_size_change_recreates_the_client_surface(gnome: GnomeSession) -> None:
    # mutter's virtual monitor has one mode, but it can be turned: 1280x800 becomes 800x1280.
    # mutter 43 ends the screen cast then; the source records the monitor again.
    with served(gnome) as (_st, client, source):
        client.wait_for_frame(screenshot(gnome), timeout=20)
        since = client.event_index
        rotate_monitor(gnome, 1)
        created = client.wait_for("primary-create", timeout=30, since=since)
        assert (created["width"], created["height"]) == (800, 1280)
        assert source.size == (800, 1280)
        client.wait_for_frame(screenshot(gnome), timeout=20)
        # Input goes to the new session.
        type_keys(client, [0x23, 0x1C])
        assert _poll_until(lambda: gnome.typed == "h\n", 20), repr(gnome.typed)
