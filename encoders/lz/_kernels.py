"""numba kernels of the LZ_RGB (RGB32) encoder: greedy single-probe hash matching.

The token format is fixed by ``spice-common:common/lz_decompress_tmpl.c`` ``decompress()``; the
match search is ours.  It follows the shape of ``lz_compress_tmpl.c`` ``compress_seg()`` (a run
check against the previous pixel, then one hash-table probe keyed by the next three pixels,
greedy extension, hash updates on the last two pixels of each match, one-pixel near copies)
with a larger table, a multiplicative hash and a probe of the row above.  Kernels take only
C-contiguous arrays and ints and return the new output position; a full output buffer raises
``ValueError`` (turned into ``EncoderError`` by the API).
"""

from __future__ import annotations

import numpy as np

from encoders._jit import inline_kernel, kernel
from encoders._lzbase import (
    MASK24,
    flush_literals,
    hash3,
    put_token,
    run_end,
    same_end,
    same_start,
)

__all__ = [
    "HASH_BITS",
    "MAX_FAR_DISTANCE",
    "MAX_NEAR_DISTANCE",
    "lz_prime",
    "lz_rgb32_compress",
    "lz_rgb32_compress_after",
    "match_code",
]

#: log2 of the hash-table size (int32 slots: 64 KiB).  ``lz.c`` uses 13.  16 (256 KiB) found a
#: little more of the 73,727-pixel window, but a probe that misses the first-level caches
#: made the photo 0.9x of C's speed against 1.5x at 14 (``python -m encoders.bench_c``,
#: interleaved); with the row-above candidate the bytes moved by 0.1% (photo 0.9896 -> 0.9906
#: of C, ``python -m encoders.bench_bytes``).
HASH_BITS = 14
#: Largest back-distance of the 2-byte form: ``d = D - 1 < 8191`` (8191 is the escape).
MAX_NEAR_DISTANCE = 8191
#: Largest back-distance of the escaped form: ``d - 8191 <= 65535``.
MAX_FAR_DISTANCE = 8191 + 1 + 65535
#: A hash-table match shorter than this is compared with the copy of the row above.
ABOVE_ENOUGH = 16


@kernel
def match_code(length: int, distance: int) -> tuple[int, int, int]:
    """An LZ RGB32 match token of ``length >= 1`` pixels copied from ``distance >= 1`` back, as
    ``(ctrl, tail, ntail)``: the byte ``ctrl``, then (``length >= 7``) ``(length - 7) // 255``
    bytes 255 and one byte ``(length - 7) % 255``, then the ``ntail`` bytes of ``tail``, least
    significant first (``_lzbase.put_token``).

    Layout (``decompress()``): ctrl = ``lcode << 5 | d_hi``, [length bytes], ``d_lo``, [far hi,
    far lo].  For RGB32 the decoded length is ``lcode + extension`` (the C encoder's ``len - 1
    + 1``), so ``lcode = length`` below 7, else 7 and the excess as 255s plus a final byte below
    255.  ``d = distance - 1``; ``d_hi = 31, d_lo = 255`` escapes to ``d - 8191`` in two
    big-endian bytes.  Integers only, so the kernel writes the bytes itself (see
    ``encoders.glz._kernels.match_code`` for why).
    """
    d = distance - 1
    if d < MAX_NEAR_DISTANCE:
        return ((min(length, 7) << 5) | (d >> 8)) & 0xFF, d & 0xFF, 1
    far = d - MAX_NEAR_DISTANCE
    return ((min(length, 7) << 5) | 31) & 0xFF, 255 | (far & 0xFF00) | (far & 0xFF) << 16, 3


@kernel
def lz_rgb32_compress(
    src: np.ndarray,
    start: int,
    stop: int,
    base: int,
    htab: np.ndarray,
    out: np.ndarray,
    pos: int,
    width: int,
) -> int:
    """Encode ``src[start:stop]`` (uint32 pixels in stream order) as LZ RGB32 tokens from ``pos``:
    :func:`lz_rgb32_compress_after` with nothing before ``src``.

    ``[start, stop)`` is one lane of the image (see :mod:`encoders._lanes`): matches may copy
    from any earlier pixel of ``src`` (the decoder holds them) but end at ``stop``; hashes may
    read pixels past it.  The whole image is ``start = 0, stop = len(src)``.
    """
    # reach_prev=False folds the band-above branch away (a whole image has no band above)
    return _compress(src[:0], src, 0, start, stop, base, htab, out, pos, width, False)


@kernel
def _match_from_prev(
    prev: np.ndarray, cur: np.ndarray, r: int, i: int, n: int, p0: int, p1: int
) -> int:
    """End of the match of ``cur[i:n]`` against ``prev[r:]`` and on into ``cur`` from its first
    pixel (``i`` itself if the first two pixels differ from ``p0, p1``).  Not inlined: only
    the first rows of a band reach into the band above, and inlined its comparisons made the
    kernel's literal loop slower everywhere."""
    # every value int64: numba types same_end()'s int(uint64) unsigned, and a mix with the
    # signed ints would make the result a float
    nprev = prev.shape[0]
    q1 = int(prev[np.uint64(r + 1)]) if r + 1 < nprev else int(cur[0])
    j = int(np.int64(i))
    if (int(prev[np.uint64(r)]) & MASK24) == p0 and (q1 & MASK24) == p1:
        j = int(np.int64(i + 2))
        r += 2
        if r >= nprev:
            j = int(np.int64(same_end(cur, j, cur, r - nprev, n)))
        else:
            lim = int(np.int64(min(n, j + nprev - r)))
            j = int(np.int64(same_end(cur, j, prev, r, lim)))
            if j == lim and lim < n:
                j = int(np.int64(same_end(cur, j, cur, 0, n)))
    return j


@kernel
def lz_rgb32_compress_after(
    prev: np.ndarray,
    cur: np.ndarray,
    origin: int,
    start: int,
    stop: int,
    base: int,
    htab: np.ndarray,
    out: np.ndarray,
    pos: int,
    width: int,
) -> int:
    """Encode ``cur[start:stop]`` as LZ RGB32 tokens from ``out[pos]``, where ``cur`` holds the
    image's pixels from stream position ``origin`` on and ``prev`` the ``len(prev)`` pixels
    just before it (the band above, for an image coded band by band: ``api.lz_encode_stack``);
    matches may copy from either, and end at ``stop``.

    ``htab`` is an int32 table of a power-of-two size: slot -> ``base`` + the last stream
    position whose three pixels hashed there (a hint, always re-verified).  Slots below ``base``
    are stale (an earlier image's, or -1): the caller moves ``base`` past every image it
    encoded instead of clearing the table per call (256 KiB, about 5% of a band's encode).
    Positions before ``prev`` are not reachable either (with ``prev`` at least
    ``MAX_FAR_DISTANCE`` long no match could use them).  Returns the end position in ``out``,
    or -1 if ``out`` is too short (a bug: callers size it for the worst case).
    """
    return _compress(prev, cur, origin, start, stop, base, htab, out, pos, width, True)


@inline_kernel
def _compress(
    prev: np.ndarray,
    cur: np.ndarray,
    origin: int,
    start: int,
    stop: int,
    base: int,
    htab: np.ndarray,
    out: np.ndarray,
    pos: int,
    width: int,
    reach_prev: bool,
) -> int:
    """The body of both encoders; ``reach_prev``: a constant where it is inlined."""
    total = cur.shape[0]
    nprev = prev.shape[0]
    tb = base + origin  # the table value of cur[0]
    # slots below prev[0], or below the image's first pixel (stale: below base), are ignored
    reach = max(-nprev, -origin)
    n = stop
    nbits = 0
    while (1 << nbits) < htab.shape[0]:
        nbits += 1
    shift = 32 - nbits
    lit = start  # first pixel not yet written
    i = start
    while i + 2 < n:
        # uint64 indices: no negative-index wrap-around code (see _lzbase.same_end())
        p0 = int(cur[np.uint64(i)]) & MASK24
        p1 = int(cur[np.uint64(i + 1)]) & MASK24
        p2 = int(cur[np.uint64(i + 2)]) & MASK24
        length = 0
        dist = 0
        # the pixel before: at i == 0 prev's last (a band's run goes on from the band above;
        # without it a flat area cost ~7 bytes per band, above C), or none
        before = -1
        if i > 0:
            before = int(cur[np.uint64(i - 1)]) & MASK24
        elif reach_prev and nprev > 0:
            before = int(prev[np.uint64(nprev - 1)]) & MASK24
        if p0 == p1 and p1 == p2 and before == p0:
            # a run: copy of the previous pixel (distance 1), as compress_seg() checks first
            length = run_end(cur, i + 3, n, p0) - i
            dist = 1
        else:
            h = hash3(p0, p1, p2, shift)
            ref = int(htab[np.uint64(h)]) - tb  # an index into cur; below 0: into prev
            htab[np.uint64(h)] = tb + i
            dist = i - ref
            # the first pixels here, the rest in same_end(): most candidates fail at once
            if (
                ref >= 0
                and 0 < dist <= MAX_FAR_DISTANCE
                and (int(cur[np.uint64(ref)]) & MASK24) == p0
            ):
                if (int(cur[np.uint64(ref + 1)]) & MASK24) == p1:
                    length = same_end(cur, i + 2, cur, ref + 2, n) - i
                    # near tokens cost 2 bytes, far 4: demand a real saving over literals
                    if dist > MAX_NEAR_DISTANCE and length < 3:
                        length = 0
                elif dist <= MAX_NEAR_DISTANCE:
                    # one pixel: its 2-byte near token replaces 3 literal bytes, and splits
                    # the literal run at worst into one more count byte, so it never costs
                    # more; compress_seg() takes it too (RGB32's minimum match is one pixel,
                    # spice-common:common/lz_compress_tmpl.c).  Without it, near-noise frames
                    # (ImageMagick's plasma) came out 1-5 bytes above C.  Nested under the
                    # first pixel's test: as a separate test after the probes, the same
                    # logic made photos 1.4x slower (interleaved A/B).
                    length = 1
            elif (
                reach_prev
                and ref < 0
                and ref >= reach
                and dist <= MAX_FAR_DISTANCE
                and (int(prev[np.uint64(ref + nprev)]) & MASK24) == p0
            ):
                # the first pixel here: a call per failed probe cost 2x on a photo's first rows
                length = _match_from_prev(prev, cur, ref + nprev, i, n, p0, p1) - i
                if dist > MAX_NEAR_DISTANCE and length < 3:
                    length = 0
            if length < ABOVE_ENOUGH and i >= width and width <= MAX_FAR_DISTANCE:
                # the row above: images repeat vertically more often than a 3-pixel hash
                # slot remembers (testpattern_bars crops, window borders, gradients)
                ra = i - width
                if (int(cur[np.uint64(ra)]) & MASK24) == p0:
                    if (int(cur[np.uint64(ra + 1)]) & MASK24) == p1:
                        above = same_end(cur, i + 2, cur, ra + 2, n) - i
                        if above > length and (width <= MAX_NEAR_DISTANCE or above >= 3):
                            length = above
                            dist = width
                    elif length == 0 and width <= MAX_NEAR_DISTANCE:
                        # one pixel from above, as from the hash candidate: the pixel above
                        # repeats far more often than a hashed one (plasma 1039x539: 58
                        # bytes below C instead of 3 above)
                        length = 1
                        dist = width
            if length > 0:
                # the copy may start earlier, over the pending literals
                back = same_start(cur, i, i - dist, lit)
                i -= back
                length += back
        if length == 0:
            i += 1
            continue
        if lit < i:
            pos = flush_literals(cur, lit, i, out, pos)
            if pos < 0:
                return -1
        # the match token, written here (see match_code())
        if pos + 6 + length // 255 > out.shape[0]:
            return -1
        ctrl, tail, ntail = match_code(length, dist)
        pos = put_token(out, pos, ctrl, length, tail, ntail)
        end = i + length
        # remember the last two positions of the match (compress_seg() "match boundary")
        for q in (end - 2, end - 1):
            if q > i and q + 2 < total:
                uq = np.uint64(q)
                g = hash3(
                    int(cur[uq]) & MASK24,
                    int(cur[uq + np.uint64(1)]) & MASK24,
                    int(cur[uq + np.uint64(2)]) & MASK24,
                    shift,
                )
                htab[np.uint64(g)] = tb + q
        i = end
        lit = end
    if lit < n:
        pos = flush_literals(cur, lit, n, out, pos)
    return pos


@kernel
def lz_prime(src: np.ndarray, start: int, stop: int, base: int, htab: np.ndarray) -> None:
    """Enter the three-pixel hashes of positions ``[start, stop)`` into ``htab``, in order
    (as ``base`` + position, see :func:`lz_rgb32_compress`).

    A second lane (:mod:`encoders._lanes`) starts with an empty table; priming it with the
    pixels just before its start gives it what the one-lane search would have had in reach.
    """
    nbits = 0
    while (1 << nbits) < htab.shape[0]:
        nbits += 1
    shift = 32 - nbits
    end = min(stop, src.shape[0] - 2)
    for q in range(max(start, 0), end):
        h = hash3(int(src[q]) & MASK24, int(src[q + 1]) & MASK24, int(src[q + 2]) & MASK24, shift)
        htab[h] = base + q
