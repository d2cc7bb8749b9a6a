"""Encoding one display update's bands on the worker threads, shared across sessions."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import numpy as np

from spiceserver.protocol.display import EncodedImage
from spiceserver.server.codecs import (
    STACKED,
    ImageEncoder,
    classify,
    encode_shared,
    encode_stack,
    shared_codec_key,
)
from spiceserver.server.context import ServerContext
from spiceserver.session import SessionMetrics
from spiceserver.sources.base import Rect

__all__ = [
    "Encoded",
    "encode_bands",
    "encode_inline",
    "encodes_inline",
    "glz_stacks",
    "read_for_encode",
    "read_in_areas",
    "stacks",
]

Encoded = tuple[Rect, EncodedImage, str]

#: An update of at most this many pixels (a typed glyph, a cursor blink, a clock's digits) is
#: encoded right on the event loop: its encode takes tens of microseconds, less than the hop
#: to a worker thread and back, which sits on the path of every small change (X damage →
#: capture thread → loop → encoder thread → loop → socket).  ``python -m
#: tests.interop.bench_inline`` (a 24x16 update, interleaved, busy 2-core machine): GLZ 100 µs
#: inline vs 118 µs through a worker (p95 146 vs 219), LZ 55 vs 111 (p95 97 vs 200).
INLINE_MAX_PIXELS = 64 * 64


def read_in_areas(
    read: Callable[[Rect], np.ndarray], areas: list[tuple[Rect, list[Rect]]]
) -> list[tuple[Rect, np.ndarray]]:
    """The bands of each damaged area as views of one read of the area.

    Why: encoding band copies cost GLZ 1.22-1.39x of its time on 1080p text frames (mostly
    the copy into the dictionary), LZ 1.02-1.08x (interleaved A/B, the corpus frames, these
    KVM guests).  The likely cause: numpy asks for transparent huge pages (``madvise``) for
    arrays of 4 MiB or more, so one read of the area gets them and 1 MiB bands do not (not
    verified beyond the A/B).  The same bytes are copied either way.
    """
    snapshots: list[tuple[Rect, np.ndarray]] = []
    for area, area_bands in areas:
        pixels = read(area)
        snapshots.extend(
            (band, pixels[band.y - area.y : band.bottom - area.y]) for band in area_bands
        )
    return snapshots


#: A lone damaged area of at least this many pixels (a window, a full frame) is read straight
#: into the GLZ dictionary's arena (``GlzDictionary.stage``): sent as one GLZ image, it is not
#: copied again there.  Smaller ones cost the copy less than the staging's bookkeeping.
STAGE_MIN_PIXELS = 1 << 16


def read_for_encode(
    read: Callable[[Rect], np.ndarray],
    read_into: Callable[[Rect, np.ndarray], None],
    encoder: ImageEncoder,
    areas: list[tuple[Rect, list[Rect]]],
) -> tuple[list[tuple[Rect, np.ndarray]], bool]:
    """:func:`read_in_areas`, or, for one big area a GLZ client may get as one image, the
    area read into room the session's GLZ dictionary lends (:meth:`ImageEncoder.stage_glz`);
    True then: :func:`encode_bands` must be told (``staged``), and the update must give the
    room back when done (:meth:`ImageEncoder.unstage_glz`)."""
    if len(areas) == 1:
        area, bands = areas[0]
        if area.area >= STAGE_MIN_PIXELS:
            room = encoder.stage_glz(area.width, area.height)
            if room is not None:
                read_into(area, room)
                views = [(band, room[band.y - area.y : band.bottom - area.y]) for band in bands]
                return views, True
    return read_in_areas(read, areas), False


def _leave_room(
    encoder: ImageEncoder, snapshots: list[tuple[Rect, np.ndarray]], codecs: list[str]
) -> None:
    """Staged bands (see :func:`read_for_encode`) that will not go as one GLZ image of the
    whole room: the room is given back, after copying the bands out (in place in
    ``snapshots``) if the dictionary could write over them while they are still read: by GLZ
    images of some of them, or a raw bitmap, whose body is a view the transport may hold."""
    if any(codec in ("glz", "raw") for codec in codecs):
        snapshots[:] = [(band, pixels.copy()) for band, pixels in snapshots]
    encoder.unstage_glz()


def stacks(
    bands: list[Rect], codecs: list[str | None], fits: Callable[[str, int, int], bool]
) -> list[list[int]]:
    """The bands (indices, in order) grouped into stacks, each sent as one image; bands whose
    codec is None are left out.

    A stack is a run of consecutive bands of one codec that is GLZ or :data:`STACKED`, each
    directly below the one before with the same x and width (how ``split_rows`` cuts one
    damaged rectangle), as long as the whole stack ``fits(codec, width, height)``; a band of
    another codec is a stack of its own.  One image per damaged area is what libspice-server
    sends (``spice:server/dcc-send.cpp``): one kernel call and header instead of eight for a
    1080p frame, and the codec's matches and model reach across the band boundaries.
    """
    result: list[list[int]] = []
    top: Rect | None = None
    for i, (band, codec) in enumerate(zip(bands, codecs, strict=True)):
        if codec is None:
            top = None
            continue
        if result and top is not None and codecs[result[-1][-1]] == codec:
            below = bands[result[-1][-1]]
            if (
                band.x == top.x
                and band.width == top.width
                and band.y == below.bottom
                and fits(codec, band.width, band.bottom - top.y)
            ):
                result[-1].append(i)
                continue
        result.append([i])
        top = band if codec == "glz" or codec in STACKED else None
    return result


def glz_stacks(
    bands: list[Rect], codecs: list[str], fits: Callable[[int, int], bool]
) -> list[list[int]]:
    """The GLZ bands grouped into :func:`stacks` that each :func:`fits` the client's window.

    Measured (``python -m encoders.bench_c``): faster than one image per band on every corpus
    frame (terminal 0.74x against 0.55x of C's speed, interleaved, on a busy 2-core machine)
    and smaller (web_pydoc 160,102 against 171,551 bytes; C 162,830).
    """
    glz: list[str | None] = [codec if codec == "glz" else None for codec in codecs]
    return stacks(bands, glz, lambda codec, width, height: fits(width, height))


def _stack_rect(snapshots: list[tuple[Rect, np.ndarray]], stack: list[int]) -> Rect:
    first, last = snapshots[stack[0]][0], snapshots[stack[-1]][0]
    return Rect(first.x, first.y, first.width, last.bottom - first.y)


async def encode_bands(
    context: ServerContext,
    encoder: ImageEncoder,
    snapshots: list[tuple[Rect, np.ndarray]],
    version: int,
    metrics: SessionMetrics,
    lossless: list[bool] | None = None,
    lossy: list[bool] | None = None,
    staged: bool = False,
) -> list[Encoded]:
    """Encode every band on the worker threads; results in band order.

    GLZ bands go to one worker in order (their ids must reach the client in sequence),
    stacked into one image per damaged area where the client's window allows
    (:func:`glz_stacks`).
    Bands of the other codecs come from the server's encode cache, shared with every
    session asking for the same band at the same ``version`` (each uncached one is a
    worker job of its own); those the cache cannot share are :func:`stacks` too (QUIC, LZ:
    one image per damaged area), dealt out to the workers.  ``lossless[i]``: band ``i`` must
    not go lossy (its lossless refresh is due); ``lossy[i]``: band ``i`` may go lossy whatever
    the encoder's policy (a frame of a stream candidate, display/update_loop.py).
    ``staged``: the bands are views of room lent by the GLZ dictionary
    (:func:`read_for_encode`); unless they all go as its one image, the room is given back
    here, and ``snapshots`` may be replaced by copies (:func:`_leave_room`).
    """
    # A lone display only (with more, the encode cache shares each band among them), and
    # only once kernels are known compiled (``ready``): a first call compiling for seconds
    # must never run on the loop.
    if encodes_inline(context, encoder, sum(band.area for band, _ in snapshots)):
        return encode_inline(encoder, snapshots, lossless, lossy)
    loop = asyncio.get_running_loop()
    executor = context.executor
    cache = context.encode_cache
    codecs = [
        encoder.choose(
            pixels,
            functools.partial(cache.photographic, version, band, test=classify),
            lossless=lossless is not None and lossless[i],
            lossy=True if lossy is not None and lossy[i] else None,
        )
        for i, (band, pixels) in enumerate(snapshots)
    ]
    glz = glz_stacks([band for band, _ in snapshots], codecs, encoder.glz_fits)
    if staged and not (len(glz) == 1 and len(glz[0]) == len(snapshots)):
        _leave_room(encoder, snapshots, codecs)
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
    # the bands nobody shares, stacked per damaged area (codecs.STACKED)
    rest: list[str | None] = [
        codec if codec != "glz" and i not in shared else None for i, codec in enumerate(codecs)
    ]
    own = stacks([band for band, _ in snapshots], rest, lambda codec, width, height: True)
    workers = max(1, context.config.encoder_threads)
    groups = [own[k::workers] for k in range(workers) if own[k::workers]]
    results: list[Encoded | None] = [None] * len(snapshots)

    def encode(group: list[list[int]]) -> None:
        for stack in group:
            codec = codecs[stack[0]]
            if len(stack) == 1:
                image, codec = encoder.encode(snapshots[stack[0]][1], codec)
            else:
                image = encode_stack([snapshots[i][1] for i in stack], codec, encoder.settings)
            results[stack[0]] = (_stack_rect(snapshots, stack), image, codec)

    def encode_glz() -> None:
        for stack in glz:
            image, codec = encoder.encode_glz_stack([snapshots[i][1] for i in stack])
            results[stack[0]] = (_stack_rect(snapshots, stack), image, codec)

    # Shielded: this session leaving must not cancel an encode other sessions await.
    await asyncio.gather(
        *((loop.run_in_executor(executor, encode_glz),) if glz else ()),
        *(loop.run_in_executor(executor, encode, g) for g in groups),
        *(asyncio.shield(future) for future in shared.values()),
    )
    for i, future in shared.items():
        results[i] = (snapshots[i][0], future.result(), codecs[i])
    return [result for result in results if result is not None]


def encodes_inline(context: ServerContext, encoder: ImageEncoder, pixels: int) -> bool:
    """Whether :func:`encode_bands` encodes an update of ``pixels`` right on the loop
    (:func:`encode_inline`)."""
    return context.displays < 2 and encoder.ready is not None and pixels <= INLINE_MAX_PIXELS


def encode_inline(
    encoder: ImageEncoder,
    snapshots: list[tuple[Rect, np.ndarray]],
    lossless: list[bool] | None,
    lossy: list[bool] | None,
) -> list[Encoded]:
    """A tiny update of a lone display, encoded here and now (see INLINE_MAX_PIXELS); GLZ
    bands in order."""
    results: list[Encoded] = []
    for i, (band, pixels) in enumerate(snapshots):
        codec = encoder.choose(
            pixels,
            classify,
            lossless=lossless is not None and lossless[i],
            lossy=True if lossy is not None and lossy[i] else None,
        )
        image, used = encoder.encode(pixels, codec)
        results.append((band, image, used))
    return results
