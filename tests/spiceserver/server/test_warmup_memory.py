"""After warm-up the server pages out LLVM's code (~80 MiB of RSS, compile-only): the kernels
keep working, and RSS drops; and it freezes what it loaded out of the cyclic collector's way.
Cached kernels load without numba's compiler registries and LLVM's copy of their IR
(encoders/_jit.py), and still encode."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from pathlib import Path

import numpy as np

from encoders import lz_encode
from spiceserver.kernel_memory import release_after_load, release_compiler_pages
from spiceserver.server.warmup import EncoderWarmup
from tests.conftest import ROOT, run
from tests.reference.lz_decode import lz_decode


def llvm_rss_kib() -> int:
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            inside = len(fields) > 5 and fields[5].endswith("/libllvmlite.so")
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_llvm_pages_go_and_the_kernels_still_encode() -> None:
    pixels = np.random.default_rng(4).integers(0, 256, (40, 56, 4), dtype=np.uint8)
    lz_encode(pixels)  # LLVM loaded, a kernel compiled or loaded from the cache
    # (Resident: ~80 MiB in a fresh process; less if a server here paged it out already.)
    assert release_compiler_pages() > 50 << 20  # the whole mapping is advised
    assert llvm_rss_kib() < 8 << 10, llvm_rss_kib()
    decoded = lz_decode(lz_encode(pixels)).pixels
    assert np.array_equal(decoded[..., :3], pixels[..., :3])


def test_warm_up_freezes_what_it_loaded() -> None:
    ready: set[str] = set()

    async def scenario() -> None:
        warmup = EncoderWarmup(ready)
        warmup.start()
        await asyncio.wait_for(warmup.wait(), 300)  # a cold numba cache compiles first

    try:
        run(scenario())
        assert {"lz", "glz", "quic"} <= ready
        assert gc.get_freeze_count() > 10_000  # numba's modules, our imports
    finally:
        gc.unfreeze()  # the rest of the test run collects as usual


#: A fresh process loads every kernel from the cache, then encodes with each codec and checks
#: the reference decoders give the pixels back.
_LEAN_LOAD = """
import sys
import numpy as np
import encoders
from encoders import glz_encode, lz_encode, quic_encode
from tests.reference.glz_decode import glz_decode
from tests.reference.lz_decode import lz_decode
from tests.reference.quic_decode import quic_decode
from encoders._jit import _DISPATCHERS
from spiceserver.kernel_memory import release_link_modules
encoders.warmup()
release_link_modules()  # as the server's warm-up does, before any encode
# A compile that links a kernel in gets its IR back (parsed again from the kept bitcode).
libraries = [r.library for d in _DISPATCHERS for r in d.overloads.values()]
assert libraries and all(lib._shared_module is None for lib in libraries)
assert all(lib._get_module_for_linking().get_function for lib in libraries[:2])
assert "define" in str(libraries[0]._get_module_for_linking())
# Imported only by numba's target-context refresh (numba/core/cpu.py load_additional_registries)
loaded = [m for m in ("numba.np.linalg", "numba.typed.dictimpl") if m in sys.modules]
rng = np.random.default_rng(7)
pixels = rng.integers(0, 256, (24, 40, 4), dtype=np.uint8)
pixels[4:20, 8:30] = (250, 250, 250, 0)  # a run for the LZ family to match
for name, image in (
    ("lz", lz_decode(lz_encode(pixels)).pixels),
    ("glz", glz_decode(glz_encode(pixels)).pixels),
    ("quic", quic_decode(quic_encode(pixels))[1]),
):
    assert np.array_equal(image[..., :3], pixels[..., :3]), name
print("registries loaded:", loaded)
# Compiling a new function that calls a kernel links the kernel's (released) library in.
import numba
from encoders.lz.api import lz_prime
@numba.njit
def caller(src, table):
    lz_prime(src, 0, src.shape[0], 0, table)
    return table[0]
table = np.full(1 << 10, -1, dtype=np.int32)
assert caller(np.arange(8, dtype=np.uint32), table) == table[0]
"""


def test_cached_kernels_load_without_the_compiler_registries_and_encode() -> None:
    import encoders

    encoders.warmup()  # here first: a cold cache compiles (and refreshes) in this process
    done = subprocess.run(
        [sys.executable, "-c", _LEAN_LOAD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "registries loaded: []", done.stdout


def test_the_desktops_compare_kernels_hand_llvm_back_too() -> None:
    """tiles.load_kernel (3 s after a desktop source starts) links its kernels with LLVM,
    whose pages the warm-up had given back: the capture pages them out again, and the
    kernels keep answering."""
    from spiceserver.sources import tiles
    from spiceserver.sources.base import Rect

    tiles.load_kernel()
    assert release_after_load() > 50 << 20
    assert llvm_rss_kib() < 8 << 10, llvm_rss_kib()
    old = np.zeros((100, 300, 4), np.uint8)
    new = old.copy()
    new[40:45, 200:260, 1] = 9
    assert tiles.changed_rects(old, new) == [Rect(200, 40, 60, 5)]
