"""The encode cache on its own: sharing, in-flight futures, bounds, failures (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from spiceserver.protocol.display import EncodedImage
from spiceserver.server.codecs import encode_shared, shared_codec_key
from spiceserver.server.encode_cache import KEEP_VERSIONS, EncodeCache
from spiceserver.sources.base import Rect
from tests.conftest import run

BAND = Rect(0, 0, 32, 8)
LZ = ("lz", "rgb32")


def reader(frame: np.ndarray, reads: list[Rect]) -> Callable[[Rect], np.ndarray]:
    def read(rect: Rect) -> np.ndarray:
        reads.append(rect)
        return frame[rect.y : rect.bottom, rect.x : rect.right].copy()

    return read


def test_glz_is_never_shareable() -> None:
    assert shared_codec_key("glz") is None
    assert shared_codec_key("lz") == LZ and shared_codec_key("quic") and shared_codec_key("raw")
    with pytest.raises(ValueError, match="not shareable"):
        encode_shared(np.zeros((8, 8, 4), np.uint8), "glz")


def test_one_read_and_one_encode_per_band_and_version() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        cache = EncodeCache(1 << 20)
        frame = np.random.default_rng(1).integers(0, 256, (8, 32, 4), dtype=np.uint8)
        reads: list[Rect] = []
        a = cache.read(5, BAND, reader(frame, reads))
        b = cache.read(5, BAND, reader(frame, reads))
        assert a is b and reads == [BAND]
        started: list[asyncio.Future[EncodedImage]] = []

        def start() -> asyncio.Future[EncodedImage]:
            started.append(loop.create_future())
            return started[-1]

        first = cache.encoding(5, BAND, a, LZ, start)
        second = cache.encoding(5, BAND, b, LZ, start)  # in flight: the same future
        assert first is second and len(started) == 1
        image = encode_shared(a, "lz")
        started[0].set_result(image)
        assert await asyncio.shield(second) is image
        assert cache.encoding(5, BAND, a, LZ, start) is first  # done: still shared
        assert cache.encoding(5, BAND, a, ("quic", "rgb32"), start) is not first
        assert (cache.stats.encodes, cache.stats.hits) == (2, 2)
        tests = []
        for _ in range(3):
            cache.photographic(5, BAND, a, lambda p: tests.append(p) or True)
        assert len(tests) == 1  # the codec choice's sample, memoised too

    run(scenario())


def test_old_versions_are_evicted_and_bypassed() -> None:
    async def scenario() -> None:
        cache = EncodeCache(1 << 20)
        frame = np.zeros((8, 32, 4), np.uint8)
        reads: list[Rect] = []
        for version in range(1, 10):
            cache.read(version, BAND, reader(frame, reads))
        assert len(reads) == 9
        assert len(cache._versions) == KEEP_VERSIONS
        assert cache.nbytes == KEEP_VERSIONS * frame.nbytes
        # A lagging session gets a private read and no shared encode.
        old = cache.read(2, BAND, reader(frame, reads))
        assert len(reads) == 10 and 2 not in cache._versions
        assert cache.encoding(2, BAND, old, LZ, lambda: pytest.fail("no start")) is None
        assert cache.stats.bypassed == 1
        # Pixels that are not the cached ones are never used to fill the cache.
        private = frame[:8, :32].copy()
        assert cache.encoding(9, BAND, private, LZ, lambda: pytest.fail("no start")) is None

    run(scenario())


def test_byte_budget_keeps_the_newest_version_only() -> None:
    async def scenario() -> None:
        frame = np.zeros((8, 32, 4), np.uint8)
        cache = EncodeCache(frame.nbytes * 2 - 1)
        for version in range(1, 4):
            cache.read(version, BAND, reader(frame, []))
        assert list(cache._versions) == [3]
        assert cache.nbytes == frame.nbytes and cache.stats.evicted_for_bytes == 2
        off = EncodeCache(0)
        reads: list[Rect] = []
        pixels = off.read(1, BAND, reader(frame, reads))
        off.read(1, BAND, reader(frame, reads))
        assert len(reads) == 2 and off.encoding(1, BAND, pixels, LZ, asyncio.Future) is None

    run(scenario())


def test_failed_encode_is_retried_and_a_leaving_waiter_cancels_nothing() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        cache = EncodeCache(1 << 20)
        pixels = cache.read(1, BAND, reader(np.zeros((8, 32, 4), np.uint8), []))
        failing: asyncio.Future[EncodedImage] = loop.create_future()
        assert cache.encoding(1, BAND, pixels, LZ, lambda: failing) is failing
        failing.set_exception(RuntimeError("codec failed"))
        await asyncio.sleep(0)  # the done callback drops it
        pending: asyncio.Future[EncodedImage] = loop.create_future()
        assert cache.encoding(1, BAND, pixels, LZ, lambda: pending) is pending

        leaving = asyncio.ensure_future(asyncio.shield(pending))
        staying = asyncio.ensure_future(asyncio.shield(pending))
        await asyncio.sleep(0)
        leaving.cancel()
        await asyncio.sleep(0)
        assert not pending.cancelled()
        image = encode_shared(pixels, "lz")
        pending.set_result(image)
        assert await staying is image
        assert cache.nbytes == pixels.nbytes + image.size

    run(scenario())
