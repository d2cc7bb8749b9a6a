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
from collections.abc import Callable

__all__ = ["PARALLEL", "run_pair"]

#: Whether a helper lane is worth having: with one CPU the second lane only adds overhead.
PARALLEL = (os.cpu_count() or 1) > 1


class _Job:
    __slots__ = ("claim", "done", "error", "fn")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.claim = threading.Lock()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:  # handed to the caller, which re-raises it
            self.error = exc
        finally:
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


def run_pair(first: Callable[[], None], second: Callable[[], None]) -> None:
    """Run ``first`` here and ``second`` on the helper thread (or here, if it is busy)."""
    if not PARALLEL:
        first()
        second()
        return
    _ensure_helper()
    job = _Job(second)
    _jobs.put(job)
    try:
        first()
    finally:
        if job.claim.acquire(blocking=False):
            job.run()
        else:
            job.done.wait()
    if job.error is not None:
        raise job.error
