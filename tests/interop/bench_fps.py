"""Benchmark: frames per second a spice-gtk client receives, and the server's memory over time.

    python -m tests.interop.bench_fps [--seconds 30] [--size 1024x768] [--compression off]

Runs the animated pattern source in this process, connects spice-gtk (headless, Debian's
python3) and counts the frames it draws: each pattern frame redraws its frame counter exactly
once, so the counter's invalidate events are the client's frame count.  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path

from spiceserver import PatternSource
from spiceserver.config import COMPRESSION_NAMES
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--compression", default="off", choices=sorted(COMPRESSION_NAMES))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    width, height = (int(v) for v in args.size.split("x"))
    source = PatternSource(width, height, fps=30)
    counter = (16, 16)  # top-left of the frame counter's rectangle
    password = "bench"
    with (
        ServerThread(
            source, password=password, image_compression=COMPRESSION_NAMES[args.compression]
        ) as st,
        GtkClient(st.uri, password) as client,
    ):
        client.wait_for("mark", timeout=60)
        warm = time.monotonic() + 2.0
        while time.monotonic() < warm:
            client.wait_for("invalidate", timeout=10)
        rss_start = rss_mib()
        start_index = len(client.events)
        started = time.monotonic()
        samples = []
        while (elapsed := time.monotonic() - started) < args.seconds:
            client.wait_for("invalidate", timeout=10)
            if not samples or elapsed - samples[-1][0] >= 5:
                samples.append((elapsed, rss_mib()))
        elapsed = time.monotonic() - started
        events = client.events[start_index:]
        frames = sum(
            1
            for e in events
            if e.get("event") == "invalidate" and (e.get("x"), e.get("y")) == counter
        )
        invalidates = sum(1 for e in events if e.get("event") == "invalidate")
        server = st.server
        assert server is not None
        sessions = list(server.sessions())
        summary = sessions[0].metrics.summary() if sessions else ""
    print(
        json.dumps(
            {
                "size": args.size,
                "compression": args.compression,
                "seconds": round(elapsed, 1),
                "client_fps": round(frames / elapsed, 2),
                "client_invalidates": invalidates,
                "rss_mib_start": round(rss_start, 1),
                "rss_mib_end": round(samples[-1][1], 1) if samples else None,
                "rss_mib_samples": [round(r, 1) for _, r in samples],
                "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "server_session": summary,
            }
        )
    )


if __name__ == "__main__":
    main()
