"""TLS set-up, the ticket's life, the pacing of ticket checks, and per-address connection limits."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import ssl
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from spiceserver.errors import ConfigError

__all__ = ["AddressLimits", "FailureTracker", "Ticket", "TicketGate", "tls_context"]

logger = logging.getLogger("spiceserver.security")


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for TLS 1.2 or newer with ``cert`` (PEM chain) and ``key`` (PEM).

    The key must be readable by its owner only: like andris with its ticket file, we refuse to
    start with a secret others can read.
    """
    try:
        mode = os.stat(key).st_mode
    except OSError as exc:
        raise ConfigError(f"TLS key {key}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"TLS key {key} is accessible by group or others (mode {stat.S_IMODE(mode):04o});"
            f" run: chmod 600 {key}"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    return context


@dataclass(slots=True)
class Ticket:
    """The server's ticket: password bytes (None: ticketing disabled), expiry, one-shot use."""

    password: bytes | None
    lifetime: float | None = None
    one_shot: bool = False
    #: When it was set, on the server's clock (default: now, ``time.monotonic``).
    set_at: float = -1.0
    spent: bool = False

    def __post_init__(self) -> None:
        if self.set_at < 0:
            self.set_at = time.monotonic()

    def expired(self, now: float | None = None) -> bool:
        if self.lifetime is None:
            return False
        return (time.monotonic() if now is None else now) - self.set_at > self.lifetime


class FailureTracker:
    """Per-address count of recent authentication failures, and the spacing they earn.

    An address that never failed is checked at once.  After its first failure its ticket
    checks are spaced ``base_delay`` seconds apart, doubling with each further failure within
    ``window`` seconds, up to ``max_delay`` (see :class:`TicketGate`).  At most
    ``max_addresses`` are remembered (least recently failed forgotten first), so memory stays
    bounded.
    """

    def __init__(
        self,
        *,
        base_delay: float = 0.25,
        max_delay: float = 8.0,
        window: float = 60.0,
        max_addresses: int = 4096,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.window = window
        self.max_addresses = max_addresses
        self._failures: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()

    def failed(self, address: str, now: float) -> float:
        """Record a failure; returns the spacing it earns the address's next checks."""
        count, last = self._failures.pop(address, (0, now))
        count = count + 1 if now - last <= self.window else 1
        self._failures[address] = (count, now)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return self.spacing(address, now)

    def spacing(self, address: str, now: float) -> float:
        """Seconds between two ticket checks of ``address`` (0: it has no recent failure)."""
        count, last = self._failures.get(address, (0, now))
        if count == 0 or now - last > self.window:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** (count - 1))

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


Check = Callable[[], None]


class TicketGate:
    """When each address may have its next ticket checked.

    An address with no recent failure is checked at once.  Once it has failed, its checks run
    one at a time, in arrival order, ``FailureTracker.spacing`` apart, and each answer (right
    ticket or wrong) goes out when its check runs: the timing of an answer says nothing about
    the ticket, so abandoning slow answers gains a guesser nothing, and the checks of one
    address stay at a few per second at most.  A waiting check whose connection goes away is
    cancelled: it costs nothing and is never run.  Other addresses are never delayed.
    """

    def __init__(
        self,
        failures: FailureTracker,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_addresses: int = 4096,
    ) -> None:
        self.failures = failures
        self.clock = clock
        self.max_addresses = max_addresses
        #: When each address may be checked next (only future times matter).
        self._next: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._waiting: dict[str, collections.deque[Check]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: Checks run, ever (for tests and metrics).
        self.checks = 0

    def submit(self, address: str, check: Check) -> Callable[[], None] | None:
        """Run ``check`` now if ``address`` may be checked now (returns None), else queue it
        and return a function that cancels it.  ``check`` records its own outcome in the
        FailureTracker before it returns."""
        now = self.clock()
        queue = self._waiting.get(address)
        due = self._next.get(address)
        if due is not None and due <= now:
            del self._next[address]
            due = None
        if queue is None and due is None:
            self._run(address, check)
            return None
        if queue is None:
            queue = self._waiting[address] = collections.deque()
        queue.append(check)
        if address not in self._timers:
            delay = 0.0 if due is None else due - now
            self._arm(address, delay)

        def cancel() -> None:
            waiting = self._waiting.get(address)
            if waiting is not None and check in waiting:
                waiting.remove(check)

        return cancel

    def waiting(self, address: str) -> int:
        """Checks of ``address`` queued now."""
        return len(self._waiting.get(address, ()))

    def close(self) -> None:
        """Cancel every timer and forget every waiting check (the server is closing)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()

    def _run(self, address: str, check: Check) -> None:
        self.checks += 1
        try:
            check()
        finally:
            now = self.clock()
            spacing = self.failures.spacing(address, now)
            self._next.pop(address, None)
            if spacing > 0:
                self._next[address] = now + spacing
                while len(self._next) > self.max_addresses:
                    self._next.popitem(last=False)
                if self._waiting.get(address) and address not in self._timers:
                    self._arm(address, spacing)

    def _arm(self, address: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timers[address] = loop.call_later(max(0.0, delay), self._due, address)

    def _due(self, address: str) -> None:
        """The address's slot came: run its oldest waiting check; the next one waits a full
        spacing from now (timers, not clock readings, pace the queue)."""
        del self._timers[address]
        queue = self._waiting.get(address)
        if not queue:
            self._waiting.pop(address, None)
            return
        check = queue.popleft()
        if not queue:
            del self._waiting[address]
        self._run(address, check)
        if self._waiting.get(address) and address not in self._timers:
            # _run armed nothing: the check earned no spacing (a success); go on at once.
            self._arm(address, 0.0)


class AddressLimits:
    """Connections per client address: all of them, and those not linked yet.

    ``max_connections_per_address`` keeps one address from taking every connection slot;
    ``max_unauthenticated_per_address`` bounds the links one address may have in progress
    (waiting for a key, a ticket or its ticket check), and so the file descriptors a guesser
    holds.  Counts are dropped when they reach zero: memory follows the open connections.
    """

    def __init__(self, max_per_address: int, max_unauthenticated: int) -> None:
        self.max_per_address = max_per_address
        self.max_unauthenticated = max_unauthenticated
        self.open: collections.Counter[str] = collections.Counter()
        self.unauthenticated: collections.Counter[str] = collections.Counter()

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or why it is refused (not counted)."""
        if self.open[address] >= self.max_per_address:
            return (
                f"{self.max_per_address} connections from {address} already "
                "(max_connections_per_address)"
            )
        if self.unauthenticated[address] >= self.max_unauthenticated:
            return (
                f"{self.max_unauthenticated} links from {address} in progress already "
                "(max_unauthenticated_per_address)"
            )
        self.open[address] += 1
        self.unauthenticated[address] += 1
        return None

    def authenticated(self, address: str) -> None:
        """The connection linked: it no longer counts as a link in progress."""
        _decrement(self.unauthenticated, address)

    def closed(self, address: str, authenticated: bool) -> None:
        _decrement(self.open, address)
        if not authenticated:
            _decrement(self.unauthenticated, address)


def _decrement(counter: collections.Counter[str], key: str) -> None:
    count = counter[key] - 1
    if count > 0:
        counter[key] = count
    else:
        del counter[key]
