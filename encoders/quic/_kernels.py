"""QUIC numba kernels: the adaptive Golomb-Rice coder of spice-common ``common/quic*.c``.

Theory of operation
-------------------
QUIC codes each component of each pixel as a mapped prediction residual with a Golomb-Rice code
whose parameter ``l`` is the ``bestcode`` of a *bucket*; the bucket is picked by the previous mapped
residual of the same channel (``correlate_row[i-1]``).  Buckets learn which ``l`` would have been
cheapest (``update_model``), but only at pixels picked by a pseudo-random schedule (``tabrand`` &
``waitmask``) whose density falls as the image proceeds (``wmidx``).  In rows >= 1 a pixel whose
left neighbour repeats the pixel before it, above a row that also repeats, starts a run that is
coded with a melcode (``encode_state_run``).  The decoder mirrors all of this, so the bitstream is
fully determined by the pixels: every quirk below (stale contexts after runs, runs cut at segment
ends, the shared RGB state) is reproduced on purpose.

Data layout (only numpy arrays and ints, so the same code runs under ``NUMBA_DISABLE_JIT=1``):

* ``px``: the frame as a 1-D ``uint32`` array, one word per pixel (B | G<<8 | R<<16 | X/A<<24 on a
  little-endian host); pixel (y, x) is ``px[off + y * rstride + x]``.
* ``out``: ``uint32`` output words (host order; the API stores them little-endian).
* ``state`` (int64): the bit writer ``[acc, nbits, pos]`` at ``W_*`` (``nbits`` < 32 pending bits
  at the bottom of ``acc``, ``pos`` the next output word; words are filled MSB-first as
  ``encode()`` does), at ``W_RES`` how far the current row's residuals are computed, then one
  ``CommonState`` per plane at ``RGB_ST`` (r, g, b share it) and ``ALPHA_ST``, fields ``S_*``.
* ``model`` (int64): counters at ``(channel * 8 + bucket) * 8 + l``, ``bestcode`` at
  ``BEST + channel * 8 + bucket`` and ``bestcode << 8`` of the bucket of context s at
  ``CTXL + channel * 256 + s``; channels 0, 1, 2 are r, g, b, channel 3 is alpha.
* ``corr`` (uint8, 4 x (width + 1)): ``correlate_row`` per channel, shifted by one:
  ``corr[ch, i + 1]`` is ``correlate_row[i]`` and ``corr[ch, 0]`` is ``correlate_row[-1]``, each
  held as the raw residual s (``XLAT[s]`` is the mapped value C stores; XLAT is a bijection with
  XLAT[0] = 0), so the per-pixel path needs no XLAT load: codes come from ``GCODE_S`` and the
  context's code from the ``CTXL`` tables, both indexed by s.

Speed notes: few arrays cross each call (numba reference-counts every array argument with atomic
operations), table indices are masked with constants (``& 0xFF``, ``& 0x7FF``) and the hot
loops index ``px``/``corr`` with ``np.uint64(...)`` so numba emits no negative-index wrap-around
code (it only does for signed indices; worth ~10% here), and the RGB row coder — where nearly
all time goes — has ``update_model`` and the melcode written out inline (a run's hits and
remainder as one codeword: two compiled ``_put`` calls per run cost gradient rows a quarter of
their time).  Tried and dropped, measured interleaved: ``_put`` as an inline_kernel (numba IR
inlining made every caller ~40% slower), the first pixel of a row appended inline (slower), the
three predictions and residuals as one SWAR word, an 8-pixel run scan (both no gain or slower).
Where a pixel's or a run's codeword is appended, the output word is stored without a branch
(every time, pos advancing by whether it completed): whether a word completes depends on the
data, and on photos the branch was mispredicted often enough that this made whole frames
1.10-1.15x faster (``python -m encoders.bench_c --codecs quic``, 1.27x -> 1.41-1.47x C -O2).
The pixel-only work (predictions, residuals, the run test) is done a chunk of pixels ahead of
the coder, vectorised (``_residuals``), so the coder's serial chain has no pixel loads in it:
1.09-1.22x faster per frame on the corpus (geomean 1.15x; interleaved A/B of the two kernels
on a pool worker), the same stream.  Computing the whole row ahead instead made text frames
3-7% slower: run scans skip most of their pixels, whose residuals are then never needed.

Integer discipline: every array load is wrapped in ``int()`` and stored words are masked, so the
arithmetic is the same whether numba widens (JIT) or numpy scalars would wrap (no JIT).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from encoders._jit import kernel
from encoders.quic._tables import (
    BESTTRIG,
    BUCKET_HI,
    BUCKET_LO,
    BUCKET_S,
    GCODE_S,
    GLEN,
    MELC_J,
    S_OF_M,
    TABRAND,
    WMI_MAX,
    WMI_NEXT,
    XLAT,
)

__all__ = ["encode_image", "encode_rows", "finish", "new_state"]

# Annotations only (numba types arguments from the values it is called with).
Words = npt.NDArray[np.uint32]
Bytes2D = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.int64]
Model = npt.NDArray[np.uint16]

# Bit writer fields of ``state``.
W_ACC = 0
W_NBITS = 1
W_POS = 2
#: The current row's residuals are computed up to this pixel (exclusive; ``_residuals``).
W_RES = 3
# CommonState fields, relative to a plane's base (RGB_ST or ALPHA_ST).
S_WAITCNT = 0
S_SEED = 1
S_WMIDX = 2
S_WMILEFT = 3
S_TRIG = 4
S_MELCSTATE = 5
S_MELCLEN = 6
S_MELCORDER = 7
RGB_ST = 8
ALPHA_ST = 16
STATE_SIZE = 24
# ``model``: 4 channels x 8 buckets x 8 counters, then 4 x 8 bestcodes, then at ``CTXL`` per
# channel 256 entries ``bestcode << 8`` of the bucket each context value falls in: the hot loop
# reads a context's code with one load instead of BUCKET_OF then the bestcode (a chain of three
# dependent loads per component became two); kept in step wherever a bestcode changes.
BEST = 256
CTXL = 512
MODEL_SIZE = CTXL + 4 * 256
# The largest value a ``model`` entry takes.  A bucket's counters are halved together once its
# cheapest passes the trigger (at most max(BESTTRIG)); every update adds 1..max(GLEN) bits to
# each counter, so the cheapest passes it within max(BESTTRIG) + 1 updates, and a counter C
# halved and grown again stays below C / 2 + (max(BESTTRIG) + 1) * max(GLEN): at most twice
# that (46,852).  bestcode << 8 is at most 1,792.  So uint16 holds the model.
MODEL_MAX = 2 * (int(BESTTRIG.max()) + 1) * int(GLEN.max())
if MODEL_MAX >= 1 << 16:
    raise RuntimeError(f"QUIC model entries up to {MODEL_MAX} do not fit uint16")

RGB_MASK = 0xFFFFFF
ALPHA_CH = 3


@kernel
def _put(
    out: Words, acc: int, nbits: int, pos: int, code: int, length: int
) -> tuple[int, int, int]:
    """Append ``length`` (<= 31) bits MSB-first; store each completed 32-bit word (``encode()``).

    Requires ``acc`` < 2**32 on entry and keeps it so (only the low ``nbits`` < 32 bits are
    pending), which bounds ``acc << length`` below 2**63.  A store past the end of ``out`` is
    skipped but ``pos`` still advances, so the caller sees the overflow and raises.
    """
    acc = (acc << length) | code
    nbits += length
    if nbits >= 32:
        nbits -= 32
        if pos < out.size:
            out[pos] = (acc >> nbits) & 0xFFFFFFFF
        pos += 1
    return acc & 0xFFFFFFFF, nbits, pos


@kernel
def _fill_ctx(model: Model, ch: int, bucket: int, bestcode: int) -> None:
    """Store ``bestcode << 8`` for every context of ``bucket`` in channel ``ch``'s ``CTXL``
    table (a bucket's mapped values are contiguous, ``BUCKET_LO``..``BUCKET_HI``; the table is
    indexed by the raw residual ``S_OF_M[m]``)."""
    base = CTXL + ch * 256
    for m in range(int(BUCKET_LO[bucket & 7]), int(BUCKET_HI[bucket & 7]) + 1):
        model[base + int(S_OF_M[m & 0xFF])] = bestcode << 8


@kernel
def _update_model(model: Model, ch: int, ctx: int, val: int, trig: int) -> None:
    """Mirror quic_family_tmpl.c ``update_model``: charge value ``XLAT[val]`` to every code of
    the bucket chosen by ``ctx`` (both raw residuals), keep the cheapest (ties keep the larger
    l), halve past ``trig``."""
    bk = ch * 8 + (int(BUCKET_S[ctx & 0xFF]) & 7)
    base = bk * 8
    g = int(XLAT[val & 0xFF]) * 8
    bestlen = int(model[base + 7]) + int(GLEN[g + 7])
    model[base + 7] = bestlen
    bestcode = 7
    for k in range(6, -1, -1):
        v = int(model[base + k]) + int(GLEN[g + k])
        model[base + k] = v
        if v < bestlen:
            bestlen = v
            bestcode = k
    if bestcode != int(model[BEST + bk]):
        model[BEST + bk] = bestcode
        _fill_ctx(model, ch, bk & 7, bestcode)
    if bestlen > trig:
        for k in range(8):
            model[base + k] = int(model[base + k]) >> 1


@kernel
def _encode_run(out: Words, state: Ints, sb: int, runlen: int) -> None:
    """Mirror quic.c ``encode_state_run``: melcode ``runlen`` and adapt the melcode state.

    One 1 bit per whole ``melcorder`` (the order growing after each), then the remainder in
    ``melclen + 1`` bits, then the state steps back once.
    """
    acc = int(state[W_ACC])
    nbits = int(state[W_NBITS])
    pos = int(state[W_POS])
    mstate = int(state[sb + S_MELCSTATE])
    mlen = int(state[sb + S_MELCLEN])
    morder = int(state[sb + S_MELCORDER])
    hits = 0
    while runlen >= morder:
        hits += 1
        runlen -= morder
        if mstate < 31:
            mstate += 1
            mlen = int(MELC_J[mstate & 31])
            morder = 1 << mlen
    while hits > 0:
        n = hits if hits < 24 else 24
        acc, nbits, pos = _put(out, acc, nbits, pos, (1 << n) - 1, n)
        hits -= n
    acc, nbits, pos = _put(out, acc, nbits, pos, runlen, mlen + 1)
    if mstate > 0:
        mstate -= 1
        mlen = int(MELC_J[mstate & 31])
        morder = 1 << mlen
    state[sb + S_MELCSTATE] = mstate
    state[sb + S_MELCLEN] = mlen
    state[sb + S_MELCORDER] = morder
    state[W_ACC] = acc
    state[W_NBITS] = nbits
    state[W_POS] = pos


@kernel
def _rgb_row0_seg(
    px: Words,
    cur: int,
    i: int,
    end: int,
    waitmask: int,
    out: Words,
    corr: Bytes2D,
    model: Model,
    state: Ints,
) -> None:
    """Mirror quic_tmpl.c ``compress_row0_seg`` for r, g, b: predict from the left pixel
    (pixel 0 from 0); no runs in row 0."""
    acc = int(state[W_ACC])
    nbits = int(state[W_NBITS])
    pos = int(state[W_POS])
    waitcnt = int(state[RGB_ST + S_WAITCNT])
    seed = int(state[RGB_ST + S_SEED])
    trig = int(state[RGB_ST + S_TRIG])
    if i == 0:
        c = int(px[cur])
        for ch in range(3):
            r = (c >> (16 - 8 * ch)) & 0xFF
            e = int(GCODE_S[(int(model[CTXL + ch * 256 + int(corr[ch, 0])]) | r) & 0x7FF])
            acc, nbits, pos = _put(out, acc, nbits, pos, e >> 5, e & 31)
            corr[ch, 1] = r
        if waitcnt > 0:
            waitcnt -= 1
        else:
            seed = (seed + 1) & 0xFF
            waitcnt = int(TABRAND[seed]) & waitmask
            for ch in range(3):
                _update_model(model, ch, int(corr[ch, 0]), int(corr[ch, 1]), trig)
        i = 1
    stopidx = i + waitcnt
    while True:
        lim = stopidx if stopidx < end else end - 1
        while i <= lim:
            c = int(px[cur + i])
            a = int(px[cur + i - 1])
            for ch in range(3):
                sh = 16 - 8 * ch
                r = (((c >> sh) & 0xFF) - ((a >> sh) & 0xFF)) & 0xFF
                ctx = CTXL + ch * 256 + int(corr[ch, i])
                e = int(GCODE_S[(int(model[ctx]) | r) & 0x7FF])
                acc, nbits, pos = _put(out, acc, nbits, pos, e >> 5, e & 31)
                corr[ch, i + 1] = r
            i += 1
        if stopidx >= end:
            break
        for ch in range(3):
            _update_model(model, ch, int(corr[ch, stopidx]), int(corr[ch, stopidx + 1]), trig)
        seed = (seed + 1) & 0xFF
        stopidx = i + (int(TABRAND[seed]) & waitmask)
    state[RGB_ST + S_WAITCNT] = stopidx - end
    state[RGB_ST + S_SEED] = seed
    state[W_ACC] = acc
    state[W_NBITS] = nbits
    state[W_POS] = pos


#: Residuals are computed this many pixels ahead of the coder, when it gets there: a run
#: scan jumps over the pixels it covers, and their residuals are never needed (on text frames
#: computing every pixel's cost more than the coder saved).
RES_CHUNK = 32


@kernel
def _residuals(px: Words, prev: int, cur: int, lo: int, hi: int, res: Words) -> None:
    """The pixel-only half of a row's RGB coding, ahead of the coder: for pixels ``lo .. hi -
    1`` (``lo`` >= 1) of the row at ``cur`` (row above at ``prev``), ``res[i]`` = the three
    mapped residuals ``c - (a + b) / 2`` (r << 16 | g << 8 | b, as the pixel word orders them)
    and in bit 24 whether a run may start here (the row above repeats, and so does this row:
    the RLE_PRED_IMP test of quic_tmpl.c ``compress_row_seg``, bar its ``i > 2`` and run-index
    conditions, which the coder checks).

    Why: the coder's serial chain (context -> code -> bit writer) then has no pixel loads or
    prediction arithmetic in it, and this loop has no dependencies, so LLVM vectorises it.  The
    three bytes are computed at once: a per-byte floor average ``(a & b) + ((a ^ b) & 0xFE..) >>
    1`` (no carries between bytes) and a per-byte subtraction mod 256 with the high bits set
    aside so no borrow crosses a byte.  ``i - 2`` reads the last pixel of the row above at
    ``i = 1`` (its flag is never used: runs start at i > 2).
    """
    for i in range(lo, hi):
        c = int(px[np.uint64(cur + i)]) & RGB_MASK
        a = int(px[np.uint64(cur + i - 1)]) & RGB_MASK
        a2 = int(px[np.uint64(cur + i - 2)]) & RGB_MASK
        b = int(px[np.uint64(prev + i)]) & RGB_MASK
        pl = int(px[np.uint64(prev + i - 1)]) & RGB_MASK
        avg = (a & b) + (((a ^ b) & 0xFEFEFE) >> 1)
        diff = ((c | 0x808080) - (avg & 0x7F7F7F)) ^ ((c ^ avg ^ 0x808080) & 0x808080)
        run = 1 if ((pl ^ b) | (a ^ a2)) == 0 else 0
        res[np.uint64(i)] = (diff & RGB_MASK) | (run << 24)


@kernel
def _rgb_row_seg(
    res: Words,
    px: Words,
    prev: int,
    cur: int,
    i: int,
    end: int,
    waitmask: int,
    out: Words,
    corr: Bytes2D,
    model: Model,
    state: Ints,
) -> None:
    """Mirror quic_tmpl.c ``compress_row_seg`` for r, g, b: predict (a + b) / 2, code runs.

    ``prev``/``cur`` are the word offsets of the row above and of this row in ``px``; ``res``
    the row's residuals and run flags (:func:`_residuals`, computed here as it goes, a chunk
    ahead).  This is the hot loop: ``update_model`` and ``encode_state_run`` are written out
    inline, the three contexts are carried in locals, and the three codewords of a pixel are
    appended with one shift when they fit.
    """
    acc = int(state[W_ACC])
    nbits = int(state[W_NBITS])
    pos = int(state[W_POS])
    nout = out.size
    waitcnt = int(state[RGB_ST + S_WAITCNT])
    seed = int(state[RGB_ST + S_SEED])
    trig = int(state[RGB_ST + S_TRIG])
    mstate = int(state[RGB_ST + S_MELCSTATE])
    mlen = int(state[RGB_ST + S_MELCLEN])
    morder = int(state[RGB_ST + S_MELCORDER])
    done = int(state[W_RES])
    width = res.size
    if i == 0:
        c = int(px[cur])
        b = int(px[prev])
        for ch in range(3):
            sh = 16 - 8 * ch
            r = (((c >> sh) & 0xFF) - ((b >> sh) & 0xFF)) & 0xFF
            e = int(GCODE_S[(int(model[CTXL + ch * 256 + int(corr[ch, 0])]) | r) & 0x7FF])
            acc, nbits, pos = _put(out, acc, nbits, pos, e >> 5, e & 31)
            corr[ch, 1] = r
        if waitcnt > 0:
            waitcnt -= 1
        else:
            seed = (seed + 1) & 0xFF
            waitcnt = int(TABRAND[seed]) & waitmask
            for ch in range(3):
                _update_model(model, ch, int(corr[ch, 0]), int(corr[ch, 1]), trig)
        i = 1
    stopidx = i + waitcnt
    run_index = 0
    while True:
        ui = np.uint64(i)
        xr = int(corr[0, ui])
        xg = int(corr[1, ui])
        xb = int(corr[2, ui])
        in_run = False
        while True:
            lim = stopidx if stopidx < end else end - 1
            while i <= lim:
                if i >= done:
                    done = min(i + RES_CHUNK, width)
                    _residuals(px, prev, cur, i, done, res)
                word = int(res[np.uint64(i)])
                # RLE_PRED_IMP: the row above repeats here and so does this row: start a run.
                if (word >> 24) != 0 and i != run_index and i > 2:
                    in_run = True
                    break
                mr = (word >> 16) & 0xFF
                mg = (word >> 8) & 0xFF
                mb = word & 0xFF
                lr = int(model[CTXL | (xr & 0xFF)])
                lg = int(model[(CTXL + 256) | (xg & 0xFF)])
                lb = int(model[(CTXL + 512) | (xb & 0xFF)])
                er = int(GCODE_S[(lr | mr) & 0x7FF])
                eg = int(GCODE_S[(lg | mg) & 0x7FF])
                eb = int(GCODE_S[(lb | mb) & 0x7FF])
                ng = eg & 31
                nb = eb & 31
                tot = (er & 31) + ng + nb
                if tot < 32:
                    acc = (acc << tot) | ((er >> 5) << (ng + nb)) | ((eg >> 5) << nb) | (eb >> 5)
                    nbits += tot
                    # Branch-free: the word at pos is stored every pixel (junk until it is
                    # complete, then kept as pos moves on); whether a word completed is
                    # data-dependent and mispredicted on photos.  The store is clamped to the
                    # buffer; an overflow still shows in pos.
                    full = nbits >> 5
                    nbits -= full << 5
                    out[np.uint64(pos if pos < nout else nout - 1)] = (acc >> nbits) & 0xFFFFFFFF
                    pos += full
                    acc &= 0xFFFFFFFF
                else:
                    # Long codes: append r alone, then g and b (each < 26 bits) one at a time.
                    # Written out rather than calling _put: a call passing ``out`` would add
                    # reference-count traffic to the hot loop.
                    nr = er & 31
                    acc = (acc << nr) | (er >> 5)
                    nbits += nr
                    if nbits >= 32:
                        nbits -= 32
                        if pos < nout:
                            out[pos] = (acc >> nbits) & 0xFFFFFFFF
                        pos += 1
                    acc = ((acc & 0xFFFFFFFF) << ng) | (eg >> 5)
                    nbits += ng
                    if nbits >= 32:
                        nbits -= 32
                        if pos < nout:
                            out[pos] = (acc >> nbits) & 0xFFFFFFFF
                        pos += 1
                    acc = ((acc & 0xFFFFFFFF) << nb) | (eb >> 5)
                    nbits += nb
                    if nbits >= 32:
                        nbits -= 32
                        if pos < nout:
                            out[pos] = (acc >> nbits) & 0xFFFFFFFF
                        pos += 1
                    acc &= 0xFFFFFFFF
                ui = np.uint64(i + 1)
                corr[0, ui] = mr
                corr[1, ui] = mg
                corr[2, ui] = mb
                xr = mr
                xg = mg
                xb = mb
                i += 1
            if in_run or stopidx >= end:
                break
            # update_model at stopidx for r, g, b (context correlate_row[stopidx - 1]).
            for ch in range(3):
                bk = ch * 8 + (int(BUCKET_S[int(corr[ch, stopidx])]) & 7)
                base = bk * 8
                g = int(XLAT[int(corr[ch, stopidx + 1])]) * 8
                bestlen = int(model[base + 7]) + int(GLEN[g + 7])
                model[base + 7] = bestlen
                bestcode = 7
                for k in range(6, -1, -1):
                    v = int(model[base + k]) + int(GLEN[g + k])
                    model[base + k] = v
                    if v < bestlen:
                        bestlen = v
                        bestcode = k
                if bestcode != int(model[BEST + bk]):
                    model[BEST + bk] = bestcode
                    _fill_ctx(model, ch, bk & 7, bestcode)
                if bestlen > trig:
                    for k in range(8):
                        model[base + k] = int(model[base + k]) >> 1
            seed = (seed + 1) & 0xFF
            stopidx = i + (int(TABRAND[seed]) & waitmask)
        if not in_run:
            waitcnt = stopidx - end
            break
        # do_run: count pixels equal to the left neighbour, stopping at the segment end.
        run_index = i
        waitcnt = stopidx - i
        # The scan checks four pixels per step first: long runs dominate text and UI frames.
        j = cur + i
        jend = cur + end
        a = int(px[np.uint64(j - 1)]) & RGB_MASK
        while j + 4 <= jend:
            uj = np.uint64(j)
            diff = (int(px[uj]) ^ a) | (int(px[uj + 1]) ^ a) | (int(px[uj + 2]) ^ a)
            if ((diff | (int(px[uj + 3]) ^ a)) & RGB_MASK) != 0:
                break
            j += 4
        while j < jend and (int(px[np.uint64(j)]) & RGB_MASK) == a:
            j += 1
        runlen = j - cur - i
        i = j - cur
        # encode_state_run, inline.
        hits = 0
        while runlen >= morder:
            hits += 1
            runlen -= morder
            if mstate < 31:
                mstate += 1
                mlen = int(MELC_J[mstate & 31])
                morder = 1 << mlen
        nlen = hits + mlen + 1
        if nlen < 32:
            # the usual case (short runs in UI and gradients): the hits and the remainder as
            # one codeword, appended inline
            acc = (acc << nlen) | (((1 << hits) - 1) << (mlen + 1)) | runlen
            nbits += nlen
            full = nbits >> 5  # branch-free, as in the pixel loop
            nbits -= full << 5
            out[np.uint64(pos if pos < nout else nout - 1)] = (acc >> nbits) & 0xFFFFFFFF
            pos += full
            acc &= 0xFFFFFFFF
        else:
            while hits > 0:
                n = hits if hits < 24 else 24
                acc, nbits, pos = _put(out, acc, nbits, pos, (1 << n) - 1, n)
                hits -= n
            acc, nbits, pos = _put(out, acc, nbits, pos, runlen, mlen + 1)
        if mstate > 0:
            mstate -= 1
            mlen = int(MELC_J[mstate & 31])
            morder = 1 << mlen
        if i == end:
            break
        stopidx = i + waitcnt
    state[RGB_ST + S_WAITCNT] = waitcnt
    state[RGB_ST + S_SEED] = seed
    state[RGB_ST + S_MELCSTATE] = mstate
    state[RGB_ST + S_MELCLEN] = mlen
    state[RGB_ST + S_MELCORDER] = morder
    state[W_RES] = done
    state[W_ACC] = acc
    state[W_NBITS] = nbits
    state[W_POS] = pos


@kernel
def _alpha_seg(
    px: Words,
    prev: int,
    cur: int,
    i: int,
    end: int,
    waitmask: int,
    out: Words,
    corr: Bytes2D,
    model: Model,
    state: Ints,
) -> None:
    """Mirror quic_tmpl.c ``compress_row0_seg`` (``prev`` < 0) and ``compress_row_seg`` for the
    one-component alpha plane (``quic_four_*``): its own state, model and runs on alpha only."""
    acc = int(state[W_ACC])
    nbits = int(state[W_NBITS])
    pos = int(state[W_POS])
    waitcnt = int(state[ALPHA_ST + S_WAITCNT])
    seed = int(state[ALPHA_ST + S_SEED])
    trig = int(state[ALPHA_ST + S_TRIG])
    row0 = prev < 0
    if i == 0:
        c = int(px[cur]) >> 24
        m = c & 0xFF if row0 else (c - (int(px[prev]) >> 24)) & 0xFF
        e = int(GCODE_S[(int(model[CTXL + ALPHA_CH * 256 + int(corr[ALPHA_CH, 0])]) | m) & 0x7FF])
        acc, nbits, pos = _put(out, acc, nbits, pos, e >> 5, e & 31)
        corr[ALPHA_CH, 1] = m
        if waitcnt > 0:
            waitcnt -= 1
        else:
            seed = (seed + 1) & 0xFF
            waitcnt = int(TABRAND[seed]) & waitmask
            _update_model(model, ALPHA_CH, int(corr[ALPHA_CH, 0]), m, trig)
        i = 1
    stopidx = i + waitcnt
    run_index = 0
    while True:
        in_run = False
        while True:
            lim = stopidx if stopidx < end else end - 1
            while i <= lim:
                c = int(px[cur + i]) >> 24
                a = int(px[cur + i - 1]) >> 24
                if row0:
                    m = (c - a) & 0xFF
                else:
                    b = int(px[prev + i]) >> 24
                    if (
                        (int(px[prev + i - 1]) >> 24) == b
                        and i != run_index
                        and i > 2
                        and (int(px[cur + i - 2]) >> 24) == a
                    ):
                        in_run = True
                        break
                    m = (c - ((a + b) >> 1)) & 0xFF
                ctx = CTXL + ALPHA_CH * 256 + int(corr[ALPHA_CH, i])
                e = int(GCODE_S[(int(model[ctx]) | m) & 0x7FF])
                acc, nbits, pos = _put(out, acc, nbits, pos, e >> 5, e & 31)
                corr[ALPHA_CH, i + 1] = m
                i += 1
            if in_run or stopidx >= end:
                break
            ctx = int(corr[ALPHA_CH, stopidx])
            _update_model(model, ALPHA_CH, ctx, int(corr[ALPHA_CH, stopidx + 1]), trig)
            seed = (seed + 1) & 0xFF
            stopidx = i + (int(TABRAND[seed]) & waitmask)
        if not in_run:
            waitcnt = stopidx - end
            break
        run_index = i
        waitcnt = stopidx - i
        a = int(px[cur + i - 1]) >> 24
        runlen = 0
        while i < end and (int(px[cur + i]) >> 24) == a:
            runlen += 1
            i += 1
        state[W_ACC] = acc
        state[W_NBITS] = nbits
        state[W_POS] = pos
        _encode_run(out, state, ALPHA_ST, runlen)
        acc = int(state[W_ACC])
        nbits = int(state[W_NBITS])
        pos = int(state[W_POS])
        if i == end:
            break
        stopidx = i + waitcnt
    state[ALPHA_ST + S_WAITCNT] = waitcnt
    state[ALPHA_ST + S_SEED] = seed
    state[W_ACC] = acc
    state[W_NBITS] = nbits
    state[W_POS] = pos


@kernel
def new_state(width: int) -> tuple[Ints, Model, Bytes2D]:
    """A fresh coder for an image ``width`` pixels wide: ``(state, model, corr)`` as
    ``quic_encode`` starts them (``encoder_reset()``, ``encoder_reset_channels()``,
    ``encoder_init_rle()``), the bit writer at word 5 (after the header)."""
    state = np.zeros(STATE_SIZE, dtype=np.int64)
    state[W_POS] = 5
    for sb in (RGB_ST, ALPHA_ST):
        state[sb + S_SEED] = 0xFF
        state[sb + S_WMILEFT] = WMI_NEXT
        state[sb + S_TRIG] = BESTTRIG[0]
        state[sb + S_MELCLEN] = MELC_J[0]
        state[sb + S_MELCORDER] = 1 << int(MELC_J[0])
    # uint16: 3 KiB instead of 12 next to the code tables in the first-level cache (1.0-1.2x
    # faster, /tmp A/B interleaved against C); every entry fits (see MODEL_MAX)
    model = np.zeros(MODEL_SIZE, dtype=np.uint16)
    model[BEST:CTXL] = 7
    model[CTXL:] = 7 << 8
    corr = np.zeros((4, width + 1), dtype=np.uint8)
    return state, model, corr


@kernel
def encode_rows(
    px: Words,
    off: int,
    rstride: int,
    width: int,
    nrows: int,
    above: int,
    alpha: int,
    out: Words,
    state: Ints,
    model: Model,
    corr: Bytes2D,
) -> None:
    """Code ``nrows`` rows starting at ``px[off]`` (row stride ``rstride``), continuing the
    coder ``state, model, corr`` (:func:`new_state`).  ``above``: 1 when the row before the
    first (``px[off - rstride]``) is the image row above it, 0 when the first is row 0.

    Mirrors quic.c ``quic_encode`` (``QUIC_COMPRESS_RGB`` and the RGBA branch): per row the RGB
    components, then for RGBA the alpha plane.  Each plane's row is cut into segments as
    quic_tmpl.c ``compress_row``/``compress_row0`` do: every ``WMI_NEXT`` pixels of the plane
    (counted across rows) the wait-mask index grows, until ``WMI_MAX``.  The coder carries
    everything from row to row, so an image coded in several calls (a stack of bands,
    ``api.quic_encode_stack``) is the same stream as in one.
    """
    planes = 2 if alpha else 1
    res = np.empty(width, dtype=np.uint32)  # one row's residuals (_residuals): in L1
    for y in range(nrows):
        cur = off + y * rstride
        prev = cur - rstride if y > 0 or above else -1
        for ch in range(4):
            corr[ch, 0] = corr[ch, 1] if prev >= 0 else 0
        state[W_RES] = 1  # this row's residuals: none yet
        for plane in range(planes):
            sb = ALPHA_ST if plane else RGB_ST
            start = 0
            left = width
            while left > 0:
                wmidx = int(state[sb + S_WMIDX])
                wmileft = int(state[sb + S_WMILEFT])
                full = wmidx < WMI_MAX and wmileft <= left
                n = wmileft if full else left
                waitmask = (1 << wmidx) - 1
                if plane:
                    _alpha_seg(px, prev, cur, start, start + n, waitmask, out, corr, model, state)
                elif prev < 0:
                    _rgb_row0_seg(px, cur, start, start + n, waitmask, out, corr, model, state)
                else:
                    _rgb_row_seg(
                        res, px, prev, cur, start, start + n, waitmask, out, corr, model, state
                    )
                start += n
                left -= n
                if full:
                    state[sb + S_WMIDX] = wmidx + 1
                    state[sb + S_TRIG] = BESTTRIG[wmidx + 1]
                    state[sb + S_WMILEFT] = WMI_NEXT
                elif wmidx < WMI_MAX:
                    state[sb + S_WMILEFT] = wmileft - n


@kernel
def finish(out: Words, state: Ints) -> int:
    """Flush the bit writer as ``flush()`` does (the padded last word, one extra zero word);
    return the total word count including the header, or -1 when ``out`` was too small
    (nothing was written past its end)."""
    acc = int(state[W_ACC])
    nbits = int(state[W_NBITS])
    pos = int(state[W_POS])
    if nbits > 0:
        acc, nbits, pos = _put(out, acc, nbits, pos, 0, 32 - nbits)
    acc, nbits, pos = _put(out, acc, nbits, pos, 0, 16)
    acc, nbits, pos = _put(out, acc, nbits, pos, 0, 16)
    if pos > out.size:
        return -1
    return pos


@kernel
def encode_image(
    px: Words, off: int, rstride: int, width: int, height: int, alpha: int, out: Words
) -> int:
    """Code all rows of an RGB32 (``alpha`` = 0) or RGBA image after the 5 header words
    (:func:`encode_rows` from a :func:`new_state`, then :func:`finish`); returns the total
    word count, -1 when ``out`` was too small."""
    state, model, corr = new_state(width)
    encode_rows(px, off, rstride, width, height, 0, alpha, out, state, model, corr)
    return finish(out, state)
