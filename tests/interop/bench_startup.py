"""Benchmark: from ``spiceserver serve`` to the port open and to the first frame a client has.

    python -m tests.interop.bench_startup [--rounds 5] [--cold]

Starts the CLI in a fresh process (the 1024x768 pattern), polls its port every 2 ms, then links
main and display as spice-gtk does and waits for the first DRAW_COPY.  ``--cold`` gives every
round an empty numba cache (NUMBA_CACHE_DIR), as on a machine's first start: the port must open
as fast, and the first frame comes (raw or LZ) while the kernels compile; warm, a first frame
waits up to 2 s for the kernels to load from the cache.  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
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
    await display.close()
    await main.close()
    return names.get(image_type, str(image_type)), at


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
            deadline = started + 60
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        listening = time.perf_counter()
                        break
                if time.perf_counter() > deadline or proc.poll() is not None:
                    raise RuntimeError("the server did not open its port")
                time.sleep(0.002)
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
    args = parser.parse_args()
    rounds = [one_round(args.cold) for _ in range(args.rounds)]
    listen = [float(r["listen_s"]) for r in rounds]  # type: ignore[arg-type]
    frame = [float(r["first_frame_s"]) for r in rounds]  # type: ignore[arg-type]
    print(
        json.dumps(
            {
                "cache": "cold" if args.cold else "warm",
                "rounds": rounds,
                "listen_s_median": statistics.median(listen),
                "listen_s_max": max(listen),
                "first_frame_s_median": statistics.median(frame),
                "first_frame_s_max": max(frame),
            }
        )
    )


if __name__ == "__main__":
    main()
