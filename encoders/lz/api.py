"""``lz_encode()``: an RGB32 image as an LZ_RGB stream (``SpiceImage`` type LZ_RGB, 101).

Stream = the 28-byte big-endian header written by ``spice-common:common/lz.c`` ``lz_encode()``
(magic, version, ``LzImageType``, width, height, stride, top_down) followed by the tokens, and
nothing after the last token: ``lz_decode()`` asserts that the input ends exactly there and that
exactly width x height pixels come out, and an assertion there aborts the client process
(SPICE-REFERENCE §7.2, pitfall 27).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

import numpy as np

from encoders import _lanes
from encoders._lzbase import as_pixel_rows, literal_bound
from encoders._scratch import buffer
from encoders.errors import EncoderError
from encoders.lz._kernels import (
    HASH_BITS,
    MAX_FAR_DISTANCE,
    lz_prime,
    lz_rgb32_compress,
    lz_rgb32_compress_after,
)

__all__ = [
    "LZ_IMAGE_TYPE_RGB32",
    "LZ_MAGIC",
    "LZ_VERSION",
    "lz_encode",
    "lz_encode_stack",
    "warmup",
]

LZ_MAGIC = 0x20205A4C  # "LZ  " (lz_common.h LZ_MAGIC)
LZ_VERSION = 0x00010001  # major 1, minor 1 (lz_common.h LZ_VERSION)
LZ_IMAGE_TYPE_RGB32 = 8  # lz_common.h LzImageType
#: ``lz_set_sizes()`` rejects stride * height above this (SPICE_MAX_IMAGE_SIZE).
MAX_IMAGE_BYTES = 1024 * 1024 * 1024 - 1

_HEADER = struct.Struct(">7I")
#: Images of at least this many pixels are searched in two lanes on two threads
#: (:mod:`encoders._lanes`): a 4K frame, not a 1080p one.  The server sends a damaged area as
#: one image (``spiceserver.server.codecs.STACKED``) from a worker thread; there, on 2 shared
#: cores, one lane was faster than two on every corpus frame (``python -m encoders.bench_c``
#: path, interleaved, load ~2.5: terminal_manpage 1.24-1.28x of C's speed against 0.96-1.02x,
#: web_pydoc 1.10-1.30x against 0.81-0.88x): the second lane's thread found no free core.
LANE_MIN_PIXELS = 1 << 22
#: A damaged area of at least this many pixels (``lz_encode_stack``) may be searched in two
#: lanes, split at a band boundary (two of the server's bands of 262,144 pixels).
STACK_LANE_MIN_PIXELS = 1 << 19
#: Whether two lanes have been paying off for :func:`lz_encode_stack` (:class:`_lanes.Pacer`).
_stack_pacer = _lanes.Pacer()


#: Positions up to this fit a table slot (``base`` + position, int32).
_SLOT_LIMIT = (1 << 31) - 1


class _Tables(threading.local):
    """This thread's hash tables (one per lane) and the origin of the next image's positions:
    it advances by each image's size, so the slots earlier images left are below it and
    ignored (the stream never depends on earlier calls) and no table is cleared per call."""

    def __init__(self) -> None:
        self.a = np.full(1 << HASH_BITS, -1, dtype=np.int32)
        self.b = np.full(1 << HASH_BITS, -1, dtype=np.int32)
        self.base = 0

    def advance(self, npixels: int) -> int:
        """The origin for an image of ``npixels``; the next one starts past it."""
        base = self.base
        if base + npixels > _SLOT_LIMIT:  # about every 2**31 pixels: start the tables afresh
            for table in (self.a, self.b):
                table.fill(-1)
            base = 0
        self.base = base + npixels
        return base


_tables = _Tables()


def lz_encode(pixels: np.ndarray, /) -> bytes:
    """Encode B,G,R,X pixels (H, W, 4) as an LZ_RGB stream of type RGB32, top-down.

    A strided region view is read in place when its rows are contiguous pixels; otherwise (and
    for views whose rows are not adjacent) the pixels are first gathered into one contiguous
    uint32 buffer, because LZ distances count pixels in stream order across rows.

    Raises:
        EncoderError: wrong dtype or shape, empty image, image over 1 GiB (``lz_set_sizes()``).
    """
    rows = as_pixel_rows(pixels, "lz")
    height, width = rows.shape
    if 4 * width * height > MAX_IMAGE_BYTES:
        raise EncoderError(f"lz: image too large ({width}x{height}), lz_set_sizes() limit 1 GiB")
    src = rows.reshape(-1) if rows.flags.c_contiguous else np.ascontiguousarray(rows).reshape(-1)
    npixels = src.shape[0]
    # the split depends on the size only, so the bytes are the same on every machine
    lanes = 2 if npixels >= LANE_MIN_PIXELS else 1
    split = npixels // lanes
    out = buffer("lz", _HEADER.size + literal_bound(split) + 16)
    _HEADER.pack_into(
        out.data, 0, LZ_MAGIC, LZ_VERSION, LZ_IMAGE_TYPE_RGB32, width, height, 4 * width, 1
    )
    tables = _tables
    base = tables.advance(npixels)
    htab = tables.a
    try:
        if lanes == 1:
            end = lz_rgb32_compress(src, 0, npixels, base, htab, out, _HEADER.size, width)
            if end < 0:
                raise ValueError("output buffer overflow")
            return out[:end].tobytes()
        out_b = buffer("lz_b", literal_bound(npixels - split) + 16)
        htab_b = tables.b
        ends = [0, 0]

        def lane_a() -> None:
            ends[0] = lz_rgb32_compress(src, 0, split, base, htab, out, _HEADER.size, width)

        def lane_b() -> None:
            # every pixel of lane A that lane B may copy from is findable, as in one lane
            lz_prime(src, split - MAX_FAR_DISTANCE, split, base, htab_b)
            ends[1] = lz_rgb32_compress(src, split, npixels, base, htab_b, out_b, 0, width)

        _lanes.run_pair(lane_a, lane_b)
        if min(ends) < 0:
            raise ValueError("output buffer overflow")
    except ValueError as exc:  # a kernel bounds check: a bug, never expected
        raise EncoderError(f"lz: {exc}") from exc
    return b"".join((out[: ends[0]].data, out_b[: ends[1]].data))


def lz_encode_stack(parts: Sequence[np.ndarray], /) -> bytes:
    """Encode bands of one width, stacked top to bottom, as one LZ_RGB stream (RGB32,
    top-down) without copying them into one image: band after band, each band's search
    reaching into the one above it (``lz_rgb32_compress_after``).

    Why: the server reads a damaged area in bands (fresh copies each) and sends it as one image
    (``spiceserver.server.codecs.STACKED``); copying the area again cost 15-20% of the encode
    of a 1080p text frame.  Matches end at band boundaries, so the stream may differ from
    :func:`lz_encode` of the stacked image by a few tokens per band (the same pixels decode).
    An area of ``STACK_LANE_MIN_PIXELS`` or more is searched in two lanes on two threads, split
    at the band boundary nearest half its pixels, when that has been paying off lately
    (:class:`encoders._lanes.Pacer`): on an idle 2-core machine a 1080p text frame took
    0.55-0.7x the time of one lane, but with the second core busy a pair was slower than one.

    Raises:
        EncoderError: no parts, widths differ, or a part :func:`lz_encode` would refuse.
    """
    if not parts:
        raise EncoderError("lz: no image to encode")
    rows = [as_pixel_rows(part, "lz") for part in parts]
    width = rows[0].shape[1]
    if any(r.shape[1] != width for r in rows):
        raise EncoderError(f"lz: stacked parts differ in width ({[r.shape[1] for r in rows]})")
    height = sum(r.shape[0] for r in rows)
    if 4 * width * height > MAX_IMAGE_BYTES:
        raise EncoderError(f"lz: image too large ({width}x{height}), lz_set_sizes() limit 1 GiB")
    flats = [
        r.reshape(-1) if r.flags.c_contiguous else np.ascontiguousarray(r).reshape(-1) for r in rows
    ]
    npixels = height * width
    split = len(flats)
    if npixels >= STACK_LANE_MIN_PIXELS and _stack_pacer.wanted():
        split = _stack_split(flats)
    out = buffer("lz", _HEADER.size + sum(literal_bound(f.shape[0]) for f in flats[:split]) + 16)
    _HEADER.pack_into(
        out.data, 0, LZ_MAGIC, LZ_VERSION, LZ_IMAGE_TYPE_RGB32, width, height, 4 * width, 1
    )
    base = _tables.advance(npixels)
    origins = [0]
    for src in flats:
        origins.append(origins[-1] + src.shape[0])
    if split == len(flats):
        return out[
            : _compress_bands(flats, origins, 0, split, base, _tables.a, out, _HEADER.size, width)
        ].tobytes()
    out_b = buffer("lz_b", sum(literal_bound(f.shape[0]) for f in flats[split:]) + 16)
    table_a, table_b = _tables.a, _tables.b
    ends = [0, 0]

    def lane_a() -> None:
        ends[0] = _compress_bands(flats, origins, 0, split, base, table_a, out, _HEADER.size, width)

    def lane_b() -> None:
        # the pixels of the band above lane B's first band that a match may copy from, hashed
        # into lane B's table as the one-lane search would have them
        above = flats[split - 1]
        lz_prime(
            above,
            above.shape[0] - MAX_FAR_DISTANCE,
            above.shape[0],
            base + origins[split - 1],
            table_b,
        )
        ends[1] = _compress_bands(flats, origins, split, len(flats), base, table_b, out_b, 0, width)

    _stack_pacer.run(lane_a, lane_b)
    return b"".join((out[: ends[0]].data, out_b[: ends[1]].data))


def _stack_split(flats: Sequence[np.ndarray]) -> int:
    """The first band of the second lane: where half the pixels are coded (at least one band
    each side); ``len(flats)`` for one lane.  Depends on the sizes only, so the bytes are the
    same on every machine."""
    total = sum(f.shape[0] for f in flats)
    done = 0
    for k, src in enumerate(flats[:-1]):
        done += src.shape[0]
        if 2 * done >= total:
            return k + 1
    return len(flats)


def _compress_bands(
    flats: Sequence[np.ndarray],
    origins: Sequence[int],
    first: int,
    stop: int,
    base: int,
    htab: np.ndarray,
    out: np.ndarray,
    pos: int,
    width: int,
) -> int:
    """Bands ``flats[first:stop]`` (rows of ``width`` pixels) as tokens from ``out[pos]``, each
    band's search reaching into the one above (``lz_rgb32_compress_after``); the end position
    in ``out``."""
    prev = flats[first - 1] if first > 0 else flats[0][:0]
    for k in range(first, stop):
        src = flats[k]
        # One call per band.  Calling the kernel without the band-above branch for the pixels
        # past MAX_FAR_DISTANCE was 7% faster, but its cut ends a match there: testpattern_bars
        # came to 462,227 bytes against C's 462,204 (462,180 in one call per band).
        pos = lz_rgb32_compress_after(
            prev, src, origins[k], 0, src.shape[0], base, htab, out, pos, width
        )
        if pos < 0:  # a kernel bounds check: a bug, never expected
            raise EncoderError("lz: output buffer overflow")
        prev = src
    return pos


def warmup() -> None:
    """Compile (or load from cache) the kernel with the argument types ``lz_encode`` uses."""
    frame = np.zeros((4, 8, 4), dtype=np.uint8)
    frame[1:3, 2:6, 0] = 200
    lz_encode(frame)
    lz_encode(frame[1:3, 1:5])
    frame.flags.writeable = False  # read-only input (np.frombuffer, mmap): its own signature
    lz_encode(frame)
    # the second lane's priming kernel, on both kinds of input
    src = frame.view(np.uint32).reshape(-1)
    table = np.full(1 << 10, -1, dtype=np.int32)
    lz_prime(src, 0, src.shape[0], 0, table)
    src = np.zeros(8, dtype=np.uint32)
    lz_prime(src, 0, 8, 0, table)
    lz_encode_stack([frame[:2], frame[2:]])
    frame.flags.writeable = True
    lz_encode_stack([frame[:2], frame[2:]])
