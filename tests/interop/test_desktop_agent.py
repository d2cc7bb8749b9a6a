"""spice-gtk 0.42 against ``--source desktop`` on Xorg (dummy driver): the built-in agent
bridged to the real desktop.  The X side is checked with X's own tools (xclip, xrandr,
ImageMagick), never with the server's own readers.

- the clipboard both ways: text and PNG, CLIPBOARD and PRIMARY, 5 MB (INCR both ways);
- an X clipboard owner that never answers blocks nothing;
- the client's monitors config resizes the X screen (one head, then two RandR monitors), the
  client gets the new surface pixel-exact, and the layout is put back when the client leaves;
- remote-viewer in full screen on another X server makes the desktop its screen's size.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from spiceserver.clipboard import ClipboardType, Selection
from spiceserver.sources.desktop import DesktopSource
from tests.conftest import CORPUS, data_file
from tests.interop.clients import (
    GtkClient,
    RemoteViewer,
    XorgDummy,
    Xvfb,
    have_tools,
    have_xorg_dummy,
    screenshot_array,
    x_env,
)
from tests.interop.serverthread import ServerThread
from tests.interop.test_desktop import settled_screen
from tests.interop.test_randr import current_size, listed_monitors
from tests.interop.test_remote_viewer_tshark import ARTIFACTS
from tests.spiceserver.test_x11_clipboard import SILENT_OWNER, big_text

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not have_tools("xclip", "xrandr", "import"), reason="xclip, xrandr or ImageMagick missing"
    ),
]

PASSWORD = "desktop agent"
WIDTH, HEIGHT = 1024, 768
STEP = 30.0
#: Rows at the top of remote-viewer's full screen that its toolbar covers (46 measured).
TOOLBAR = 64


@pytest.fixture
def desktop() -> Iterator[str]:
    assert have_xorg_dummy(), "these tests need root, Xorg and xserver-xorg-video-dummy"
    with XorgDummy(WIDTH, HEIGHT) as name:
        subprocess.run(["xsetroot", "-solid", "#336699"], env=x_env(name), check=True)
        yield name


@pytest.fixture
def served(desktop: str, tmp_path: Path) -> Iterator[tuple[str, ServerThread, GtkClient]]:
    clips = tmp_path / "clips"
    clips.mkdir()
    with (
        ServerThread(DesktopSource(desktop), password=PASSWORD) as st,
        GtkClient(st.uri, PASSWORD, extra_args=["--clipboard-dir", str(clips)]) as client,
    ):
        client.wait_for("agent-update", lambda e: e["connected"] and e["caps0"], timeout=STEP)
        yield desktop, st, client


def until(check: Callable[[], bool], what: str, timeout: float = STEP) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def xclip_out(display: str, selection: str, target: str) -> bytes | None:
    result = subprocess.run(
        ["xclip", "-o", "-selection", selection, "-t", target],
        env=x_env(display), capture_output=True, timeout=STEP,
    )  # fmt: skip
    return result.stdout if result.returncode == 0 else None


def xclip_in(display: str, selection: str, target: str, data: bytes) -> None:
    """``xclip -i`` owns the selection (it forks and serves until another program takes it)."""
    subprocess.run(
        ["xclip", "-i", "-selection", selection, "-t", target],
        input=data, env=x_env(display), check=True, timeout=STEP,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def client_copies(
    client: GtkClient, display: str, tmp_path: Path, selection: Selection,
    type_: ClipboardType, target: str, data: bytes,
) -> None:  # fmt: skip
    """The client's clipboard reaches X programs, exactly."""
    path = tmp_path / f"offer-{int(selection)}-{int(type_)}.bin"
    path.write_bytes(data)
    client.command("clipboard_grab", selection=int(selection), data={str(int(type_)): str(path)})
    name = "clipboard" if selection == Selection.CLIPBOARD else "primary"
    until(lambda: xclip_out(display, name, target) == data, f"{target} on the X {name}")


def desktop_copies(
    client: GtkClient, display: str, selection: Selection, type_: ClipboardType, target: str,
    data: bytes,
) -> None:  # fmt: skip
    """What an X program copies reaches the client, exactly."""
    since = len(client.events)
    name = "clipboard" if selection == Selection.CLIPBOARD else "primary"
    xclip_in(display, name, target, data)
    client.wait_for(
        "clipboard-grab",
        lambda e: e["selection"] == selection and type_ in e["types"],
        timeout=STEP, since=since,
    )  # fmt: skip
    client.command("clipboard_request", selection=int(selection), type=int(type_))
    got = client.wait_for(
        "clipboard", lambda e: e["selection"] == selection, timeout=STEP, since=since
    )
    assert (got["type"], got["size"]) == (type_, len(data))
    assert got["sha256"] == hashlib.sha256(data).hexdigest()


def test_clipboard_both_ways_with_x_programs(
    served: tuple[str, ServerThread, GtkClient], tmp_path: Path
) -> None:
    display, _st, client = served
    png = data_file(CORPUS / "testpattern_bars_1024x768.png").read_bytes()
    text = "from the client ✓\nsecond line\n".encode()
    client_copies(client, display, tmp_path, Selection.CLIPBOARD, ClipboardType.UTF8_TEXT,
                  "UTF8_STRING", text)  # fmt: skip
    client_copies(client, display, tmp_path, Selection.CLIPBOARD, ClipboardType.PNG,
                  "image/png", png)  # fmt: skip
    client_copies(client, display, tmp_path, Selection.PRIMARY, ClipboardType.UTF8_TEXT,
                  "UTF8_STRING", "primary ✓".encode())  # fmt: skip
    desktop_copies(client, display, Selection.CLIPBOARD, ClipboardType.UTF8_TEXT, "UTF8_STRING",
                   "from xclip ✓".encode())  # fmt: skip
    desktop_copies(client, display, Selection.CLIPBOARD, ClipboardType.PNG, "image/png", png)
    desktop_copies(client, display, Selection.PRIMARY, ClipboardType.UTF8_TEXT, "UTF8_STRING",
                   b"xclip primary")  # fmt: skip
    big = big_text(5 * 1024 * 1024)  # past 256 KiB: INCR on the X side, both ways
    client_copies(client, display, tmp_path, Selection.CLIPBOARD, ClipboardType.UTF8_TEXT,
                  "UTF8_STRING", big)  # fmt: skip
    desktop_copies(client, display, Selection.CLIPBOARD, ClipboardType.UTF8_TEXT, "UTF8_STRING",
                   big)  # fmt: skip


def test_an_x_owner_that_never_answers_blocks_nothing(
    served: tuple[str, ServerThread, GtkClient], tmp_path: Path
) -> None:
    display, _st, client = served
    silent = subprocess.Popen(
        [sys.executable, "-c", SILENT_OWNER, display, "CLIPBOARD"],
        stdout=subprocess.PIPE, env=x_env(display),
    )  # fmt: skip
    try:
        assert silent.stdout is not None and silent.stdout.readline() == b"owned\n"
        # Its TARGETS never come, so nothing is offered; the PRIMARY still works both ways,
        # and so does the display (a change on the X screen reaches the client).
        desktop_copies(client, display, Selection.PRIMARY, ClipboardType.UTF8_TEXT,
                       "UTF8_STRING", b"still served")  # fmt: skip
        client_copies(client, display, tmp_path, Selection.PRIMARY, ClipboardType.UTF8_TEXT,
                      "UTF8_STRING", b"and back")  # fmt: skip
        subprocess.run(["xsetroot", "-solid", "#993366"], env=x_env(display), check=True)
        client.wait_for_frame(settled_screen(display), timeout=STEP)
    finally:
        silent.kill()
        silent.wait()


def test_the_desktop_follows_the_clients_monitors(desktop: str, tmp_path: Path) -> None:
    with (
        ServerThread(DesktopSource(desktop), password=PASSWORD) as st,
        GtkClient(st.uri, PASSWORD) as client,
    ):
        client.wait_for("agent-update", lambda e: e["connected"] and e["caps0"], timeout=STEP)
        client.wait_channel_open("display")
        since = len(client.events)
        client.command(
            "monitors", displays=[{"id": 0, "x": 0, "y": 0, "width": 1280, "height": 720}]
        )
        until(lambda: current_size(desktop) == (1280, 720), "xrandr showing 1280x720")
        client.wait_for(
            "primary-create", lambda e: (e["width"], e["height"]) == (1280, 720),
            timeout=STEP, since=since,
        )  # fmt: skip
        client.wait_for_frame(settled_screen(desktop), timeout=STEP)

        since = len(client.events)
        client.command(
            "monitors",
            displays=[
                {"id": 0, "x": 0, "y": 0, "width": 1280, "height": 720},
                {"id": 1, "x": 1280, "y": 0, "width": 800, "height": 600},
            ],
        )
        until(
            lambda: listed_monitors(desktop) == [(0, 0, 1280, 720), (1280, 0, 800, 600)],
            "two RandR monitors",
        )
        client.wait_for(
            "primary-create", lambda e: (e["width"], e["height"]) == (2080, 720),
            timeout=STEP, since=since,
        )  # fmt: skip
        client.wait_for_frame(settled_screen(desktop), timeout=STEP)
    # The only client left: the original layout is back.
    until(lambda: current_size(desktop) == (WIDTH, HEIGHT), "the original 1024x768")


def test_remote_viewer_in_full_screen_resizes_the_desktop(desktop: str) -> None:
    """remote-viewer full screen on a 1280x800 X server: the shared desktop takes that size and
    the viewer's screen shows it unscaled, pixel for pixel."""
    with (
        ServerThread(DesktopSource(desktop), password=PASSWORD) as st,
        Xvfb(width=1280, height=800) as viewer_display,
        RemoteViewer(
            viewer_display,
            "127.0.0.1",
            st.port,
            PASSWORD,
            title="full",
            fullscreen=True,
        ) as viewer,
    ):
        until(lambda: current_size(desktop) == (1280, 800), "the desktop at 1280x800", 60)
        expected = settled_screen(desktop)  # B,G,R

        def viewer_shows_it() -> bool:
            # virt-viewer draws its full-screen toolbar over the top of the picture (it hides
            # only once the pointer has moved): the rest must be the desktop, unscaled.
            screen = screenshot_array(viewer_display)[..., ::-1]  # R,G,B → B,G,R
            return screen.shape == expected.shape and np.array_equal(
                screen[TOOLBAR:], expected[TOOLBAR:]
            )

        until(viewer_shows_it, "remote-viewer showing the desktop exactly", 60)
        viewer.screenshot(ARTIFACTS / "remote-viewer-full-screen-desktop.png")
