"""Benchmark: the server's RSS with one spice-gtk client on a 1920x1080 X desktop.

    python -m tests.interop.bench_rss [--rounds 3] [-- SERVER-ARGS...]

A fresh Xvfb with ``man xterm`` in an xterm, ``spiceserver serve --source desktop:N`` in its own
process (after its codecs are ready), spice-gtk connected until its first MARK, a few pages
of the manual turned, then /proc/PID/status VmRSS.  Prints one JSON line (median of rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess

from tests.interop.clients import GtkClient, Xvfb
from tests.interop.serverprocess import ServerProcess

PASSWORD = "rss-bench"


def one_round(server_args: list[str]) -> tuple[float, float]:
    with Xvfb(width=1920, height=1080) as display:
        env = dict(os.environ, DISPLAY=display)
        term = subprocess.Popen(
            ["xterm", "-geometry", "200x60+0+0", "-e", "man xterm"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with ServerProcess(
                ["--source", f"desktop:{display}", *server_args], PASSWORD
            ) as server:
                before = server.rss_mib()
                with GtkClient(server.uri, PASSWORD) as client:
                    client.wait_for("mark", timeout=30)
                    for _ in range(3):  # pages of the manual: full-screen updates
                        subprocess.run(
                            ["xdotool", "key", "--delay", "50", "space", "space", "b", "b"],
                            env=env,
                            check=True,
                            timeout=30,
                        )
                    client.ping()  # every update sent so far has been handled
                    return before, server.rss_mib()
        finally:
            term.kill()
            term.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("server_args", nargs="*", help="extra spiceserver serve arguments")
    args = parser.parse_args()
    rounds = [one_round(args.server_args) for _ in range(args.rounds)]
    print(
        json.dumps(
            {
                "rss_mib_before_client": statistics.median(r[0] for r in rounds),
                "rss_mib_one_client": statistics.median(r[1] for r in rounds),
                "rounds": rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
