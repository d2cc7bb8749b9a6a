"""Compiling the codecs' numba kernels while the server already serves.

On a cold numba cache QUIC takes ~5 s to compile, GLZ and LZ ~2 s each (measured on this
project's 2-core machines; once per machine, afterwards loading them takes well under a
second).  The server listens first; the kernels
compile on a thread of their own (never the encode workers, never the event loop), fastest
first, and each codec joins ``ServerContext.codecs_ready`` when its kernels are in.  Until then
:class:`~spiceserver.server.codecs.ImageEncoder` sends that codec's images as the next
candidate of the client's mode, raw bitmaps at worst, so a client sees the screen at once.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

from spiceserver.kernel_memory import release_compiler_pages, release_link_modules
from spiceserver.server.codecs import CODECS

__all__ = ["EncoderWarmup"]

T = TypeVar("T")

logger = logging.getLogger("spiceserver")

#: Compile order: the fastest first, so a client gets a compressed codec soonest.
ORDER = ("lz", "glz", "quic")
#: A codec that loads faster than this came from numba's cache: not worth a log line of its own.
_CACHED_SECONDS = 1.0
#: Cold compile times measured on this project's 2-core machines (README "Image codecs").
_COLD_SECONDS = {"lz": 2, "glz": 2, "quic": 5}


def _call(loop: asyncio.AbstractEventLoop, function: Callable[[T], object], argument: T) -> bool:
    try:
        loop.call_soon_threadsafe(function, argument)
    except RuntimeError:  # the loop was closed
        return False
    return True


def _cached(module: str | None) -> bool:
    """Whether numba's cache holds kernels of ``module`` (its index files ``*.nbi``), without
    importing it (which would import numba)."""
    if module is None:
        return True
    package, *rest = module.split(".")
    spec = importlib.util.find_spec(package)  # the top package only: its codecs load lazily
    if spec is None or spec.origin is None:
        return False
    origin = Path(spec.origin).parent.joinpath(*rest, "_kernels.py")
    cache_root = os.environ.get("NUMBA_CACHE_DIR")
    if cache_root:
        return any(Path(cache_root).rglob(f"{origin.stem}.*.nbi"))
    return any((origin.parent / "__pycache__").glob(f"{origin.stem}.*.nbi"))


class EncoderWarmup:
    """Adds each codec to ``ready`` (on the loop thread) once its kernels are compiled.

    ``first``: codecs to load before the others, when every kernel is in numba's cache (the
    server's image compression mode, :func:`~spiceserver.server.codecs.warm_order`): a
    first frame waits only for the codecs it may use (:meth:`wait_for`).  Compiling (a cold
    cache) keeps :data:`ORDER`, the fastest first."""

    def __init__(self, ready: set[str], first: Sequence[str] = ()) -> None:
        self.ready = ready
        self._first = tuple(first)
        #: The load order (:meth:`start` decides).
        self.order: tuple[str, ...] = ORDER
        self._done = asyncio.Event()
        self._added = asyncio.Event()  # set at each codec ready, and when all are done
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = 0.0
        #: Every kernel is in numba's cache: all are ready within a second or so, and a
        #: first frame may as well wait for them (see DisplayHandler).
        self.quick = False

    def start(self) -> None:
        """Start compiling (call on the event loop, once the server listens)."""
        self._loop = asyncio.get_running_loop()
        self._started = time.perf_counter()
        cold = [name for name in ORDER if not _cached(CODECS[name].kernels)]
        self.quick = not cold
        if self.quick:
            self.order = tuple(dict.fromkeys((*(n for n in self._first if n in ORDER), *ORDER)))
        if cold:
            logger.info(
                "compiling image encoders %s: once per machine, ~%d s; clients are "
                "served meanwhile, with LZ or raw images until each is ready",
                ", ".join(cold),
                sum(_COLD_SECONDS[name] for name in cold),
            )
        thread = threading.Thread(target=self._run, name="spice-warmup", daemon=True)
        thread.start()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        """Until every codec is ready (or failed to compile, which is logged)."""
        await self._done.wait()

    async def wait_for(self, names: Collection[str]) -> None:
        """Until every codec of ``names`` is ready, or the warm-up is over (a codec that
        failed to compile never is)."""
        while not self._done.is_set() and not all(name in self.ready for name in names):
            self._added.clear()
            await self._added.wait()

    def _ready(self, name: str) -> None:
        self.ready.add(name)
        self._added.set()

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        for name in self.order:
            module = CODECS[name].kernels
            started = time.perf_counter()
            try:
                if module is not None:
                    importlib.import_module(module).warmup()
            except Exception:
                logger.exception(
                    "image encoder %s failed to compile; its images are sent with another codec",
                    name,
                )
                continue
            seconds = time.perf_counter() - started
            if seconds > _CACHED_SECONDS:
                logger.info("image encoder %s compiled in %.1fs", name, seconds)
            if not _call(loop, self._ready, name):
                return  # the server (its loop) is gone
        release_link_modules()
        released = release_compiler_pages()
        if released:
            logger.debug("page-out of LLVM's code (compile-only): %.0f MiB", released / 2**20)
        _call(loop, self._finish, time.perf_counter() - self._started)

    def _finish(self, elapsed: float) -> None:
        logger.info("image encoders ready in %.2fs", elapsed)
        # Everything imported and compiled so far lives as long as the process: out of the
        # cyclic collector's reach, a full collection no longer walks numba's ~120,000
        # objects (65-80 ms on the loop, stalling every update it meets; 0 after freeze).
        gc.freeze()
        self._done.set()
        self._added.set()
