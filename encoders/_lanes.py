"""Two lanes for one image: the caller encodes the first part while a helper thread encodes the
second.

Why this is allowed by the formats: an LZ or GLZ stream is a sequence of self-delimiting tokens
(``spice-common:common/lz_decompress_tmpl.c`` ``decompress()``, ``spice-gtk:src/decode-glz-tmpl.c``
``decode()``), each one a literal run or a copy from pixels the decoder already holds.  Tokens
for pixels ``[0, s)`` followed by tokens for ``[s, n)`` decode to the image whatever searched for
them, so two kernels may search the two parts at the same time, each with its own hash table, and
the streams are concatenated.  Only the match search is split, never the format.  (QUIC cannot be
split: its adaptive model runs through every pixel in order, ``common/quic.c``.)

The output never depends on timing: each lane reads only the pixels and its own table and writes
only its own buffer, whichever thread runs it.  When the helper is busy (another image's lane),
the caller runs the second lane itself once its first lane is done, so a lane split is never
much slower than one thread.  Kernels are ``nogil``, so the two lanes really run in parallel.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable

__all__ = ["PARALLEL", "Pacer", "run_pair"]

#: Whether a helper lane is worth having: with one CPU the second lane only adds overhead.
PARALLEL = (os.cpu_count() or 1) > 1


class _Job:
    __slots__ = ("claim", "cpu", "done", "error", "fn")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.claim = threading.Lock()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.cpu = 0.0  # the CPU time fn took, on whichever thread ran it

    def run(self) -> None:
        start = time.thread_time()
        try:
            self.fn()
        except BaseException as exc:  # handed to the caller, which re-raises it
            self.error = exc
        finally:
            self.cpu = time.thread_time() - start
            self.done.set()


_jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
_started = threading.Lock()
_helper: threading.Thread | None = None


def _serve() -> None:
    while True:
        job = _jobs.get()
        if job.claim.acquire(blocking=False):
            job.run()


def _ensure_helper() -> None:
    global _helper
    if _helper is None:
        with _started:
            if _helper is None:
                _helper = threading.Thread(target=_serve, name="encoders-lane", daemon=True)
                _helper.start()


def run_pair(first: Callable[[], None], second: Callable[[], None]) -> bool:
    """Run ``first`` here and ``second`` on the helper thread (or here, if it is busy).

    Returns whether the pair took less time than the two lanes one after the other would
    have (the sum of their CPU times): False when the helper thread did not get to ``second``
    in time, or ran it on a core shared with the caller (then the wall time is the sum)."""
    if not PARALLEL:
        first()
        second()
        return False
    _ensure_helper()
    job = _Job(second)
    start = time.perf_counter()
    cpu = time.thread_time()
    _jobs.put(job)
    try:
        first()
    finally:
        mine = time.thread_time() - cpu
        if job.claim.acquire(blocking=False):
            job.run()
            helped = False
        else:
            job.done.wait()
            helped = True
    if job.error is not None:
        raise job.error
    # the pair must beat one lane after the other by a margin worth the split
    return helped and time.perf_counter() - start < 0.85 * (mine + job.cpu)


class Pacer:
    """Whether one call site's next image is worth two lanes, from how its last pairs went.

    Why: on an idle two-core machine two lanes take 0.6-0.75x the time of one, but when
    another process holds the second core the helper thread starts late or shares a core, and
    a pair measured 1.1-1.3x slower than one lane (``python -m encoders.bench_c`` while other
    jobs ran).  A pair that did not pay off turns lanes off for the next 4 images, then 8, ...
    up to 64, after which one image tries again; a pair that paid off resets the back-off.
    The bytes differ between one and two lanes by a few tokens at the split, so a stream
    depends on this history as well as on the pixels (both decode to the same image).
    """

    MAX_BACKOFF = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skip = 0
        self._backoff = 0

    def wanted(self) -> bool:
        """Whether to try two lanes now (there is a second CPU, and no back-off pending)."""
        if not PARALLEL:
            return False
        with self._lock:
            if self._skip:
                self._skip -= 1
                return False
            return True

    def run(self, first: Callable[[], None], second: Callable[[], None]) -> None:
        """:func:`run_pair`, and learn from how it went."""
        paid = run_pair(first, second)
        with self._lock:
            if paid:
                self._backoff = 0
            else:
                self._backoff = min(max(2 * self._backoff, 4), self.MAX_BACKOFF)
                self._skip = self._backoff
