"""Encoding one display update's bands on the worker threads, shared across sessions."""

from __future__ import annotations

import asyncio
import functools

import numpy as np

from spiceserver.protocol.display import EncodedImage
from spiceserver.server.codecs import ImageEncoder, classify, encode_shared, shared_codec_key
from spiceserver.server.context import ServerContext
from spiceserver.session import SessionMetrics
from spiceserver.sources.base import Rect

__all__ = ["encode_bands"]

Encoded = tuple[Rect, EncodedImage, str]


async def encode_bands(
    context: ServerContext,
    encoder: ImageEncoder,
    snapshots: list[tuple[Rect, np.ndarray]],
    version: int,
    metrics: SessionMetrics,
    lossless: list[bool] | None = None,
) -> list[Encoded]:
    """Encode every band on the worker threads; results in band order.

    GLZ bands go to one worker in order (their ids must reach the client in sequence).
    Bands of the other codecs come from the server's encode cache, shared with every
    session asking for the same band at the same ``version`` (each uncached one is a
    worker job of its own); those the cache cannot share are dealt out to the workers so
    a full frame uses every core.  ``lossless[i]``: band ``i`` must not go lossy (its
    lossless refresh is due).
    """
    loop = asyncio.get_running_loop()
    executor = context.executor
    cache = context.encode_cache
    codecs = [
        encoder.choose(
            pixels,
            functools.partial(cache.photographic, version, band, test=classify),
            lossless=lossless is not None and lossless[i],
        )
        for i, (band, pixels) in enumerate(snapshots)
    ]
    glz = [i for i, codec in enumerate(codecs) if codec == "glz"]
    shared: dict[int, asyncio.Future[EncodedImage]] = {}
    hits = cache.stats.hits
    for i, codec in enumerate(codecs):
        key = shared_codec_key(codec, encoder.settings)
        if key is not None:
            band, pixels = snapshots[i]
            start = functools.partial(
                loop.run_in_executor, executor, encode_shared, pixels, codec, encoder.settings
            )
            future = cache.encoding(version, band, pixels, key, start)
            if future is not None:
                shared[i] = future
    metrics.shared_draws += cache.stats.hits - hits
    rest = [i for i, codec in enumerate(codecs) if codec != "glz" and i not in shared]
    workers = max(1, context.config.encoder_threads)
    groups = [glz] if glz else []
    groups += [rest[k::workers] for k in range(workers) if rest[k::workers]]
    results: list[Encoded | None] = [None] * len(snapshots)

    def encode(indices: list[int]) -> None:
        for i in indices:
            band, pixels = snapshots[i]
            image, codec = encoder.encode(pixels, codecs[i])
            results[i] = (band, image, codec)

    # Shielded: this session leaving must not cancel an encode other sessions await.
    await asyncio.gather(
        *(loop.run_in_executor(executor, encode, g) for g in groups),
        *(asyncio.shield(future) for future in shared.values()),
    )
    for i, future in shared.items():
        results[i] = (snapshots[i][0], future.result(), codecs[i])
    return [result for result in results if result is not None]
