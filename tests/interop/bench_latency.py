"""Benchmark: full-frame update latency, from damage to spice-gtk's last invalidate.

    python -m tests.interop.bench_latency [--compression auto-glz] [--rounds 20] [IMAGE ...]

Serves a NumpySource of the first image's size; each round swaps in the next image (the
corpus frames by default), calls ``damage()`` and times until spice-gtk has invalidated the
whole surface.  Both processes read the same CLOCK_MONOTONIC.  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from spiceserver import NumpySource
from spiceserver.config import COMPRESSION_NAMES
from spiceserver.sources.image import load_image
from tests.conftest import CORPUS
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

DEFAULT_IMAGES = [
    "terminal_manpage_1920x1080.png",
    "web_pydoc_tutorial_1920x1080.png",
    "photo_dune_1920x1080.png",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--compression", default="auto-glz", choices=sorted(COMPRESSION_NAMES))
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("images", nargs="*", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    paths = args.images or [CORPUS / name for name in DEFAULT_IMAGES]
    frames = [load_image(path) for path in paths]
    height, width = frames[0].shape[:2]
    source = NumpySource(frame=np.zeros_like(frames[0]))
    started = time.perf_counter()
    with ServerThread(
        source, password="bench", image_compression=COMPRESSION_NAMES[args.compression]
    ) as st:
        startup = time.perf_counter() - started
        with GtkClient(st.uri, "bench") as client:
            client.wait_for_frame(source.frame, timeout=60)
            latencies: list[float] = []
            per_image: dict[str, list[float]] = {path.stem: [] for path in paths}
            for round_ in range(args.rounds):
                frame = frames[round_ % len(frames)]
                t0 = time.monotonic()
                st.call(lambda frame=frame: source.update(frame))
                covered = 0
                while covered < width * height:
                    event = client.wait_for("invalidate", timeout=30)
                    covered += event["w"] * event["h"]
                latencies.append(event["t"] - t0)
                if round_ >= len(frames):  # the first pass includes one-off allocations
                    per_image[paths[round_ % len(frames)].stem].append(event["t"] - t0)
            client.wait_for_frame(frames[(args.rounds - 1) % len(frames)], timeout=30)
            server = st.server
            assert server is not None
            summary = [s.metrics.summary() for s in server.sessions()]
    ordered = sorted(latencies[len(frames) :])
    print(
        json.dumps(
            {
                "size": f"{width}x{height}",
                "compression": args.compression,
                "rounds": len(ordered),
                "latency_ms_p50": round(1000 * statistics.median(ordered), 1),
                "latency_ms_p95": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
                "latency_ms_max": round(1000 * ordered[-1], 1),
                "latency_ms_p50_per_image": {
                    name: round(1000 * statistics.median(values), 1)
                    for name, values in per_image.items()
                    if values
                },
                "server_start_s": round(startup, 2),
                "server_session": summary,
            }
        )
    )


if __name__ == "__main__":
    main()
