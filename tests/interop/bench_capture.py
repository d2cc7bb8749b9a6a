"""Benchmark: the server's cost per screen update with capture mode off and on.

    python -m tests.interop.bench_capture [--seconds 10] [--size 1024x768] [--rounds 2]

Serves the animated pattern (30 fps) to a spice-gtk client (headless, its own process) and,
alternating off/on for ``--rounds`` rounds, measures over ``--seconds`` after a warm-up:

* ``loop_cpu_ms_per_frame``: CPU time of the event-loop thread per update sent.  Capture's
  pcap writing and canvas painting happen here, so this is where its overhead shows.
* ``process_cpu_ms_per_frame``: CPU time of the whole process per update: the loop, the image
  encoder threads, the video encoder (x264 and its threads) and this script's thread reading
  the client's events (the same in both modes).

Also the cost of the one check every hook makes when capture is off (``hook_check_ns``).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from spiceserver import PatternSource
from spiceserver.config import COMPRESSION_NAMES
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

PASSWORD = "bench"


def measure(
    size: tuple[int, int], seconds: float, compression: str, capture_dir: str | None
) -> dict[str, Any]:
    source = PatternSource(*size, fps=30)
    with (
        ServerThread(
            source,
            password=PASSWORD,
            capture_dir=capture_dir,
            image_compression=COMPRESSION_NAMES[compression],
        ) as st,
        GtkClient(st.uri, PASSWORD) as client,
    ):
        client.wait_for("mark", timeout=60)  # the first full frame arrived
        server = st.server
        assert server is not None
        time.sleep(2.0)  # warm-up: first full frame, encoder start-up
        (session,) = st.call(lambda: list(server.sessions()))
        frames0, loop0 = session.metrics.frames, st.call(time.thread_time)
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        frames1, loop1 = session.metrics.frames, st.call(time.thread_time)
        cpu1, wall1 = time.process_time(), time.monotonic()
    frames = max(1, frames1 - frames0)
    result: dict[str, Any] = {
        "frames": frames1 - frames0,
        "fps": round((frames1 - frames0) / (wall1 - wall0), 1),
        "loop_cpu_ms_per_frame": round(1000 * (loop1 - loop0) / frames, 3),
        "process_cpu_ms_per_frame": round(1000 * (cpu1 - cpu0) / frames, 3),
    }
    if server.context.captures is not None:
        result["videos"] = [
            {"frames": v.frames, "merged": v.merged, "error": v.error}
            for v in server.context.captures.videos
        ]
        result["capture_bytes"] = sum(
            p.stat().st_size for p in Path(capture_dir or ".").rglob("*") if p.is_file()
        )
    return result


def hook_check_ns() -> float:
    """What a hook costs with capture off: one attribute load and an ``is not None`` test."""

    class Connection:
        capture = None

    connection = Connection()
    number = 2_000_000
    seconds = min(
        timeit.repeat(
            "if c.capture is not None: pass", globals={"c": connection}, number=number, repeat=5
        )
    )
    empty = min(timeit.repeat("pass", number=number, repeat=5))
    return float(round(1e9 * (seconds - empty) / number, 2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compression", default="off", choices=sorted(COMPRESSION_NAMES))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    width, height = (int(v) for v in args.size.split("x"))
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        runs["off"].append(measure((width, height), args.seconds, args.compression, None))
        with tempfile.TemporaryDirectory(prefix="spiceserver-bench-capture-") as directory:
            runs["on"].append(measure((width, height), args.seconds, args.compression, directory))

    def median(mode: str, key: str) -> float:
        return round(float(statistics.median(run[key] for run in runs[mode])), 3)

    summary = {
        mode: {
            key: median(mode, key)
            for key in ("fps", "loop_cpu_ms_per_frame", "process_cpu_ms_per_frame")
        }
        for mode in runs
    }
    print(
        json.dumps(
            {
                "size": args.size,
                "compression": args.compression,
                "seconds_per_run": args.seconds,
                "rounds": args.rounds,
                "median": summary,
                "capture_overhead_ms_per_frame": {
                    "loop": round(
                        summary["on"]["loop_cpu_ms_per_frame"]
                        - summary["off"]["loop_cpu_ms_per_frame"],
                        3,
                    ),
                    "process": round(
                        summary["on"]["process_cpu_ms_per_frame"]
                        - summary["off"]["process_cpu_ms_per_frame"],
                        3,
                    ),
                },
                "hook_check_ns": hook_check_ns(),
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
