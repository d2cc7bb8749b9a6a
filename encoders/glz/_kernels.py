"""numba kernels of the GLZ_RGB (RGB32) encoder: LZ matching within the image and into the window.

Token format: ``spice-gtk:src/decode-glz-tmpl.c`` ``decode()``; the reference writer is
``spice:server/glz-encode-match.tmpl.c`` ``encode_match()`` (here :func:`match_code`).  The
search follows the shape of ``glz-encode.tmpl.c`` ``compress_seg()``/``do_match()``: a run
check, one probe of a hash table shared by every image of the dictionary, greedy extension,
acceptance when the match is longer than its token (``get_encode_ref_size()`` rule), hash
updates on the last two matched pixels.

Positions in the hash table are *virtual*: image ``k`` occupies ``[img_virt[k], img_virt[k] +
img_size[k])`` of a number line that only grows (see :mod:`encoders.glz.dictionary`), so stale
entries of evicted images, of a failed encode or of an earlier session fall below ``win_lo`` or
are re-verified pixel by pixel; a hint is never trusted.
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
    "MAX_IMAGE_DIST",
    "MAX_PIXEL_LONG_DISTANCE",
    "glz_encode_small",
    "glz_encode_small_placed",
    "glz_prime",
    "glz_rebase",
    "glz_rgb32_compress",
    "hash_long",
    "match_code",
    "match_cost",
]

#: Pixel offsets (in-image distance - 1, or offset into an older image) stay below 2**25
#: (``MAX_PIXEL_LONG_DISTANCE``: 4 + 8 + 5 + 8 bits in the token).
MAX_PIXEL_LONG_DISTANCE = 1 << 25
#: Image distances: 24 bits in the long-offset form (``MAX_IMAGE_DIST`` in glz-encoder.c).
MAX_IMAGE_DIST = (1 << 24) - 1
_SHORT = 1 << 12  # MAX_PIXEL_SHORT_DISTANCE: offsets below fit 4 + 8 bits
_MEDIUM = 1 << 17  # MAX_PIXEL_MEDIUM_DISTANCE: offsets below need no 5th byte
#: Sampled pixels of the long-string hash, after the first three.
LONG_PROBE_1 = 7
LONG_PROBE_2 = 15
#: The long-string table is written at positions that are multiples of this (fewer writes;
#: a shifted copy still lines up within LONG_STEP - 1 literal pixels).
LONG_STEP = 4
#: A 3-pixel-table match at least this long is not worth a second probe.
LONG_ENOUGH = 16


@kernel
def match_cost(offset: int, image_dist: int) -> int:
    """Bytes of a match token apart from length-extension bytes (``get_encode_ref_size()``)."""
    if offset < _SHORT:
        if image_dist < (1 << 6):
            return 3
        if image_dist < (1 << 14):
            return 4
        if image_dist < (1 << 22):
            return 5
        return 6
    cost = 3
    if image_dist == 0:
        cost = 3
    elif image_dist < (1 << 8):
        cost = 4
    elif image_dist < (1 << 16):
        cost = 5
    else:
        cost = 6
    if offset >= _MEDIUM:
        cost += 1
    return cost


@kernel
def match_code(length: int, offset: int, image_dist: int) -> tuple[int, int, int]:
    """A GLZ RGB32 match token of ``length >= 1`` pixels at ``offset`` in image ``id -
    image_dist``, as ``(ctrl, tail, ntail)``: the token is the byte ``ctrl``, then (when
    ``length >= 7``) ``(length - 7) // 255`` bytes 255 and one byte ``(length - 7) % 255``,
    then the ``ntail`` bytes of ``tail``, least significant first (``_lzbase.put_token``).

    ``offset`` is ``distance - 1`` when ``image_dist == 0`` and the absolute pixel offset in the
    older image otherwise.  Layout (``decode()``): ctrl = ``len << 5 | pixel_flag << 4 |
    offset & 15`` (len 7: length bytes follow), ``offset >> 4 & 255``, then either (short,
    offset < 4096) ``image_flag << 6 | image_dist & 63`` + image_flag bytes of image_dist bits
    6.., or (long) ``image_flag << 6 | long << 5 | offset >> 12 & 31`` + image_flag
    little-endian bytes of image_dist + (long) ``offset >> 17``.  RGB32 length bias 0.

    Integers only, so the kernel writes the bytes itself: a helper that takes the output array
    costs an atomic reference-count increment and decrement per token (see
    ``encoders._jit.inline_kernel``), 13% of the encoder's time on a text frame.
    """
    flag = 0 if offset < _SHORT else 16
    ctrl = ((min(length, 7) << 5) | flag | (offset & 15)) & 0xFF
    tail = (offset >> 4) & 0xFF
    if offset < _SHORT:
        # image_flag = how many bytes of image_dist follow its low 6 bits
        nbytes = 0
        if image_dist >= (1 << 22):
            nbytes = 3
        elif image_dist >= (1 << 14):
            nbytes = 2
        elif image_dist >= (1 << 6):
            nbytes = 1
        tail |= (((nbytes << 6) | (image_dist & 63)) & 0xFF) << 8
        tail |= ((image_dist >> 6) & ((1 << (8 * nbytes)) - 1)) << 16
        return ctrl, tail, 2 + nbytes
    nbytes = 0
    if image_dist >= (1 << 16):
        nbytes = 3
    elif image_dist >= (1 << 8):
        nbytes = 2
    elif image_dist > 0:
        nbytes = 1
    long_bit = 32 if offset >= _MEDIUM else 0
    tail |= (((nbytes << 6) | long_bit | ((offset >> 12) & 31)) & 0xFF) << 8
    tail |= (image_dist & ((1 << (8 * nbytes)) - 1)) << 16
    ntail = 2 + nbytes
    if long_bit:
        tail |= ((offset >> 17) & 0xFF) << (8 * ntail)
        ntail += 1
    return ctrl, tail, ntail


@kernel
def hash_long(a: int, b: int, c: int, d: int, e: int, shift: int) -> int:
    """Hash of pixels ``i, i+1, i+2, i+LONG_PROBE_1, i+LONG_PROBE_2`` (a long-string hint)."""
    x = (a * 0x9E3779B1 + b * 0x85EBCA77 + c * 0xC2B2AE3D) & 0xFFFFFFFF
    x = (x * 0x27D4EB2F + d * 0x165667B1 + e * 0xD3A2646C) & 0xFFFFFFFF
    return x >> shift


@inline_kernel
def _find_image(img_virt: np.ndarray, oldest_id: int, cur_id: int, g: int) -> int:
    """Id of the kept image whose virtual range starts at or before ``g`` (binary search)."""
    ring = img_virt.shape[0] - 1
    lo = oldest_id
    hi = cur_id - 1
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if int(img_virt[np.uint64(mid & ring)]) <= g:
            lo = mid
        else:
            hi = mid - 1
    return lo


@kernel
def glz_prime(
    cur: np.ndarray, start: int, stop: int, cur_virt: int, base: int, htab: np.ndarray
) -> None:
    """Enter the three-pixel hashes of ``cur[start:stop]`` into ``htab`` (virtual positions
    minus ``base``, see :func:`glz_rgb32_compress`).

    A second lane (:mod:`encoders._lanes`) has its own table, which holds nothing of the first
    lane of this image; priming it with the pixels just before its start keeps the in-image
    matches a one-lane search would find there.
    """
    nbits = 0
    while (1 << nbits) < htab.shape[0]:
        nbits += 1
    shift = 32 - nbits
    end = min(stop, cur.shape[0] - 2)
    for q in range(max(start, 0), end):
        h = hash3(int(cur[q]) & MASK24, int(cur[q + 1]) & MASK24, int(cur[q + 2]) & MASK24, shift)
        htab[h] = cur_virt - base + q


@kernel
def glz_rgb32_compress(
    cur: np.ndarray,
    start: int,
    stop: int,
    cur_virt: int,
    base: int,
    cur_id: int,
    arena: np.ndarray,
    htab: np.ndarray,
    ltab: np.ndarray,
    img_virt: np.ndarray,
    img_aoff: np.ndarray,
    img_size: np.ndarray,
    oldest_id: int,
    out: np.ndarray,
    pos: int,
    width: int,
) -> int:
    """Encode ``cur[start:stop]`` (uint32 pixels, stream order, rows of ``width``) as GLZ RGB32
    tokens from
    ``out[pos]``.

    Args:
        cur: the image being encoded; its virtual start is ``cur_virt``, its GLZ id ``cur_id``.
        start, stop: the lane to encode (:mod:`encoders._lanes`; the whole image is ``0,
            len(cur)``).  Matches copy from any earlier pixel but end at ``stop``.
        arena: pixels of the kept images; image ``k`` (``oldest_id <= k < cur_id``) sits at
            ``arena[img_aoff[k & m] : img_aoff[k & m] + img_size[k & m]]`` with virtual start
            ``img_virt[k & m]`` (``m`` = ring size - 1).  No kept image when
            ``oldest_id == cur_id``.
        base: the tables' origin on the virtual number line: a slot holds a virtual position
            minus ``base`` (-1: empty), so int32 slots do (half the cache footprint of int64,
            measured 10-20% faster); the dictionary moves the origin up before the difference
            could reach 2**31 (:func:`glz_rebase`).  An empty slot reads as ``base - 1``,
            which is below every kept image, so it is ignored like any stale hint.
        htab: int32 table of a power-of-two size: hash of 3 pixels -> virtual position (a hint),
            updated at every probed position, as ``compress_seg()`` does.
        ltab: like ``htab`` for :func:`hash_long` strings, updated every ``LONG_STEP`` pixels
            and probed only when ``htab`` gave less than ``LONG_ENOUGH`` pixels.  The 3-pixel
            table always remembers the most recent occurrence, usually in the current image;
            this one keeps long strings (a scrolled or repeated region of an older image)
            findable.  Our addition: the reference encoder has no such second probe.  Probed only
            while the dictionary keeps older images.

    Before either table, the *repeat* candidate is tried: the pixel after the source of the
    last match, as far on as the encoder has come since (our addition too).  A frame that
    repeats an older one except for a small changed area picks the copy up again right after
    the change without a table hit; when it gives ``LONG_ENOUGH`` pixels the long table is not
    probed (the 3-pixel table always is, to keep it current as ``compress_seg()`` does).
    Also ours: the pixel one row up, the same pixel of the last two images (when they have
    this one's size) and, for a pixel nothing else matched, the ones up and to either side.

    Returns:
        The end position of the stream in ``out``; -1 if ``out`` is too short (a bug: callers
        size it for the worst case).
    """
    n = stop
    total = cur.shape[0]
    nbits = 0
    while (1 << nbits) < htab.shape[0]:
        nbits += 1
    shift = 32 - nbits
    lbits = 0
    while (1 << lbits) < ltab.shape[0]:
        lbits += 1
    lshift = 32 - lbits
    ring = img_virt.shape[0] - 1
    cur_rel = cur_virt - base
    win_lo = cur_virt
    if oldest_id < cur_id:
        win_lo = int(img_virt[oldest_id & ring])
    # the previous image when it has this one's size (a repeated frame or area): its pixel at
    # the same position is a candidate, found without a table hit (see probe 3 below)
    # (and the one before it: where the last frame changed, the frame before often still holds
    # what this one shows again)
    same_virt = -1
    same_virt2 = -1
    if oldest_id < cur_id:
        last = np.uint64((cur_id - 1) & ring)
        if int(img_size[last]) == total:
            same_virt = int(img_virt[last])
    if oldest_id < cur_id - 1:
        last = np.uint64((cur_id - 2) & ring)
        if int(img_size[last]) == total:
            same_virt2 = int(img_virt[last])
    # The long table is for older images, whose positions the 3-pixel table has forgotten.  A
    # first image (a new surface: no image kept) only fills it, every LONG_STEP pixels: probing
    # it there found 0.7-10% fewer bytes of in-image repeats (web_pydoc, desktop_xapps) but cost
    # 15-35% of a text frame's time, and the bytes stay below C's without (encoders.bench_bytes).
    older = oldest_id < cur_id
    rep_virt = -1  # virtual position the last match's source reached ...
    rep_at = 0  # ... when the encoder was at this pixel
    lit = start
    i = start
    while i + 2 < n:
        # uint64 indices: no negative-index wrap-around code (see _lzbase.same_end())
        ui = np.uint64(i)
        p0 = int(cur[ui]) & MASK24
        p1 = int(cur[ui + np.uint64(1)]) & MASK24
        p2 = int(cur[ui + np.uint64(2)]) & MASK24
        length = 0
        offset = 0
        idist = 0
        if i > 0 and p0 == p1 and p1 == p2 and (int(cur[ui - np.uint64(1)]) & MASK24) == p0:
            length = run_end(cur, i + 3, n, p0) - i
        else:
            h = 0
            for probe in range(8):
                # probe 0: the repeat candidate; 1: the 3-pixel table; 2: the row above;
                # 3, 4: the same pixel of the previous image and of the one before; 5, 6: the
                # row above, one pixel on and one back; 7: the long table
                if probe == 0:
                    if rep_virt < 0:
                        continue
                    g = rep_virt + (i - rep_at)
                elif probe == 1:
                    # probed and updated even after a long repeat: a table that misses the
                    # positions the repeat covered lost later matches (a 672x511 crop of
                    # testpattern_bars: 12,166 bytes against C's 10,098, now 9,967)
                    h = hash3(p0, p1, p2, shift)
                    g = base + int(htab[np.uint64(h)])
                    htab[np.uint64(h)] = cur_rel + i
                elif probe == 2:
                    # images repeat vertically more often than a 3-pixel slot remembers
                    if length >= LONG_ENOUGH or i < width:
                        continue
                    g = cur_virt + i - width
                elif probe == 3:
                    # a frame that repeats the last one: the 3-pixel table has forgotten most
                    # of an older photo's positions (16 strings a slot), so a photo with one
                    # small change came to 1,165,400 bytes against C's 14,744
                    if length >= LONG_ENOUGH or same_virt < 0:
                        continue
                    g = same_virt + i
                elif probe == 4:
                    if length >= LONG_ENOUGH or same_virt2 < 0:
                        continue
                    g = same_virt2 + i
                elif probe == 5:
                    # a pixel nothing else matched: anti-aliased slopes and diagonal lines
                    # repeat one row up and one pixel on (or back).  The 3-pixel table (2**17
                    # slots) forgets the far strings C's 2**20 keep; on a 1080p drawing
                    # (ImageMagick's logo) that left us 77 bytes above C, 216 below with this
                    # probe, 462 below with the next too, and near-noise grain 4 bytes above C
                    # before, 1 below after.  The two cost photos (all literals) up to 15% of
                    # their time, text frames nothing measurable (interleaved A/B).
                    if length > 0 or i < width:
                        continue
                    g = cur_virt + i - width + 1
                elif probe == 6:
                    if length > 0 or i <= width:
                        continue
                    g = cur_virt + i - width - 1
                else:
                    aligned = (i & (LONG_STEP - 1)) == 0
                    if length >= LONG_ENOUGH or i + LONG_PROBE_2 >= total:
                        break
                    if not older and not aligned:
                        break
                    lh = hash_long(
                        p0,
                        p1,
                        p2,
                        int(cur[ui + np.uint64(LONG_PROBE_1)]) & MASK24,
                        int(cur[ui + np.uint64(LONG_PROBE_2)]) & MASK24,
                        lshift,
                    )
                    g = base + int(ltab[np.uint64(lh)])
                    if aligned:
                        ltab[np.uint64(lh)] = cur_rel + i
                    if not older:
                        break  # a first image: remembered for the next ones, nothing to find
                cand_len = 0
                cand_off = 0
                cand_dist = 0
                if g >= cur_virt:
                    ref = g - cur_virt
                    # the first two pixels here, the rest in same_end(): most candidates fail
                    # at once (a 1-pixel match never pays, see do_match() below)
                    if (
                        ref < i
                        and i - ref - 1 < MAX_PIXEL_LONG_DISTANCE
                        and (int(cur[np.uint64(ref)]) & MASK24) == p0
                        and (int(cur[np.uint64(ref + 1)]) & MASK24) == p1
                    ):
                        cand_len = same_end(cur, i + 2, cur, ref + 2, n) - i
                        cand_off = i - ref - 1
                elif g >= win_lo:
                    # into an older image (ids are consecutive, virtual starts increase)
                    k = _find_image(img_virt, oldest_id, cur_id, g)
                    slot = np.uint64(k & ring)
                    off = g - int(img_virt[slot])
                    size = int(img_size[slot])
                    r = int(img_aoff[slot]) + off
                    if (
                        off + 1 < size
                        and (int(arena[np.uint64(r)]) & MASK24) == p0
                        and (int(arena[np.uint64(r + 1)]) & MASK24) == p1
                    ):
                        stop_at = n
                        if size - off < n - i:
                            stop_at = i + size - off
                        cand_len = same_end(cur, i + 2, arena, r + 2, stop_at) - i
                        cand_off = off
                        cand_dist = cur_id - k
                # do_match(): a 1-2 pixel match must beat its token (3 bytes a pixel)
                if 0 < cand_len <= 2 and cand_len < match_cost(cand_off, cand_dist) // 3 + 1:
                    cand_len = 0
                if cand_len > length:
                    length = cand_len
                    offset = cand_off
                    idist = cand_dist
            if length > 0 and idist == 0:
                # an in-image copy may start earlier, over the pending literals
                back = same_start(cur, i, i - offset - 1, lit)
                i -= back
                length += back
            if length > 0:
                # where this match's source is: in-image offsets count back from i - 1
                if idist == 0:
                    rep_virt = cur_virt + i - offset - 1 + length
                else:
                    rep_virt = int(img_virt[np.uint64((cur_id - idist) & ring)]) + offset + length
                rep_at = i + length
        if length == 0:
            i += 1
            continue
        if lit < i:
            pos = flush_literals(cur, lit, i, out, pos)
            if pos < 0:
                return -1
        # the match token, written here (see match_code())
        if pos + 12 + length // 255 > out.shape[0]:
            return -1
        ctrl, tail, ntail = match_code(length, offset, idist)
        pos = put_token(out, pos, ctrl, length, tail, ntail)
        end = i + length
        q = end - 2
        if q > i and q + 2 < total:
            uq = np.uint64(q)
            htab[
                np.uint64(
                    hash3(
                        int(cur[uq]) & MASK24,
                        int(cur[uq + np.uint64(1)]) & MASK24,
                        int(cur[uq + np.uint64(2)]) & MASK24,
                        shift,
                    )
                )
            ] = cur_rel + q
        q = end - 1
        if q > i and q + 2 < total:
            uq = np.uint64(q)
            htab[
                np.uint64(
                    hash3(
                        int(cur[uq]) & MASK24,
                        int(cur[uq + np.uint64(1)]) & MASK24,
                        int(cur[uq + np.uint64(2)]) & MASK24,
                        shift,
                    )
                )
            ] = cur_rel + q
        i = end
        lit = end
    if lit < n:
        pos = flush_literals(cur, lit, n, out, pos)
    return pos


@kernel
def glz_rebase(table: np.ndarray, delta: int) -> None:
    """Move a table's origin up by ``delta``: slots below it become empty (-1).

    Only slots below the oldest kept image are dropped, and those are ignored anyway, so the
    output is the same as with 64-bit slots.
    """
    for k in range(table.shape[0]):
        v = int(table[k])
        table[k] = v - delta if v >= delta else -1


@kernel
def _put_be(out: np.ndarray, pos: int, value: int, nbytes: int) -> int:
    """Store ``value`` as ``nbytes`` big-endian bytes at ``out[pos]``; the position after."""
    for k in range(nbytes):
        out[pos + k] = (value >> (8 * (nbytes - 1 - k))) & 0xFF
    return pos + nbytes


@kernel
def glz_encode_small(
    pixels: np.ndarray,
    arena: np.ndarray,
    aoff: int,
    cur_virt: int,
    base: int,
    cur_id: int,
    win_head_dist: int,
    htab: np.ndarray,
    ltab: np.ndarray,
    img_virt: np.ndarray,
    img_aoff: np.ndarray,
    img_size: np.ndarray,
    oldest_id: int,
    out: np.ndarray,
) -> int:
    """One image in one call: copy ``pixels`` (C-contiguous (H, W, 4) uint8 B,G,R,X) into
    ``arena[aoff:]``, write the GLZ header (``glz_encode()``: magic, version, type RGB32
    top-down, width, height, stride, id, win_head_dist; big-endian), the tokens of one lane
    (:func:`glz_rgb32_compress`) and the image's slot in ``img_*``.  Returns the stream's end in
    ``out``, or -1 on overflow.

    Why one call: on the path of every small change (a typed glyph) the copy, header and
    record keeping as numpy and struct calls took ~60 us of a cold CPU, more than the tokens
    (``GlzDictionary._encode_small``).
    """
    height = pixels.shape[0]
    width = pixels.shape[1]
    npixels = height * width
    flat = pixels.reshape(npixels * 4)
    for k in range(npixels):
        j = 4 * k
        arena[aoff + k] = (
            int(flat[j])
            | (int(flat[j + 1]) << 8)
            | (int(flat[j + 2]) << 16)
            | (int(flat[j + 3]) << 24)
        )
    pos = _put_be(out, 0, 0x20205A4C, 4)  # LZ_MAGIC
    pos = _put_be(out, pos, 0x00010001, 4)  # LZ_VERSION
    pos = _put_be(out, pos, 8 | (1 << 4), 1)  # LZ_IMAGE_TYPE_RGB32, top down
    pos = _put_be(out, pos, width, 4)
    pos = _put_be(out, pos, height, 4)
    pos = _put_be(out, pos, 4 * width, 4)
    pos = _put_be(out, pos, cur_id, 8)
    pos = _put_be(out, pos, win_head_dist, 4)
    cur = arena[aoff : aoff + npixels]
    end = glz_rgb32_compress(
        cur, 0, npixels, cur_virt, base, cur_id, arena, htab, ltab,
        img_virt, img_aoff, img_size, oldest_id, out, pos, width,
    )  # fmt: skip
    slot = cur_id % img_virt.shape[0]
    img_virt[slot] = cur_virt
    img_aoff[slot] = aoff
    img_size[slot] = npixels
    return end


#: ``GlzDictionary``'s bookkeeping, kept in one int64 array (``state``) for
#: :func:`glz_encode_small_placed`: the next image's id, the oldest kept one, the pixels kept,
#: the next virtual position, images encoded and stream bytes (since construction).
STATE_NEXT_ID = 0
STATE_OLDEST_ID = 1
STATE_KEPT = 2
STATE_NEXT_VIRT = 3
STATE_IMAGES = 4
STATE_BYTES = 5
STATE_FIELDS = 6
#: The arena holds at least this many pixels (2 MiB) when the window allows.
MIN_ARENA_PIXELS = 1 << 19
#: The arena is sized for ``ARENA_IMAGES`` times the largest of the latest images.
ARENA_IMAGES = 4
#: Not this path: the arena must be resized or the tables rebased first (Python does both).
NOT_PLACED = -2


@kernel
def glz_encode_small_placed(
    pixels: np.ndarray,
    arena: np.ndarray,
    state: np.ndarray,
    recent: np.ndarray,
    window: int,
    capacity: int,
    base: int,
    slot_limit: int,
    htab: np.ndarray,
    ltab: np.ndarray,
    img_virt: np.ndarray,
    img_aoff: np.ndarray,
    img_size: np.ndarray,
    out: np.ndarray,
) -> int:
    """:func:`glz_encode_small` with the dictionary's placement of the image and its
    accounting (``GlzDictionary._place`` and ``_advance``, the same rules) in the same call.

    An arena of another size than the recent images call for with this one among them
    (``GlzDictionary._size_arena``, at most ``capacity``), or a position past ``base +
    slot_limit``, returns :data:`NOT_PLACED` before anything is written but what the general
    path does the same (the image's size among the recent ones, the drops placement makes:
    repeated, they find nothing more to drop), so the caller takes that path.  Otherwise
    returns the stream's end in ``out`` (-1 on overflow).

    Why: the placement and accounting were two Python methods, a dozen attribute updates
    and numpy scalar reads: ~55 us of a CPU cold from an idle spell (1.8 us warm), on the
    path of every typed glyph, where the whole kernel call takes ~40.
    """
    npixels = pixels.shape[0] * pixels.shape[1]
    cap = arena.shape[0]
    image_id = state[STATE_NEXT_ID]
    slot = image_id % recent.shape[0]
    biggest = npixels
    for k in range(recent.shape[0]):
        if k != slot and recent[k] > biggest:
            biggest = recent[k]
    target = min(capacity, max(MIN_ARENA_PIXELS, ARENA_IMAGES * biggest))
    if cap < target or 2 * target <= cap:
        return NOT_PLACED
    recent[slot] = npixels
    max_images = img_virt.shape[0]
    oldest = state[STATE_OLDEST_ID]
    kept = state[STATE_KEPT]
    # the client's rule first (glz_dictionary_window_get_new_head()), then the arena's
    while oldest < image_id and kept + npixels > window:
        kept -= img_size[oldest % max_images]
        oldest += 1
    virt = state[STATE_NEXT_VIRT]
    aoff = virt % cap
    if aoff + npixels > cap or (aoff != 0 and oldest == image_id):
        virt += cap - aoff
        aoff = 0
    while oldest < image_id and (
        virt + npixels - img_virt[oldest % max_images] > cap or image_id - oldest >= max_images
    ):
        kept -= img_size[oldest % max_images]
        oldest += 1
    state[STATE_OLDEST_ID] = oldest
    state[STATE_KEPT] = kept
    if virt + npixels - base > slot_limit:  # rare: the tables move their origin first
        return NOT_PLACED
    win_head_dist = image_id - oldest if oldest < image_id else 0
    end = glz_encode_small(
        pixels, arena, aoff, virt, base, image_id, win_head_dist,
        htab, ltab, img_virt, img_aoff, img_size, oldest, out,
    )  # fmt: skip
    if end < 0:
        return end
    state[STATE_NEXT_VIRT] = virt + npixels
    state[STATE_NEXT_ID] = image_id + 1
    state[STATE_KEPT] = kept + npixels
    state[STATE_IMAGES] += 1
    state[STATE_BYTES] += end
    return end
