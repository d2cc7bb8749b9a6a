"""Benchmark: A/V sync at spice-gtk — a pattern frame's display against its click's audio.

    python -m tests.interop.bench_av_sync [--seconds 10] [--every 15]

The server (on a thread) serves a PatternClickSource: the 30 fps test pattern, and a 5 ms
2 kHz click the instant each ``every``-th frame (by its visible counter) is painted, both on
CLOCK_MONOTONIC (``source.clicks.log`` holds frame and time).  One spice-gtk (the GTK
harness, same machine, same clock) reports ``invalidate`` when it has drawn an update and
``playback-data`` when it has decoded audio, and writes that PCM to a file.  For each click
found in the PCM (its onset, to the sample) the benchmark takes the ``playback-data`` event
that delivered that sample, pairs it with the server's click (the last before it) and that
frame's counter ``invalidate`` (the first after the click that touches the counter), and
prints one JSON line per mode (opus, raw), in ms, p50/p95:

- ``video_ms``: server paint → spice-gtk's invalidate of that frame;
- ``audio_ms``: server click → spice-gtk's playback-data holding it;
- ``av_offset_ms``: audio − video (positive: the click arrives after its frame).

These are arrival times.  spice-gtk then buffers playback 200 ms by default (its GStreamer
and PulseAudio backends' latency) before the click is heard, so what a listener perceives is
about ``av_offset_ms`` + 200 ms behind the picture; SPICE's answer, delaying video to the
audio's mm-time, only applies to video streams, not to the plain draws the pattern sends.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from spiceserver.sources.pattern import PatternClickSource
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

PASSWORD = "av-sync"
#: The pattern's counter rectangle (spiceserver.sources.pattern: 16, 16, 6 digits of 32 + 8).
COUNTER = (16, 16, 200, 56)


def onsets(pcm: bytes, threshold: int = 1000) -> list[int]:
    """Frame numbers where a click starts (loud after at least 10 ms of quiet)."""
    left = np.abs(np.frombuffer(pcm[: len(pcm) // 4 * 4], dtype=np.int16).reshape(-1, 2)[:, 0])
    loud = np.flatnonzero(left.astype(np.int32) > threshold)
    return [int(i) for k, i in enumerate(loud) if k == 0 or i - loud[k - 1] > 480]


def touches_counter(event: dict[str, Any]) -> bool:
    x, y, w, h = COUNTER
    return bool(
        event["x"] < x + w
        and x < event["x"] + event["w"]
        and event["y"] < y + h
        and y < event["y"] + event["h"]
    )


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50) * 1000, 1), "p95": round(float(p95) * 1000, 1)}


def analyse(
    clicks: list[tuple[int, float]], events: list[dict[str, Any]], pcm: bytes
) -> dict[str, object]:
    draws = [e["t"] for e in events if e["event"] == "invalidate" and touches_counter(e)]
    deliveries = [(e["total"], e["t"]) for e in events if e["event"] == "playback-data"]
    video, audio, offset = [], [], []
    for frame in onsets(pcm):
        byte = frame * 4
        arrived = next((t for total, t in deliveries if total > byte), None)
        clicked = [t for _, t in clicks if arrived is not None and t <= arrived]
        if arrived is None or not clicked:
            continue
        sent = clicked[-1]
        drawn = next((t for t in draws if t >= sent), None)
        if drawn is None or arrived - sent > 1.0:
            continue  # a click whose frame or server record is missing
        video.append(drawn - sent)
        audio.append(arrived - sent)
        offset.append(arrived - drawn)
    return {
        "clicks": len(offset),
        "video_ms": percentiles(video),
        "audio_ms": percentiles(audio),
        "av_offset_ms": percentiles(offset),
    }


def run(mode: str, seconds: float, every: int) -> dict[str, object]:
    source = PatternClickSource(640, 480, fps=30, every=every)
    pcm_file = Path(tempfile.mkdtemp()) / "pcm"
    args = ["--session-prop", "enable-audio=true", "--playback-pcm", str(pcm_file)]
    with (
        ServerThread(source, password=PASSWORD, audio_opus=mode == "opus") as st,
        GtkClient(st.uri, PASSWORD, extra_args=args) as client,
    ):
        client.wait_for("playback-start", timeout=30)
        time.sleep(seconds)  # a benchmark measures over a fixed time
        events = client.events
        clicks = list(source.clicks.log)
    result: dict[str, object] = {"mode": mode, "every": every, "seconds": seconds}
    result.update(analyse(clicks, events, pcm_file.read_bytes()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--every", type=int, default=15, help="click every N frames (30 fps)")
    args = parser.parse_args()
    for mode in ("opus", "raw"):
        print(json.dumps(run(mode, args.seconds, args.every)), flush=True)


if __name__ == "__main__":
    main()
