"""Benchmark: sound to spice-gtk — latency, bytes per second, server CPU.

    python -m tests.interop.bench_audio [--seconds 5]

One server on a thread (NumpyAudioSource: the benchmark pushes a 440 Hz tone in real time)
and one spice-gtk (the GTK harness, playback-data events).  Prints one JSON line per mode
(opus, raw): ``latency_ms`` from the push of the first block to spice-gtk's first
``playback-data`` (both on CLOCK_MONOTONIC: same machine), the playback channel's bytes per
second on the wire, the hub's Opus encode time per packet, and the server process's CPU
(user + system, all threads, the harness excluded) in % of one core while playing, next to
the same with audio off.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from spiceserver import NumpySource
from spiceserver.protocol.enums import ChannelType
from spiceserver.sources.audio import NumpyAudioSource, ToneSource
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

PASSWORD = "audio-bench"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pusher(sound: NumpyAudioSource, stop: threading.Event, first: list[float]) -> None:
    tone = ToneSource()
    start = time.monotonic()
    index = 0
    while not stop.is_set():
        wait = start + index * 0.01 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if not first:
            first.append(time.monotonic())
        sound.push(np.frombuffer(tone.block(index), dtype=np.int16))
        index += 1


def run(mode: str, seconds: float) -> dict[str, object]:
    sound = NumpyAudioSource()
    options: dict[str, object] = {"audio_opus": mode == "opus"}
    if mode != "off":
        options["sound"] = sound
    pcm = Path(tempfile.mkdtemp()) / "pcm"
    args = ["--session-prop", "enable-audio=true", "--playback-pcm", str(pcm)]
    with (
        ServerThread(NumpySource(64, 48), password=PASSWORD, **options) as st,
        GtkClient(st.uri, PASSWORD, extra_args=args) as client,
    ):
        client.wait_for("mark", timeout=30)
        if mode != "off":
            client.wait_channel_open("playback")
        stop, first = threading.Event(), []
        thread = threading.Thread(target=pusher, args=(sound, stop, first), daemon=True)
        before_cpu, before = cpu(), time.monotonic()
        thread.start()
        result: dict[str, object] = {"mode": mode}
        if mode != "off":
            data = client.wait_for("playback-data", timeout=10)
            result["latency_ms"] = round((data["t"] - first[0]) * 1000, 1)
        time.sleep(seconds)  # a benchmark measures over a fixed time
        elapsed = time.monotonic() - before
        result["server_cpu_percent"] = round(100 * (cpu() - before_cpu) / elapsed, 1)
        stop.set()
        thread.join()
        server = st.server
        assert server is not None
        if mode != "off":
            (connection,) = [
                c
                for c in server.context.connections
                if c.request is not None and c.request.channel_type == ChannelType.PLAYBACK
            ]
            result["wire_bytes_per_s"] = round(connection.channel.stats.bytes_sent / elapsed)
            hub = server.context.audio
            assert hub is not None
            if hub.packets and mode == "opus":
                result["opus_encode_us"] = round(hub.encode_seconds / hub.packets * 1e6, 1)
            result["dropped"] = connection.handler.dropped
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    for mode in ("off", "raw", "opus"):
        print(json.dumps(run(mode, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
