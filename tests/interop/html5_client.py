"""spice-html5 in headless Chromium, driven from Python, for interop tests.

:class:`Html5Client` runs ``html5/driver.mjs`` (node + puppeteer-core) which runs Debian's
``/usr/bin/chromium`` (headless, own temporary profile) on a spice-html5 page, and talks to it
in line-delimited JSON like :class:`tests.interop.clients.GtkClient` does with
``gtk_harness.py``.  The harness only takes a page URL: whatever serves spice-html5 and relays
its WebSocket (spiceserver's ``--web``, or websockify) is the caller's business.

Install: ``apt-get install chromium spice-html5`` and
``npm ci --prefix tests/interop/html5 --no-audit --no-fund`` (puppeteer-core only; it downloads
no browser).  :func:`have_html5` says whether all of that is there.

What spice-html5 (Debian 0.3.0) does, as learnt from its sources and from running it
-----------------------------------------------------------------------------------
* ``spice_auto.html`` reads ``?host=&port=&password=&path=&token=&title=`` from its own URL
  (``[?&]name=([^&]*)``, then ``+`` -> space and ``decodeURIComponent``).  ``host`` and ``port``
  default to the page's own; ``path`` defaults to ``websockify``, so it connects to
  ``ws://HOST:PORT/websockify``; ``path=`` (empty) connects to ``ws://HOST:PORT`` (request
  path ``/``).  It uses ``wss://`` only when the page itself came over https; there is no
  ``encrypt`` parameter.  ``token`` is only stored in a cookie (for nova's proxy).
* Every channel (main, then display, inputs, cursor) is its own WebSocket to that same URL,
  subprotocol ``binary`` (``new WebSocket(uri, 'binary')``: Chromium fails the connection
  unless the handshake answers ``Sec-WebSocket-Protocol: binary``).  The client sends each
  SPICE message (link, ticket, each message) as one binary WebSocket message.  Received
  messages must be binary frames (binaryType ``arraybuffer``) but may carry any slice of the
  SPICE byte stream: its wire reader reassembles (websockify forwards whatever one ``recv``
  got).
* The primary surface becomes ``<canvas id="spice_surface_0" tabindex="0">`` inside
  ``#spice-screen``, with the surface's size as its width/height (a surface re-create makes a
  new canvas).  spice.css gives canvases a 1px border; they are never scaled.  Without an agent
  nothing resizes the canvas (``resize_helper`` only runs on agent connect).
* Mouse, wheel and key listeners are on that canvas; the canvas focuses itself on creation and
  on ``mouseover`` and blurs on ``mouseout``, so the driver focuses it before each key command.
  Pointer coordinates are the event's ``offsetX/offsetY`` (canvas pixels).  Input is dropped
  silently until the inputs channel's state is ``"ready"``; the driver waits for that (the
  SpiceMainConn hangs on the canvas as ``canvas.sc``).  In client mouse mode (which it asks
  for when offered) a click is MOUSE_POSITION then PRESS/RELEASE.
* Keys: scancodes come from the legacy ``keyCode`` (set 1; 0xE0-extended keys as
  ``0xE0 | code << 8``, release ``| 0x8000``).  "a" and "A" have the same keyCode, so a
  capital needs a real Shift press: the driver's ``type`` holds Shift for US-shifted
  characters (``shift=False`` turns that off).  A key without a mapping makes spice-html5 call
  ``alert('no map for N')``; the driver reports dialogs as ``dialog`` events and dismisses them
  (a wrong password gives a ``prompt("Password")`` the same way).  Characters that are not on
  puppeteer's US layout send no key events at all.
* Display init announces no GLZ dictionary (``glz_window_size`` 0), so a server's auto-glz
  must fall back to LZ.  It logs "Unimplemented function 106(Main Multi Media Time)" and
  "102(Display Mark)" warnings to the console; harmless.
* Ticket bug: ``rsa_encrypt`` (ticket.js) turns the RSA ciphertext into bytes with
  ``BigInteger.toString(16)``, which drops leading zero bytes; ``SpiceLinkAuthTicket`` then
  writes the short ciphertext left-aligned and zero-fills the end.  So about 1 link in 256
  (the ciphertext's top byte is 0) sends a ticket that does not decrypt, and a strict server
  answers PERMISSION_DENIED: spice-html5 throws ``Error("Permission denied.")`` (a
  ``pageerror``) and that channel is missing, or for the main channel the session fails
  (prompt loop, below).  A server can accept it by retrying the decryption with the 128 bytes
  right-aligned (``bytes(k) + data[:-k]`` while the last k bytes are zero).  Checked with node
  on spice-html5's own ticket.js: about 1 ticket in 250 came out short, none of those
  decrypted as sent, and all did once right-aligned (21 of 21).
* A wrong password: the server's "Permission denied." makes spice_auto.html ``prompt()`` for
  one, and as the driver dismisses the prompt it reconnects with none, is refused and prompts
  again, about once a second until the page is closed; expect ``dialog`` events ("Password")
  and no canvas.
* The browser asks for ``/favicon.ico`` (a 404 under websockify); :attr:`Html5Client.errors`
  leaves that out.  Repeated reads log Chromium's "willReadFrequently" console warning.
* Timing (this machine, websockify in between): Chromium starts in ~0.4 s; the canvas equals
  the server's image ~1 s after ``open``; reading a 1024x768 canvas takes ~30 ms.

Colours: :meth:`Html5Client.canvas` gives R,G,B,A; the rest of the interop suite uses B,G,R,X
frames, which :meth:`Html5Client.wait_for_canvas` takes.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote, urlencode

import numpy as np

from tests.interop.clients import HarnessError, _kill, _StreamTail, frame_diff_summary

HERE = Path(__file__).resolve().parent
HTML5_DIR = HERE / "html5"
DRIVER = HTML5_DIR / "driver.mjs"
SPICE_HTML5_DIR = Path("/usr/share/spice-html5")
CHROMIUM = "/usr/bin/chromium"
NODE = "node"

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


@functools.cache
def have_html5() -> bool:
    """True if Chromium, spice-html5, node and the driver's puppeteer-core are installed."""
    return (
        os.access(CHROMIUM, os.X_OK)
        and (SPICE_HTML5_DIR / "spice_auto.html").is_file()
        and shutil.which(NODE) is not None
        and (HTML5_DIR / "node_modules" / "puppeteer-core" / "package.json").is_file()
    )


def html5_url(
    base_http_url: str,
    host: str | None,
    port: int | None,
    password: str | None = None,
    *,
    path: str | None = None,
    title: str | None = None,
) -> str:
    """The ``spice_auto.html`` URL under ``base_http_url`` that connects to ``host:port``.

    ``host``/``port`` None leave them out (spice_auto.html then uses the page's own);
    ``path`` None keeps spice-html5's default WebSocket path ``/websockify``, ``""`` means
    ``/``.  Example: ``html5_url("http://127.0.0.1:5959/", "127.0.0.1", 5959, "pw")`` ->
    ``http://127.0.0.1:5959/spice_auto.html?host=127.0.0.1&port=5959&password=pw``.
    """
    params: list[tuple[str, str]] = []
    if host is not None:
        params.append(("host", host))
    if port is not None:
        params.append(("port", str(int(port))))
    if password is not None:
        params.append(("password", password))
    if path is not None:
        params.append(("path", path))
    if title is not None:
        params.append(("title", title))
    page = base_http_url.rstrip("/") + "/spice_auto.html"
    return page + ("?" + urlencode(params, quote_via=quote) if params else "")


def rgba_to_bgrx(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) R,G,B,A -> (H, W, 4) B,G,R,X (X = 255), the suite's frame layout."""
    out = rgba[..., [2, 1, 0, 3]].copy()
    out[..., 3] = 255
    return out


def _is_benign_console_error(ev: Event) -> bool:
    return "favicon.ico" in str(ev.get("url") or "")


class Html5Client:
    """spice-html5 in headless Chromium (``html5/driver.mjs``), driven over JSON lines.

    ``with Html5Client() as c: c.open(url); c.wait_canvas(); frame = c.canvas()``.

    Events are kept in arrival order (except the big ``canvas`` replies); :meth:`wait_for`
    consumes them like ``expect`` (a read cursor, or ``since``), as in ``GtkClient``.
    :attr:`console` and :attr:`errors` collect the page's console messages and its uncaught
    exceptions, console errors and dialogs.
    """

    def __init__(
        self,
        *,
        chromium: str | None = None,
        chromium_args: Sequence[str] = (),
        node: str = NODE,
        ready_timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self._cond = threading.Condition()
        self._events: list[Event] = []
        self._replies: dict[int, Event] = {}
        self._cursor = 0
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._eof = False
        self._closed = False
        self._launch: dict[str, Any] = {}
        if chromium is not None:
            self._launch["executable"] = chromium
        if chromium_args:
            self._launch["args"] = list(chromium_args)
        self.chromium_pid: int | None = None
        self._profile_dir: str | None = None
        self.console: list[Event] = []
        self.errors: list[Event] = []
        child_env = dict(os.environ if env is None else env)
        self.argv = [node, str(DRIVER)]
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=HTML5_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env,
                start_new_session=True,
            )
            assert self.proc.stdout is not None and self.proc.stderr is not None
            self._stderr = _StreamTail(self.proc.stderr, "html5-driver-stderr")
            self._reader = threading.Thread(
                target=self._read_events,
                args=(self.proc.stdout,),
                name="html5-driver-stdout",
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
                name = ev.get("event")
                with self._cond:
                    if name != "canvas":  # megabytes each: kept only as the reply
                        self._events.append(ev)
                    # a reply names its command; no unsolicited event has "cmd"
                    if "cmd" in ev and isinstance(ev.get("id"), int):
                        self._replies[ev["id"]] = ev
                    if name == "launched":
                        self.chromium_pid = ev.get("pid")
                        self._profile_dir = ev.get("user_data_dir")
                    elif name == "console":
                        self.console.append(ev)
                        if ev.get("type") == "error" and not _is_benign_console_error(ev):
                            self.errors.append(ev)
                    elif name in ("pageerror", "dialog", "page-crashed"):
                        self.errors.append(ev)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _context(self, n: int = 25) -> str:
        with self._cond:
            recent = self._events[-n:]
        lines = [json.dumps(e, sort_keys=True)[:600] for e in recent]
        rc = self.proc.poll() if self.proc else None
        stderr = self._stderr.text(last=40) if hasattr(self, "_stderr") else ""
        return (
            "\n--- last html5 driver events ---\n"
            + "\n".join(lines)
            + f"\n--- driver exit code: {rc} ---"
            + "\n--- driver stderr (tail) ---\n"
            + stderr
        )

    @property
    def events(self) -> list[Event]:
        """A snapshot of every event received so far (``canvas`` replies excepted)."""
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

    def console_text(self) -> str:
        """The page's console messages so far, one per line."""
        with self._cond:
            return "\n".join(f"[{e.get('type')}] {e.get('text')}" for e in self.console)

    # -- waiting ----------------------------------------------------------------

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

        Raises :class:`TimeoutError` after ``timeout`` seconds, :class:`HarnessError` if the
        driver exits first.
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
                    raise HarnessError(f"driver exited while waiting for {names}" + self._context())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {names} event within {timeout}s" + self._context())
                self._cond.wait(remaining)

    # -- commands -----------------------------------------------------------------

    def command(self, cmd: str, timeout: float = 10.0, **fields: Any) -> Event:
        """Send a command and return its reply; raise HarnessError on ``error``.

        ``timeout`` bounds the wait for the reply here; it is not sent (see :meth:`send`).
        """
        return self.send(cmd, fields, timeout)

    def send(self, cmd: str, fields: dict[str, Any], reply_timeout: float) -> Event:
        """Like :meth:`command`, with every field (also a driver-side "timeout") in ``fields``."""
        if self.proc is None or self.proc.stdin is None or self._closed:
            raise HarnessError("driver is closed")
        cmd_id = next(self._ids)
        line = json.dumps({"cmd": cmd, "id": cmd_id, **fields}) + "\n"
        try:
            with self._write_lock:
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise HarnessError(f"cannot send {cmd!r}: {exc}" + self._context()) from exc
        deadline = time.monotonic() + reply_timeout
        with self._cond:
            while cmd_id not in self._replies:
                if self._eof:
                    raise HarnessError(f"driver exited before answering {cmd!r}" + self._context())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no reply to {cmd!r} within {reply_timeout}s" + self._context()
                    )
                self._cond.wait(remaining)
            reply = self._replies.pop(cmd_id)
        if reply["event"] == "error":
            raise HarnessError(
                f"{cmd!r} failed: {reply.get('message')}"
                + (f"\n{reply['stack']}" if reply.get("stack") else "")
                + self._context(10)
            )
        return reply

    def ping(self, timeout: float = 10.0) -> Event:
        return self.command("ping", timeout=timeout)

    def open(self, url: str, timeout: float = 30.0) -> Event:
        """Launch Chromium (first time) and load ``url``; returns the ``opened`` reply."""
        return self.send("open", {"url": url, "timeout": timeout, **self._launch}, timeout + 35)

    def wait_canvas(
        self, timeout: float = 10.0, *, inputs: bool = False, surface: int = 0
    ) -> Event:
        """Wait until ``spice_surface_N`` exists with a nonzero size (and, with ``inputs``,
        spice-html5's inputs channel is ready); returns {width, height, inputs_ready,
        mouse_mode}."""
        fields = {"timeout": timeout, "surface": surface, "inputs": inputs}
        return self.send("wait_canvas", fields, timeout + 10)

    def canvas(self, surface: int = 0, timeout: float = 20.0) -> np.ndarray:
        """The canvas as an (H, W, 4) uint8 array, R,G,B,A (``getImageData``)."""
        reply = self.command("canvas", timeout=timeout, surface=surface)
        w, h = int(reply["width"]), int(reply["height"])
        raw = np.frombuffer(base64.b64decode(reply["rgba_b64"]), dtype=np.uint8)
        if raw.size != w * h * 4:
            raise HarnessError(f"canvas data has {raw.size} bytes, expected {w * h * 4}")
        return raw.reshape(h, w, 4).copy()

    def canvas_bgrx(self, surface: int = 0) -> np.ndarray:
        """The canvas as (H, W, 4) uint8 B,G,R,X, like ``GtkClient.dump_frame``."""
        return rgba_to_bgrx(self.canvas(surface))

    def wait_for_canvas(
        self, expected_bgrx: np.ndarray, timeout: float = 10.0, surface: int = 0
    ) -> np.ndarray:
        """Poll :meth:`canvas` until its R,G,B equal ``expected_bgrx``'s; return it (RGBA).

        ``expected_bgrx`` is (H, W, 3|4) B,G,R[,X]; alpha/X are ignored.  spice-html5 reports
        no "drawn" event, so this polls (bounded by ``timeout``).
        """
        if expected_bgrx.ndim != 3 or expected_bgrx.shape[2] not in (3, 4):
            raise ValueError(f"expected must be (H, W, 3|4), got {expected_bgrx.shape}")
        want_rgb = np.ascontiguousarray(expected_bgrx[..., 2::-1])
        deadline = time.monotonic() + timeout
        last: np.ndarray | None = None
        problem = "no canvas was ever read"
        while True:
            try:
                frame = self.canvas(surface, timeout=max(deadline - time.monotonic(), 5.0))
            except HarnessError as exc:
                if self._eof:
                    raise
                problem = str(exc).split("\n", 1)[0]  # e.g. no canvas yet
            else:
                last = frame
                if frame.shape[:2] == want_rgb.shape[:2] and np.array_equal(
                    frame[..., :3], want_rgb
                ):
                    return frame
            if time.monotonic() >= deadline:
                summary = (
                    frame_diff_summary(rgba_to_bgrx(last), expected_bgrx)
                    if last is not None
                    else problem
                )
                raise TimeoutError(f"canvas mismatch after {timeout}s: {summary}" + self._context())
            time.sleep(0.1)  # no event says "spice-html5 has drawn"

    def state(self) -> Event:
        """spice-html5's canvases, inputs channel state, mouse mode and message log."""
        return self.command("state")

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """A PNG of the whole page, for people to look at."""
        self.command("screenshot", timeout=30, path=str(path))
        return Path(path)

    # -- input --------------------------------------------------------------------

    def click(self, x: int, y: int, button: str = "left", count: int = 1) -> None:
        """Click at canvas pixel (x, y): "left", "middle" or "right"."""
        self.command("click", timeout=20, x=int(x), y=int(y), button=button, count=count)

    def move(self, x: int, y: int) -> None:
        self.command("move", timeout=20, x=int(x), y=int(y))

    def mouse_down(self, button: str = "left") -> None:
        self.command("down", timeout=20, button=button)

    def mouse_up(self, button: str = "left") -> None:
        self.command("up", timeout=20, button=button)

    def wheel(self, x: int, y: int, dy: float = 100.0) -> None:
        """Scroll at (x, y); spice-html5 sends one UP (dy < 0) or DOWN press+release."""
        self.command("wheel", timeout=20, x=int(x), y=int(y), dy=dy)

    def type(self, text: str, *, delay_ms: float = 0, shift: bool = True) -> None:
        """Type ``text`` on the canvas (US layout; Shift held for shifted characters)."""
        self.command(
            "type",
            timeout=20 + len(text) * (0.1 + delay_ms / 1000),
            text=text,
            delay=delay_ms,
            shift=shift,
        )

    def key(self, name: str) -> None:
        """Press and release a puppeteer key name: "Enter", "Escape", "ArrowUp", "KeyA"..."""
        self.command("key", timeout=20, key=name)

    def key_down(self, name: str) -> None:
        self.command("key_down", timeout=20, key=name)

    def key_up(self, name: str) -> None:
        self.command("key_up", timeout=20, key=name)

    # -- teardown -----------------------------------------------------------------

    def drop_file(self, name: str, data: bytes, type: str = "application/octet-stream") -> None:
        """Drop a file named ``name`` on the page (spice-html5's drag-and-drop transfer)."""
        self.command(
            "drop_file",
            name=name,
            data_b64=base64.b64encode(data).decode(),
            type=type,
            timeout=30,
        )

    def _kill_chromium(self) -> None:
        """Last resort, if the driver died: Chromium's process group and its profile."""
        pid = self.chromium_pid
        with contextlib.suppress(OSError):
            if pid and b"chrom" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.killpg(pid, signal.SIGKILL)
        profile = self._profile_dir
        if profile and Path(profile).name.startswith("spice-html5-chromium-"):
            shutil.rmtree(profile, ignore_errors=True)

    def close(self, timeout: float = 10.0) -> int | None:
        """Ask the driver to quit (it closes Chromium), then make sure all is gone."""
        if self._closed:
            return self.returncode
        self._closed = True
        proc = self.proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                with self._write_lock:
                    proc.stdin.write(b'{"cmd": "quit"}\n')
                    proc.stdin.flush()
                proc.stdin.close()  # EOF also makes the driver quit
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        _kill(proc)
        self._kill_chromium()
        if hasattr(self, "_reader"):
            self._reader.join(timeout=5)
        if hasattr(self, "_stderr"):
            self._stderr.thread.join(timeout=5)
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
