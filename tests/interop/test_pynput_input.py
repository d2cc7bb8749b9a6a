"""The pynput input backend on a real Xvfb, beyond the tests it shares with XTEST.

``tests/interop/test_desktop.py`` runs its keyboard and pointer tests with both backends
(typing into xterm, every E0 key, exact-pixel clicks, buttons 8/9, the wheel, locks both
ways, release on disconnect).  Here: every key of the X table reaches X as the keycode the
XTEST table gives; ``close()`` releases what is held; server-mode relative motion; the choice
``--input auto`` makes; the errors for no XTEST and no pynput; and the whole CLI
(``serve --source desktop:N --input pynput``, no ``$DISPLAY``) typing into an xterm from
spice-gtk.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spiceserver.desktop_input import X11Input
from spiceserver.errors import ConfigError
from spiceserver.injector import ThreadedInput
from spiceserver.input import choose_desktop_input
from spiceserver.keymap import scancode_to_x_keycode
from spiceserver.keytables import NOT_ON, X_KEYSYMS
from spiceserver.protocol.enums import MouseButton
from spiceserver.protocol.events import ButtonEvent, KeyEvent, PointerMotion, PointerPosition
from spiceserver.pynput_input import PynputInput
from spiceserver.sources.desktop import open_display
from tests.interop.clients import GtkClient, Xvfb, _kill, _poll_until, have_tools, x_env
from tests.interop.serverprocess import ServerProcess
from tests.interop.test_desktop import BACKENDS, KeyRecorder, pointer, wait_window

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not have_tools("Xvfb", "xterm", "xdotool"), reason="Xvfb, xterm or xdotool missing"
    ),
]

PASSWORD = "pynput"


class XvfbWithoutXtest(Xvfb):
    def command(self, displayfd: int) -> list[str]:
        return [*super().command(displayfd), "-extension", "XTEST"]


@pytest.fixture
def display() -> Iterator[str]:
    with Xvfb(800, 600) as name:
        yield name


def test_every_x_table_key_is_the_xtest_key(display: str) -> None:
    """Each scancode's keysym lands on the keycode XTEST would press (Xvfb's US keymap)."""
    from Xlib import X

    recorder = KeyRecorder(display, (0, 0, 800, 600))
    try:
        with PynputInput(display) as handler:
            assert handler.unavailable == set()  # Xvfb's keymap has every keysym of the table
            PynputInput(display)  # a second one imports nothing again
            for scancode in sorted(X_KEYSYMS):
                handler(KeyEvent(scancode, True))
                press = recorder.wait(lambda e: e.type == X.KeyPress)
                handler(KeyEvent(scancode, False))
                recorder.wait(lambda e, k=press.detail: e.type == X.KeyRelease and e.detail == k)
                assert press.detail == scancode_to_x_keycode(scancode), hex(scancode)
            assert not handler.held_keys
    finally:
        recorder.close()
    assert set(NOT_ON["xorg"]).isdisjoint(X_KEYSYMS)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_close_releases_held_keys_and_buttons(display: str, name: str) -> None:
    conn = open_display(display)
    shift = 50  # Shift_L's keycode

    def shift_down() -> bool:
        return bool(conn.query_keymap()[shift // 8] & (1 << (shift % 8)))

    def button1_down() -> bool:
        return bool(conn.screen().root.query_pointer().mask & (1 << 8))

    try:
        handler = BACKENDS[name](display).start()
        handler(PointerPosition(100, 100, 0))
        handler(KeyEvent(0x2A, True))
        handler(ButtonEvent(MouseButton.LEFT, True, 0))
        assert _poll_until(lambda: shift_down() and button1_down(), 20)
        handler.close()
        assert not shift_down() and not button1_down()
        handler.close()  # idempotent
    finally:
        conn.close()


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_relative_motion_moves_by_exactly_that(display: str, name: str) -> None:
    handler: ThreadedInput
    with BACKENDS[name](display) as handler:
        handler(PointerPosition(300, 200, 0))
        assert _poll_until(lambda: pointer(display) == (300, 200), 20)
        handler(PointerMotion(25, -40, 0))
        handler(PointerMotion(-5, 10, 0))
        assert _poll_until(lambda: pointer(display) == (320, 170), 20), pointer(display)


def test_auto_picks_xtest_where_there_is_xtest(display: str) -> None:
    assert isinstance(choose_desktop_input("auto", display), X11Input)
    assert isinstance(choose_desktop_input("pynput", display), PynputInput)


def test_without_xtest_auto_falls_to_pynput_which_says_why_it_cannot_either() -> None:
    with XvfbWithoutXtest(640, 480) as display:
        backend = choose_desktop_input("auto", display)
        assert isinstance(backend, PynputInput)
        with pytest.raises(ConfigError, match="pynput's X backend injects through XTEST"):
            backend.start()
        # Looking is still allowed: the lock state is read from the LEDs.
        view_only = PynputInput(display, view_only=True).start()
        view_only.close()


def test_missing_pynput_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynput", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'spiceserver\[pynput\]'"):
        PynputInput(platform="win32").start()


def test_cli_types_into_xterm_through_pynput(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --source desktop:N --input pynput`` with no $DISPLAY: spice-gtk types into an
    xterm (shifted and E0 keys) and the log names the backend."""
    monkeypatch.delenv("DISPLAY", raising=False)  # pynput must get the source's display
    out = tmp_path / "typed.txt"
    xterm = subprocess.Popen(
        ["xterm", "-geometry", "80x24+0+0", "-title", "typing", "-e", "sh", "-c",
         f"stty -echo; cat > {out}"],
        env=x_env(display), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wx, wy, ww, wh = wait_window(display, "typing")
        args = ["--source", f"desktop:{display}", "--input", "pynput", "--log-level", "info"]
        with ServerProcess(args, PASSWORD) as server, GtkClient(server.uri, PASSWORD) as client:
            client.wait_channel_open("inputs", timeout=20)
            client.position(wx + ww // 2, wy + wh // 2)  # focus follows the pointer (no WM)
            assert _poll_until(lambda: pointer(display) == (wx + ww // 2, wy + wh // 2), 20)
            for key in [0x14, 0x23, 0x17, 0x1F]:  # "this"
                client.key_press_and_release(key)
            client.key_press(0x2A)  # Shift + 1: "!"
            client.key_press_and_release(0x02)
            client.key_release(0x2A)
            client.key_press_and_release(0x14B)  # E0 Left
            client.key_press_and_release(0x11C)  # E0 keypad Enter
            expected = "this!\x1b[D\n"
            assert _poll_until(lambda: out.exists() and out.read_text() == expected, 20), repr(
                out.read_text() if out.exists() else None
            )
            log = "".join(server.log)
            assert "input backend: pynput (--input pynput)" in log, log[-2000:]
    finally:
        _kill(xterm)
