"""Benchmark: a server judged from outside while one client at a time attacks it.

    python -m tests.interop.bench_hostile [--seconds 8] [--churn 1000] [--only CASE,...]

Runs ``spiceserver serve --source pattern`` (1024x768 at 30 fps, default auto-glz, the ticket
in $SPICESERVER_PASSWORD, ``--record`` on) in its own process, with, throughout:

* two light display clients in a process of their own (``tests.interop.gapwatch``), which
  report the longest time between two frames;
* a spice-gtk client, whose surface must equal ``PatternSource.render(n)`` for the frame
  number ``n`` it shows (read off the frame counter): pixel-exact.

After ``--warmup`` seconds (the GLZ windows and the encode cache fill, then RSS is flat),
each hostile client of :mod:`tests.hostile` in turn (issue 12's list), at niceness ``--nice``
(they share the server's cores here; on a network they would not).  For each, one JSON line:
what the client saw, the server's RSS before / at its peak / after and its growth, the file
descriptors it held above its baseline (and the attacker's sockets, for the per-address
cases), the other clients' longest display gap (and each interval with one over 100 ms),
log lines and record bytes written, ticket checks per second for the guessers (from the
record), and whether a *new* spice-gtk client linked and got a pixel-exact frame during the
attack and after it (and the one linked throughout still does).  Then ``--churn`` hostile
sessions in sequence, and RSS before and after them.  The last line sums up, against the
bound "RSS growth within 2x one session's documented buffer limits" (``SESSION_LIMITS_MIB``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from spiceserver.protocol.channel import DEFAULT_READ_SIZE, FULL_HEADER
from spiceserver.server.glz import MIN_DICTIONARY_BYTES
from spiceserver.sources.pattern import PatternSource, _draw_digit
from tests import hostile
from tests.conftest import ROOT
from tests.interop.bench_clients import process_cpu_seconds
from tests.interop.clients import GtkClient, HarnessError
from tests.interop.gapwatch import PASSWORD_ENV
from tests.interop.serverprocess import ServerProcess

PASSWORD = "hostile-bench-pw"
MIB = 2**20
#: One session's documented buffer limits (ServerConfig defaults, README "Security and
#: limits"): queued output, a GLZ dictionary, and each channel's receive buffer.
SESSION_OUTPUT = 64 * MIB  # max_session_write_buffer
GLZ_DICTIONARY = 34_209_792  # GlzDictionary.nbytes at its 8 Mi-pixel cap
RECEIVE = (64 * 1024 + 3 * 4096) + 4 * (FULL_HEADER.size + DEFAULT_READ_SIZE)
SESSION_LIMITS_MIB = (SESSION_OUTPUT + GLZ_DICTIONARY + RECEIVE) / MIB
assert MIN_DICTIONARY_BYTES < GLZ_DICTIONARY


# ---------------------------------------------------------------------- pixel-exact frames


def _digit_templates() -> list[np.ndarray]:
    templates = []
    for digit in range(10):
        cell = np.full((40, 24, 4), 16, dtype=np.uint8)  # the counter's background
        _draw_digit(cell, 0, 0, digit)
        templates.append(cell[..., :3])
    return templates


_DIGITS = _digit_templates()


def counter_value(frame: np.ndarray) -> int | None:
    """The pattern frame number a surface shows (its six-digit counter), or None."""
    value = 0
    for i in range(6):
        x, y = 16 + 8 + i * 32, 16 + 8
        cell = frame[y : y + 40, x : x + 24, :3]
        digit = next((d for d, t in enumerate(_DIGITS) if np.array_equal(cell, t)), None)
        if digit is None:
            return None
        value = value * 10 + digit
    return value


def pixel_exact(client: GtkClient, pattern: PatternSource, tries: int = 30) -> bool:
    """Whether the client's surface is exactly some frame of the pattern (a dump may fall
    between two draws of one update: then the next update is waited for, ``tries`` times)."""
    for _ in range(tries):
        try:
            frame = client.dump_frame(timeout=10)
        except HarnessError:
            frame = None
        if frame is not None and frame.shape[:2] == (768, 1024):
            n = counter_value(frame)
            if n is not None and np.array_equal(frame[..., :3], pattern.render(n)[..., :3]):
                return True
        try:
            client.wait_for("invalidate", timeout=5)
        except (TimeoutError, HarnessError):
            return False
    return False


def fresh_client(uri: str, pattern: PatternSource) -> dict[str, Any]:
    """A new spice-gtk client: links, and gets a pixel-exact frame?  (Blocking: a thread.)"""
    started = time.monotonic()
    try:
        with GtkClient(uri, PASSWORD) as client:
            client.wait_for("mark", timeout=30)
            ok = pixel_exact(client, pattern)
    except (TimeoutError, HarnessError) as exc:
        return {"ok": False, "error": str(exc).splitlines()[0][:120]}
    return {"ok": ok, "s": round(time.monotonic() - started, 2)}


# ---------------------------------------------------------------------- measurements


class GapWatch:
    """The light display clients' process, and the gap lines it prints."""

    def __init__(self, port: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **{PASSWORD_ENV: PASSWORD})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.interop.gapwatch", str(port)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self.ready.wait(90):
            raise RuntimeError("gapwatch did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            data = json.loads(line)
            if data.get("event") == "ready":
                self.ready.set()
            else:
                self.lines.append(data)

    def max_gap_ms(self, start: float, end: float) -> float:
        gaps = [line["gap_ms"] for line in self.lines if start <= line["t"] <= end + 0.15]
        return max(gaps, default=float("nan"))

    def late(self, start: float, end: float, over: float = 100.0) -> list[list[float]]:
        """[seconds after ``start``, gap ms] of each interval with a gap over ``over`` ms."""
        return [
            [round(line["t"] - start, 2), line["gap_ms"]]
            for line in self.lines
            if start <= line["t"] <= end + 0.15 and line["gap_ms"] > over
        ]

    def closed(self) -> int:
        return max((line.get("closed", 0) for line in self.lines), default=0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def cpu_percent(server: ServerProcess, seconds: float) -> float:
    """The server's CPU use over the next ``seconds`` (all threads, % of one core)."""
    assert server.proc is not None
    before = process_cpu_seconds(server.proc.pid)
    await asyncio.sleep(seconds)
    return 100 * (process_cpu_seconds(server.proc.pid) - before) / seconds


async def settled(server: ServerProcess, idle: float, limit: float = 60.0) -> float:
    """Until the server's CPU use is back near ``idle`` (what an attack left in its socket
    buffers has been worked off); seconds it took, at most ``limit``."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if await cpu_percent(server, 0.5) < idle * 1.5 + 5:
            break
    return round(time.monotonic() - started, 1)


def record_stopped(path: Path) -> bool:
    return '"record_stopped"' in path.read_text()[-400:]


def file_size(path: Path) -> int:
    return path.stat().st_size


def record_stats(path: Path, since: float, peer: str) -> dict[str, Any]:
    """Ticket checks from ``peer`` in the session record since ``since`` (unix time): each
    check ends in a link event (ok or refused)."""
    stamps = []
    with path.open() as lines:
        for line in lines:
            if '"event":"link"' in line and f'"peer":"{peer}:' in line:
                t = json.loads(line)["t"]
                if t >= since:
                    stamps.append(t)
    if not stamps:
        return {"ticket_checks": 0, "ticket_checks_max_per_s": 0}
    per_second: dict[int, int] = {}
    for t in stamps:
        per_second[int(t)] = per_second.get(int(t), 0) + 1
    span = max(stamps) - min(stamps)
    return {
        "ticket_checks": len(stamps),
        "ticket_checks_per_s": round(len(stamps) / max(span, 1.0), 2),
        "ticket_checks_max_per_s": max(per_second.values()),
    }


async def measure(
    name: str,
    attack: Callable[[], Awaitable[dict[str, Any]]],
    server: ServerProcess,
    watchers: tuple[GapWatch, GtkClient, PatternSource, Path, float],
    *,
    during: bool = True,
    address: str | None = None,
) -> dict[str, Any]:
    """Run one attack with every measurement around it (``address``: the attacker's, whose
    sockets in the server are counted)."""
    gaps, throughout, pattern, record, idle_cpu = watchers
    await asyncio.sleep(1.0)  # the previous case's aftermath settles
    rss_before, fds_before = server.rss_mib(), server.open_fds()
    lines_before, record_before = server.lines, file_size(record)
    peak = [rss_before, fds_before, 0]
    sampling = True

    async def sample() -> None:
        while sampling:
            peak[0] = max(peak[0], server.rss_mib())
            peak[1] = max(peak[1], server.open_fds())
            if address is not None:
                peak[2] = max(peak[2], server.sockets_from(address))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    wall, started = time.time(), time.monotonic()
    task = asyncio.create_task(attack())
    fresh: dict[str, Any] | None = None
    if during:
        await asyncio.sleep(1.0)  # the attack is under way
        fresh = await asyncio.to_thread(fresh_client, server.uri, pattern)
        fresh["at"] = round(time.monotonic() - started, 2)
    result = await task
    aftermath = await settled(server, idle_cpu)  # work the attack left queued in the server
    ended = time.monotonic()
    sampling = False
    await sampler
    line: dict[str, Any] = {"case": name, **result, "server_busy_after_s": aftermath}
    if address is not None:
        line["attacker_sockets_held_max"] = peak[2]
    line.update(
        rss_mib_before=round(rss_before, 1),
        rss_mib_peak=round(peak[0], 1),
        rss_growth_mib=round(peak[0] - rss_before, 1),
        fds_over_baseline=peak[1] - fds_before,
        max_gap_ms=gaps.max_gap_ms(started, ended),
        late_frames=gaps.late(started, ended),
        log_lines=server.lines - lines_before,
        record_bytes=file_size(record) - record_before,
    )
    if name.startswith("brute_force"):
        line.update(record_stats(record, wall, hostile.GUESSER))
    line["gtk_during"] = fresh
    line["gtk_after"] = await asyncio.to_thread(fresh_client, server.uri, pattern)
    line["gtk_throughout"] = await asyncio.to_thread(pixel_exact, throughout, pattern)
    line["rss_mib_after"] = round(server.rss_mib(), 1)
    print(json.dumps(line), flush=True)
    return line


def cases(
    port: int, seconds: float, only: set[str] | None
) -> list[tuple[str, Any, bool, str | None]]:
    pw = PASSWORD

    async def idle() -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {}

    guesser = hostile.GUESSER
    table: list[tuple[str, Any, bool, str | None]] = [
        # The reference: new spice-gtk clients link, and nobody attacks.
        ("no_attack", idle, True, None),
        ("attach_flood", lambda: hostile.attach_flood(port, pw, seconds), True, None),
        ("attach_flood_x4", lambda: hostile.attach_flood(port, pw, seconds, 4), True, None),
        ("mouse_mode_flood", lambda: hostile.mouse_mode_flood(port, pw, seconds), True, None),
        ("mouse_mode_flood_x4", lambda: hostile.mouse_mode_flood(port, pw, seconds, 4), True, None),
        ("motion_flood", lambda: hostile.motion_flood(port, pw, seconds), True, None),
        ("brute_force_abandoning", lambda: hostile.brute_force(port, pw, seconds), True, guesser),
        (
            "right_ticket_after_failures",
            lambda: hostile.right_ticket_after_failures(port, pw),
            False,
            guesser,
        ),
        (
            "brute_force_patient",
            lambda: hostile.brute_force(port, pw, seconds, concurrency=8, abandon_after=None),
            True,
            guesser,
        ),
        ("session_probes", lambda: hostile.session_probes(port, pw), True, None),
        ("idle_sockets_one_address", lambda: hostile.idle_sockets(port, pw), True, "127.0.0.4"),
        ("agent_burst", lambda: hostile.agent_burst(port, pw), False, None),
        ("glz_ids_48", lambda: hostile.glz_ids(port, pw, 48), True, None),
        ("key_scancode_1mib", lambda: hostile.key_scancode(port, pw, 1 << 20), True, None),
        (
            "key_scancode_flood",
            lambda: hostile.key_scancode(port, pw, 256 << 20, seconds),
            True,
            None,
        ),
    ]
    return [case for case in table if only is None or case[0] in only]


async def bench(args: argparse.Namespace) -> None:
    pattern = PatternSource(1024, 768)
    record = Path(tempfile.mkdtemp(prefix="bench-hostile-")) / "record.jsonl"
    server_args = ["--source", "pattern", "--record", str(record), "--log-level", "info"]
    with ServerProcess(server_args, PASSWORD, env_password=True) as server:
        hidden = PASSWORD.encode() not in server.cmdline()
        gaps = GapWatch(server.port)
        # The attackers run here, on the server's two cores: at a lower priority (and so the
        # spice-gtk clients started from here), so that what is measured is what the server
        # does under attack, not the attacker's own CPU taking it away (on a real network it
        # has a machine of its own).  The server and the display watchers keep theirs.
        os.nice(args.nice)
        throughout = await asyncio.to_thread(GtkClient, server.uri, PASSWORD)
        try:
            await asyncio.to_thread(throughout.wait_for, "mark", None, 30)
            # Warm up: the GLZ windows of the clients above and the encode cache fill (~20 s
            # of the animated pattern), then RSS stays flat: from here on, growth is the
            # attacks'.
            await asyncio.sleep(args.warmup)
            idle_started = time.monotonic()
            idle_cpu = await cpu_percent(server, 3.0)
            summary: dict[str, Any] = {
                "idle_server_cpu_pct": round(idle_cpu),
                "password_off_cmdline": hidden,
                "idle_max_gap_ms": gaps.max_gap_ms(idle_started, time.monotonic()),
                "rss_mib_start": round(server.rss_mib(), 1),
            }
            lines = []
            only = set(args.only.split(",")) if args.only else None
            for name, attack, during, address in cases(server.port, args.seconds, only):
                line = await measure(
                    name,
                    attack,
                    server,
                    (gaps, throughout, pattern, record, idle_cpu),
                    during=during,
                    address=address,
                )
                lines.append(line)
            if args.churn and (only is None or "session_churn" in only):
                await asyncio.sleep(2)
                rss_before = server.rss_mib()
                churn = await hostile.session_churn(server.port, PASSWORD, args.churn)
                await asyncio.sleep(3)
                churn.update(
                    case="session_churn",
                    rss_mib_before=round(rss_before, 1),
                    rss_mib_after=round(server.rss_mib(), 1),
                    rss_change_mib=round(server.rss_mib() - rss_before, 1),
                    gtk_throughout=await asyncio.to_thread(pixel_exact, throughout, pattern),
                )
                print(json.dumps(churn), flush=True)
                summary["churn_rss_change_mib"] = churn["rss_change_mib"]
            bound = 2 * SESSION_LIMITS_MIB
            summary.update(
                session_limits_mib=round(SESSION_LIMITS_MIB, 1),
                rss_growth_bound_mib=round(bound, 1),
                worst_rss_growth_mib=max((line["rss_growth_mib"] for line in lines), default=0),
                worst_gap_ms=max((line["max_gap_ms"] for line in lines), default=0),
                every_gtk_check_ok=all(
                    line["gtk_throughout"]
                    and line["gtk_after"]["ok"]
                    and (line["gtk_during"] is None or line["gtk_during"]["ok"])
                    for line in lines
                ),
                watchers_closed=gaps.closed(),
                server_alive=server.alive(),
                record_stopped=record_stopped(record),
            )
            print(json.dumps(summary), flush=True)
        finally:
            throughout.close()
            gaps.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each flood")
    parser.add_argument("--churn", type=int, default=1000, help="hostile sessions in sequence")
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--warmup", type=float, default=25.0, help="seconds before the cases")
    parser.add_argument(
        "--nice", type=int, default=10, help="niceness of the attackers (0: as the server)"
    )
    args = parser.parse_args()
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
