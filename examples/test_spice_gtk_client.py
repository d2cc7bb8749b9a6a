"""Testing a SPICE client with the spiceserver pytest plugin, with spice-gtk as the client.

The ``spice_server`` fixture (installed with spiceserver) serves what the test asks for and
records what the client does.  The client under test here is spice-gtk, driven through
GObject introspection by a small script run with Debian's python3 (``python3-gi`` and
``gir1.2-spiceclientglib-2.0``); put your own client in its place.

Run: ``python3 -m pytest examples/test_spice_gtk_client.py``
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from spiceserver.testing import RunningServer

SYSTEM_PYTHON = "/usr/bin/python3"

# The client: connects, reports "ready" once its display and inputs channels are up, then
# answers one command per stdin line: "dump PATH" (writes the primary surface's bytes),
# "key SCANCODE", "click X Y" (absolute pointer, left button).
CLIENT = r"""
import ctypes, sys
import gi
gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib as Spice

uri, password = sys.argv[1], sys.argv[2]
loop = GLib.MainLoop()
session = Spice.Session(uri=uri, password=password, enable_audio=False)
state = {"primary": None, "inputs": None, "display": False}

def say(*words):
    print(*words, flush=True)

def ready_check():
    if state["primary"] and state["inputs"] and not state.get("ready"):
        state["ready"] = True
        say("ready")

def on_primary(channel, fmt, width, height, stride, shmid, data):
    state["primary"] = (width, height, stride, data)
    ready_check()

def on_event(channel, event):
    if isinstance(channel, Spice.InputsChannel) and event == Spice.ChannelEvent.OPENED:
        state["inputs"] = channel
        ready_check()
    elif event in (Spice.ChannelEvent.CLOSED, Spice.ChannelEvent.ERROR_CONNECT,
                   Spice.ChannelEvent.ERROR_AUTH, Spice.ChannelEvent.ERROR_LINK):
        say("closed", int(event))

def on_signal(obj, name, handler):  # Session.connect and Channel.connect mean "go online"
    GObject.Object.connect(obj, name, handler)

def on_channel(session, channel):
    on_signal(channel, "channel-event", on_event)
    if isinstance(channel, Spice.DisplayChannel):
        on_signal(channel, "display-primary-create", on_primary)
    if not isinstance(channel, Spice.MainChannel):
        channel.connect()

def on_stdin(stream, condition):
    try:
        return command(stream)
    except Exception as exc:  # tell the test at once rather than let it time out
        say("error", repr(exc))
        return True

def command(stream):
    line = stream.readline()
    if not line:
        loop.quit()
        return False
    command, *args = line.split()
    inputs = state["inputs"]
    if command == "dump":
        width, height, stride, data = state["primary"]
        with open(args[0], "wb") as out:
            out.write(ctypes.string_at(data, stride * height))
        say("dumped", width, height, stride)
    elif command == "key":
        inputs.key_press_and_release(int(args[0]))
        say("ok")
    elif command == "click":
        inputs.position(int(args[0]), int(args[1]), 0, 0)
        inputs.button_press(1, 0)  # SPICE_MOUSE_BUTTON_LEFT, no button held before
        inputs.button_release(1, 1)  # ... and the left button's mask bit held before
        say("ok")
    return True

on_signal(session, "channel-new", on_channel)
GLib.io_add_watch(GLib.IOChannel.unix_new(0), GLib.IO_IN | GLib.IO_HUP, on_stdin)
session.connect()
loop.run()
"""


def spice_gtk_available() -> bool:
    if not shutil.which(SYSTEM_PYTHON):
        return False
    probe = (
        "import gi; gi.require_version('SpiceClientGLib', '2.0'); "
        "from gi.repository import SpiceClientGLib"
    )
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    not spice_gtk_available(), reason="needs python3-gi and gir1.2-spiceclientglib-2.0"
)


class Client:
    """The spice-gtk script as a process: send a command line, read its answer (bounded)."""

    def __init__(self, spice: RunningServer) -> None:
        assert spice.password is not None
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, "-c", CLIENT, spice.uri, spice.password],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, word: str, timeout: float = 20.0) -> list[str]:
        while True:
            try:
                line = self.lines.get(timeout=timeout).split()
            except queue.Empty:
                raise AssertionError(
                    f"the client did not say {word!r} within {timeout}s "
                    f"(exit status {self.proc.poll()})"
                ) from None
            if line and line[0] == word:
                return line
            if line and line[0] in ("error", "closed"):
                raise AssertionError(f"the client said {' '.join(line)!r}")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def screen(self, path: Path) -> np.ndarray:
        """The client's display as BGRX pixels, exactly as it holds them."""
        self.send(f"dump {path}")
        _, width, height, stride = self.expect("dumped")
        data = np.frombuffer(path.read_bytes(), np.uint8).reshape(int(height), int(stride))
        return data[:, : int(width) * 4].reshape(int(height), int(width), 4)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def client(spice_server: RunningServer) -> Iterator[Client]:
    client = Client(spice_server)
    try:
        client.expect("ready")
        yield client
    finally:
        client.close()


def gradient(width: int, height: int, shift: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    frame = np.zeros((height, width, 4), np.uint8)
    frame[..., 0] = (x + shift) % 256
    frame[..., 1] = (y * 2) % 256
    frame[..., 2] = (x ^ y) % 256
    return frame


FIRST = gradient(320, 240, 0)


@pytest.mark.spice_server(source=FIRST.copy(), image_compression="auto-glz")
def test_client_draws_every_frame_exactly(
    spice_server: RunningServer, client: Client, tmp_path: Path
) -> None:
    spice_server.wait_client_frame()  # the client has handled the first frame
    assert np.array_equal(client.screen(tmp_path / "1")[..., :3], FIRST[..., :3])

    second = gradient(400, 300, 77)  # another size: the surface is re-created
    spice_server.wait_client_frame(spice_server.push(second))
    assert np.array_equal(client.screen(tmp_path / "2")[..., :3], second[..., :3])


@pytest.mark.spice_server(source=FIRST.copy())
def test_client_input_is_recorded(spice_server: RunningServer, client: Client) -> None:
    client.send("key 30")  # A
    client.expect("ok")
    spice_server.wait_for_event("key", key="A", pressed=True)
    spice_server.wait_for_event("key", key="A", pressed=False)

    client.send("click 100 50")
    client.expect("ok")
    spice_server.wait_for_event("pointer_position", x=100, y=50)
    spice_server.wait_for_event("button", button="left", pressed=True)
    spice_server.wait_for_event("button", button="left", pressed=False)
    links = [e["channel"] for e in spice_server.events if e["event"] == "link"]
    assert {"main", "display", "inputs"} <= set(links)
