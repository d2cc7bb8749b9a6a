"""Benchmark: what the stream adaptations of issue 16 change for spice-gtk, each against the
server without it, interleaved in one run.

    python -m tests.interop.bench_stream_adapt candidates [--runs 3]
    ip netns exec slow python -m tests.interop.bench_stream_adapt link [--runs 2]

Both play the interop test's clip (tests/interop/test_streams_gtk.py: a 320x240 photographic
video panning at 30 fps in a flat 640x480 desktop, MJPEG) to a headless spice-gtk.

``candidates``: bytes sent with a stream candidate's frames as lossless images (before) and
as JPEG from its second update (after), until the client is pixel-exact again.

``link``: over a slow link, the stream's rate from STREAM_REPORTs alone (before) and from the
link estimate too (after): stream frames and fps, ACK lag, seconds to exact once the clip
stops.  Make the link first (SPICE-REFERENCE-2 §8; netem is absent):

    ip netns add slow && ip -n slow link set lo up && ip -n slow link set lo mtu 1500
    ip netns exec slow tc qdisc add dev lo root tbf rate 1mbit burst 32kb latency 100ms

One line per run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from spiceserver.server.channels.display import streams
from tests.interop.serverthread import ServerThread
from tests.interop.test_streams_gtk import clip_frames, metrics, play, streaming


@contextmanager
def patched(name: str, value: object, owner: object = streams) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def play_clip(frames: int, report: Callable[[ServerThread, float], str]) -> str:
    clip = clip_frames(frames)
    with streaming("mjpeg") as (st, client, source):
        st.run(play(source, clip), timeout=60)
        stopped = time.monotonic()
        client.wait_for_frame(source.frame.copy(), timeout=60)  # the lossless repaint
        return report(st, time.monotonic() - stopped)


def candidates_report(st: ServerThread, exact: float) -> str:
    sizes = metrics(st)[2]
    images = sum(n for codec, n in sizes.items() if not codec.startswith("stream-"))
    return f"images={images} total={sum(sizes.values())} {dict(sorted(sizes.items()))}"


def link_report(st: ServerThread, exact: float) -> str:
    server = st.server
    assert server is not None
    (session,) = server.sessions()
    m = session.metrics
    lag = sorted(x for stats in m.channel_stats for x in stats.ack_lag) or [0.0]
    return (
        f"stream_frames={m.stream_frames} fps={m.stream_fps(time.monotonic()):.1f} "
        f"stream_bytes={m.bytes_by_codec['stream-mjpeg']} "
        f"ack_lag_p50={lag[len(lag) // 2] * 1000:.0f}ms "
        f"p95={lag[int(len(lag) * 0.95)] * 1000:.0f}ms exact_after_stop={exact:.2f}s "
        f"{m.link.summary()}"
    )


def no_link(self: streams.VideoStream, link_bps: float | None, now: float) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("case", choices=("candidates", "link"))
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    cases: list[tuple[str, str, object, object]]
    if args.case == "candidates":
        lossless = ("CANDIDATE_LOSSY_FRAMES", 10**9, streams)
        jpeg = ("CANDIDATE_LOSSY_FRAMES", streams.CANDIDATE_LOSSY_FRAMES, streams)
        cases = [("before", *lossless), ("after", *jpeg)]
        frames, report, runs = 75, candidates_report, args.runs or 3
    else:
        stream = streams.VideoStream
        cases = [
            ("reports-only", "follow_link", no_link, stream),
            ("link-follow", "follow_link", stream.follow_link, stream),
        ]
        frames, report, runs = 180, link_report, args.runs or 2
    for run in range(runs):
        for label, name, value, owner in cases:
            with patched(name, value, owner):
                print(label, run, play_clip(frames, report), flush=True)


if __name__ == "__main__":
    main()
