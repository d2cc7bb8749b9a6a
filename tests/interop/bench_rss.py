"""Benchmark: the server's RSS with one spice-gtk client on a 1920x1080 X desktop.

    python -m tests.interop.bench_rss [--rounds 3] [--andris PATH] [-- SERVER-ARGS...]

A fresh Xvfb with ``man xterm`` in an xterm, ``spiceserver serve --source desktop:N`` in its own
process (after its codecs are ready), spice-gtk connected until its first MARK, a few pages
of the manual turned, then /proc/PID/status VmRSS (``rss_mib_first_pages``); the same pages
again once every kernel has loaded (the desktop's compare kernels load 3 s after start), then
VmRSS again (``rss_mib_one_client``: the server as it stays).  Prints one JSON line (median
of rounds), with the last round's RSS by mapping (/proc/PID/smaps: libllvmlite.so, the other shared
libraries, the heap and anonymous memory, shared memory such as mss's XShm segment) and its
split into anonymous, file-backed and shared memory (RssAnon, RssFile, RssShmem).  With
``--andris PATH``, andris serves the same desktop in the same round, after ours, through the
same steps (``bench_desktop``'s command line for it), and its RSS is printed beside ours.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from spiceserver.sources.x11_capture import KERNEL_LOAD_DELAY
from tests.interop.bench_desktop import PASSWORD as ANDRIS_PASSWORD
from tests.interop.bench_desktop import free_port, server_process
from tests.interop.clients import GtkClient, Xvfb
from tests.interop.serverprocess import ServerProcess

PASSWORD = "rss-bench"
#: Seconds after the server's start before the second RSS figure: every kernel loaded.
SETTLED = KERNEL_LOAD_DELAY + 3.0


def rss_by_mapping(pid: int) -> dict[str, float]:
    """MiB of RSS per kind of mapping of process ``pid``, and the status split."""
    kinds: dict[str, float] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            path = fields[5] if len(fields) > 5 else ""
            if "libllvmlite" in path:
                name = "libllvmlite.so"
            elif path.startswith("/SYSV") or path.startswith("/dev/shm") or "memfd:" in path:
                name = "shared memory"
            elif path.startswith("/"):
                name = "other files (libraries)"
            else:
                name = "heap and anonymous"
        elif fields[0] == "Rss:":
            kinds[name] = kinds.get(name, 0.0) + int(fields[1]) / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("RssAnon", "RssFile", "RssShmem")):
            key, value = line.split(":")
            kinds[key] = int(value.split()[0]) / 1024
    return {key: round(value, 1) for key, value in kinds.items()}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def session(
    display: str, uri: str, password: str, rss: Callable[[], float], started: float
) -> tuple[float, float]:
    """spice-gtk connected until its first MARK, three pages of the manual turned forward and
    back (full-screen updates), every update handled: the server's RSS; then, once
    :data:`SETTLED` seconds have passed since ``started`` (the desktop's compare kernels load
    :data:`~spiceserver.sources.x11_capture.KERNEL_LOAD_DELAY` after start), the same pages
    again and the RSS of the server as it stays."""
    env = dict(os.environ, DISPLAY=display)
    figures = []
    with GtkClient(uri, password) as client:
        client.wait_for("mark", timeout=30)
        for _ in range(2):
            for _ in range(3):
                subprocess.run(
                    ["xdotool", "key", "--delay", "50", "space", "space", "b", "b"],
                    env=env,
                    check=True,
                    timeout=30,
                )
            client.ping()  # every update sent so far has been handled
            figures.append(rss())
            time.sleep(max(0.0, started + SETTLED - time.monotonic()))
    return figures[0], figures[1]


def one_round(
    server_args: list[str], andris: str | None
) -> tuple[float, float, float, dict[str, float], float | None]:
    with Xvfb(width=1920, height=1080) as display:
        env = dict(os.environ, DISPLAY=display)
        term = subprocess.Popen(
            ["xterm", "-geometry", "200x60+0+0", "-e", "man xterm"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            started = time.monotonic()
            with ServerProcess(
                ["--source", f"desktop:{display}", *server_args], PASSWORD
            ) as server:
                before = server.rss_mib()
                first, one = session(display, server.uri, PASSWORD, server.rss_mib, started)
                assert server.proc is not None
                mapping = rss_by_mapping(server.proc.pid)
            theirs = None
            if andris is not None:
                port = free_port()
                peer = argparse.Namespace(andris=andris)
                started = time.monotonic()
                with server_process("andris", display, port, peer) as pid:
                    uri = f"spice://127.0.0.1:{port}"
                    _, theirs = session(
                        display, uri, ANDRIS_PASSWORD, lambda: rss_mib(pid), started
                    )
            return before, first, one, mapping, theirs
        finally:
            term.kill()
            term.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--andris", help="the andris binary: its RSS on the same desktop")
    parser.add_argument("server_args", nargs="*", help="extra spiceserver serve arguments")
    args = parser.parse_args()
    rounds = [one_round(args.server_args, args.andris) for _ in range(args.rounds)]
    result: dict[str, object] = {
        "rss_mib_before_client": statistics.median(r[0] for r in rounds),
        "rss_mib_first_pages": statistics.median(r[1] for r in rounds),
        "rss_mib_one_client": statistics.median(r[2] for r in rounds),
        "rounds": [[round(value, 1) for value in r[:3]] for r in rounds],
        "by_mapping_mib": rounds[-1][3],
    }
    if args.andris is not None:
        theirs = [r[4] for r in rounds if r[4] is not None]
        result["andris_rss_mib_one_client"] = round(statistics.median(theirs), 1)
        result["andris_rounds"] = [round(value, 1) for value in theirs]
        result["ratio_to_andris"] = round(
            statistics.median(r[2] for r in rounds) / statistics.median(theirs), 2
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
