"""Benchmark: spice-gtk over a slow link, JPEG on (``auto``) vs off (``never``), interleaved.

    sudo python -m tests.interop.bench_slowlink [--rates 2,5] [--repeats 2] [--seconds 10]

For each rate a network namespace whose loopback has MTU 1500 and a ``tc tbf`` rate limit
(SPICE-REFERENCE-2 §8: netem is not in this kernel, so there is no added latency); the server
and a headless spice-gtk run inside it (this script re-runs itself there with ``--inner``).
Each inner run measures, for one JPEG setting:

* **still**: a live session (its net test done) whose screen changes to a 1920x1080
  photographic corpus frame: seconds from that change until spice-gtk first shows it
  (PSNR >= 30 dB against the source) and until its frame is pixel-exact; and, as soon as it
  is shown plus 1 s (JPEG: the lossless refresh under way), a 320x48 patch of terminal text
  drawn over it: seconds until spice-gtk shows that patch exactly (what typing feels like
  while the photo settles);
* **pattern**: the animated 1024x768 pattern for ``--seconds``: client fps (its frame
  counter's redraws), the server's median ACK lag, bytes per frame.

Runs alternate on/off so both settings see the same machine load.  Prints one JSON line per
run and a summary (medians per rate and setting).  Root only (``ip netns``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NAMESPACE = f"spicebench{os.getpid()}"
ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "tests/data/corpus/photo_dune_1920x1080.png"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def make_namespace(rate_mbit: float) -> None:
    ip("netns", "add", NAMESPACE)
    ip("-n", NAMESPACE, "link", "set", "lo", "up")
    ip("-n", NAMESPACE, "link", "set", "lo", "mtu", "1500")  # else TBF drops every packet
    tbf = ["tbf", "rate", f"{rate_mbit}mbit", "burst", "32kb", "latency", "100ms"]
    subprocess.run(
        ["ip", "netns", "exec", NAMESPACE, "tc", "qdisc", "add", "dev", "lo", "root", *tbf],
        check=True,
    )


def drop_namespace() -> None:
    subprocess.run(["ip", "netns", "del", NAMESPACE], check=False)


def psnr(a: Any, b: Any) -> float:
    import numpy as np

    mse = float(np.mean((a[..., :3].astype(np.float64) - b[..., :3]) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255**2 / mse))


def bench_still(jpeg: str, quality: int, timeout: float) -> dict[str, Any]:
    import numpy as np

    from spiceserver import NumpySource, Rect
    from spiceserver.sources.image import load_image
    from tests.interop.clients import GtkClient
    from tests.interop.serverthread import ServerThread

    photo = load_image(PHOTO)
    start = np.full_like(photo, 60)
    text = load_image(ROOT / "tests/data/corpus/terminal_manpage_1920x1080.png")[100:148, 0:320]
    final = photo.copy()
    final[1000:1048, 1500:1820] = text
    source = NumpySource(frame=start)
    with (
        ServerThread(
            source, password="bench", jpeg_wan_compression=jpeg, jpeg_quality=quality
        ) as st,
        GtkClient(st.uri, "bench", channels=["display"]) as client,
    ):
        client.wait_for_frame(start, timeout=timeout)
        server = st.server
        assert server is not None
        (session,) = server.sessions()
        deadline = time.monotonic() + 5
        while session.metrics.link.testing and time.monotonic() < deadline:
            time.sleep(0.05)  # the net test is the main channel's; no event reaches here
        mark = client.event_index
        changed = time.monotonic()
        st.call(lambda: source.update(photo))
        shown = exact = typed = None
        typed_at = None
        while exact is None and time.monotonic() - changed < timeout:
            if shown is not None and typed_at is None and time.monotonic() - changed > shown + 1:
                typed_at = time.monotonic()
                st.call(lambda: source.update(text, Rect(1500, 1000, 320, 48)))
            try:
                seen = client.wait_for("invalidate", timeout=0.25, since=mark)
            except TimeoutError:
                continue  # nothing drawn: maybe time to draw the text
            latest = client.events[-1]["t"] if client.events else seen["t"]
            mark = client.event_index
            frame = client.dump_frame()
            quality = psnr(frame, final)
            if shown is None and quality >= 30:
                shown = latest - changed
            patch = frame[1000:1048, 1500:1820, :3]
            if typed_at is not None and typed is None and np.array_equal(patch, text[..., :3]):
                typed = latest - typed_at
            if quality == float("inf"):
                exact = latest - changed
        sizes = dict(session.metrics.bytes_by_codec)
        summary = session.metrics.summary()
    return {
        "shown_s": None if shown is None else round(shown, 2),
        "exact_s": None if exact is None else round(exact, 2),
        "text_during_refresh_s": None if typed is None else round(typed, 2),
        "bytes": sizes,
        "session": summary,
    }


def bench_pattern(jpeg: str, quality: int, seconds: float) -> dict[str, Any]:
    from spiceserver import PatternSource
    from tests.interop.clients import GtkClient
    from tests.interop.serverthread import ServerThread

    source = PatternSource(1024, 768, fps=30)
    counter = (16, 16)  # the frame counter's rectangle: redrawn once per pattern frame
    with (
        ServerThread(
            source, password="bench", jpeg_wan_compression=jpeg, jpeg_quality=quality
        ) as st,
        GtkClient(st.uri, "bench", channels=["display"]) as client,
    ):
        client.wait_for("mark", timeout=60)
        warm = time.monotonic() + 2.0
        while time.monotonic() < warm:
            client.wait_for("invalidate", timeout=10)
        server = st.server
        assert server is not None
        (session,) = server.sessions()
        metrics = session.metrics
        frames0, bytes0 = metrics.frames, sum(metrics.bytes_by_codec.values())
        for stats in metrics.channel_stats:
            stats.ack_lag.clear()
        start_index = client.event_index
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            client.wait_for("invalidate", timeout=10)
        elapsed = time.monotonic() - started
        events = client.events[start_index:]
        frames = sum(
            1
            for e in events
            if e.get("event") == "invalidate" and (e.get("x"), e.get("y")) == counter
        )
        sent = metrics.frames - frames0
        sent_bytes = sum(metrics.bytes_by_codec.values()) - bytes0
        lags = sorted(x for stats in metrics.channel_stats for x in stats.ack_lag)
        summary = metrics.summary()
    return {
        "fps": round(frames / elapsed, 1),
        "ack_lag_ms": round(1000 * lags[len(lags) // 2], 1) if lags else None,
        "bytes_per_frame": round(sent_bytes / sent) if sent else None,
        "session": summary,
    }


def inner(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    result = {"rate_mbit": args.rate, "jpeg": args.jpeg, "quality": args.jpeg_quality}
    result["still"] = bench_still(args.jpeg, args.jpeg_quality, timeout=60)
    result["pattern"] = bench_pattern(args.jpeg, args.jpeg_quality, args.seconds)
    print(json.dumps(result), flush=True)


def outer(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        sys.exit("root needed (ip netns, tc)")
    runs: list[dict[str, Any]] = []
    for rate in (float(r) for r in args.rates.split(",")):
        make_namespace(rate)
        try:
            for repeat in range(args.repeats):
                order = ("auto", "never") if repeat % 2 == 0 else ("never", "auto")
                for jpeg in order:
                    command = ["ip", "netns", "exec", NAMESPACE, sys.executable, "-m"]
                    command += ["tests.interop.bench_slowlink", "--inner", "--rate", str(rate)]
                    command += ["--jpeg", jpeg, "--seconds", str(args.seconds)]
                    command += ["--jpeg-quality", str(args.jpeg_quality)]
                    out = subprocess.run(
                        command, cwd=ROOT, check=True, capture_output=True, text=True
                    ).stdout
                    run = json.loads(out.strip().splitlines()[-1])
                    print(json.dumps(run), flush=True)
                    runs.append(run)
        finally:
            drop_namespace()
    summary = {}
    for run in runs:
        key = f"{run['rate_mbit']:g}mbit/{'jpeg' if run['jpeg'] == 'auto' else 'lossless'}"
        summary.setdefault(key, []).append(run)
    print("summary (medians):")
    for key, group in summary.items():

        def med(path: tuple[str, str], group: list[dict[str, Any]] = group) -> float | None:
            values = [r[path[0]][path[1]] for r in group if r[path[0]][path[1]] is not None]
            return round(statistics.median(values), 2) if values else None

        print(
            f"  {key}: still shown {med(('still', 'shown_s'))} s, exact "
            f"{med(('still', 'exact_s'))} s, text drawn during the refresh in "
            f"{med(('still', 'text_during_refresh_s'))} s; pattern "
            f"{med(('pattern', 'fps'))} fps, ACK lag {med(('pattern', 'ack_lag_ms'))} ms, "
            f"{med(('pattern', 'bytes_per_frame'))} B/frame"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="2,5", help="Mbit/s, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--jpeg-quality", type=int, default=85)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--jpeg", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args)
    else:
        outer(args)


if __name__ == "__main__":
    main()
