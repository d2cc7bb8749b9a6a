"""Benchmark: the server judged from outside under abuse.  Prints one JSON line.

    python -m tests.interop.bench_barrage [--rounds 5] [--half-open 1000] [--stall 60]

Against ``spiceserver serve`` in a subprocess (animated pattern, 1024x768): every barrage case
``--rounds`` times (memory before/after); ``--half-open`` idle connections held while a good
client links; 50 links one after another and 20 at once (time to MAIN INIT, RSA included);
a display client that stops reading for ``--stall`` seconds (server memory meanwhile, and
what it receives once it reads again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import time

from spiceserver.protocol.enums import ChannelType
from tests.barrage import CASES, HalfOpen, answered, good_link, run_cases
from tests.fakeclient import LoopbackClient
from tests.interop.serverprocess import ServerProcess


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def stall(server: ServerProcess, password: str, seconds: float) -> dict[str, object]:
    main = await LoopbackClient.open(server.port)
    await main.link(ChannelType.MAIN, password)
    session_id = struct.unpack_from("<I", await main.receive(103))[0]
    display = await LoopbackClient.open(server.port)
    await display.link(ChannelType.DISPLAY, password, connection_id=session_id)
    display.send(1, struct.pack("<I", 1))
    display.send(101, struct.pack("<BqBi", 1, 1 << 22, 1, 1 << 22))
    await display.receive(102)  # MARK: the first frame is in
    display.writer.transport.pause_reading()  # type: ignore[attr-defined]
    rss = [server.rss_mib()]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        rss.append(server.rss_mib())
    display.writer.transport.resume_reading()  # type: ignore[attr-defined]
    resumed = time.monotonic()
    received = 0
    draws = 0
    first_fresh = None
    while time.monotonic() - resumed < 5:
        try:
            data = await asyncio.wait_for(display.reader.read(1 << 20), 0.5)
        except TimeoutError:
            continue
        received += len(data)
        for type_, _ in display.splitter.feed(data):
            if type_ == 304:
                draws += 1
                if draws % 20 == 0:
                    display.send(2)  # ACK as spice-gtk would
                if first_fresh is None and draws > 45:  # past what was in flight at the stall
                    first_fresh = time.monotonic() - resumed
    await display.close()
    await main.close()
    return {
        "stall_s": seconds,
        "server_rss_mib_during": [round(r, 1) for r in rss],
        "bytes_in_5s_after_resume": received,
        "draws_in_5s_after_resume": draws,
        "s_to_first_new_update_after_backlog": None
        if first_fresh is None
        else round(first_fresh, 3),
    }


async def bench(server: ServerProcess, args: argparse.Namespace) -> dict[str, object]:
    password = server.password
    rss_start = server.rss_mib()
    outcomes: dict[str, set[str]] = {}
    for _ in range(args.rounds):
        for name, what in (await run_cases(server.port, password)).items():
            outcomes.setdefault(name, set()).add(what)
    rss_after_barrage = server.rss_mib()

    idle = await HalfOpen.open(server.port, args.half_open)
    link_with_half_open = await good_link(server.port, password)
    held = await idle.still_open()
    rss_half_open = server.rss_mib()
    await idle.close()

    sequential = [await good_link(server.port, password) for _ in range(50)]
    burst = await asyncio.gather(*(good_link(server.port, password) for _ in range(20)))
    stalled = await stall(server, password, args.stall)
    survived = sum(1 for whats in outcomes.values() if all(answered(w) for w in whats))
    return {
        "cases": len(CASES) * args.rounds,
        "case_kinds_survived": f"{survived}/{len(CASES)}",
        "server_alive": server.alive(),
        "rss_mib_start": round(rss_start, 1),
        "rss_mib_after_barrage": round(rss_after_barrage, 1),
        "half_open_held": held,
        "good_link_ms_with_half_open": round(1000 * link_with_half_open, 1),
        "rss_mib_with_half_open": round(rss_half_open, 1),
        "link_ms_p50": round(1000 * statistics.median(sequential), 1),
        "link_ms_p95": round(1000 * percentile(sequential, 0.95), 1),
        "burst20_link_ms_p50": round(1000 * statistics.median(burst), 1),
        "burst20_link_ms_max": round(1000 * max(burst), 1),
        **stalled,
        "rss_mib_end": round(server.rss_mib(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--half-open", type=int, default=1000)
    parser.add_argument("--stall", type=float, default=60.0)
    args = parser.parse_args()
    with ServerProcess(["--source", "pattern", "--log-level", "error"], "bench-pw") as server:
        result = asyncio.run(bench(server, args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
