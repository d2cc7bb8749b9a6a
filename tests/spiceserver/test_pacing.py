"""The grab and update schedule (spiceserver/pacing.py): max_fps on average, a burst after a
pause, never more than ``burst`` beyond the rate over any span."""

from __future__ import annotations

import pytest

from spiceserver.pacing import BURST, next_slot

INTERVAL = 1 / 30


def test_without_a_burst_the_next_slot_is_one_interval_after_now() -> None:
    assert next_slot(0.0, 10.0, INTERVAL, burst=1) == pytest.approx(10.0 + INTERVAL)
    # on schedule: one interval after the slot just taken
    assert next_slot(10.0, 10.0, INTERVAL, burst=1) == pytest.approx(10.0 + INTERVAL)


@pytest.mark.parametrize("burst", [1, 2, BURST, 8])
def test_after_a_pause_exactly_burst_slots_are_due_at_once(burst: int) -> None:
    now, slot, taken = 100.0, 0.0, 0
    while slot <= now:  # the caller takes a slot whenever it is due
        slot = next_slot(slot, now, INTERVAL, burst)
        taken += 1
    assert taken == burst
    assert slot == pytest.approx(now + INTERVAL)  # then the plain rate


@pytest.mark.parametrize("burst", [1, BURST])
def test_a_busy_caller_never_exceeds_the_rate_by_more_than_the_burst(burst: int) -> None:
    # work arriving every 5 ms for 3 s, a slot taken whenever one is due: at most
    # 3 s * 30 + burst grabs, and the steady rate is max_fps
    slot, taken, times = 0.0, 0, []
    for step in range(600):
        now = 50.0 + step * 0.005
        if now >= slot:
            slot = next_slot(slot, now, INTERVAL, burst)
            taken += 1
            times.append(now)
    assert taken <= 3.0 / INTERVAL + burst
    late = [b - a for a, b in zip(times[burst:], times[burst + 1 :], strict=False)]
    assert min(late) >= INTERVAL - 0.005


def test_a_late_slot_banks_no_more_than_burst() -> None:
    # one update, a long pause, then work: the pause is not saved up beyond the burst
    slot = next_slot(0.0, 1.0, INTERVAL)
    due = 0
    now = 60.0
    while slot <= now:
        slot = next_slot(slot, now, INTERVAL)
        due += 1
    assert due == BURST
