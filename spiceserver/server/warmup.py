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
import ctypes
import ctypes.util
import gc
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

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


#: madvise(2) advice: reclaim these pages now (Linux 5.4; elsewhere EINVAL, ignored).
_MADV_PAGEOUT = 21


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


def release_link_modules() -> None:
    """Free LLVM's copy of each loaded kernel's IR (``encoders._jit.release_link_modules``)
    and hand the heap pages it leaves to the OS: LLVM frees its modules into glibc's arena of
    the warm-up thread, which keeps them (``malloc_trim`` returns whole free pages of every
    arena).  ``python -m tests.interop.bench_rss`` before a client: 128.5 -> 123.6 MiB."""
    from encoders._jit import release_link_modules as free_modules

    if free_modules():
        libc = _libc()
        trim = getattr(libc, "malloc_trim", None)  # glibc only
        if trim is not None:
            trim(0)


def release_compiler_pages() -> int:
    """Tell the kernel LLVM's code is cold, once every kernel is compiled or loaded; returns
    the bytes advised.

    libllvmlite.so is ~80 MiB of a server's RSS after its first kernel (``python -m
    tests.interop.bench_rss``: 82 of 236 MiB with one client), all clean file pages: LLVM
    runs only to compile or link a kernel, and the kernels' machine code lives elsewhere.
    MADV_PAGEOUT reclaims them as memory pressure would (a later compile faults them back);
    nothing else of the process is touched."""
    libc = _libc()
    if libc is None:
        return 0
    try:
        madvise = libc.madvise
        maps = Path("/proc/self/maps").read_text().splitlines()
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    for line in maps:
        fields = line.split()
        if len(fields) > 5 and fields[5].endswith("/libllvmlite.so"):
            start, end = (int(value, 16) for value in fields[0].split("-"))
            if madvise(start, end - start, _MADV_PAGEOUT) == 0:
                advised += end - start
    return advised


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
