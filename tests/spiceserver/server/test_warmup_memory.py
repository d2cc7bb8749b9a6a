"""After warm-up the server pages out LLVM's code (~80 MiB of RSS, compile-only): the kernels
keep working, and RSS drops; and it freezes what it loaded out of the cyclic collector's way."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import numpy as np

from encoders import lz_encode
from spiceserver.server.warmup import EncoderWarmup, release_compiler_pages
from tests.conftest import run
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
