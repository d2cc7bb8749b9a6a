"""A headless GNOME Wayland session for tests: mutter, PipeWire and a terminal, as a real user.

``with GnomeSession() as gnome:`` starts, as the unprivileged user :data:`USER` (created if
missing: mutter and pipewire are meant to run as the desktop's user), in a fresh D-Bus
session (``dbus-run-session``)::

    pipewire, wireplumber
    mutter --headless --wayland --no-x11 --virtual-monitor WxH   (no GPU: SHM screen casts)
    foot -- sh -c 'printf ready > term-ready; cat > typed'       (the window to look at)

(the terminal reports clicks, ``ESC [ ? 1000 h``, so a click's cell shows up in ``typed``)

and waits until mutter is on the bus and the terminal runs.  Keys typed into the terminal end
up in :attr:`GnomeSession.typed` once a line is complete (``cat`` in the tty's canonical mode).

The tests' server runs in the test process (as root, in the project's venv, which lives
under root's 0700 home where the session's user cannot run it).  The session bus lets it in
through one policy line (``<allow user="root"/>``, see :data:`BUS_CONFIG`); without it
dbus-daemon drops root's connection, which :func:`bare_bus` provides for the error test.
PipeWire's socket is reached by path (root passes the runtime directory's mode).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tests.interop.clients import _poll_until

__all__ = ["USER", "GnomeSession", "bare_bus", "have_gnome_tools", "rotate_monitor", "screenshot"]

#: The session's user (created with useradd when missing).
USER = "spicegnome"
#: Programs the session needs (Debian: mutter, pipewire, wireplumber, foot, dbus-daemon,
#: and util-linux's runuser).
TOOLS = (
    "mutter", "pipewire", "wireplumber", "pw-cli", "foot", "dbus-run-session", "runuser",
    "useradd",
)  # fmt: skip

#: The session bus: Debian's session policy plus one rule letting root in (the test process).
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <include>/usr/share/dbus-1/session.conf</include>
  {extra}
</busconfig>
"""
_ALLOW_ROOT = '<policy context="default"><allow user="root"/></policy>'

_SESSION_SCRIPT = """
set -e
printf '%s' "$DBUS_SESSION_BUS_ADDRESS" > "$DIR/bus.tmp" && mv "$DIR/bus.tmp" "$DIR/bus"
export XDG_RUNTIME_DIR="$DIR/run"
if [ "$PIPEWIRE" = 1 ]; then
    pipewire > "$DIR/pipewire.log" 2>&1 &
    # wireplumber exits at once ("Failed to connect to PipeWire") if it starts first.
    while [ ! -S "$XDG_RUNTIME_DIR/pipewire-0" ]; do sleep 0.05; done
    wireplumber > "$DIR/wireplumber.log" 2>&1 &
fi
mutter --headless --wayland --no-x11 --virtual-monitor "$SIZE" > "$DIR/mutter.log" 2>&1 &
while [ ! -S "$XDG_RUNTIME_DIR/wayland-0" ]; do sleep 0.05; done
WAYLAND_DISPLAY=wayland-0 foot --config=/dev/null -- sh -c \
    'printf "\\033[?1000h"; printf ready > "$DIR/term-ready"; exec cat > "$DIR/typed"' \
    > "$DIR/foot.log" 2>&1 &
wait
"""


def have_gnome_tools() -> bool:
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in TOOLS)


def ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True, timeout=30
        )
        return pwd.getpwnam(USER)


class GnomeSession:
    """A private headless GNOME (mutter) session; see the module docstring."""

    def __init__(
        self, width: int = 1280, height: int = 800, *, pipewire: bool = True, timeout: float = 60.0
    ) -> None:
        self.width, self.height = width, height
        #: False: no pipewire and wireplumber (for the error test).
        self.pipewire = pipewire
        self.timeout = timeout
        self.dir = Path(tempfile.mkdtemp(prefix="spiceserver-gnome-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.bus_address = ""

    @property
    def runtime_dir(self) -> Path:
        return self.dir / "run"

    @property
    def pipewire_remote(self) -> str:
        return str(self.runtime_dir / "pipewire-0")

    @property
    def typed(self) -> str:
        """What reached the terminal's ``cat`` so far (whole lines)."""
        path = self.dir / "typed"
        return path.read_text(errors="replace") if path.exists() else ""

    def env(self) -> dict[str, str]:
        """An environment for a process of the test (as root) that talks to this session."""
        return dict(
            os.environ,
            DBUS_SESSION_BUS_ADDRESS=self.bus_address,
            XDG_RUNTIME_DIR=str(self.runtime_dir),
            WAYLAND_DISPLAY="wayland-0",
        )

    def user_command(self, *argv: str) -> list[str]:
        """``argv`` as a Wayland client of the session: run as :data:`USER` (mutter lets only
        its own user on its socket) with the session's runtime directory and display."""
        return [
            "runuser", "-u", USER, "--", "env", "-C", "/", "-i", "PATH=/usr/bin:/bin",
            "LANG=C.UTF-8", f"XDG_RUNTIME_DIR={self.runtime_dir}", "WAYLAND_DISPLAY=wayland-0",
            *argv,
        ]  # fmt: skip

    def logs(self) -> str:
        parts = []
        for name in ("mutter", "pipewire", "wireplumber", "foot"):
            path = self.dir / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name}.log\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def start(self) -> GnomeSession:
        user = ensure_user()
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.dir.chmod(0o755)
        self.runtime_dir.mkdir(mode=0o700)
        os.chown(self.runtime_dir, user.pw_uid, user.pw_gid)
        config = self.dir / "bus.conf"
        config.write_text(BUS_CONFIG.format(extra=_ALLOW_ROOT))
        config.chmod(0o644)
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": user.pw_dir,
            "USER": USER,
            "LANG": "C.UTF-8",
            "DIR": str(self.dir),
            "SIZE": f"{self.width}x{self.height}",
            "PIPEWIRE": "1" if self.pipewire else "0",
        }
        self.proc = subprocess.Popen(
            ["runuser", "-u", USER, "--", "dbus-run-session", f"--config-file={config}",
             "--", "sh", "-c", _SESSION_SCRIPT],
            env=env,
            # The session user may not enter the checkout (a fresh clone under a 0700 temp
            # directory): foot's shell failed to start in an inherited working directory.
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import asyncio

        from spiceserver.sources.mutter import mutter_available

        bus = self.dir / "bus"

        def alive() -> None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the GNOME session exited early:\n{self.logs()}")

        def ready(path: Path) -> bool:
            alive()
            return path.exists()

        if not _poll_until(lambda: ready(bus), self.timeout):
            raise TimeoutError(f"no session bus after {self.timeout}s:\n{self.logs()}")
        self.bus_address = bus.read_text().strip()
        deadline = time.monotonic() + self.timeout

        def mutter_up() -> bool:
            alive()
            return asyncio.run(mutter_available(self.bus_address))

        if not _poll_until(mutter_up, self.timeout, interval=0.2):
            raise TimeoutError(f"mutter never appeared on the session bus:\n{self.logs()}")
        left = max(1.0, deadline - time.monotonic())
        if not _poll_until(lambda: ready(self.dir / "term-ready"), left):
            raise TimeoutError(f"the terminal never started:\n{self.logs()}")
        if self.pipewire and not _poll_until(self._wireplumber_up, left, interval=0.1):
            raise TimeoutError(f"PipeWire or wireplumber never came up:\n{self.logs()}")

    def _wireplumber_up(self) -> bool:
        """wireplumber links a screen cast's consumer to mutter's node: it must be connected
        (its export client exists once its modules are loaded)."""
        if not Path(self.pipewire_remote).exists():
            return False
        result = subprocess.run(
            ["pw-cli", "ls", "Client"], env=self.env(), capture_output=True, text=True,
            timeout=10, check=False,
        )  # fmt: skip
        return '"WirePlumber [export]"' in result.stdout

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            # mutter and friends are in the same process group: make sure none stays.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> GnomeSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def bare_bus(*, allow_root: bool) -> Iterator[str]:
    """A session bus of :data:`USER` with nothing on it; yields its address.  Without
    ``allow_root`` it has the stock policy, and root's connection is dropped."""
    user = ensure_user()
    with tempfile.TemporaryDirectory(prefix="spiceserver-bus-") as tmp:
        os.chown(tmp, user.pw_uid, user.pw_gid)
        Path(tmp).chmod(0o755)
        config = Path(tmp) / "bus.conf"
        config.write_text(BUS_CONFIG.format(extra=_ALLOW_ROOT if allow_root else ""))
        proc = subprocess.Popen(
            ["runuser", "-u", USER, "--", "dbus-daemon", f"--config-file={config}", "--nofork",
             "--print-address=1", f"--address=unix:path={tmp}/bus"],
            cwd="/",
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            address = proc.stdout.readline().decode().strip()
            if not address:
                raise RuntimeError("dbus-daemon printed no address")
            yield address
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


def screenshot(
    session: GnomeSession, connector: str = "Meta-0", timeout: float = 30.0
) -> np.ndarray:
    """The monitor as (H, W, 4) B,G,R,x, from :mod:`tests.interop.gnome_shot` (independent of
    the source: its own ScreenCast session, Gio and pipewiresrc, in Debian's python3)."""
    import json

    from tests.interop.clients import SYSTEM_PYTHON

    out = session.dir / "shot.raw"
    env = session.env()
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    result = subprocess.run(
        [SYSTEM_PYTHON, str(Path(__file__).with_name("gnome_shot.py")), session.bus_address,
         connector, str(out)],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    info = json.loads(lines[-1]) if lines else {}
    if result.returncode != 0 or "width" not in info:
        raise RuntimeError(f"gnome_shot failed: {result.stdout} {result.stderr[-2000:]}")
    raw = np.fromfile(out, dtype=np.uint8)
    out.unlink()
    return raw.reshape(info["height"], info["width"], 4)


def rotate_monitor(session: GnomeSession, transform: int) -> None:
    """Apply a monitor configuration through mutter's DisplayConfig: the one monitor turned
    by ``transform`` (0 normal, 1 = 90°: 1280×800 becomes 800×1280)."""
    import asyncio

    from dbus_fast import Message, MessageType
    from dbus_fast.aio import MessageBus

    dest, path = "org.gnome.Mutter.DisplayConfig", "/org/gnome/Mutter/DisplayConfig"

    async def apply() -> None:
        bus = await MessageBus(bus_address=session.bus_address).connect()
        try:
            state = await bus.call(
                Message(destination=dest, path=path, interface=dest, member="GetCurrentState")
            )
            assert state is not None and state.message_type == MessageType.METHOD_RETURN
            serial, monitors = state.body[0], state.body[1]
            connector, mode = monitors[0][0][0], monitors[0][1][0][0]
            logical = [[0, 0, 1.0, transform, True, [[connector, mode, {}]]]]
            reply = await bus.call(
                Message(
                    destination=dest, path=path, interface=dest, member="ApplyMonitorsConfig",
                    signature="uua(iiduba(ssa{sv}))a{sv}", body=[serial, 1, logical, {}],
                )
            )  # fmt: skip
            assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply
        finally:
            bus.disconnect()

    asyncio.run(apply())
