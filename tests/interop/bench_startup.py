"""Benchmark: from ``spiceserver serve`` to the port open and to the first frame a client has.

    python -m tests.interop.bench_startup [--rounds 5] [--cold] [--andris PATH]

Starts the CLI in a fresh process (the 1024x768 pattern), polls its port every 2 ms, then links
main and display as spice-gtk does and waits for the first DRAW_COPY.  ``--cold`` gives every
round an empty numba cache (NUMBA_CACHE_DIR), as on a machine's first start: the port must open
as fast, and the first frame comes (raw or LZ) while the kernels compile; warm, a first frame
waits up to 2 s for the kernels to load from the cache.  Warm rounds byte-compile the package
first (``compileall``), as an installed package is: with PYTHONDONTWRITEBYTECODE set (as in
this project's CI shell) every start would compile ~75 modules from source (0.2-0.3 s).
``--andris PATH`` also starts andris (on an Xvfb of the same size) in every round, interleaved,
and adds the ratio of the medians.  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spiceserver.protocol.enums import ChannelType
from tests.conftest import ROOT
from tests.fakeclient import LoopbackClient

PASSWORD = "startup-bench"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def first_frame(port: int) -> tuple[str, float]:
    """Link main + display and wait for the first DRAW_COPY; its image type and when."""
    main = await LoopbackClient.open(port)
    assert await main.link(ChannelType.MAIN, PASSWORD) == 0
    init = await main.receive(103)
    session_id = struct.unpack_from("<I", init)[0]
    main.send(104)  # ATTACH_CHANNELS

    async def answer_pings() -> None:
        # the main channel's net test, which spice-gtk answers at once: a display waits up
        # to NET_TEST_TIMEOUT for its result before the first frame (update_loop.py)
        while True:
            main.send(3, (await main.receive(4, timeout=60))[:12])  # PING -> PONG

    pings = asyncio.create_task(answer_pings())
    display = await LoopbackClient.open(port)
    assert await display.link(ChannelType.DISPLAY, PASSWORD, connection_id=session_id) == 0
    generation, _ = struct.unpack("<II", await display.receive(3))
    ping = await display.receive(4)
    display.send(101, struct.pack("<BqBi", 1, 1 << 20, 1, 3 << 20))  # DISPLAY_INIT, GLZ window
    display.send(1, struct.pack("<I", generation))
    display.send(3, ping[:12])
    draw = await display.receive(304, timeout=60)
    at = time.perf_counter()
    image_type = draw[57 + 8]  # SpiceImageDescriptor.type after the 57-byte DRAW_COPY head
    names = {0: "raw", 1: "quic", 101: "lz", 102: "glz"}  # SpiceImageType
    pings.cancel()
    await display.close()
    await main.close()
    return names.get(image_type, str(image_type)), at


def wait_listening(proc: subprocess.Popen[bytes], port: int, started: float) -> float:
    """Seconds from ``started`` until ``port`` accepts a connection (polled every 2 ms)."""
    deadline = started + 60
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return time.perf_counter() - started
        if time.perf_counter() > deadline or proc.poll() is not None:
            raise RuntimeError("the server did not open its port")
        time.sleep(0.002)


def andris_round(andris: str, display: str) -> float:
    """Seconds from starting andris to its port open."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        secret = Path(tmp) / "ticket"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        started = time.perf_counter()
        argv = [andris, "--display", display, "--listen", f"127.0.0.1:{port}"]
        proc = subprocess.Popen(
            [*argv, "--ticket-file", str(secret), "--no-audio"],
            env=dict(os.environ, DISPLAY=display),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return wait_listening(proc, port, started)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def one_round(cold: bool) -> dict[str, object]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        secret = Path(tmp) / "ticket"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if cold:
            env["NUMBA_CACHE_DIR"] = str(Path(tmp) / "numba-cache")
        started = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spiceserver",
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--password-file",
                str(secret),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            listening = started + wait_listening(proc, port, started)
            codec, frame_at = asyncio.run(first_frame(port))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {
        "listen_s": round(listening - started, 3),
        "first_frame_s": round(frame_at - started, 3),
        "first_frame_codec": codec,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="an empty numba cache each round")
    parser.add_argument("--andris", help="also time andris's start (interleaved)")
    args = parser.parse_args()
    if not args.cold:
        for package in ("spiceserver", "encoders"):
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", str(ROOT / package)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
    rounds: list[dict[str, object]] = []
    peer: list[float] = []
    with contextlib.ExitStack() as stack:
        display = None
        if args.andris:
            from tests.interop.clients import Xvfb

            display = stack.enter_context(Xvfb(width=1024, height=768))
        for _ in range(args.rounds):
            rounds.append(one_round(args.cold))
            if args.andris and display is not None:
                peer.append(round(andris_round(args.andris, display), 3))
    listen = [float(r["listen_s"]) for r in rounds]  # type: ignore[arg-type]
    frame = [float(r["first_frame_s"]) for r in rounds]  # type: ignore[arg-type]
    out: dict[str, object] = {
        "cache": "cold" if args.cold else "warm",
        "rounds": rounds,
        "listen_s_median": statistics.median(listen),
        "listen_s_max": max(listen),
        "first_frame_s_median": statistics.median(frame),
        "first_frame_s_max": max(frame),
    }
    if peer:
        out["andris_listen_s"] = peer
        out["listen_ratio_to_andris"] = round(
            statistics.median(listen) / statistics.median(peer), 2
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
