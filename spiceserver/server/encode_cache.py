"""Screen updates encoded once and sent to every session that asks for the same pixels.

Theory of operation
-------------------
Each display channel builds its own updates: it takes its dirty rectangles, cuts them into
bands, reads the pixels while the source's ``version`` is N (they then hold every change
reported up to N, see :class:`~spiceserver.sources.base.FramebufferSource`) and encodes them.
Clients that keep up with the source take the same rectangles at the same version, so without
this module each of them copies and encodes the very same pixels with the very same codec.

* **Key.** A band's pixels are identified by ``(version, rect)``: whichever session read them
  first, any session at version N may send them (a change they miss was reported after N, so it
  is in every such session's dirty region already).  An encoding adds the codec key of
  :func:`~spiceserver.server.codecs.shared_codec_key`, the codec and its settings.  GLZ has no such
  key: a GLZ image names the session's own dictionary ids and refers to the images that client
  decoded before, so its bytes are valid for that one client only.
* **One encode, many waiters.** The first session that needs an encoding starts it on the
  worker pool and stores the future; the others await the same future, in flight or done.
  Waiters shield it, so a client leaving mid-encode does not cancel it for the rest.  The
  codec choice's costly sample (``classify``) is memoised per band the same way.
* **Bounded.** Only the newest :data:`KEEP_VERSIONS` versions are kept, and fewer when their
  pixels and encodings exceed ``max_bytes`` (the newest version always stays).  A session
  asking for an older version (a client running behind) reads and encodes for itself.
* **No locks.** Every method runs on the event loop thread; the workers only run the codecs
  and hand their result back through the future.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from spiceserver.sources.base import Rect

if TYPE_CHECKING:
    import numpy as np

    from spiceserver.protocol.display import EncodedImage
    from spiceserver.server.codecs import CodecKey

__all__ = ["KEEP_VERSIONS", "CacheStats", "EncodeCache"]

T = TypeVar("T")

#: Source versions whose bands stay shareable: a client one or two updates behind the others
#: still shares, and a full frame for a newly joined client survives a few source ticks.
KEEP_VERSIONS = 4


@dataclass(slots=True)
class CacheStats:
    """Counters since the server started (read them on the loop thread)."""

    #: Encodings started here and then shared (the first asker's encode).
    encodes: int = 0
    #: Encodings a session took from another session's encode, finished or in flight.
    hits: int = 0
    #: Bands read for a version already evicted (lagging client): not shared.
    bypassed: int = 0
    #: Versions dropped to stay within ``max_bytes`` before :data:`KEEP_VERSIONS` did.
    evicted_for_bytes: int = 0


@dataclass(eq=False, slots=True)
class _Band:
    pixels: np.ndarray
    #: The codec choice's sample of the band (codecs.ImageClass), once taken.
    photographic: Any = None
    encodings: dict[CodecKey, asyncio.Future[EncodedImage]] = field(default_factory=dict)
    nbytes: int = 0
    alive: bool = True


class EncodeCache:
    """Pixels and encodings of the newest source versions, by band (loop thread only)."""

    def __init__(self, max_bytes: int, keep_versions: int = KEEP_VERSIONS) -> None:
        self.max_bytes = max_bytes
        self.keep_versions = keep_versions
        self.stats = CacheStats()
        self.nbytes = 0
        self._versions: collections.OrderedDict[int, dict[Rect, _Band]] = collections.OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def read(self, version: int, rect: Rect, read: Callable[[Rect], np.ndarray]) -> np.ndarray:
        """The pixels of ``rect`` at ``version``: shared if some session read them already,
        else ``read(rect)`` (kept for the next session).  Never modify the array."""
        bands = self._bands(version)
        if bands is None:
            return read(rect)
        band = bands.get(rect)
        if band is None:
            pixels = read(rect)
            band = bands[rect] = _Band(pixels)
            self._grow(band, pixels.nbytes)
        return band.pixels

    def photographic(
        self, version: int, rect: Rect, pixels: np.ndarray, test: Callable[[np.ndarray], T]
    ) -> T:
        """``test(pixels)``, computed once per band (the codec choice samples every band)."""
        band = self._band(version, rect, pixels)
        if band is None:
            return test(pixels)
        if band.photographic is None:
            band.photographic = test(pixels)
        result: T = band.photographic
        return result

    def encoding(
        self,
        version: int,
        rect: Rect,
        pixels: np.ndarray,
        key: CodecKey,
        start: Callable[[], asyncio.Future[EncodedImage]],
    ) -> asyncio.Future[EncodedImage] | None:
        """The shared future of ``rect`` at ``version`` encoded as ``key``, started with
        ``start()`` (on the worker pool) if no session asked before; None when this band
        cannot be shared (``pixels`` are not the cached ones, or its version is too old).
        Await it through :func:`asyncio.shield`."""
        band = self._band(version, rect, pixels)
        if band is None:
            self.stats.bypassed += self.enabled
            return None
        future = band.encodings.get(key)
        if future is not None:
            self.stats.hits += 1
            return future
        future = band.encodings[key] = start()
        self.stats.encodes += 1
        future.add_done_callback(lambda done: self._encoded(band, key, done))
        return future

    def clear(self) -> None:
        for bands in self._versions.values():
            for band in bands.values():
                band.alive = False
        self._versions.clear()
        self.nbytes = 0

    # ------------------------------------------------------------------ internals

    def _bands(self, version: int) -> dict[Rect, _Band] | None:
        """The bands of ``version``, created if new; None if it is too old to keep."""
        if not self.enabled:
            return None
        bands = self._versions.get(version)
        if bands is not None:
            return bands
        newest = next(reversed(self._versions), None)
        if newest is not None and version <= newest - self.keep_versions:
            return None
        bands = self._versions[version] = {}
        if newest is not None and version < newest:
            # Rare (a session that read late): keep the versions in order for eviction.
            self._versions = collections.OrderedDict(sorted(self._versions.items()))
        while len(self._versions) > 1 and next(iter(self._versions)) <= (
            max(self._versions) - self.keep_versions
        ):
            self._drop_oldest()
        return bands

    def _band(self, version: int, rect: Rect, pixels: np.ndarray) -> _Band | None:
        bands = self._versions.get(version)
        band = None if bands is None else bands.get(rect)
        # Only the very pixels this cache handed out: a session that read for itself (its
        # version was evicted meanwhile) must not fill the cache from its private copy.
        if band is None or band.pixels is not pixels:
            return None
        return band

    def _encoded(self, band: _Band, key: CodecKey, future: asyncio.Future[EncodedImage]) -> None:
        if future.cancelled() or future.exception() is not None:
            # Let the next session try again; its waiters already got the error.
            if band.encodings.get(key) is future:
                del band.encodings[key]
            return
        image = future.result()
        # A raw bitmap's body is a view of the cached pixels: only its header is new.
        extra = image.size if key[0] != "raw" else 64
        self._grow(band, extra)

    def _grow(self, band: _Band, nbytes: int) -> None:
        if not band.alive:
            return
        band.nbytes += nbytes
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes and len(self._versions) > 1:
            self.stats.evicted_for_bytes += 1
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _version, bands = self._versions.popitem(last=False)
        for band in bands.values():
            band.alive = False
            self.nbytes -= band.nbytes
