"""Real SPICE clients and tools for interop tests (project-Python side).

* :class:`GtkClient` drives ``gtk_harness.py`` (spice-gtk via GObject
  introspection, run by Debian's ``/usr/bin/python3``) over line-based JSON.
* :class:`Xvfb`, :class:`RemoteViewer`: a real ``remote-viewer`` on a
  virtual X display, with root-window screenshots.
* :class:`TsharkCapture`, :func:`tshark_dissect`: capture loopback traffic
  with ``dumpcap`` and check Wireshark's SPICE dissector is happy with it.

Every wait here is bounded; every subprocess is killed on exit, also when
the test fails half-way.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import numpy as np

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "gtk_harness.py"
SYSTEM_PYTHON = "/usr/bin/python3"
PASSWORD_ENV = "SPICE_HARNESS_PASSWORD"

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

# SPICE_SURFACE_FMT_32_xRGB / _32_ARGB: 4 bytes per pixel, B,G,R,X in memory
FORMATS_32BPP = (32, 96)

# SPICE mouse buttons (SpiceMouseButton) and button-state masks
BUTTON_LEFT, BUTTON_MIDDLE, BUTTON_RIGHT, BUTTON_UP, BUTTON_DOWN = 1, 2, 3, 4, 5
MASK_LEFT, MASK_MIDDLE, MASK_RIGHT = 1, 2, 4
# SpiceInputsLock
LOCK_SCROLL, LOCK_NUM, LOCK_CAPS = 1, 2, 4
MOUSE_MODE_SERVER, MOUSE_MODE_CLIENT = 1, 2


class HarnessError(RuntimeError):
    """The harness answered a command with ``error`` or exited unexpectedly."""


def _kill(
    proc: subprocess.Popen[Any] | None, *, term_timeout: float = 3.0, sig: int = signal.SIGTERM
) -> None:
    """Stop ``proc`` (signal, then SIGKILL) and reap it.  Idempotent."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=term_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class _StreamTail:
    """Collect a subprocess pipe line by line in a daemon thread."""

    def __init__(
        self,
        stream: IO[bytes],
        name: str,
        maxlen: int = 400,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._on_line = on_line
        self._cond = threading.Condition()
        self.eof = False
        self.thread = threading.Thread(target=self._run, args=(stream,), name=name, daemon=True)
        self.thread.start()

    def _run(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
                if self._on_line is not None:
                    self._on_line(line)
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def wait_for_line(self, pattern: str, timeout: float) -> str | None:
        """Return the first line containing ``pattern`` (None on timeout/EOF)."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                lines = list(self.lines)
                for line in lines[seen:]:
                    if pattern in line:
                        return line
                seen = len(lines)
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def text(self, last: int | None = None) -> str:
        lines = list(self.lines)
        return "\n".join(lines[-last:] if last else lines)


# ---------------------------------------------------------------------------
# spice-gtk harness
# ---------------------------------------------------------------------------


@functools.cache
def have_spice_gtk() -> bool:
    """True if ``/usr/bin/python3`` can import SpiceClientGLib 2.0 (for skips)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    code = (
        "import gi; gi.require_version('SpiceClientGLib', '2.0'); "
        "from gi.repository import SpiceClientGLib"
    )
    try:
        res = subprocess.run(
            [SYSTEM_PYTHON, "-c", code], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def have_tools(*names: str) -> bool:
    """True if every executable in ``names`` is on PATH."""
    return all(shutil.which(n) for n in names)


def frame_diff_summary(got: np.ndarray, expected: np.ndarray) -> str:
    """Describe how two (H, W, 3|4) B,G,R[,X] frames differ (colour bytes only)."""
    if got.shape[:2] != expected.shape[:2]:
        return (
            f"size differs: got {got.shape[1]}x{got.shape[0]}, "
            f"expected {expected.shape[1]}x{expected.shape[0]}"
        )
    diff = np.any(got[..., :3] != expected[..., :3], axis=-1)
    count = int(diff.sum())
    if count == 0:
        return "frames are equal"
    ys, xs = np.nonzero(diff)
    y, x = int(ys[0]), int(xs[0])
    return (
        f"{count} of {diff.size} pixels differ; first at (x={x}, y={y}): "
        f"got BGR={tuple(int(v) for v in got[y, x, :3])}, "
        f"expected BGR={tuple(int(v) for v in expected[y, x, :3])}; "
        f"bounding box x={int(xs.min())}..{int(xs.max())}, "
        f"y={int(ys.min())}..{int(ys.max())}"
    )


class GtkClient:
    """A spice-gtk client in a subprocess, driven over JSON lines.

    Events are kept in arrival order.  :meth:`wait_for` consumes them
    like ``expect``: it searches from a read cursor (or from ``since``), and
    on a match moves the cursor past it, so successive waits see successive
    events.  Command replies are matched by id and never consumed by
    :meth:`wait_for`.

    ``password`` reaches the harness via an environment variable, not argv.
    """

    def __init__(
        self,
        uri: str,
        password: str | None = None,
        *,
        channels: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
        python: str = SYSTEM_PYTHON,
        ready_timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.uri = uri
        self._cond = threading.Condition()
        self._events: list[Event] = []
        self._replies: dict[int, Event] = {}
        self._cursor = 0
        self._serial = 0
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._eof = False
        self._closed = False
        self._tmpdir = Path(tempfile.mkdtemp(prefix="spice-gtk-harness-"))
        self._dump_no = itertools.count()
        argv = [python, "-u", str(HARNESS), uri]
        child_env = dict(os.environ if env is None else env)
        # keep the project's venv/pyenv from leaking into Debian's python
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            child_env.pop(var, None)
        if password is not None:
            child_env[PASSWORD_ENV] = password
            argv += ["--password-env", PASSWORD_ENV]
        if channels is not None:
            argv += ["--channels", ",".join(channels)]
        argv += list(extra_args)
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env,
                start_new_session=True,
            )
            assert self.proc.stdout is not None and self.proc.stderr is not None
            self._stderr = _StreamTail(self.proc.stderr, "harness-stderr")
            self._reader = threading.Thread(
                target=self._read_events,
                args=(self.proc.stdout,),
                name="harness-stdout",
                daemon=True,
            )
            self._reader.start()
            if ready_timeout:
                self.wait_for("ready", timeout=ready_timeout, since=0, consume=False)
        except BaseException:
            self.close()
            raise

    # -- plumbing -------------------------------------------------------------

    def _read_events(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                try:
                    ev = json.loads(raw)
                    if not isinstance(ev, dict):
                        raise ValueError("not an object")
                except ValueError:
                    ev = {"event": "bad-line", "line": raw.decode("utf-8", "replace")}
                with self._cond:
                    self._events.append(ev)
                    if isinstance(ev.get("serial"), int) and ev["event"] != "dumped":
                        self._serial = max(self._serial, ev["serial"])
                    if ev.get("event") in ("ok", "error", "dumped") and isinstance(
                        ev.get("id"), int
                    ):
                        self._replies[ev["id"]] = ev
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _context(self, n: int = 25) -> str:
        # may be called with self._cond held: it wraps an RLock
        with self._cond:
            recent = self._events[-n:]
        lines = [json.dumps(e, sort_keys=True) for e in recent]
        rc = self.proc.poll() if self.proc else None
        stderr = self._stderr.text(last=40) if hasattr(self, "_stderr") else ""
        return (
            "\n--- last harness events ---\n"
            + "\n".join(lines)
            + f"\n--- harness exit code: {rc} ---"
            + "\n--- harness stderr (tail) ---\n"
            + stderr
        )

    @property
    def events(self) -> list[Event]:
        """A snapshot of every event received so far."""
        with self._cond:
            return list(self._events)

    @property
    def event_index(self) -> int:
        """Index to pass as ``since`` to see only events after this point."""
        with self._cond:
            return len(self._events)

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stderr_text(self) -> str:
        return self._stderr.text()

    # -- waiting ---------------------------------------------------------------

    def wait_for(
        self,
        event: str | Sequence[str],
        predicate: Predicate | None = None,
        timeout: float = 10.0,
        *,
        since: int | None = None,
        consume: bool = True,
    ) -> Event:
        """Return the first matching event at/after the cursor (or ``since``).

        Raises :class:`TimeoutError` (with recent events and stderr) after
        ``timeout`` seconds, :class:`HarnessError` if the harness exits first.
        """
        names = (event,) if isinstance(event, str) else tuple(event)
        deadline = time.monotonic() + timeout
        with self._cond:
            pos = self._cursor if since is None else since
            while True:
                while pos < len(self._events):
                    ev = self._events[pos]
                    pos += 1
                    if ev.get("event") in names and (predicate is None or predicate(ev)):
                        if consume and since is None:
                            self._cursor = max(self._cursor, pos)
                        return ev
                if self._eof:
                    raise HarnessError(
                        f"harness exited while waiting for {names}" + self._context()
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {names} event within {timeout}s" + self._context())
                self._cond.wait(remaining)

    def wait_channel_open(self, channel: str, timeout: float = 10.0, channel_id: int = 0) -> Event:
        """Wait for ``channel-event opened`` of e.g. ``"display"``; fail fast on errors."""
        ev = self.wait_for(
            "channel-event",
            lambda e: (
                e.get("channel") == channel
                and e.get("id") == channel_id
                and (
                    e.get("channel_event") == "opened"
                    or str(e.get("channel_event", "")).startswith("error")
                )
            ),
            timeout=timeout,
            since=0,
            consume=False,
        )
        if ev["channel_event"] != "opened":
            raise HarnessError(f"{channel} channel failed: {ev}" + self._context())
        return ev

    def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the harness process to exit; return its exit code."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"harness still running after {timeout}s" + self._context()
            ) from None

    # -- commands -----------------------------------------------------------------

    def command(self, cmd: str, timeout: float = 10.0, **fields: Any) -> Event:
        """Send a command and return its reply; raise HarnessError on ``error``."""
        if self.proc is None or self.proc.stdin is None or self._closed:
            raise HarnessError("harness is closed")
        cmd_id = next(self._ids)
        line = json.dumps({"cmd": cmd, "id": cmd_id, **fields}) + "\n"
        try:
            with self._write_lock:
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise HarnessError(f"cannot send {cmd!r}: {exc}" + self._context()) from exc
        deadline = time.monotonic() + timeout
        with self._cond:
            while cmd_id not in self._replies:
                if self._eof:
                    raise HarnessError(f"harness exited before answering {cmd!r}" + self._context())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no reply to {cmd!r} within {timeout}s" + self._context())
                self._cond.wait(remaining)
            reply = self._replies.pop(cmd_id)
        if reply["event"] == "error":
            raise HarnessError(
                f"{cmd!r} failed: {reply.get('message')}"
                + (f"\n{reply['traceback']}" if "traceback" in reply else "")
            )
        return reply

    def ping(self, timeout: float = 10.0) -> Event:
        return self.command("ping", timeout=timeout)

    def dump(self, display: int = 0, timeout: float = 10.0) -> tuple[np.ndarray, Event]:
        """Return the primary surface as (H, W, 4) uint8 B,G,R,X plus the reply."""
        path = self._tmpdir / f"frame{next(self._dump_no)}.raw"
        reply = self.command("dump", timeout=timeout, path=str(path), display=display)
        try:
            if reply["format"] not in FORMATS_32BPP:
                raise HarnessError(f"unsupported surface format {reply['format']}")
            w, h, stride = reply["width"], reply["height"], reply["stride"]
            raw = np.fromfile(path, dtype=np.uint8)
        finally:
            path.unlink(missing_ok=True)
        if raw.size != stride * h:
            raise HarnessError(f"dump has {raw.size} bytes, expected {stride * h}")
        frame = raw.reshape(h, stride)[:, : w * 4].reshape(h, w, 4).copy()
        return frame, reply

    def dump_frame(self, display: int = 0, timeout: float = 10.0) -> np.ndarray:
        """The current primary surface as (H, W, 4) uint8, B,G,R,X per pixel."""
        return self.dump(display=display, timeout=timeout)[0]

    def wait_for_frame(
        self, expected: np.ndarray, timeout: float = 10.0, display: int = 0
    ) -> np.ndarray:
        """Wait until the primary surface equals ``expected`` (B,G,R compared).

        ``expected`` is (H, W, 3) or (H, W, 4) in B,G,R[,X] order.  Dumps
        again after every display update (primary-create, invalidate, mark).
        """
        if expected.ndim != 3 or expected.shape[2] not in (3, 4):
            raise ValueError(f"expected must be (H, W, 3|4), got {expected.shape}")
        deadline = time.monotonic() + timeout
        last: np.ndarray | None = None
        while True:
            remaining = max(deadline - time.monotonic(), 0.5)
            with self._cond:
                before = self._serial  # updates after this one call for another dump
            try:
                frame, reply = self.dump(display=display, timeout=remaining)
            except HarnessError:
                if self._eof:
                    raise
                frame, reply = None, None  # e.g. no primary surface yet
            if frame is not None:
                last = frame
                if frame.shape[:2] == expected.shape[:2] and np.array_equal(
                    frame[..., :3], expected[..., :3]
                ):
                    return frame
            with self._cond:
                seen = reply["serial"] if reply is not None else before
                while self._serial <= seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._eof:
                        summary = (
                            frame_diff_summary(last, expected)
                            if last is not None
                            else "no primary surface was ever dumped"
                        )
                        what = "harness exited" if self._eof else f"timed out after {timeout}s"
                        exc_type = HarnessError if self._eof else TimeoutError
                        raise exc_type(f"frame mismatch ({what}): {summary}" + self._context())
                    self._cond.wait(remaining)

    # -- input ------------------------------------------------------------------

    def key_press(self, scancode: int) -> None:
        """PC XT set-1 scancode; for 0xe0-prefixed keys use 0x100 | code."""
        self.command("key_press", scancode=scancode)

    def key_release(self, scancode: int) -> None:
        self.command("key_release", scancode=scancode)

    def key_press_and_release(self, scancode: int) -> None:
        self.command("key_press_and_release", scancode=scancode)

    def position(self, x: int, y: int, buttons: int = 0, display: int = 0) -> None:
        """Absolute pointer position (client mouse mode)."""
        self.command("position", x=x, y=y, buttons=buttons, display=display)

    def motion(self, dx: int, dy: int, buttons: int = 0) -> None:
        """Relative pointer motion (server mouse mode)."""
        self.command("motion", dx=dx, dy=dy, buttons=buttons)

    def button_press(self, button: int, buttons: int = 0) -> None:
        """``buttons`` is the mask *before* the press; spice-gtk adds the button."""
        self.command("button_press", button=button, buttons=buttons)

    def button_release(self, button: int, buttons: int = 0) -> None:
        """``buttons`` is the mask *before* the release; spice-gtk clears the button."""
        self.command("button_release", button=button, buttons=buttons)

    def set_key_locks(self, locks: int) -> None:
        self.command("set_key_locks", locks=locks)

    def request_mouse_mode(self, mode: int) -> None:
        self.command("request_mouse_mode", mode=mode)

    # -- teardown ---------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> int | None:
        """Ask the harness to quit, then make sure it is gone.  Idempotent."""
        if self._closed:
            return self.returncode
        self._closed = True
        proc = self.proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                with self._write_lock:
                    proc.stdin.write(b'{"cmd": "quit"}\n')
                    proc.stdin.flush()
                proc.stdin.close()  # EOF also makes the harness quit
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        _kill(proc)
        if hasattr(self, "_reader"):
            self._reader.join(timeout=5)
        if hasattr(self, "_stderr"):
            self._stderr.thread.join(timeout=5)
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        return self.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------
# X display and remote-viewer
# ---------------------------------------------------------------------------


def _poll_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``check`` until true or ``timeout``; for states that raise no event."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Xvfb:
    """A private Xvfb server; ``with Xvfb() as display:`` yields ``":N"``.

    The display number is picked by Xvfb itself (``-displayfd``), so
    parallel tests cannot collide; readiness is confirmed with ``xdpyinfo``.
    """

    def __init__(
        self, width: int = 1280, height: int = 800, depth: int = 24, timeout: float = 20.0
    ) -> None:
        self.width, self.height, self.depth = width, height, depth
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.display: str | None = None

    def _xdpyinfo_ok(self) -> bool:
        res = subprocess.run(
            ["xdpyinfo", "-display", str(self.display)],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return res.returncode == 0

    def command(self, displayfd: int) -> list[str]:
        return [
            "Xvfb",
            "-displayfd",
            str(displayfd),
            "-screen",
            "0",
            f"{self.width}x{self.height}x{self.depth}",
            "-nolisten",
            "tcp",
            "-noreset",
        ]

    def start(self) -> str:
        rfd, wfd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                self.command(wfd),
                pass_fds=(wfd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            os.close(wfd)
            wfd = -1
            assert self.proc.stderr is not None
            self._stderr = _StreamTail(self.proc.stderr, "xvfb-stderr")
            buf = b""
            deadline = time.monotonic() + self.timeout
            while not buf.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                ready, _, _ = select.select([rfd], [], [], max(remaining, 0))
                if not ready:
                    raise TimeoutError(
                        f"Xvfb did not report a display in {self.timeout}s: "
                        + self._stderr.text(20)
                    )
                chunk = os.read(rfd, 64)
                if not chunk:
                    raise RuntimeError("Xvfb exited: " + self._stderr.text(20))
                buf += chunk
            self.display = ":" + buf.decode().strip()
            if not _poll_until(self._xdpyinfo_ok, self.timeout):
                raise TimeoutError(f"xdpyinfo cannot reach {self.display}")
            return self.display
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)

    def stop(self) -> None:
        _kill(self.proc)
        self.proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_XORG_DUMMY_CONF = """\
Section "Device"
    Identifier "dummy"
    Driver "dummy"
    VideoRam 256000
EndSection
Section "Monitor"
    Identifier "monitor"
    HorizSync 5.0-1000.0
    VertRefresh 5.0-200.0
    Modeline "{w}x{h}" {clock:.2f} {w} {w_a} {w_b} {w_c} {h} {h_a} {h_b} {h_c} -hsync +vsync
EndSection
Section "Screen"
    Identifier "screen"
    Device "dummy"
    Monitor "monitor"
    DefaultDepth {depth}
    SubSection "Display"
        Depth {depth}
        Modes "{w}x{h}"
    EndSubSection
EndSection
Section "ServerFlags"
    Option "AutoAddDevices" "false"
EndSection
"""


def have_xorg_dummy() -> bool:
    """A real Xorg server with the dummy video driver (Debian: xserver-xorg-video-dummy), run
    as root: the desktop tests then also run against the X server of real sessions."""
    return (
        os.geteuid() == 0
        and shutil.which("Xorg") is not None
        and any(
            Path(d).glob("dummy_drv.so")
            for d in ("/usr/lib/xorg/modules/drivers", "/usr/lib64/xorg/modules/drivers")
        )
    )


class XorgDummy(Xvfb):
    """A private Xorg server on the dummy driver; ``with XorgDummy() as display:``."""

    def command(self, displayfd: int) -> list[str]:
        self._dir = tempfile.TemporaryDirectory(prefix="xorg-dummy-")
        w, h = self.width, self.height
        conf = Path(self._dir.name) / "xorg.conf"
        conf.write_text(
            _XORG_DUMMY_CONF.format(  # a 60 Hz CVT-like mode for the size
                w=w,
                h=h,
                depth=self.depth,
                clock=(w + 304) * (h + 30) * 60 / 1e6,
                w_a=w + 48,
                w_b=w + 152,
                w_c=w + 304,
                h_a=h + 3,
                h_b=h + 7,
                h_c=h + 30,
            )
        )
        return [
            "Xorg",
            "-displayfd",
            str(displayfd),
            "-config",
            str(conf),
            "-noreset",
            "-nolisten",
            "tcp",
            "-logfile",
            str(Path(self._dir.name) / "Xorg.log"),
            "-novtswitch",
            "-sharevts",
        ]

    def stop(self) -> None:
        super().stop()
        if hasattr(self, "_dir"):
            self._dir.cleanup()


def x_env(display: str) -> dict[str, str]:
    """Environment for X clients on ``display`` (no a11y bus, no Wayland)."""
    env = dict(os.environ)
    env.update(DISPLAY=display, GDK_BACKEND="x11", NO_AT_BRIDGE="1")
    env.pop("WAYLAND_DISPLAY", None)
    return env


def screenshot(display: str, path: str | os.PathLike[str], timeout: float = 30.0) -> Path:
    """Save the root window of ``display`` with ImageMagick's ``import``.

    A screen that RandR resizes while ``import`` reads it makes the read fail (the window's
    geometry no longer matches the image requested); that is tried again, up to three times in
    all, and the last failure is raised with what ``import`` said.
    """
    deadline = time.monotonic() + timeout
    # the artifacts folder may not exist yet: on a fresh machine the tests that made it
    # (test_remote_viewer_tshark, test_vv_file) run after the ones that first write there
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        done = subprocess.run(
            ["import", "-display", display, "-window", "root", str(path)],
            capture_output=True,
            timeout=max(1.0, deadline - time.monotonic()),
            env=x_env(display),
            check=False,
        )
        if done.returncode == 0:
            return Path(path)
        if attempt < 2:
            time.sleep(0.2)  # the resize's events settle; X offers nothing to wait on here
    raise RuntimeError(
        f"import -display {display} failed ({done.returncode}): "
        f"{done.stderr.decode(errors='replace').strip()}"
    )


def screenshot_array(display: str) -> np.ndarray:
    """The root window of ``display`` as an (H, W, 3) uint8 R,G,B array."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="x-shot-") as tmp:
        path = screenshot(display, Path(tmp) / "shot.png")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()


class RemoteViewer:
    """``remote-viewer`` connected to ``host:port`` on an X display.

    Connection details (including the password) go into a private
    virt-viewer ``.vv`` file instead of the command line, so the password
    does not show up in ``ps``.
    """

    def __init__(
        self,
        display: str,
        host: str,
        port: int,
        password: str | None = None,
        *,
        title: str = "spiceserver-interop",
        extra_args: Sequence[str] = (),
        timeout: float = 30.0,
        vv_file: Path | None = None,
        env: dict[str, str] | None = None,
        fullscreen: bool = False,
    ) -> None:
        #: The connection file's ``fullscreen`` (it overrides ``--full-screen``).
        self.fullscreen = fullscreen
        #: A connection file to open instead of the one written from host/port/password.
        self.vv_file = vv_file
        #: Added to remote-viewer's environment (PULSE_SINK=..., say).
        self.env = dict(env or {})
        self.display, self.host, self.port = display, host, port
        self.password, self.title = password, title
        self.extra_args = list(extra_args)
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None
        self.window_id: str | None = None

    def _write_vv(self) -> Path:
        self._tmpdir = Path(tempfile.mkdtemp(prefix="remote-viewer-"))
        vv = self._tmpdir / "conn.vv"
        lines = [
            "[virt-viewer]",
            "type=spice",
            f"host={self.host}",
            f"port={self.port}",
            f"title={self.title}",
            f"fullscreen={int(self.fullscreen)}",
            "enable-usbredir=0",
            "enable-smartcard=0",
        ]
        if self.password is not None:
            lines.append(f"password={self.password}")
        fd = os.open(vv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return vv

    def start(self) -> Self:
        try:
            vv = self.vv_file or self._write_vv()
            self.proc = subprocess.Popen(
                ["remote-viewer", f"--display={self.display}", *self.extra_args, str(vv)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=x_env(self.display) | self.env,
                start_new_session=True,
            )
            assert self.proc.stdout is not None and self.proc.stderr is not None
            self._stdout = _StreamTail(self.proc.stdout, "rv-stdout")
            self._stderr = _StreamTail(self.proc.stderr, "rv-stderr")
            return self
        except BaseException:
            self.stop()
            raise

    def output(self) -> str:
        return (self._stdout.text() + "\n" + self._stderr.text()) if self.proc else ""

    def xdotool(self, *args: str, timeout: float = 10.0) -> str:
        res = subprocess.run(
            ["xdotool", *args],
            capture_output=True,
            timeout=timeout,
            env=x_env(self.display),
            check=False,
        )
        return res.stdout.decode("utf-8", "replace")

    def wait_for_window(self, timeout: float | None = None) -> str:
        """Wait until a visible window titled like ``title`` is mapped; return its id."""
        timeout = self.timeout if timeout is None else timeout

        def found() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"remote-viewer exited with {self.proc.returncode}:\n" + self.output()
                )
            ids = self.xdotool("search", "--onlyvisible", "--name", re.escape(self.title))
            self.window_id = ids.split()[0] if ids.split() else None
            return self.window_id is not None

        if not _poll_until(found, timeout, interval=0.1):
            raise TimeoutError(f"no remote-viewer window within {timeout}s:\n" + self.output())
        assert self.window_id is not None
        return self.window_id

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Screenshot of the whole X screen (root window)."""
        return screenshot(self.display, path)

    def screenshot_array(self) -> np.ndarray:
        """The whole X screen as an (H, W, 3) uint8 R,G,B array."""
        return screenshot_array(self.display)

    def wait_for_screen(
        self, predicate: Callable[[np.ndarray], bool], timeout: float | None = None
    ) -> np.ndarray:
        """Poll screenshots until ``predicate(rgb)`` holds; return that screenshot.

        remote-viewer reports nothing when it has painted, so this polls
        (bounded by ``timeout``).
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            shot = self.screenshot_array()
            if predicate(shot):
                return shot
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"remote-viewer exited with {self.proc.returncode}:\n" + self.output()
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(f"screen condition not met within {timeout}s")
            time.sleep(0.2)

    def stop(self) -> None:
        _kill(self.proc)
        self.proc = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# tshark
# ---------------------------------------------------------------------------

_TSHARK_PROBLEMS = ("[Malformed Packet", "Expert Info (Error", "[Dissector bug")


def tshark_dissect(
    pcap_path: str | os.PathLike[str], port: int, timeout: float = 120.0
) -> tuple[str, int]:
    """Dissect a capture with tcp.port==``port`` decoded as SPICE.

    Only that port's TCP traffic is printed (``-Y``), so other packets in
    the file (e.g. :class:`TsharkCapture`'s UDP sync probes) are ignored.
    Returns the verbose text and the number of lines flagging malformed
    packets, error-level expert info or dissector bugs.
    """
    res = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap_path),
            "-d",
            f"tcp.port=={port},spice",
            "-Y",
            f"tcp.port=={port}",
            "-V",
            "-o",
            "tcp.desegment_tcp_streams:TRUE",
        ],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    text = res.stdout.decode("utf-8", "replace")
    if res.returncode != 0:
        raise RuntimeError(
            f"tshark failed ({res.returncode}): " + res.stderr.decode("utf-8", "replace")
        )
    bad = sum(1 for line in text.splitlines() if any(p in line for p in _TSHARK_PROBLEMS))
    return text, bad


class TsharkCapture:
    """Capture ``tcp port PORT`` on loopback with ``dumpcap`` into ``path``.

    ``with TsharkCapture(port) as cap: ...``; after the block ``cap.path``
    is a complete pcapng file.  Without ``path`` it lives in a temporary
    directory removed by :meth:`cleanup` or when this object is collected.

    dumpcap gives no usable signal for "capturing" or "everything is on
    disk": it prints "Capturing on" before its output file exists, writes
    packets in batches about half a second late, and loses what it has not
    written yet when stopped.  So both ends are synchronised with a probe:
    a UDP datagram carrying a random token is sent to a private loopback
    port that the capture filter includes, and we wait (bounded) until the
    token shows up in the file.  Packets are captured in order, so once the
    stop probe is on disk, everything sent before it is too.
    """

    def __init__(
        self,
        port: int,
        path: str | os.PathLike[str] | None = None,
        *,
        interface: str = "lo",
        timeout: float = 20.0,
    ) -> None:
        self.port = port
        self.interface = interface
        self.timeout = timeout
        self._tmpdir: Path | None = None
        if path is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="spice-capture-"))
            path = self._tmpdir / f"spice-{port}.pcapng"
            # the file must outlive the with-block; remove it with this object
            weakref.finalize(self, shutil.rmtree, str(self._tmpdir), True)
        self.path = Path(path)
        self.proc: subprocess.Popen[bytes] | None = None
        self._probe_rx: socket.socket | None = None
        self._scan_offset = 0
        self.stats = ""

    def _sync(self) -> None:
        """Block until a fresh probe datagram is in the capture file."""
        assert self._probe_rx is not None
        token = b"spiceserver-capture-sync-" + secrets.token_hex(16).encode()
        dest = self._probe_rx.getsockname()
        deadline = time.monotonic() + self.timeout
        next_send = 0.0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            while True:
                now = time.monotonic()
                if now >= next_send:  # resend: the first ones may predate the filter
                    tx.sendto(token, dest)
                    next_send = now + 0.1
                if self._file_contains(token):
                    return
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError("dumpcap exited: " + self._stderr.text(20))
                if now >= deadline:
                    raise TimeoutError(
                        f"capture probe not written within {self.timeout}s: "
                        + self._stderr.text(20)
                    )
                time.sleep(0.02)  # no event exists for "dumpcap wrote a batch"

    def _file_contains(self, token: bytes) -> bool:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._scan_offset)
                data = fh.read()
        except FileNotFoundError:
            return False
        if token in data:
            self._scan_offset += max(len(data) - len(token), 0)
            return True
        return False

    def start(self) -> Self:
        try:
            self._probe_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._probe_rx.bind(("127.0.0.1", 0))
            probe_port = self._probe_rx.getsockname()[1]
            bpf = f"tcp port {self.port} or (udp and dst port {probe_port})"
            self.proc = subprocess.Popen(
                # A large kernel buffer: loopback bursts of megabytes otherwise drop packets.
                [
                    "dumpcap",
                    "-i",
                    self.interface,
                    "-B",
                    "256",
                    "-f",
                    bpf,
                    "-w",
                    str(self.path),
                    "-q",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            assert self.proc.stderr is not None
            self._stderr = _StreamTail(self.proc.stderr, "dumpcap-stderr")
            if self._stderr.wait_for_line("Capturing on", self.timeout) is None:
                raise TimeoutError(
                    f"dumpcap did not start capturing within {self.timeout}s: "
                    + self._stderr.text(20)
                )
            self._sync()
            return self
        except BaseException:
            self.stop(sync=False)
            raise

    def stop(self, sync: bool = True) -> None:
        """Flush (see class doc) and stop capturing.  Idempotent."""
        if self.proc is not None:
            try:
                if sync and self.proc.poll() is None:
                    self._sync()
            finally:
                _kill(self.proc, sig=signal.SIGINT, term_timeout=self.timeout)
                self._stderr.thread.join(timeout=5)
                self.stats = self._stderr.text()
                self.proc = None
        if self._probe_rx is not None:
            self._probe_rx.close()
            self._probe_rx = None

    def dissect(self) -> tuple[str, int]:
        """:func:`tshark_dissect` of the (stopped) capture."""
        self.stop()
        return tshark_dissect(self.path, self.port)

    def cleanup(self) -> None:
        """Stop without syncing and remove the capture file if we created it."""
        self.stop(sync=False)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # on an exception just stop; a complete file only matters on success
        self.stop(sync=exc_type is None)


@contextlib.contextmanager
def capture(port: int) -> Iterator[TsharkCapture]:
    """Like :class:`TsharkCapture`, and deletes the temporary file afterwards.

    Call ``cap.dissect()`` inside the block.
    """
    cap = TsharkCapture(port)
    try:
        yield cap.start()
    finally:
        cap.cleanup()
