"""Log lines that cannot amplify: each message template is logged a few times a second at most.

A client decides how often the server logs: every refused link, key press or mode change is a
line.  :class:`LogLimiter` is a :class:`logging.Filter` on the package's loggers that keys each
record by its logger and *template* (``record.msg`` before formatting, so every "refused …"
line of one kind shares a bucket, whatever peer it names) and lets through ``burst`` lines at
once, then ``rate`` per second.  Dropped lines are counted: the next line of that template that
gets through says how many were not logged, and :meth:`LogLimiter.flush` (called when a server
closes) reports the rest.  Normal operation logs far below the limit; only floods are cut.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LOGGERS", "LogLimiter", "install_limiter", "skip"]

#: Every logger of the package whose lines a client can trigger.
LOGGERS = (
    "spiceserver",
    "spiceserver.agent",
    "spiceserver.capture",
    "spiceserver.channels",
    "spiceserver.clipboard",
    "spiceserver.codecs",
    "spiceserver.connection",
    "spiceserver.desktop",
    "spiceserver.faults",
    "spiceserver.files",
    "spiceserver.input",
    "spiceserver.layout",
    "spiceserver.record",
    "spiceserver.security",
    "spiceserver.web",
    "spiceserver.websocket",
)
#: Templates remembered at most (least recently logged forgotten first): bounded memory even
#: if some caller formats its own messages.
MAX_TEMPLATES = 1024


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last: float
    dropped: int = 0


class LogLimiter(logging.Filter):
    """Per logger and message template: ``burst`` lines at once, then ``rate`` per second.

    ``rate`` 0 turns limiting off.  ``clock`` is injectable for tests.
    """

    def __init__(
        self, rate: float = 5.0, burst: int = 20, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: collections.OrderedDict[tuple[str, str], _Bucket] = collections.OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.rate <= 0:
            return True
        bucket = self._bucket((record.name, str(record.msg)))
        if bucket.tokens < 1.0:
            bucket.dropped += 1
            return False
        bucket.tokens -= 1.0
        if bucket.dropped:
            record.msg = f"{record.getMessage()} [{bucket.dropped} similar lines not logged]"
            record.args = ()
            bucket.dropped = 0
        return True

    def skip(self, name: str, template: str) -> bool:
        """Whether a line of ``template`` on logger ``name`` would be dropped now (counted as
        dropped if so): lets a hot path skip building the record at all."""
        if self.rate <= 0:
            return False
        bucket = self._bucket((name, template))
        if bucket.tokens < 1.0:
            bucket.dropped += 1
            return True
        return False

    def _bucket(self, key: tuple[str, str]) -> _Bucket:
        """The template's bucket, refilled to now and made the most recent."""
        now = self.clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), last=now)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.last) * self.rate)
            bucket.last = now
        self._buckets[key] = bucket
        while len(self._buckets) > MAX_TEMPLATES:
            self._buckets.popitem(last=False)
        return bucket

    def reset(self) -> None:
        """Forget every template (full bursts again)."""
        self._buckets.clear()

    def flush(self) -> None:
        """Report every template with lines dropped since its last line got through."""
        for (name, template), bucket in list(self._buckets.items()):
            if bucket.dropped:
                logging.getLogger(__name__).warning(
                    "%d lines like %r (logger %s) were not logged: more than %g per second",
                    bucket.dropped,
                    template,
                    name,
                    self.rate,
                )
                bucket.dropped = 0


_limiter: LogLimiter | None = None


def skip(logger: logging.Logger, level: int, template: str) -> bool:
    """For hot paths (one line per client event): True when ``logger`` would not log a
    ``template`` line at ``level`` now, disabled or rate-limited, so the caller need not even
    build it."""
    if not logger.isEnabledFor(level):
        return True
    return _limiter is not None and _limiter.skip(logger.name, template)


def install_limiter(rate: float, burst: int) -> LogLimiter:
    """The process's limiter on every logger of :data:`LOGGERS` (added once; each call sets
    its rate and burst: the most recently created server's config wins)."""
    global _limiter
    if _limiter is None:
        _limiter = LogLimiter(rate, burst)
        for name in LOGGERS:
            logging.getLogger(name).addFilter(_limiter)
    _limiter.rate, _limiter.burst = rate, burst
    return _limiter
