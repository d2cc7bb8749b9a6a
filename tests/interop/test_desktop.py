"""The X11 desktop source and input against a real Xvfb, real X applications and spice-gtk.

The keyboard and pointer tests run once per input backend: XTEST (``X11Input``) and pynput
(``PynputInput``, whose X backend presses keysyms), with the same expectations.

Each test gets its own Xvfb (``-displayfd`` picks a free number), so lock LEDs, windows and
the pointer never leak between tests.  Expected pixels come from ImageMagick's ``import``,
not from mss, so the source is not checked against itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spiceserver.desktop_input import X11Input
from spiceserver.injector import ThreadedInput
from spiceserver.pacing import BURST
from spiceserver.pynput_input import PynputInput
from spiceserver.sources.desktop import DesktopSource, open_display
from tests.interop.clients import (
    BUTTON_LEFT,
    BUTTON_RIGHT,
    LOCK_CAPS,
    LOCK_NUM,
    GtkClient,
    XorgDummy,
    Xvfb,
    _kill,
    _poll_until,
    have_tools,
    have_xorg_dummy,
    screenshot_array,
    x_env,
)
from tests.interop.serverthread import ServerThread

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not have_tools("Xvfb", "xterm", "xsetroot", "xdotool", "import", "xrandr"),
        reason="Xvfb, xterm, xsetroot, xdotool, ImageMagick or xrandr missing",
    ),
]

PASSWORD = "desktop"
WIDTH, HEIGHT = 1024, 768


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(params=["xvfb", "xorg"])
def display(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test on Xvfb and on a real Xorg (dummy video driver), where that can run."""
    if request.param == "xorg" and not have_xorg_dummy():
        pytest.skip("Xorg with the dummy driver needs root and xserver-xorg-video-dummy")
    server = XorgDummy if request.param == "xorg" else Xvfb
    with server(WIDTH, HEIGHT) as name:
        yield name


#: ``--input`` name → the backend class the keyboard and pointer tests run with.
BACKENDS: dict[str, Callable[[str], ThreadedInput]] = {"xtest": X11Input, "pynput": PynputInput}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Callable[[str], ThreadedInput]:
    """Each input test with XTEST and with pynput."""
    return BACKENDS[request.param]


@pytest.fixture
def apps(display: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start X clients on the test's display; all are killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            argv,
            env=x_env(display),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        _kill(proc)


def x(display: str, *argv: str) -> str:
    result = subprocess.run(
        argv, env=x_env(display), capture_output=True, text=True, timeout=20, check=True
    )
    return result.stdout


def wait_window(display: str, name: str, timeout: float = 20.0) -> tuple[int, int, int, int]:
    """The geometry (x, y, w, h) of the first viewable window called ``name``."""
    found: list[str] = []

    def search() -> bool:
        result = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", name],
            env=x_env(display), capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        found[:] = result.stdout.split()
        return bool(found)

    assert _poll_until(search, timeout), f"no window {name!r} on {display}"
    shape = x(display, "xdotool", "getwindowgeometry", "--shell", found[0])
    fields = dict(line.split("=", 1) for line in shape.split())
    return int(fields["X"]), int(fields["Y"]), int(fields["WIDTH"]), int(fields["HEIGHT"])


def x_screen(display: str) -> np.ndarray:
    """The root window as (H, W, 3) B,G,R, through ImageMagick."""
    return screenshot_array(display)[..., ::-1].copy()


def settled_screen(display: str, timeout: float = 20.0) -> np.ndarray:
    """The root window once two screenshots in a row agree (applications done drawing)."""
    shots = [x_screen(display)]

    def same() -> bool:
        shots.append(x_screen(display))
        return np.array_equal(shots[-1], shots[-2])

    assert _poll_until(same, timeout, interval=0.1), "the X screen never settled"
    return shots[-1]


def pointer(display: str) -> tuple[int, int]:
    fields = dict(item.split(":") for item in x(display, "xdotool", "getmouselocation").split()[:2])
    return int(fields["x"]), int(fields["y"])


@contextlib.contextmanager
def served(
    display: str,
    source: DesktopSource | None = None,
    *,
    with_input: bool = True,
    backend: Callable[[str], ThreadedInput] = X11Input,
) -> Iterator[tuple[ServerThread, GtkClient, ThreadedInput | None]]:
    """A server showing ``display`` (with ``backend``'s input) and a spice-gtk client on it."""
    source = source or DesktopSource(display)
    with contextlib.ExitStack() as stack:
        handler = stack.enter_context(backend(display)) if with_input else None
        st = stack.enter_context(ServerThread(source, password=PASSWORD, on_input=handler))
        server = st.server
        assert server is not None
        if handler is not None:
            handler.on_locks = lambda mods: st.loop.call_soon_threadsafe(
                server.set_key_modifiers, mods
            )
        client = stack.enter_context(GtkClient(st.uri, PASSWORD))
        for channel in ("main", "display", "inputs", "cursor"):
            client.wait_channel_open(channel, timeout=20)
        yield st, client, handler


class KeyRecorder:
    """A python-xlib window that records the key and button events X delivers to it."""

    def __init__(self, display: str, geometry: tuple[int, int, int, int]) -> None:
        from Xlib import X

        self.conn = open_display(display)
        screen = self.conn.screen()
        self.window = screen.root.create_window(
            *geometry, 0, screen.root_depth,
            background_pixel=screen.white_pixel,
            override_redirect=True,
            event_mask=X.KeyPressMask | X.KeyReleaseMask | X.ButtonPressMask
            | X.ButtonReleaseMask | X.StructureNotifyMask,
        )  # fmt: skip
        self.window.map()
        self.conn.sync()
        self.events: list[Any] = []
        self.wait(lambda e: e.type == X.MapNotify)
        self.conn.set_input_focus(self.window, X.RevertToParent, X.CurrentTime)
        self.conn.sync()

    def wait(self, predicate: Callable[[Any], bool], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self.conn.pending_events():
                event = self.conn.next_event()
                self.events.append(event)
                if predicate(event):
                    return event
            time.sleep(0.01)
        raise TimeoutError(f"no matching X event in {timeout}s; got {self.events[-10:]}")

    def keysym(self, keycode: int) -> int:
        return int(self.conn.keycode_to_keysym(keycode, 0))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.window.destroy()
            self.conn.sync()
        self.conn.close()


def keysym(name: str) -> int:
    from Xlib import XK

    value = XK.string_to_keysym(name)
    assert value, name
    return int(value)


# ------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("use_damage", [True, False], ids=["damage", "polling"])
def test_frame_equals_the_x_screen(
    display: str, apps: Callable[..., Any], use_damage: bool
) -> None:
    x(display, "xsetroot", "-solid", "#336699")
    apps("xterm", "-geometry", "60x10+40+30", "-title", "frame-test", "-e", "sh", "-c",
         "ls -la /; sleep 600")  # fmt: skip
    wait_window(display, "frame-test")
    expected = settled_screen(display)
    source = DesktopSource(display, use_damage=use_damage)
    with served(display, source, with_input=False) as (_st, client, _handler):
        assert ("no DAMAGE (disabled): polling the screen" in source.fallbacks) != use_damage
        client.wait_for_frame(expected, timeout=30)
        # A change after the first frame arrives as an update (damage or polling).
        x(display, "xsetroot", "-solid", "#aa5500")
        apps("xterm", "-geometry", "20x5+500+400", "-title", "second", "-e", "sleep", "600")
        wait_window(display, "second")
        client.wait_for_frame(settled_screen(display), timeout=30)


def test_grabber_direct_request_gives_the_x_pixels() -> None:
    """The grabber's own XShmGetImage (x11_grab.ShmConnection) gives what ImageMagick reads,
    for boxes small and whole; a box off the screen raises ScreenShrank (the capture follows
    a shrunk screen on it) and the next grab works."""
    from spiceserver.sources.base import Rect
    from spiceserver.sources.x11_capture import open_display
    from spiceserver.sources.x11_grab import Grabber, ScreenShrank, ShmConnection

    with Xvfb(WIDTH, HEIGHT) as name:
        x(name, "xsetroot", "-solid", "#336699")
        proc = subprocess.Popen(
            ["xterm", "-geometry", "30x5+100+50", "-title", "grab-test", "-e", "sh", "-c",
             "echo spice; sleep 600"],
            env=x_env(name), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_window(name, "grab-test")
            expected = settled_screen(name)
            grabber = Grabber(name)
            try:
                boxes = [Rect(0, 0, 8, 8), Rect(100, 50, 40, 20), Rect(0, 0, WIDTH, HEIGHT)]
                boxes += [Rect(WIDTH - 1, HEIGHT - 1, 1, 1), Rect(90, 40, 200, 80)]
                for box in boxes:
                    pixels = grabber.grab(box)
                    want = expected[box.y : box.bottom, box.x : box.right]
                    assert np.array_equal(pixels[..., :3], want), box
                assert isinstance(grabber._shm, ShmConnection)
                # X sends MappingNotify to every client, ours included, when a key is
                # remapped (xdotool does so): taken for a reply, it shifted later grabs.
                other = open_display(name)
                keycode = other.display.info.max_keycode
                other.change_keyboard_mapping(keycode, [(0x1008FF11,)])
                other.sync()
                other.close()
                for box in boxes:
                    want = expected[box.y : box.bottom, box.x : box.right]
                    assert np.array_equal(grabber.grab(box)[..., :3], want), box
                with pytest.raises(ScreenShrank):
                    grabber.grab(Rect(WIDTH - 10, HEIGHT - 10, 20, 20))
                box = boxes[1]
                want = expected[box.y : box.bottom, box.x : box.right]
                assert np.array_equal(grabber.grab(box)[..., :3], want)
            finally:
                grabber.close()
        finally:
            _kill(proc)


def white_window(conn: Any, left: int, top: int, width: int, height: int) -> Any:
    """A white override-redirect window, mapped (python-xlib)."""
    screen = conn.screen()
    window = screen.root.create_window(
        left, top, width, height, 0, screen.root_depth,
        background_pixel=screen.white_pixel, override_redirect=True,
    )  # fmt: skip
    window.map()
    conn.sync()
    return window


@pytest.mark.parametrize("on_loop", [True, False], ids=["loop", "thread"])
def test_small_changes_on_the_loop_big_ones_on_the_thread(
    display: str, apps: Callable[..., Any], on_loop: bool
) -> None:
    """Small damage is grabbed and sent from the event loop (x11_loop.py), a new window
    from the capture thread; either way, and with everything on the thread, spice-gtk ends
    with exactly the X screen."""

    x(display, "xsetroot", "-solid", "#204060")
    source = DesktopSource(display, capture_on_loop=on_loop)
    with served(display, source, with_input=False) as (_st, client, _handler):
        client.wait_for_frame(settled_screen(display), timeout=30)
        driver = source._driver
        assert (driver is not None) == on_loop
        loop_grabs = 0 if driver is None else driver.loop_grabs
        conn = open_display(display)
        try:
            window = white_window(conn, 300, 200, 400, 300)
            client.wait_for_frame(settled_screen(display), timeout=30)  # a big change
            gc = window.create_gc()
            for i in range(5):  # glyph-sized fills, each its own update
                gc.change(foreground=0x10305070 + 0x111111 * i)
                window.fill_rectangle(gc, 20 + 50 * i, 40, 30, 16)
                conn.sync()
                client.wait_for_frame(settled_screen(display), timeout=30)
            window.unmap()
            conn.sync()
            window.destroy()
            conn.sync()
        finally:
            conn.close()
        client.wait_for_frame(settled_screen(display), timeout=30)
        if driver is not None:
            assert driver.loop_grabs >= loop_grabs + 5
            assert driver.thread_jobs >= 1  # the window's map


def test_a_change_drawn_in_pieces_goes_out_at_once_then_at_max_fps(display: str) -> None:
    """After a pause, the pieces a program draws one change in (xterm: prompt, scroll, line)
    are grabbed and shown back to back, up to ``pacing.BURST`` of them; the next waits for
    the ``max_fps`` schedule.  At 1 fps, without the burst each piece after the first would
    reach spice-gtk a second later."""
    x(display, "xsetroot", "-solid", "#204060")
    source = DesktopSource(display, max_fps=1.0)
    with served(display, source, with_input=False) as (_st, client, _handler):
        conn = open_display(display)
        try:
            window = white_window(conn, 100, 100, 600, 100)
            client.wait_for_frame(settled_screen(display), timeout=30)
            driver = source._driver
            assert driver is not None
            capture = driver.capture
            # a pause long enough to bank the whole burst (the schedule BURST - 1 slots behind)
            assert _poll_until(
                lambda: capture.next_grab <= time.monotonic() - (BURST - 1) * capture.interval,
                timeout=10,
                interval=0.05,
            )
            gc = window.create_gc()
            drawn: list[float] = []
            shown: list[float] = []
            for i in range(BURST + 1):
                left, top = 100 + 40 + 100 * i, 100 + 30
                gc.change(foreground=0x00305070 + 0x222222 * i)
                since = len(client.events)
                window.fill_rectangle(gc, 40 + 100 * i, 30, 30, 20)
                conn.sync()
                drawn.append(time.monotonic())

                def covers(e: dict[str, Any], left: int = left, top: int = top) -> bool:
                    return e["x"] <= left < e["x"] + e["w"] and e["y"] <= top < e["y"] + e["h"]

                event = client.wait_for("invalidate", covers, timeout=10, since=since)
                shown.append(event["t"])
        finally:
            conn.close()
        late = [round(b - a, 3) for a, b in zip(drawn, shown, strict=True)]
        # the burst: each piece well inside one interval (1 s)
        assert max(late[:BURST]) < 0.5 * capture.interval, late
        # then the schedule: the grab after the burst is an interval after its first
        assert shown[BURST] - drawn[0] >= 0.9 * capture.interval, late
        client.wait_for_frame(settled_screen(display), timeout=30)


def test_screen_size_change_recreates_the_surface(display: str) -> None:
    x(display, "xsetroot", "-solid", "#123456")
    with served(display, with_input=False) as (_st, client, _handler):
        client.wait_for_frame(settled_screen(display), timeout=30)
        subprocess.run(
            ["xrandr", "--fb", "800x600"],
            env=x_env(display),
            capture_output=True,
            timeout=20,
            check=False,
        )  # Xvfb shrinks the root, then complains
        client.wait_for(
            "primary-create", lambda e: (e["width"], e["height"]) == (800, 600), timeout=20
        )
        x(display, "xsetroot", "-solid", "#654321")
        expected = settled_screen(display)
        assert expected.shape[:2] == (600, 800)
        client.wait_for_frame(expected, timeout=30)


def test_typed_keys_reach_xterm(
    display: str, apps: Callable[..., Any], tmp_path: Path, backend: Callable[[str], ThreadedInput]
) -> None:
    out = tmp_path / "typed.txt"
    apps("xterm", "-geometry", "80x24+0+0", "-title", "typing", "-e", "sh", "-c",
         f"stty -echo; cat > {out}")  # fmt: skip
    wx, wy, ww, wh = wait_window(display, "typing")
    with served(display, backend=backend) as (_st, client, _handler):
        client.position(wx + ww // 2, wy + wh // 2)  # focus follows the pointer (no WM)
        assert _poll_until(lambda: pointer(display) == (wx + ww // 2, wy + wh // 2), 20)
        shift = 0x2A
        keys: list[int | tuple[int, int]] = [
            (shift, 0x23), 0x12, 0x26, 0x26, 0x18, 0x33, 0x39,  # "Hello, "
            (shift, 0x11), 0x18, 0x13, 0x26, 0x20, (shift, 0x02), 0x1C,  # "World!\n"
            0x148, 0x14B, 0x147, 0x14F, 0x152, 0x153, 0x1C,  # E0: Up Left Home End Ins Del
            0x135, 0x11C,  # keypad / and keypad Enter
        ]  # fmt: skip
        for key in keys:
            if isinstance(key, tuple):
                client.key_press(key[0])
                client.key_press_and_release(key[1])
                client.key_release(key[0])
            else:
                client.key_press_and_release(key)
        # Num Lock from the client's side: the keypad then types digits.
        client.set_key_locks(LOCK_NUM)
        client.key_press_and_release(0x48)  # keypad 8
        client.key_press_and_release(0x148)  # Up, still an arrow
        client.key_press_and_release(0x1C)
        expected = "Hello, World!\n\x1b[A\x1b[D\x1b[H\x1b[F\x1b[2~\x1b[3~\n/\n8\x1b[A\n"
        assert _poll_until(lambda: out.exists() and out.read_text() == expected, 20), repr(
            out.read_text() if out.exists() else None
        )


E0_KEYSYMS = {
    0x11C: "KP_Enter", 0x11D: "Control_R", 0x135: "KP_Divide", 0x138: "Alt_R",
    0x147: "Home", 0x148: "Up", 0x149: "Prior", 0x14B: "Left", 0x14D: "Right", 0x14F: "End",
    0x150: "Down", 0x151: "Next", 0x152: "Insert", 0x153: "Delete", 0x15B: "Super_L",
    0x15C: "Super_R", 0x15D: "Menu",
    0x1E: "a", 0x1D: "Control_L", 0x38: "Alt_L", 0x2A: "Shift_L", 0x36: "Shift_R",
    0x1C: "Return", 0x0E: "BackSpace", 0x01: "Escape", 0x58: "F12",
}  # fmt: skip


def test_every_e0_key_is_the_right_x_key(
    display: str, backend: Callable[[str], ThreadedInput]
) -> None:
    from Xlib import X

    recorder = KeyRecorder(display, (100, 100, 300, 200))
    try:
        with served(display, backend=backend) as (_st, client, _handler):
            client.position(250, 200)
            for scancode, name in E0_KEYSYMS.items():
                client.key_press(scancode)
                press = recorder.wait(lambda e: e.type == X.KeyPress)
                client.key_release(scancode)
                recorder.wait(lambda e, k=press.detail: e.type == X.KeyRelease and e.detail == k)
                assert recorder.keysym(press.detail) == keysym(name), (hex(scancode), name)
    finally:
        recorder.close()


def test_pointer_lands_on_the_exact_pixel_and_buttons_arrive(
    display: str, backend: Callable[[str], ThreadedInput]
) -> None:
    from Xlib import X

    recorder = KeyRecorder(display, (200, 150, 400, 300))
    try:
        with served(display, backend=backend) as (_st, client, _handler):
            for px, py in [(0, 0), (WIDTH - 1, HEIGHT - 1), (321, 234), (599, 449)]:
                client.position(px, py)
                assert _poll_until(lambda px=px, py=py: pointer(display) == (px, py), 20), (
                    px,
                    py,
                    pointer(display),
                )
            client.position(333, 222)
            assert _poll_until(lambda: pointer(display) == (333, 222), 20)
            for button, x_button in [(BUTTON_LEFT, 1), (BUTTON_RIGHT, 3), (6, 8), (7, 9)]:
                client.button_press(button, 0)
                event = recorder.wait(lambda e: e.type == X.ButtonPress)
                assert (event.detail, event.event_x, event.event_y) == (x_button, 133, 72)
                client.button_release(button, 1 << (button - 1))
                recorder.wait(lambda e, b=x_button: e.type == X.ButtonRelease and e.detail == b)
            for button, x_button in [(4, 4), (5, 5)]:  # the wheel: a press+release in X
                client.button_press(button, 0)
                client.button_release(button, 0)
                event = recorder.wait(lambda e: e.type == X.ButtonPress)
                assert event.detail == x_button
    finally:
        recorder.close()


def test_disconnect_releases_held_keys_and_buttons(
    display: str, backend: Callable[[str], ThreadedInput]
) -> None:
    recorder = KeyRecorder(display, (0, 0, 300, 200))
    conn = open_display(display)
    try:
        with served(display, backend=backend) as (_st, client, _handler):
            client.position(100, 100)
            client.key_press(0x2A)  # left Shift
            client.button_press(BUTTON_LEFT, 0)
            assert _poll_until(lambda: conn.query_keymap()[50 // 8] & (1 << (50 % 8)) != 0, 20)
            assert _poll_until(
                lambda: conn.screen().root.query_pointer().mask & (1 << 8) != 0, 20
            )  # Button1Mask
            client.close()
            assert _poll_until(lambda: conn.query_keymap()[50 // 8] & (1 << (50 % 8)) == 0, 20)
            assert _poll_until(lambda: conn.screen().root.query_pointer().mask & (1 << 8) == 0, 20)
    finally:
        conn.close()
        recorder.close()


def test_lock_keys_follow_both_ways(display: str, backend: Callable[[str], ThreadedInput]) -> None:
    conn = open_display(display)
    try:
        with served(display, backend=backend) as (_st, client, _handler):
            client.set_key_locks(LOCK_CAPS | LOCK_NUM)
            assert _poll_until(lambda: conn.get_keyboard_control().led_mask & 3 == 3, 20)
            client.wait_for(
                "inputs-modifiers", lambda e: e["modifiers"] == LOCK_CAPS | LOCK_NUM, timeout=20
            )
            x(display, "xdotool", "key", "Num_Lock")  # someone at the server presses Num Lock
            client.wait_for("inputs-modifiers", lambda e: e["modifiers"] == LOCK_CAPS, timeout=20)
    finally:
        conn.close()


def test_x_cursor_shape_reaches_the_client(display: str, apps: Callable[..., Any]) -> None:
    apps("xterm", "-geometry", "40x10+0+0", "-title", "cursor-test")
    wx, wy, ww, wh = wait_window(display, "cursor-test")
    conn = open_display(display)
    try:
        conn.xfixes_query_version()
        with served(display) as (_st, client, _handler):
            client.wait_for("cursor-set", timeout=20)
            client.position(wx + ww // 2, wy + wh // 2)
            assert _poll_until(lambda: pointer(display) == (wx + ww // 2, wy + wh // 2), 20)
            image = conn.xfixes_get_cursor_image(conn.screen().root)
            argb = np.array(image.cursor_image, dtype=np.uint64).astype(np.uint32)
            rgba = np.stack(
                [(argb >> 16) & 0xFF, (argb >> 8) & 0xFF, argb & 0xFF, argb >> 24], axis=-1
            ).astype(np.uint8)  # xterm's I-beam is opaque or clear: no premultiplication
            digest = hashlib.sha256(rgba.tobytes()).hexdigest()
            event = client.wait_for("cursor-set", lambda e: e["sha256"] == digest, timeout=20)
            assert (event["width"], event["height"]) == (image.width, image.height)
            assert (event["hot_x"], event["hot_y"]) == (image.xhot, image.yhot)
    finally:
        conn.close()
