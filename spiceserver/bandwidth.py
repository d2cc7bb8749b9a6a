"""How fast a session's link is: round trip and bandwidth, at connect and as it goes.

At connect the main channel runs libspice-server's net test
(``spice:server/main-channel-client.cpp`` ``start_net_test`` / ``handle_pong``): a 0-byte
PING for the latency, then a large one; the large one's round trip minus the latency is the
time the link took to carry its padding.  libspice sends 250 KiB; we send
:data:`NET_TEST_BYTES`, half that, so that on a 2 Mbit/s link the answer comes in about half a
second and the first screen (which waits for it, see the display's start-up) need not wait
a whole one.  Below :data:`LOW_BANDWIDTH_BPS` the link is "low bandwidth"
(``is_low_bandwidth``: 10 Mbit/s there too).

Afterwards every ACK is a delivery sample (the ACK window's bytes over the time between two
ACKs), counted only when the sender was never the bottleneck: everything the client
acknowledged in the interval had been queued before it began (so the link, or the client,
set the pace).  The estimate is the median of the recent samples; a server with nothing to
send makes no samples and keeps its last estimate.  Transport backpressure (the kernel's
buffer full: ``pause_writing``) is counted too: time spent paused says the link is the limit.

Pure bookkeeping: time is passed in.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["LOW_BANDWIDTH_BPS", "NET_TEST_BYTES", "LinkEstimate"]

#: Padding of the net test's large PING (libspice: 250 KiB).
NET_TEST_BYTES = 128 * 1024
#: Below this many bits per second a link is slow (libspice ``is_low_bandwidth``).
LOW_BANDWIDTH_BPS = 10_000_000
#: A slow link counts as fast again only above this many bits per second (no flapping).
HIGH_BANDWIDTH_BPS = 12_000_000
#: Delivery samples smaller than this are noise (a few messages, one TCP burst).
MIN_SAMPLE_BYTES = 32 * 1024
#: Samples older than this many seconds no longer count.
SAMPLE_MAX_AGE = 10.0
#: Samples for an estimate of its own (before that the net test's figure stands).
MIN_SAMPLES = 3


@dataclass(slots=True)
class _Acks:
    """One channel's previous ACK: bytes acknowledged then, and bytes queued by then."""

    acked: int = 0
    queued: int = 0
    at: float | None = None


@dataclass(slots=True)
class LinkEstimate:
    """One session's view of its link (shared by its channels)."""

    #: Seconds: the smallest round trip of a 0-byte PING (None: not measured yet).
    round_trip: float | None = None
    #: Bits per second from the net test (None: not done, or its figures were invalid).
    net_test_bps: float | None = None
    #: The net test is under way (its PINGs not all answered).
    testing: bool = False
    #: Seconds the transports of the session spent paused (kernel buffers full).
    paused_seconds: float = 0.0
    _latency_id: int | None = None
    _rate_id: int | None = None
    _samples: collections.deque[tuple[float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=16)
    )
    _acks: dict[int, _Acks] = field(default_factory=dict)
    _paused_at: dict[int, float] = field(default_factory=dict)
    _low: bool = False
    #: Called once the net test ends (the display's first frame waits for it).
    _waiters: list[Callable[[], None]] = field(default_factory=list)

    # ------------------------------------------------------------------ the net test

    def net_test_started(self, latency_id: int, rate_id: int) -> None:
        """The main channel sent the 0-byte PING ``latency_id`` and the large ``rate_id``."""
        self._latency_id, self._rate_id, self.testing = latency_id, rate_id, True

    def pong(self, ping_id: int, round_trip: float) -> bool:
        """A main-channel PONG with its round trip: the net test's 0-byte PING gives the
        latency, its large one the bandwidth.  True when this PONG ended the net test."""
        if ping_id == self._rate_id and self.testing:
            self.testing = False
            waiters, self._waiters = self._waiters, []
            self._rate(round_trip)
            for waiter in waiters:
                waiter()
            return True
        if ping_id == self._latency_id and (
            self.round_trip is None or round_trip < self.round_trip
        ):
            self.round_trip = round_trip
        return False

    def when_tested(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the net test has ended (now, if it is not under way)."""
        if self.testing:
            self._waiters.append(callback)
        else:
            callback()

    def _rate(self, round_trip: float) -> None:
        latency = self.round_trip
        if latency is None or round_trip <= latency:
            return  # invalid (a loaded machine): libspice then assumes a fast link
        self.net_test_bps = NET_TEST_BYTES * 8 / (round_trip - latency)
        self._update_low()

    # ------------------------------------------------------------------ as it goes

    def acked(self, channel: int, acked_bytes: int, queued_bytes: int, now: float) -> None:
        """An ACK on ``channel`` (any key): the channel has now ``acked_bytes`` acknowledged
        of the ``queued_bytes`` it queued so far."""
        previous = self._acks.setdefault(channel, _Acks())
        if previous.at is not None and acked_bytes > previous.acked:
            delivered = acked_bytes - previous.acked
            interval = now - previous.at
            # Everything acknowledged now was already queued at the previous ACK: the link
            # (or the client) was the bottleneck for the whole interval.
            busy = previous.queued >= acked_bytes
            if busy and delivered >= MIN_SAMPLE_BYTES and interval > 0.001:
                self._samples.append((now, delivered * 8 / interval))
                self._update_low(now)
        previous.acked, previous.queued, previous.at = acked_bytes, queued_bytes, now

    def writing_paused(self, channel: int, paused: bool, now: float) -> None:
        """A transport paused (``pause_writing``) or resumed."""
        if paused:
            self._paused_at.setdefault(channel, now)
        else:
            started = self._paused_at.pop(channel, None)
            if started is not None:
                self.paused_seconds += max(0.0, now - started)

    def forget(self, channel: int) -> None:
        """A channel closed."""
        self._acks.pop(channel, None)
        self._paused_at.pop(channel, None)

    # ------------------------------------------------------------------ the answer

    def ack_bps(self, now: float | None = None) -> float | None:
        """Median of the recent delivery samples (None: too few)."""
        samples = [bps for at, bps in self._samples if now is None or now - at <= SAMPLE_MAX_AGE]
        return statistics.median(samples) if len(samples) >= MIN_SAMPLES else None

    def bandwidth(self, now: float | None = None) -> float | None:
        """Bits per second: the ACK estimate when there is one, else the net test's."""
        bps = self.ack_bps(now)
        return self.net_test_bps if bps is None else bps

    def low_bandwidth(self) -> bool:
        """Below 10 Mbit/s (and not back above 12 since); unknown counts as fast, as in
        libspice (its bit rate starts at ~0, the largest u64)."""
        return self._low

    def _update_low(self, now: float | None = None) -> None:
        bps = self.bandwidth(now)
        if bps is None:
            return
        if self._low:
            self._low = bps < HIGH_BANDWIDTH_BPS
        else:
            self._low = bps < LOW_BANDWIDTH_BPS

    def summary(self, now: float | None = None) -> str:
        """For the session metrics line."""
        rtt = "?" if self.round_trip is None else f"{self.round_trip * 1000:.1f}ms"
        net = "?" if self.net_test_bps is None else f"{self.net_test_bps / 1e6:.1f}"
        acks = self.ack_bps(now)
        ack = "?" if acks is None else f"{acks / 1e6:.1f}"
        return (
            f"link[rtt={rtt} net_test={net}Mbit/s acks={ack}Mbit/s "
            f"paused={self.paused_seconds:.1f}s{' low' if self._low else ''}]"
        )
