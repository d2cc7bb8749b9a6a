"""TLS set-up, the ticket's life, and the slow-down for repeated authentication failures."""

from __future__ import annotations

import collections
import logging
import os
import ssl
import stat
import time
from dataclasses import dataclass

from spiceserver.errors import ConfigError

__all__ = ["FailureTracker", "Ticket", "tls_context"]

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
    """Per-address count of recent authentication failures, and the delay they earn.

    The first failure is answered at once; each further one within ``window`` seconds doubles
    the delay before the refusal is sent, up to ``max_delay``.  Only that connection waits:
    the event loop and every other client carry on.  At most ``max_addresses`` are
    remembered (least recently failed forgotten first), so memory stays bounded.
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
        """Record a failure; returns how long to wait before refusing."""
        count, last = self._failures.pop(address, (0, now))
        count = count + 1 if now - last <= self.window else 1
        self._failures[address] = (count, now)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        if count <= 1:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** (count - 2))

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
