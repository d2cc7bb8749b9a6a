"""Benchmark: GNOME Wayland source latency and idle CPU, on a headless mutter with spice-gtk.

    python -m tests.interop.bench_gnome [--rounds 40] [--idle-seconds 10]

Starts a :class:`tests.interop.gnome.GnomeSession` (mutter, PipeWire, a foot terminal), serves
it with :class:`GnomeSource` in this process and connects spice-gtk.  Two latencies, each the
time until spice-gtk's first ``invalidate`` after the cause (both processes read the same
CLOCK_MONOTONIC):

* ``session``: a key typed into the terminal by a second, independent remote desktop session
  (the change happens in GNOME; what is timed is mutter → PipeWire → source → client);
* ``round_trip``: the key pressed in spice-gtk (client → server → mutter → terminal → back);
* ``cause_to_source_damage``: for both, until the source reported the change on the loop
  (the rest is encoding, sending and spice-gtk's decoding).

Then the CPU time of this process (the server) while the screen stays still.  Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time

from spiceserver.gnome_input import GnomeInput
from spiceserver.sources.gnome import GnomeSource
from spiceserver.sources.mutter import MutterSession
from tests.interop.clients import GtkClient
from tests.interop.gnome import GnomeSession, screenshot
from tests.interop.serverthread import ServerThread

#: evdev and SPICE (set 1) codes of the keys typed: x, then Backspace (the line stays short).
KEYS = [(45, 0x2D), (14, 0x0E)]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with GnomeSession(1280, 800) as gnome:
        source = GnomeSource(bus_address=gnome.bus_address, pipewire_remote=gnome.pipewire_remote)
        with (
            ServerThread(source, password="bench", on_input=GnomeInput(source)) as st,
            GtkClient(st.uri, "bench") as client,
        ):
            client.wait_for_frame(screenshot(gnome), timeout=60)
            typist = st.run(MutterSession.open(gnome.bus_address))
            damaged: list[float] = []

            class Stamp:  # when the source reports a change, on the loop
                def on_damage(self, rects: object) -> None:
                    damaged.append(time.monotonic())

                def on_resize(self, width: int, height: int) -> None: ...
                def on_cursor(self, shape: object) -> None: ...
                def on_cursor_move(self, x: int, y: int) -> None: ...

            st.call(lambda: source.add_listener(Stamp()))

            def change(press: object) -> float:
                time.sleep(0.2)  # the previous change is drawn and sent
                since, stamps = client.event_index, len(damaged)
                t0 = time.monotonic()
                press()
                event = client.wait_for("invalidate", timeout=30, since=since)
                if len(damaged) > stamps:
                    to_source.append(damaged[stamps] - t0)
                return float(event["t"]) - t0

            session: list[float] = []
            to_source: list[float] = []
            round_trip: list[float] = []
            for n in range(args.rounds):
                code, scancode = KEYS[n % 2]

                def typed(code: int = code) -> None:
                    for pressed in (True, False):
                        st.call(
                            lambda p=pressed: typist.notify(
                                "NotifyKeyboardKeycode", "ub", [code, p]
                            )
                        )

                session.append(change(typed))
                round_trip.append(change(lambda s=scancode: client.key_press_and_release(s)))
            st.run(typist.close())
            time.sleep(1.0)
            frames_before = dict(source.stats)
            cpu0, wall0 = time.process_time(), time.monotonic()
            time.sleep(args.idle_seconds)
            idle_cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
            frames_idle = source.stats["frames"] - frames_before["frames"]
    print(
        json.dumps(
            {
                "size": "1280x800",
                "rounds": args.rounds,
                "session_to_client": percentiles(session[2:]),
                "round_trip": percentiles(round_trip[2:]),
                "cause_to_source_damage": percentiles(to_source[4:]),
                "idle_cpu_percent": round(100 * idle_cpu, 2),
                "idle_frames": frames_idle,
                "source_stats": source.stats,
            }
        )
    )


if __name__ == "__main__":
    main()
