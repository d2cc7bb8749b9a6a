"""Benchmark: spiceserver's desktop source against andris, on the same kind of Xvfb desktop.

    python -m tests.interop.bench_desktop [--servers spiceserver,andris] [--size 1920x1080]
        [--compression auto-glz] [--andris PATH] [--idle-seconds 20] [--json OUT]
        [--rounds N] [--skip-session] [--trace-hops]

Server kinds: ``spiceserver``, ``spiceserver-noscroll`` (the same with ``--no-scroll-detect``:
scrolls re-encoded instead of sent as COPY_BITS), ``spiceserver=CHECKOUT`` (the server of
another checkout, e.g. ``git worktree add /tmp/old COMMIT``, run from there with its
``PYTHONPATH``; with ``--trace-hops`` it needs tests/interop/hoptrace.py) and ``andris``.

For each server, on a fresh Xvfb (xsetroot background, one xterm), in its own process:

* **first frame**: seconds from spice-gtk's connect to the update after which its surface
  equals the X screen (ImageMagick screenshot, pixel for pixel);
* **latency**: a python-xlib client fills small rectangles in a window of its own, one every
  150 ms; the time from XSync returning to spice-gtk's ``invalidate`` covering the rectangle
  (both are CLOCK_MONOTONIC, so the harness and this process agree), p50 and p95;
* **echo**: letters typed into the xterm (XTEST, one every 150 ms; the tty echoes them), each
  erased again with BackSpace: per key the time from XSync returning to spice-gtk's first
  ``invalidate`` over the xterm (p50, p95; it includes xterm drawing the glyph);
* **session bytes**: server-to-client bytes (the kernel's count for the server's sockets,
  ``ss``'s ``bytes_acked``: no relay sits between server and client, whose extra wake-up
  added 0.05-0.1 ms to every latency sample of both servers) while
  ``xdotool`` types a paragraph into the xterm and pages through ``man xterm`` — X-side input,
  so both servers see the very same drawing;
* **scrolling**: then, still in ``man``, 30 lines down, 30 up and four half pages, one key
  (XTEST) every 150 ms: the bytes, and per key the time from XSync returning to the first
  ``invalidate`` over the middle of the terminal (p50, p95; it includes ``less`` and xterm
  drawing); the surface must end equal to the screen;
* **idle CPU**: the server process's user+system time while the desktop is idle except for
  ``xclock -digital -update 1``, as a percentage of one core, and the bytes it sends meanwhile.

``--rounds N`` runs the servers in turn N times (interleaved) and adds, per figure, the median
of the rounds and spiceserver's ratio to andris.  ``--skip-session`` leaves out the echo, the
scripted session and the scrolling (first frame, latency and idle CPU only).  ``--trace-hops``
runs spiceserver under :mod:`tests.interop.hoptrace` and reports, per latency sample, the median
time spent between the hops of an update (X event, grab, loop, display task, encoder,
socket, client).

andris comes from PyPI (``pip install andris``; a static binary); it only ever listens on
127.0.0.1 here.  Prints one JSON object per server.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tests.interop.clients import (
    GtkClient,
    Xvfb,
    _kill,
    _poll_until,
    frame_diff_summary,
    screenshot_array,
    x_env,
)

PASSWORD = "bench-ticket"
PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog. SPICE carries a remote desktop as "
    "drawing commands and images; a server that watches X damage sends only what changed, "
    "and a terminal that echoes one character at a time should cost a few hundred bytes "
    "per key, not a screenful. Pack my box with five dozen liquor jugs."
)


# ------------------------------------------------------------------------------ plumbing


class Relay:
    """A TCP relay on 127.0.0.1 that counts the bytes each way (all connections together)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = 0  # server → client
        self.up = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = False
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(server, client, "down"), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, server, "up"), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while data := src.recv(1 << 16):
                with self._lock:
                    setattr(self, direction, getattr(self, direction) + len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def bytes_sent(port: int) -> int:
    """Bytes the server listening on ``port`` has sent on its open connections and had
    acknowledged (the kernel's ``tcpi_bytes_acked``, through iproute2's ``ss``): what the
    clients received, counted without a relay on the path."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    key = "bytes_acked:"
    return sum(int(field[len(key) :]) for field in out.split() if field.startswith(key))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def x(display: str, *argv: str) -> None:
    subprocess.run(argv, env=x_env(display), capture_output=True, timeout=30, check=True)


def window(display: str, name: str, timeout: float = 20.0) -> str:
    found: list[str] = []

    def search() -> bool:
        out = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", name],
            env=x_env(display),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        found[:] = out.split()
        return bool(found)

    if not _poll_until(search, timeout):
        raise TimeoutError(f"no window {name!r}")
    return found[0]


def settled_screen(display: str) -> np.ndarray:
    shots = [screenshot_array(display)]

    def same() -> bool:
        shots.append(screenshot_array(display))
        return np.array_equal(shots[-1], shots[-2])

    if not _poll_until(same, 30, interval=0.2):
        raise TimeoutError("the screen never settled")
    return shots[-1][..., ::-1].copy()


def first_equal(client: GtkClient, expected: np.ndarray, timeout: float) -> float | None:
    """Harness time of the display update after which the surface equals ``expected``."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            frame, reply = client.dump(timeout=max(1.0, deadline - time.monotonic()))
            if frame.shape[:2] == expected.shape[:2] and np.array_equal(
                frame[..., :3], expected[..., :3]
            ):
                serial = reply["serial"]
                kinds = ("invalidate", "mark", "primary-create")
                times = [
                    e["t"]
                    for e in client.events
                    if e.get("serial") == serial and e.get("event") in kinds
                ]
                return min(times) if times else float(reply["t"])
            seen = reply["serial"]
        with contextlib.suppress(TimeoutError):
            client.wait_for(
                ("invalidate", "mark", "primary-create"),
                lambda e, s=seen: e.get("serial", 0) > s,
                timeout=max(0.1, min(2.0, deadline - time.monotonic())),
                since=0,
                consume=False,
            )
    return None


@contextlib.contextmanager
def server_process(
    kind: str,
    display: str,
    port: int,
    args: argparse.Namespace,
    argv_for: Callable[[Path], list[str]] | None = None,
    trace: Path | None = None,
) -> Iterator[int]:
    """The server ``kind`` on ``display``, listening on ``port``; yields its pid.  ``argv_for``
    (given the ticket file) replaces the command line built here (bench_video's servers);
    ``trace``: spiceserver runs under tests/interop/hoptrace.py, its stamps to that file."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-desktop-"))
    ticket = tmp / "ticket"
    ticket.write_text(PASSWORD + "\n")
    ticket.chmod(0o600)
    if argv_for is not None:
        argv = argv_for(ticket)
    elif kind.startswith("spiceserver"):
        module = ["spiceserver"] if trace is None else ["tests.interop.hoptrace", str(trace)]
        argv = [
            sys.executable,
            "-m",
            *module,
            "serve",
            "--source",
            f"desktop:{display}",
            "--listen",
            f"127.0.0.1:{port}",
            "--password-file",
            str(ticket),
            "--image-compression",
            args.compression,
            "--max-fps",
            "30",
            "--log-level",
            "warning",
        ]
        if kind == "spiceserver-noscroll":
            argv.append("--no-scroll-detect")
    else:
        argv = [
            args.andris,
            "--display",
            display,
            "--listen",
            f"127.0.0.1:{port}",
            "--ticket-file",
            str(ticket),
            "--no-audio",
        ]
    log = (tmp / "server.log").open("wb")
    env, cwd = x_env(display), None
    if "=" in kind:  # spiceserver=CHECKOUT: that checkout's server (an earlier commit, say)
        cwd = kind.split("=", 1)[1]
        env["PYTHONPATH"] = cwd
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} exited: {(tmp / 'server.log').read_text()[-2000:]}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        if not _poll_until(listening, 120, interval=0.1):
            raise TimeoutError(f"{kind} is not listening on {port}")
        yield proc.pid
    finally:
        _kill(proc)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------- phases


def measure_latency(display: str, client: GtkClient, samples: int) -> list[tuple[float, float]]:
    """(XSync returned, spice-gtk's invalidate) per filled rectangle."""
    from spiceserver.sources.desktop import open_display

    conn = open_display(display)
    screen = conn.screen()
    win = screen.root.create_window(
        1000,
        100,
        800,
        800,
        0,
        screen.root_depth,
        background_pixel=screen.black_pixel,
        override_redirect=True,
    )
    win.map()
    conn.sync()
    gc = win.create_gc()
    rng = random.Random(7)
    latencies: list[tuple[float, float]] = []
    time.sleep(0.5)  # the window's own exposure goes out first
    try:
        for _ in range(samples):
            rx, ry = rng.randrange(0, 760), rng.randrange(0, 780)
            gc.change(foreground=rng.randrange(0x1000000))
            since = len(client.events)
            win.fill_rectangle(gc, rx, ry, 40, 20)
            conn.sync()
            t0 = time.monotonic()
            ax, ay = 1000 + rx, 100 + ry

            def covers(e: dict[str, Any], ax: int = ax, ay: int = ay) -> bool:
                return (
                    e["x"] <= ax + 39
                    and ax < e["x"] + e["w"]
                    and e["y"] <= ay + 19
                    and ay < e["y"] + e["h"]
                )

            event = client.wait_for("invalidate", covers, timeout=10, since=since, consume=False)
            latencies.append((t0, max(t0, event["t"])))
            time.sleep(0.15)
    finally:
        win.destroy()
        conn.sync()
        conn.close()
    return latencies


def run_session(display: str, xterm: str) -> None:
    x(display, "xdotool", "mousemove", "200", "200")
    x(display, "xdotool", "windowfocus", xterm)
    x(display, "xdotool", "type", "--delay", "25", PARAGRAPH)
    x(display, "xdotool", "key", "Return", "ctrl+d")
    time.sleep(2.0)  # man formats the page
    for _ in range(20):
        x(display, "xdotool", "key", "space")
        time.sleep(0.2)
    time.sleep(1.0)


def xterm_box(display: str, xterm: str) -> tuple[int, int, int, int]:
    """The xterm window's x, y, width and height on the screen."""
    shape = subprocess.run(
        ["xdotool", "getwindowgeometry", "--shell", xterm],
        env=x_env(display), capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    fields = dict(line.split("=", 1) for line in shape.split())
    return int(fields["X"]), int(fields["Y"]), int(fields["WIDTH"]), int(fields["HEIGHT"])


def run_echo(display: str, xterm: str, client: GtkClient, keys: int = 20) -> list[float]:
    """Keystroke to echo: letters typed into the xterm's ``cat`` (the tty echoes them), each
    then erased with BackSpace, so the screen ends as it began; per key, the seconds until
    spice-gtk's first ``invalidate`` over the xterm."""
    x(display, "xdotool", "mousemove", "200", "200")
    x(display, "xdotool", "windowfocus", xterm)
    left, top, width, height = xterm_box(display, xterm)

    def inside(e: dict[str, Any]) -> bool:
        return (
            e["x"] < left + width
            and left < e["x"] + e["w"]
            and e["y"] < top + height
            and top < e["y"] + e["h"]
        )

    typed = [k for i in range(keys) for k in ("abcdefghij"[i % 10], "BackSpace")]
    latencies = key_latencies(display, client, typed, inside)
    time.sleep(0.5)
    return latencies


def run_scrolling(display: str, xterm: str, client: GtkClient) -> list[float]:
    """Line and half-page scrolls in ``man``; per key, the seconds until the client redraws."""
    left, top, width, height = xterm_box(display, xterm)
    cx, cy = left + width // 2, top + height // 2

    def covers(e: dict[str, Any]) -> bool:
        return e["x"] <= cx < e["x"] + e["w"] and e["y"] <= cy < e["y"] + e["h"]

    keys = ["Down"] * 30 + ["Up"] * 30 + ["d", "d", "u", "u"]
    latencies = key_latencies(display, client, keys, covers)
    time.sleep(1.0)
    return latencies


def key_latencies(
    display: str, client: GtkClient, keys: list[str], shown: Callable[[dict[str, Any]], bool]
) -> list[float]:
    """Per key (XTEST, one every 150 ms), the seconds from XSync returning to spice-gtk's
    first ``invalidate`` that ``shown`` accepts (keys with none in 5 s are left out)."""
    from Xlib import XK, X
    from Xlib.ext import xtest

    from spiceserver.sources.desktop import open_display

    conn = open_display(display)
    latencies = []
    try:
        for key in keys:
            keycode = conn.keysym_to_keycode(XK.string_to_keysym(key))
            since = len(client.events)
            xtest.fake_input(conn, X.KeyPress, keycode)
            xtest.fake_input(conn, X.KeyRelease, keycode)
            conn.sync()  # the X server has the key: from here on, the application and us
            t0 = time.monotonic()
            with contextlib.suppress(TimeoutError):
                event = client.wait_for("invalidate", shown, timeout=5, since=since, consume=False)
                latencies.append(max(0.0, event["t"] - t0))
            time.sleep(0.15)
    finally:
        conn.close()
    return latencies


def bench(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    width, height = (int(v) for v in args.size.split("x"))
    result: dict[str, Any] = {"server": kind, "size": args.size}
    with contextlib.ExitStack() as stack:
        display = stack.enter_context(Xvfb(width, height))
        procs: list[subprocess.Popen[bytes]] = []
        stack.callback(lambda: [_kill(p) for p in procs])

        def app(*argv: str) -> None:
            procs.append(
                subprocess.Popen(
                    argv,
                    env=x_env(display),
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

        x(display, "xsetroot", "-solid", "#405060")
        app(
            "xterm",
            "-geometry",
            "80x24+40+40",
            "-title",
            "bench-xterm",
            "-e",
            "sh",
            "-c",
            "cat > /dev/null; MANPAGER=less exec man xterm",
        )
        xterm = window(display, "bench-xterm")
        expected = settled_screen(display)
        port = free_port()
        trace = None
        if args.trace_hops and kind.startswith("spiceserver"):
            trace = Path(tempfile.mkdtemp(prefix="bench-hops-")) / "stamps.json"
        pid = stack.enter_context(server_process(kind, display, port, args, trace=trace))
        uri = f"spice://127.0.0.1:{port}"
        firsts = []
        for _ in range(3):  # the first connection to a fresh server, then two more
            with GtkClient(uri, PASSWORD) as probe:
                ready = probe.wait_for("ready", timeout=30, since=0, consume=False)["t"]
                done = first_equal(probe, expected, timeout=60)
                firsts.append(None if done is None else round(done - ready, 3))
                if len(firsts) == 1:
                    result["first_frame_bytes"] = bytes_sent(port)
            time.sleep(1.0)  # let the server see the disconnect
        result["first_frame_s"] = firsts[0]
        result["first_frame_again_s"] = firsts[1:]
        client = stack.enter_context(GtkClient(uri, PASSWORD))
        client.wait_for("mark", timeout=30)
        samples = measure_latency(display, client, args.samples)
        lat = [done - t0 for t0, done in samples]
        result["latency_ms_p50"] = round(float(np.percentile(lat, 50)) * 1000, 2)
        result["latency_ms_p95"] = round(float(np.percentile(lat, 95)) * 1000, 2)
        time.sleep(1.0)
        if not args.skip_session:
            session_phases(display, xterm, client, port, result)
        app("xclock", "-digital", "-update", "1", "-geometry", "+1500+20")
        time.sleep(3.0)
        cpu0, bytes0, t0 = cpu_seconds(pid), bytes_sent(port), time.monotonic()
        time.sleep(args.idle_seconds)
        cpu1, bytes1, t1 = cpu_seconds(pid), bytes_sent(port), time.monotonic()
        result["idle_cpu_percent"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 2)
        result["idle_bytes_per_s"] = round((bytes1 - bytes0) / (t1 - t0))
    if trace is not None:
        result["hops_ms_p50"] = hop_breakdown(json.loads(trace.read_text()), samples)
        shutil.rmtree(trace.parent, ignore_errors=True)
    return result


#: The hops of an update, in order (tests/interop/hoptrace.py), and what each gap is.
HOPS = [
    "event", "grab", "shot", "shot-done", "publish",
    "applied", "update", "encode", "encoded", "written",
]  # fmt: skip


def hop_breakdown(
    stamps: list[tuple[str, float]], samples: list[tuple[float, float]]
) -> dict[str, float]:
    """Median milliseconds between consecutive hops over the latency samples: from XSync
    returning to the first hop, hop to hop, and from the socket write to spice-gtk."""
    gaps: dict[str, list[float]] = {}
    for t0, done in samples:
        window = sorted((t, name) for name, t in stamps if t0 - 0.005 <= t <= done)
        times, at = [t0], 0
        for hop in HOPS:
            found = next((i for i in range(at, len(window)) if window[i][1] == hop), None)
            if found is None:
                break
            times.append(window[found][0])
            at = found + 1
        else:
            times.append(done)
            names = ["sync→event", *(f"{a}→{b}" for a, b in itertools.pairwise(HOPS))]
            for name, a, b in zip([*names, "written→client"], times[:-1], times[1:], strict=True):
                gaps.setdefault(name, []).append(b - a)
    return {name: round(float(np.median(values)) * 1000, 3) for name, values in gaps.items()} | {
        "samples_matched": len(next(iter(gaps.values()), []))
    }


def session_phases(
    display: str, xterm: str, client: GtkClient, port: int, result: dict[str, Any]
) -> None:
    """Keystroke echo latency, then the scripted session's and the scrolls' bytes and
    latencies."""
    lat = run_echo(display, xterm, client)
    result["echo_keys"] = len(lat)
    result["echo_latency_ms_p50"] = round(float(np.percentile(lat, 50)) * 1000, 2)
    result["echo_latency_ms_p95"] = round(float(np.percentile(lat, 95)) * 1000, 2)
    before = bytes_sent(port)
    run_session(display, xterm)
    result["session_bytes"] = bytes_sent(port) - before
    final = settled_screen(display)
    done = first_equal(client, final, timeout=30)
    result["session_final_frame_exact"] = done is not None
    if done is None:
        result["session_final_frame_diff"] = frame_diff_summary(client.dump_frame(), final)
    before = bytes_sent(port)
    lat = run_scrolling(display, xterm, client)
    result["scroll_bytes"] = bytes_sent(port) - before
    result["scroll_redraws"] = len(lat)
    result["scroll_latency_ms_p50"] = round(float(np.percentile(lat, 50)) * 1000, 1)
    result["scroll_latency_ms_p95"] = round(float(np.percentile(lat, 95)) * 1000, 1)
    final = settled_screen(display)
    result["scroll_final_frame_exact"] = first_equal(client, final, timeout=30) is not None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default="spiceserver,andris")
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--compression", default="auto-glz")
    parser.add_argument("--andris", default=shutil.which("andris") or "andris")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also append the results to this file")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of all servers")
    parser.add_argument("--skip-session", action="store_true", help="no echo, session or scrolls")
    parser.add_argument("--trace-hops", action="store_true", help="time spiceserver's hops")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for kind in args.servers.split(","):
            result = bench(kind, args)
            results.setdefault(kind, []).append(result)
            line = json.dumps(result)
            print(line, flush=True)
            if args.json:
                with args.json.open("a") as out:
                    out.write(line + "\n")
    if args.rounds > 1:
        print(json.dumps(summary(results)), flush=True)


def summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per server the median of each numeric figure over the rounds, and each figure's
    ratio spiceserver / andris (when both ran)."""
    medians = {
        kind: {
            key: float(np.median([r[key] for r in rounds]))
            for key, value in rounds[0].items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        for kind, rounds in results.items()
    }
    out: dict[str, Any] = {"medians": medians}
    peer = medians.get("andris")
    for kind, ours in medians.items():
        if peer and kind != "andris":
            out[f"ratio_{kind}_to_andris"] = {
                key: round(ours[key] / peer[key], 2) for key in ours if peer.get(key)
            }
    return out


if __name__ == "__main__":
    main()
