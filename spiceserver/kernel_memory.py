"""Handing back the memory numba's kernels leave behind once loaded.

Loading a kernel from numba's cache runs LLVM to link its machine code: LLVM's own code
(``libllvmlite.so``, clean file pages) is faulted in, and each kernel keeps a parsed copy of
its IR for linking into later compiles.  Neither is needed to run a kernel.  The codecs'
warm-up (``spiceserver.server.warmup``) and the desktop's compare kernels
(``spiceserver.sources.tiles.load_kernel``, 3 s after start) both call :func:`release_after_load`
once their kernels are in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

__all__ = ["release_after_load", "release_compiler_pages", "release_link_modules"]

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


def release_after_load() -> int:
    """:func:`release_link_modules`, then :func:`release_compiler_pages`; returns the bytes
    advised.  ``python -m tests.interop.bench_rss`` (one client, after the desktop's compare
    kernels loaded): 125 MiB without it, 113 with it."""
    release_link_modules()
    return release_compiler_pages()
