"""Benchmark: a video playing on the X desktop, served by spiceserver, andris and x11spice.

    python -m tests.interop.bench_video [--servers spiceserver-h264,spiceserver-mjpeg,andris]
        [--x11spice PATH] [--rounds 3] [--seconds 8] [--size 1280x720] [--video 640x480]
        [--andris PATH] [--json OUT]

Servers: ``spiceserver-h264`` and ``spiceserver-mjpeg`` (``--source desktop:… --streaming-video
filter --video-codecs h264`` or ``mjpeg``), ``andris`` (its defaults: it streams H.264 and
sends JPEG, see tests/interop/bench_desktop.py for where it comes from) and ``x11spice`` when
``--x11spice`` names a build (libspice 0.15 through x11spice: streams MJPEG, Debian's libspice
has no GStreamer encoders without gstreamer1.0-plugins-ugly; tests/interop/build_x11spice.sh
builds one).  Rounds are interleaved (each round runs every server once), each run on a
fresh Xvfb with the same generated clip (tests/interop/desktop_video.py) looping in ``ffplay``,
one spice-gtk client (Debian's, with the GStreamer plugins tests/run.sh installs: it
advertises H.264, VP8, VP9, H.265 and MJPEG) through a byte-counting relay.  Per run, after
``--warmup`` seconds of playing:

* **bytes/s** from server to client over ``--seconds``;
* **client fps**: spice-gtk's display invalidations covering the video's centre a second
  (one per frame it shows, whether a stream frame or an image), beside **X fps**, the distinct
  pictures X showed there a second (the player's own rate on the loaded machine);
* **server CPU** (user + system of the server process, % of one core) over the same window;
* **PSNR**: the client's picture of the video area against the last pictures X showed there
  (the best match; median of five samples while it plays);
* **exact after**: seconds from freezing the player (SIGSTOP) until the client's whole screen
  equals the X screen (None: not within 10 s).

Prints one JSON line per run, then a table of medians per server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.interop.bench_desktop import (
    PASSWORD,
    Relay,
    cpu_seconds,
    first_equal,
    free_port,
    server_process,
)
from tests.interop.clients import GtkClient, Xvfb, screenshot_array, x_env
from tests.interop.desktop_video import CLIP_FPS, AreaGrabber, Player, make_clip
from tests.interop.test_streams_gtk import psnr

#: The columns of the summary table: (JSON key, heading).
COLUMNS = [
    ("bytes_per_s", "bytes/s"),
    ("client_fps", "client fps"),
    ("x_fps", "X fps"),
    ("server_cpu_percent", "server CPU %"),
    ("psnr_db", "PSNR dB"),
    ("exact_after_s", "exact after s"),
]


def argv_for(
    kind: str, display: str, port: int, args: argparse.Namespace
) -> tuple[str, Callable[[Path], list[str]] | None]:
    """The server's command line (a function of the ticket file), by kind."""
    if kind.startswith("spiceserver-"):
        codec = kind.removeprefix("spiceserver-")

        def spiceserver(ticket: Path) -> list[str]:
            return [
                sys.executable, "-m", "spiceserver", "serve",
                "--source", f"desktop:{display}", "--listen", f"127.0.0.1:{port}",
                "--password-file", str(ticket), "--streaming-video", "filter",
                "--video-codecs", codec, "--log-level", "warning",
            ]  # fmt: skip

        return "spiceserver", spiceserver
    if kind == "x11spice":

        def x11spice(ticket: Path) -> list[str]:
            return [
                args.x11spice, f"--display={display}", f"--password-file={ticket}",
                "--hide", f"127.0.0.1:{port}",
            ]  # fmt: skip

        return "x11spice", x11spice
    if kind == "andris":
        return "andris", None  # bench_desktop's command line
    raise SystemExit(f"unknown server {kind!r}")


def best_psnr(client: GtkClient, grabber: AreaGrabber) -> float:
    rect = grabber.rect
    shown = client.dump_frame()[rect.y : rect.bottom, rect.x : rect.right]
    return max(psnr(shown, frame) for frame in grabber.fresh())


def bench(kind: str, clip: Path, args: argparse.Namespace) -> dict[str, Any]:
    width, height = (int(v) for v in args.size.split("x"))
    vw, vh = (int(v) for v in args.video.split("x"))
    vx, vy = (width - vw) // 2 // 2 * 2, (height - vh) // 2 // 2 * 2
    result: dict[str, Any] = {"server": kind, "size": args.size, "video": args.video}
    with contextlib.ExitStack() as stack:
        display = stack.enter_context(Xvfb(width, height))
        subprocess.run(
            ["xsetroot", "-solid", "#405060"], env=x_env(display), check=True, timeout=20
        )
        player = stack.enter_context(contextlib.closing(Player(display, clip, vx, vy, vw, vh)))
        grabber = stack.enter_context(contextlib.closing(AreaGrabber(display, player.rect)))
        grabber.wait_changes(3, timeout=20)
        port = free_port()
        name, make_argv = argv_for(kind, display, port, args)
        pid = stack.enter_context(server_process(name, display, port, args, make_argv))
        relay = Relay(port)
        stack.callback(relay.close)
        client = stack.enter_context(GtkClient(f"spice://127.0.0.1:{relay.port}", PASSWORD))
        client.wait_for("primary-create", timeout=30)
        time.sleep(args.warmup)  # streams start, rate control settles

        cx, cy = vx + vw // 2, vy + vh // 2
        since, changes0 = client.event_index, grabber.changes
        bytes0, cpu0, t0 = relay.down, cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds)
        bytes1, cpu1, t1 = relay.down, cpu_seconds(pid), time.monotonic()
        shown = [
            e
            for e in client.events[since:]
            if e["event"] == "invalidate"
            and e["x"] <= cx < e["x"] + e["w"]
            and e["y"] <= cy < e["y"] + e["h"]
        ]
        span = t1 - t0
        result["bytes_per_s"] = round((bytes1 - bytes0) / span)
        result["client_fps"] = round(len(shown) / span, 1)
        result["x_fps"] = round((grabber.changes - changes0) / span, 1)
        if result["x_fps"] < 0.8 * CLIP_FPS:
            result["warning"] = "the player fell behind the clip: the machine is too busy"
        result["server_cpu_percent"] = round(100 * (cpu1 - cpu0) / span, 1)
        samples = [best_psnr(client, grabber) for _ in range(5)]
        result["psnr_db"] = round(statistics.median(samples), 1)

        player.pause()
        grabber.fresh()
        t_frozen = time.monotonic()
        expected = screenshot_array(display)[..., ::-1].copy()
        done = first_equal(client, expected, timeout=10)
        result["exact_after_s"] = None if done is None else round(done - t_frozen, 2)
        player.check()
    return result


def table(results: list[dict[str, Any]], servers: list[str]) -> str:
    rows = [["server", "runs", *(heading for _key, heading in COLUMNS)]]
    for kind in servers:
        runs = [r for r in results if r["server"] == kind]
        cells = [kind, str(len(runs))]
        for key, _heading in COLUMNS:
            values = [r[key] for r in runs if r.get(key) is not None]
            median = statistics.median(values) if values else None
            cells.append(
                "-" if median is None else f"{median:.0f}" if median >= 1000 else f"{median:g}"
            )
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default="spiceserver-h264,spiceserver-mjpeg,andris")
    parser.add_argument("--x11spice", help="an x11spice binary: adds x11spice to the servers")
    parser.add_argument("--andris", default=shutil.which("andris") or "andris")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--video", default="640x480")
    parser.add_argument("--compression", default="auto-glz", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also append the results to this file")
    args = parser.parse_args()
    servers = args.servers.split(",")
    if args.x11spice and "x11spice" not in servers:
        servers.append("x11spice")
    vw, vh = (int(v) for v in args.video.split("x"))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        # Long enough that no run sees the loop's seam more than a few times.
        clip = make_clip(Path(tmp) / "clip.mkv", 12.0, vw, vh)
        for _round in range(args.rounds):
            for kind in servers:
                result = bench(kind, clip, args)
                line = json.dumps(result)
                print(line, flush=True)
                results.append(result)
                if args.json:
                    with args.json.open("a") as out:
                        out.write(line + "\n")
    print(f"\nclip {args.video} at {CLIP_FPS} fps on a {args.size} Xvfb; medians of {args.rounds}")
    print(table(results, servers))
    if any("warning" in r for r in results):
        print("\nwarning: in some runs the player fell behind (X fps): those figures are void")


if __name__ == "__main__":
    main()
