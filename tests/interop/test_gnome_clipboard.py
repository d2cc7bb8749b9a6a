"""The clipboard between spice-gtk and Wayland programs of a headless GNOME (mutter) session.

The server shares the session through :class:`~spiceserver.sources.gnome.GnomeSource`, whose
clipboard goes through mutter's remote desktop selection methods
(:mod:`spiceserver.gnome_clipboard`).  The Wayland side is wl-clipboard's ``wl-copy`` and
``wl-paste``, run as the session's user: mutter 43 has no data-control protocol, so they
take the keyboard focus with a surface of their own for a moment (wl-clipboard's fallback),
which headless mutter gives them.  Only CLIPBOARD: mutter's session API has no PRIMARY.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spiceserver.clipboard import ClipboardType, Selection
from spiceserver.gnome_input import GnomeInput
from spiceserver.sources.gnome import GnomeSource
from tests.conftest import CORPUS, data_file
from tests.interop.clients import GtkClient, _kill
from tests.interop.gnome import GnomeSession, have_gnome_tools, rotate_monitor
from tests.interop.serverthread import ServerThread
from tests.spiceserver.test_x11_clipboard import big_text

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not have_gnome_tools(), reason="needs root and mutter, pipewire, wireplumber, foot"
    ),
]

PASSWORD = "gnome clipboard"
#: Bound of each step (one copy reaching the other side).
STEP = 20.0
TEXT = "from the client ✓\nsecond line\n".encode()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[GnomeSession, GtkClient]]:
    assert shutil.which("wl-copy") and shutil.which("wl-paste"), "needs wl-clipboard"
    clips = tmp_path / "clips"
    clips.mkdir()
    with GnomeSession(1024, 768) as gnome:
        source = GnomeSource(bus_address=gnome.bus_address, pipewire_remote=gnome.pipewire_remote)
        try:
            with (
                ServerThread(source, password=PASSWORD, on_input=GnomeInput(source)) as st,
                GtkClient(st.uri, PASSWORD, extra_args=["--clipboard-dir", str(clips)]) as client,
            ):
                # Twice: spice-gtk signals the agent's connection, then again once its
                # capabilities came; a grab before that is dropped (spice-gtk:
                # src/channel-main.c agent_clipboard_grab needs CLIPBOARD_BY_DEMAND).
                for _ in range(2):
                    client.wait_for("agent-update", lambda e: e["connected"], timeout=STEP)
                yield gnome, client
        finally:
            print(gnome.logs())  # shown when the test failed


def wl_paste(gnome: GnomeSession, mime: str) -> bytes | None:
    result = subprocess.run(
        gnome.user_command("wl-paste", "--no-newline", "--type", mime),
        capture_output=True, timeout=STEP, check=False,
    )  # fmt: skip
    return result.stdout if result.returncode == 0 else None


def client_copies(
    gnome: GnomeSession, client: GtkClient, tmp_path: Path, type_: ClipboardType, mime: str,
    data: bytes,
) -> None:  # fmt: skip
    """What the client copies, a Wayland program pastes, exactly."""
    path = tmp_path / f"offer-{int(type_)}-{len(data)}.bin"
    path.write_bytes(data)
    client.command(
        "clipboard_grab", selection=int(Selection.CLIPBOARD), data={str(int(type_)): str(path)}
    )
    deadline = time.monotonic() + STEP
    while (pasted := wl_paste(gnome, mime)) != data:
        assert time.monotonic() < deadline, f"wl-paste --type {mime} gave {pasted!r:.200}"
        time.sleep(0.1)


def desktop_copies(
    gnome: GnomeSession, client: GtkClient, type_: ClipboardType, mime: str, data: bytes
) -> None:
    """What a Wayland program copies reaches the client, exactly."""
    since = len(client.events)
    # --foreground: wl-copy serves until killed (it would fork and outlive the test).
    copier = subprocess.Popen(
        gnome.user_command("wl-copy", "--foreground", "--type", mime),
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert copier.stdin is not None
        copier.stdin.write(data)
        copier.stdin.close()
        client.wait_for(
            "clipboard-grab",
            lambda e: e["selection"] == Selection.CLIPBOARD and type_ in e["types"],
            timeout=STEP, since=since,
        )  # fmt: skip
        client.command("clipboard_request", selection=int(Selection.CLIPBOARD), type=int(type_))
        got = client.wait_for(
            "clipboard", lambda e: e["selection"] == Selection.CLIPBOARD, timeout=STEP,
            since=since,
        )  # fmt: skip
        assert (got["type"], got["size"]) == (type_, len(data))
        assert got["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        _kill(copier)


def test_clipboard_both_ways_with_wayland_programs(
    served: tuple[GnomeSession, GtkClient], tmp_path: Path
) -> None:
    gnome, client = served
    png = data_file(CORPUS / "testpattern_bars_1024x768.png").read_bytes()
    client_copies(gnome, client, tmp_path, ClipboardType.UTF8_TEXT, "text/plain;charset=utf-8",
                  TEXT)  # fmt: skip
    client_copies(gnome, client, tmp_path, ClipboardType.PNG, "image/png", png)
    desktop_copies(gnome, client, ClipboardType.UTF8_TEXT, "text/plain;charset=utf-8",
                   "from wl-copy ✓".encode())  # fmt: skip
    desktop_copies(gnome, client, ClipboardType.PNG, "image/png", png)
    big = big_text(3 * 1024 * 1024)  # many times a pipe's 64 KiB, both ways
    client_copies(gnome, client, tmp_path, ClipboardType.UTF8_TEXT, "UTF8_STRING", big)
    desktop_copies(gnome, client, ClipboardType.UTF8_TEXT, "text/plain", big)


def test_the_clipboard_follows_the_session_a_monitor_change_brings(
    served: tuple[GnomeSession, GtkClient], tmp_path: Path
) -> None:
    """mutter 43 ends the remote desktop session on a monitor change; the source opens a new
    one, and the clipboard is enabled there anew, the client's grab with it."""
    gnome, client = served
    client_copies(gnome, client, tmp_path, ClipboardType.UTF8_TEXT, "text/plain", TEXT)
    since = client.event_index
    rotate_monitor(gnome, 1)
    # (The new session may show the old size for a frame first: the rotated one follows.)
    client.wait_for(
        "primary-create", lambda e: (e["width"], e["height"]) == (768, 1024), timeout=30,
        since=since,
    )  # fmt: skip
    after = "after the monitor change ✓".encode()
    client_copies(gnome, client, tmp_path, ClipboardType.UTF8_TEXT, "text/plain", after)
    desktop_copies(gnome, client, ClipboardType.UTF8_TEXT, "text/plain;charset=utf-8", b"back")
