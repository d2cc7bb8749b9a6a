"""Benchmark: a glyph-sized update encoded on the event loop against a hop to a worker thread.

    python -m tests.interop.bench_inline

Interleaved, 2,000 rounds per mode: a 24x16 update (a typed character) encoded right here,
then the same work sent to a two-thread pool and awaited, which is what every update cost
before ``INLINE_MAX_PIXELS`` (``spiceserver/server/channels/display/encode.py``).  Prints the
p50/p95 of each and their ratio.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from encoders.glz.dictionary import GlzDictionary
from spiceserver.protocol.enums import ImageCompression
from spiceserver.server.codecs import ImageEncoder, classify


def quantile_us(values: list[float], q: float) -> float:
    return sorted(values)[int(q * len(values))] * 1e6


async def main() -> None:
    rng = np.random.default_rng(1)
    pool = ThreadPoolExecutor(2)
    loop = asyncio.get_running_loop()
    for mode in (ImageCompression.AUTO_GLZ, ImageCompression.AUTO_LZ):
        ready = {"glz", "lz", "quic", "raw"}
        encoder = ImageEncoder(mode, glz=GlzDictionary(3_145_728), ready=ready)

        def job(pixels: np.ndarray, encoder: ImageEncoder = encoder) -> object:
            return encoder.encode(pixels, encoder.choose(pixels, classify))

        inline: list[float] = []
        hop: list[float] = []
        for _ in range(2000):
            pixels = np.zeros((16, 24, 4), np.uint8)
            pixels[3:13, 5:19, :3] = rng.integers(0, 255, (10, 14, 3))
            start = time.perf_counter()
            job(pixels)
            inline.append(time.perf_counter() - start)
            start = time.perf_counter()
            await loop.run_in_executor(pool, job, pixels)
            hop.append(time.perf_counter() - start)
        here, there = quantile_us(inline, 0.5), quantile_us(hop, 0.5)
        print(
            f"{mode.name}: inline p50 {here:.0f} us p95 {quantile_us(inline, 0.95):.0f} us | "
            f"worker hop p50 {there:.0f} us p95 {quantile_us(hop, 0.95):.0f} us | "
            f"hop/inline p50 {there / here:.1f}x"
        )
    pool.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
