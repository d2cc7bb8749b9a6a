"""Pacing of grabs and updates: ``max_fps`` on average, with a short burst after a pause.

A program seldom draws a change in one piece.  On a key in ``man``, xterm clears the prompt
line, scrolls, draws the new line and the prompt again, and X reports damage for each piece
as it is drawn, a few milliseconds apart.  A schedule that allows the next grab only a full
interval (33 ms at 30 fps) after the last one sends the first piece at once and the rest a
frame later: a scroll then reached spice-gtk 46 ms after the key, against 36.5 ms for andris.
Letting the schedule fall up to ``BURST - 1`` slots behind the clock allows that many grabs
back to back after a pause, while over any span the count still stays within ``BURST`` of
``max_fps`` times its length: the same scroll then took 14.8 ms, for 1.5 % more session bytes
(``python -m tests.interop.bench_desktop``: scroll p50 46.1 ms with no burst, 16.1 ms with 2,
14.8 with 4, 17.2 with 8; bytes 432 KB, 438, 439, 436).
"""

from __future__ import annotations

__all__ = ["BURST", "next_slot"]

#: Grabs (or updates) allowed back to back after a pause of ``BURST - 1`` intervals or more.
BURST = 4


def next_slot(slot: float, now: float, interval: float, burst: int = BURST) -> float:
    """When the next grab or update may start, one having started at ``now`` in ``slot``
    (the previous result, or any time before the first).

    Slots advance by ``interval`` and never lag ``now`` by more than ``burst - 1`` of them, so
    ``burst`` = 1 is the plain ``now + interval`` of a schedule without bursts.
    """
    return max(slot, now - (burst - 1) * interval) + interval
