"""Scrolls as COPY_BITS with spice-gtk: its surface equals the source after every scroll.

spice-gtk applies COPY_BITS in its canvas (spice-common ``canvas_copy_bits`` →
``spice_pixman_copy_rect``, which copies overlapping rows in the safe direction); these tests
check that what it ends up with is the source's frame pixel for pixel, and that the server did
send moves (the session metrics count them).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spiceserver import NumpySource, Rect
from spiceserver.sources.desktop import DesktopSource
from tests.interop import test_desktop
from tests.interop.clients import GtkClient, have_spice_gtk, have_tools, x_env
from tests.interop.serverthread import ServerThread
from tests.interop.test_desktop import served, settled_screen, wait_window, x
from tests.spiceserver.test_scroll import terminal

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not have_spice_gtk(), reason="spice-gtk introspection missing"),
]

PASSWORD = "scroll"

# The desktop tests' fixtures: a fresh Xvfb per test, and X clients killed at the end.
display = test_desktop.display
apps = test_desktop.apps


def copy_bits_sent(st: ServerThread) -> int:
    server = st.server
    assert server is not None
    return int(st.call(lambda: sum(s.metrics.copy_bits for s in server.sessions())))


def test_numpy_terminal_scrolls_both_ways_pixel_exact() -> None:
    width, height, line = 640, 400, 16
    page = terminal(height + 200 * line, width, seed=7, line=line)
    source = NumpySource(frame=page[:height].copy())
    text = Rect(0, line, width, height - 2 * line)
    position = 0  # first page line shown in the text area

    def scroll(lines: int) -> np.ndarray:
        """Move the text by ``lines`` (positive: the page moves up, new lines below)."""
        nonlocal position
        position += lines
        frame = source.frame
        dy = -lines * line
        rows = frame[text.y : text.bottom]
        rows[...] = np.roll(rows, dy, axis=0)
        top = line + position * line
        strip = Rect(0, text.bottom + dy, width, -dy) if dy < 0 else Rect(0, text.y, width, dy)
        offset = top + (strip.y - text.y)
        frame[strip.y : strip.bottom] = page[offset : offset + strip.height]
        source.scroll(text, dy, [strip])
        return frame.copy()

    with ServerThread(source, password=PASSWORD) as st, GtkClient(st.uri, PASSWORD) as client:
        client.wait_for_frame(source.frame, timeout=20)
        for lines in (1, 1, 3, -1, -2, 5, 1, -4, 12, -12):
            client.wait_for_frame(st.call(lambda n=lines: scroll(n)), timeout=20)
        sent = copy_bits_sent(st)
        assert sent >= 8
        # A burst the client cannot follow one by one: moves queue or merge into damage.
        for lines in (1, 1, 1, -1, 2, 1, 1, -3, 1, 1) * 3:
            expected = st.call(lambda n=lines: scroll(n))
        client.wait_for_frame(expected, timeout=20)
        assert copy_bits_sent(st) > sent


def _press(name: str, keys: list[str]) -> None:
    x(name, "xdotool", "key", "--delay", "40", *keys)


@pytest.mark.skipif(
    not have_tools("Xvfb", "xterm", "xsetroot", "xdotool", "import", "less"),
    reason="Xvfb, xterm, xdotool, ImageMagick or less missing",
)
@pytest.mark.parametrize("use_damage", [True, False], ids=["damage", "polling"])
def test_xterm_scrolling_is_pixel_exact_and_sent_as_copy_bits(
    display: str, apps: Callable[..., Any], tmp_path: Path, use_damage: bool
) -> None:
    page = tmp_path / "page.txt"
    words = "lorem ipsum dolor sit amet "
    page.write_text(
        "".join(f"{i:5d}  {words * (1 + i % 3)}{i * 7919 % 10007}\n" for i in range(3000))
    )
    x(display, "xsetroot", "-solid", "#304050")
    apps("xterm", "-geometry", "80x30+30+20", "-title", "scroll-less", "-e", "less", str(page))
    log = tmp_path / "log.txt"
    log.write_text("")
    apps("xterm", "-geometry", "60x20+560+300", "-title", "scroll-tail", "-e",
         "tail", "-n", "+1", "-F", str(log))  # fmt: skip
    wait_window(display, "scroll-less")
    wait_window(display, "scroll-tail")
    source = DesktopSource(display, use_damage=use_damage)
    with served(display, source, with_input=False) as (st, client, _handler):
        client.wait_for_frame(settled_screen(display), timeout=30)
        less = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", "scroll-less"],
            env=x_env(display), capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()[0]  # fmt: skip
        x(display, "xdotool", "mousemove", "200", "200")
        x(display, "xdotool", "windowfocus", less)
        for keys in (["Down"] * 12, ["Up"] * 5, ["d"], ["u"], ["Down"] * 3, ["Up"] * 3):
            _press(display, keys)
            client.wait_for_frame(settled_screen(display), timeout=30)
        less_moves = copy_bits_sent(st)
        assert source.stats["scrolls"] > 0
        assert less_moves > 0
        # Output pouring into a terminal: lines arrive between grabs, many scrolls per second.
        with log.open("a") as out:
            for burst in range(5):
                for i in range(40):
                    out.write(f"burst {burst} line {i} {'=' * (i % 50)}\n")
                    out.flush()
                    time.sleep(0.01)
        client.wait_for_frame(settled_screen(display), timeout=30)
        assert copy_bits_sent(st) > less_moves
