"""``GlzDictionary``: one client's GLZ encoder state, mirroring spice-gtk's decoder window.

Theory of operation
-------------------
spice-gtk keeps one GLZ window per session (``spice-gtk:src/decode-glz.c``).  Each decoded
GLZ image is stored under its header ``id``; after decoding image ``T`` the client frees every
image with ``id < T.id - T.win_head_dist`` (``decode()``, ``glz_decoder_window_release()``), and
a reference to an image it does not hold makes the display channel wait forever
(``glz_decoder_window_bits()``).  So the encoder must know exactly what the client keeps:

* ids start at 0 and are consecutive (``reset()`` restarts them for a new session);
* before image ``id`` of ``N`` pixels, the oldest images are dropped until the kept pixels plus
  ``N`` fit the client's window (``glz-encoder-dict.c`` ``glz_dictionary_window_get_new_head()``),
  and ``win_head_dist = id - oldest kept id`` (0 when nothing is kept) tells the client to drop
  the same ones;
* matches only point into kept images, and never past a referenced image's last pixel (the
  decoder checks only ``offset <= pixels``).

Keeping *fewer* images than the client allows is always safe, and that is how memory is bounded:
kept pixels live in one ``uint32`` arena.  Each image is copied contiguously into the arena; one
that would straddle the arena's end, or that comes when no image is kept, starts again at 0, and
older images are dropped from *our* window until the new one no longer overlaps any kept one.
Positions are recorded on a *virtual* number line (arena laps times arena size plus offset)
that never goes back, so the hash tables (int32 slots: virtual position of the last
three-pixel string with that hash, minus the tables' origin) never need clearing: anything
below the oldest kept image's virtual start is stale by construction, and everything else is
re-verified pixel by pixel.  Every 2**31
positions or so the origin moves up to the oldest kept image (:meth:`LaneTables.reach`).

Memory, by choice less than the client's window: the arena holds ``ARENA_IMAGES`` (4) times
the largest of the last ``RECENT_IMAGES`` images, at least ``MIN_ARENA_PIXELS`` and at most
``capacity = min(window_pixels, max_pixels)``; it is allocated at the first image and reallocated
(dropping the kept images, which is always safe) when that target grows past it or falls to half
of it.  A few images' worth is what gets referenced: each image can reach the ones just before
it, so a repeated, scrolled or slightly changed frame costs a few bytes, while most of a
spice-gtk window (3,145,728 pixels, 12 MiB) would hold images nobody refers back to.  A session
whose first full frame is followed by small updates keeps 2 MiB of arena instead of the window's
12-64 MiB (libspice instead keeps its drawables alive for the window;
spice:server/glz-encoder-dict.c).  Hash tables: two lanes
(:mod:`encoders._lanes`) of ``2 ** hash_bits`` + 8,192 int32 slots, 544 KiB each at the
default 17 bits; the second lane's tables are allocated only when an image is split
(see ``LANE_MIN_PIXELS``).  Image records: 4096 x 3 int64 (96 KiB).

Every successful :meth:`GlzDictionary.encode` must reach the client, in id order; a stream that
is encoded and then not sent leaves a hole the client waits on.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

import numpy as np

from encoders import _lanes
from encoders._lzbase import as_pixel_rows, literal_bound
from encoders._scratch import buffer
from encoders.errors import EncoderError, GlzStaged
from encoders.glz._kernels import (
    ARENA_IMAGES,
    MAX_PIXEL_LONG_DISTANCE,
    MIN_ARENA_PIXELS,
    NOT_PLACED,
    STATE_BYTES,
    STATE_FIELDS,
    STATE_IMAGES,
    STATE_KEPT,
    STATE_NEXT_ID,
    STATE_NEXT_VIRT,
    STATE_OLDEST_ID,
    glz_encode_small,
    glz_encode_small_placed,
    glz_prime,
    glz_rebase,
    glz_rgb32_compress,
)

__all__ = [
    "DEFAULT_HASH_BITS",
    "DEFAULT_MAX_PIXELS",
    "GLZ_HEADER_SIZE",
    "LANE_MIN_PIXELS",
    "LONG_TABLE_BITS",
    "MIN_ARENA_PIXELS",
    "GlzDictionary",
    "LaneTables",
    "encode_lanes",
]

#: Default cap of the pixels kept per dictionary (a 3840x2160 frame fits).
DEFAULT_MAX_PIXELS = 8 << 20
#: log2 of the hash-table slots of each lane.  glz-encoder-priv.h uses 20, but 2**20 slots
#: miss the cache on every probe: 17 (512 KiB of int32) is 4-5x faster on photos for +0.1%
#: bytes.
DEFAULT_HASH_BITS = 17
#: The long-string table has ``2 ** min(LONG_TABLE_BITS, hash_bits - 2)`` slots: 8,192 int32
#: (32 KiB, it stays in L1/L2) cost 0.05-0.1% bytes on the corpus against 2**15, and the
#: encoder's text-frame speed on a busy machine depended mostly on its cache misses.
LONG_TABLE_BITS = 13
#: Kept images at most (ring of image records); bounds image distances and the lookup.
MAX_IMAGES = 4096
#: Images of at least this many pixels would be searched in two lanes (:mod:`encoders._lanes`).
#: Off (no image is that big): each lane's table sees only its own half of every image, so a
#: region sent again at another place or width finds its old pixels only by chance (measured:
#: web_pydoc +8.5% bytes with 32 Ki pixels of priming, the C size exceeded; a re-sent
#: 1200x300 region of the terminal frame +10%), and priming the second lane's table with all
#: of the first lane's pixels costs most of what the second thread saves.
LANE_MIN_PIXELS = MAX_PIXEL_LONG_DISTANCE
#: The second lane's table is primed with the pixels of the first lane (up to this many).
PRIME_PIXELS = 1 << 24
#: The arena is sized for ``ARENA_IMAGES`` times the largest of this many latest images.
RECENT_IMAGES = 64

LZ_MAGIC = 0x20205A4C
LZ_VERSION = 0x00010001
LZ_IMAGE_TYPE_RGB32 = 8
#: magic, version, type | top_down << 4, width, height, stride, id, win_head_dist (glz_encode()).
_HEADER = struct.Struct(">IIBIIIQI")
GLZ_HEADER_SIZE = _HEADER.size
#: Streams of images of at most this many pixels are written into a buffer of the
#: dictionary's own (3 KiB), images up to SMALL_IMAGE_PIXELS into the thread's scratch.
SMALL_OUT_PIXELS = 32 * 32
SMALL_OUT_BYTES = GLZ_HEADER_SIZE + literal_bound(SMALL_OUT_PIXELS) + 16


class LaneTables:
    """The hash tables of the two lanes; the second lane's are made when first needed.

    Slots are int32: a virtual position minus :attr:`base` (see ``glz_rgb32_compress``).
    :meth:`reach` moves the origin up before a position could overflow a slot.
    """

    #: Positions up to ``base + SLOT_LIMIT`` fit a slot (tests lower it to reach a rebase).
    SLOT_LIMIT = (1 << 31) - 1

    def __init__(self, hash_bits: int) -> None:
        self.hash_bits = hash_bits
        self.base = 0
        self.tables = [self._make()]

    def _make(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.full(1 << self.hash_bits, -1, dtype=np.int32),
            np.full(1 << min(LONG_TABLE_BITS, self.hash_bits - 2), -1, dtype=np.int32),
        )

    def lane(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        while len(self.tables) <= k:
            self.tables.append(self._make())
        return self.tables[k]

    def reach(self, lo: int, hi: int) -> None:
        """Make virtual positions below ``hi`` storable, keeping every slot at ``lo`` or above
        (the oldest kept image's start: slots below it are stale anyway)."""
        if hi - self.base <= self.SLOT_LIMIT:
            return
        delta = lo - self.base
        for htab, ltab in self.tables:
            glz_rebase(htab, delta)
            glz_rebase(ltab, delta)
        self.base = lo

    @property
    def nbytes(self) -> int:
        return sum(h.nbytes + t.nbytes for h, t in self.tables)


def encode_lanes(
    cur: np.ndarray,
    cur_virt: int,
    cur_id: int,
    arena: np.ndarray,
    tables: LaneTables,
    img_virt: np.ndarray,
    img_aoff: np.ndarray,
    img_size: np.ndarray,
    oldest_id: int,
    header: tuple[int, int, int, int],
) -> bytes:
    """The GLZ stream of ``cur``: header (width, height, id, win_head_dist), then the tokens
    of one lane, or of two lanes searched side by side for images of ``LANE_MIN_PIXELS``."""
    npixels = cur.shape[0]
    split = npixels // 2 if npixels >= LANE_MIN_PIXELS else npixels
    out = buffer("glz", GLZ_HEADER_SIZE + literal_bound(split) + 16)
    width, height, image_id, win_head_dist = header
    _HEADER.pack_into(
        out.data,
        0,
        LZ_MAGIC,
        LZ_VERSION,
        LZ_IMAGE_TYPE_RGB32 | (1 << 4),
        width,
        height,
        4 * width,
        image_id,
        win_head_dist,
    )
    win_lo = int(img_virt[oldest_id % img_virt.shape[0]]) if oldest_id < cur_id else cur_virt
    tables.reach(win_lo, cur_virt + npixels)
    base = tables.base
    htab, ltab = tables.lane(0)
    ends = [0, 0]

    def lane_a() -> None:
        ends[0] = glz_rgb32_compress(
            cur, 0, split, cur_virt, base, cur_id, arena, htab, ltab,
            img_virt, img_aoff, img_size, oldest_id, out, GLZ_HEADER_SIZE, width,
        )  # fmt: skip

    try:
        if split == npixels:
            lane_a()
            if ends[0] < 0:
                raise ValueError("output buffer overflow")
            return out[: ends[0]].tobytes()
        out_b = buffer("glz_b", literal_bound(npixels - split) + 16)
        htab_b, ltab_b = tables.lane(1)

        def lane_b() -> None:
            glz_prime(cur, split - PRIME_PIXELS, split, cur_virt, base, htab_b)
            ends[1] = glz_rgb32_compress(
                cur, split, npixels, cur_virt, base, cur_id, arena, htab_b, ltab_b,
                img_virt, img_aoff, img_size, oldest_id, out_b, 0, width,
            )  # fmt: skip

        _lanes.run_pair(lane_a, lane_b)
        if min(ends) < 0:
            raise ValueError("output buffer overflow")
    except ValueError as exc:  # a kernel bounds check: a bug, never expected
        raise EncoderError(f"glz: {exc}") from exc
    return b"".join((out[: ends[0]].data, out_b[: ends[1]].data))


#: Images of at most this many pixels take ``GlzDictionary._encode_small`` (one lane; the
#: in-kernel copy assembles words byte by byte, which only small images never notice).
SMALL_IMAGE_PIXELS = 1 << 16
_UINT8 = np.dtype(np.uint8)


def _small_image(pixels: object) -> bool:
    """Whether ``pixels`` is a small, writable, C-contiguous, non-empty (H, W, 4) uint8 array:
    the one layout ``glz_encode_small`` is compiled for.  Anything else (views, read-only
    buffers, bad input) takes the general path, which validates and reports."""
    if type(pixels) is not np.ndarray:
        return False
    flags = pixels.flags  # a new object at each access: one
    return (
        pixels.dtype is _UINT8
        and pixels.ndim == 3
        and pixels.shape[2] == 4
        and 0 < pixels.shape[0] * pixels.shape[1] <= SMALL_IMAGE_PIXELS
        and flags.c_contiguous
        and flags.writeable
    )


def _fill(rows: list[np.ndarray], arena: np.ndarray, staged: tuple[int, int, int]) -> bool:
    """Whether ``rows`` (uint32 pixel rows, in order) are the staged room of ``arena``,
    exactly and contiguously: then the image is in place already."""
    _, aoff, npixels = staged
    address = arena.ctypes.data + aoff * arena.itemsize
    for part in rows:
        if not part.flags.c_contiguous or part.ctypes.data != address:
            return False
        address += part.nbytes
        npixels -= part.size
    return npixels == 0


class _StateField:
    """An int field of a dictionary's ``_state`` array, as an attribute."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __get__(self, owner: GlzDictionary, kind: type | None = None) -> int:
        return int(owner._state[self.index])

    def __set__(self, owner: GlzDictionary, value: int) -> None:
        owner._state[self.index] = value


class GlzDictionary:
    """The GLZ window of one client session: encodes images that may reference earlier ones.

    Thread-safe: every method takes the dictionary's lock, and the kernels run without the GIL,
    so other dictionaries encode in parallel.

    Attributes:
        window_pixels: the client's window (``glz_dictionary_window_size`` of DISPLAY_INIT).
        capacity: pixels this dictionary keeps at most (``min(window_pixels, max_pixels)``).
        images_encoded: images encoded since construction (all sessions).
        bytes_out: stream bytes produced since construction.
        stagings: rooms lent out by :meth:`stage` since construction.
    """

    def __init__(
        self,
        window_pixels: int,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        hash_bits: int = DEFAULT_HASH_BITS,
    ) -> None:
        """Create an empty window (no memory for pixels until the first image).

        Args:
            window_pixels: the client's GLZ window in pixels; 0 means "no GLZ" (spice-html5).
            max_pixels: cap on the pixels kept here (memory bound); at most 2**25, the
                longest offset a token can carry.
            hash_bits: log2 of each lane's hash-table size, 10..26.

        Raises:
            EncoderError: negative window, or parameters out of range.
        """
        if window_pixels < 0:
            raise EncoderError(f"glz: negative window {window_pixels}")
        if not 1 <= max_pixels <= MAX_PIXEL_LONG_DISTANCE:
            raise EncoderError(f"glz: max_pixels must be in 1..2**25, got {max_pixels}")
        if not 10 <= hash_bits <= 26:
            raise EncoderError(f"glz: hash_bits must be in 10..26, got {hash_bits}")
        self.window_pixels = int(window_pixels)
        self.capacity = min(self.window_pixels, int(max_pixels))
        #: The bookkeeping (see ``_kernels.STATE_*``), read and written by the small
        #: images' kernel too; the attributes below are views of it.
        self._state = np.zeros(STATE_FIELDS, dtype=np.int64)
        #: Rooms lent out by :meth:`stage` so far.
        self.stagings = 0
        self._lock = threading.Lock()
        self._arena = np.empty(0, dtype=np.uint32)
        self._tables = LaneTables(hash_bits)
        self._img_virt = np.zeros(MAX_IMAGES, dtype=np.int64)
        self._img_aoff = np.zeros(MAX_IMAGES, dtype=np.int64)
        self._img_size = np.zeros(MAX_IMAGES, dtype=np.int64)
        self._recent = np.zeros(RECENT_IMAGES, dtype=np.int64)
        #: Room for the streams of small images (made with the first: see SMALL_OUT_PIXELS).
        self._small_out: np.ndarray | None = None
        #: The arena room lent out by :meth:`stage`: (virtual start, arena offset, pixels).
        self._staged: tuple[int, int, int] | None = None
        self._start_session()

    # The bookkeeping, fields of _state (the small images' kernel reads and writes it).
    images_encoded = _StateField(STATE_IMAGES)
    bytes_out = _StateField(STATE_BYTES)
    _next_id = _StateField(STATE_NEXT_ID)
    _oldest_id = _StateField(STATE_OLDEST_ID)
    _kept_pixels = _StateField(STATE_KEPT)
    _next_virt = _StateField(STATE_NEXT_VIRT)

    # -- public API -------------------------------------------------------------------------

    @property
    def next_id(self) -> int:
        """GLZ id the next encoded image will carry."""
        return self._next_id

    @property
    def oldest_id(self) -> int:
        """Oldest image id still referencable (== ``next_id`` when nothing is kept)."""
        return self._oldest_id

    @property
    def kept_pixels(self) -> int:
        """Pixels of the images currently kept for reference."""
        return self._kept_pixels

    @property
    def arena_pixels(self) -> int:
        """Pixels the arena has room for now (see the module docstring)."""
        return int(self._arena.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of numpy memory this dictionary holds (arena, hash tables, image records)."""
        records = self._img_virt.nbytes + self._img_aoff.nbytes + self._img_size.nbytes
        records += 0 if self._small_out is None else SMALL_OUT_BYTES
        return int(self._arena.nbytes) + self._tables.nbytes + records

    @property
    def max_nbytes(self) -> int:
        """What it may come to cost: :attr:`nbytes` with the arena at its capacity (it grows
        with the images, never past that) and one lane's tables (a budget reserves this)."""
        records = self._img_virt.nbytes + self._img_aoff.nbytes + self._img_size.nbytes
        tables = sum(array.nbytes for array in self._tables.tables[0])
        return max(self.capacity, 1) * np.dtype(np.uint32).itemsize + tables + records

    def set_capacity(self, max_pixels: int) -> None:
        """Keep at most ``max_pixels`` (within the client's window) from the next image on: a
        server that sizes dictionaries by its frame follows a resize.  The arena is resized
        as for any change of the recent images (dropping kept images, which is always safe)."""
        if not 1 <= max_pixels <= MAX_PIXEL_LONG_DISTANCE:
            raise EncoderError(f"glz: max_pixels must be in 1..2**25, got {max_pixels}")
        with self._lock:
            self.capacity = min(self.window_pixels, int(max_pixels))

    def fits(self, width: int, height: int) -> bool:
        """Whether a ``width`` x ``height`` image can be sent as GLZ to this client.

        False when the window is 0, the image is not smaller than the client's window
        (``image_encoders_compress_glz()`` skips GLZ then), or bigger than this dictionary's
        memory cap: the caller then uses LZ or QUIC.
        """
        npixels = int(width) * int(height)
        return 0 < npixels < self.window_pixels and npixels <= self.capacity

    def stage(self, width: int, height: int) -> np.ndarray | None:
        """Lend out the arena room where the next image of ``width`` x ``height`` will be
        kept: an (H, W, 4) uint8 array to read that image into, so that :meth:`encode_stack`
        of it (or of its rows, in order) copies nothing.  None when the image does not
        :meth:`fits`, the room is lent out already, or another thread is encoding (a caller on
        an event loop must not wait for that).

        Why: every other image is copied into the arena, and that copy cost a 1080p text
        frame a quarter of its encode (the copy evicts the hash tables from the cache as
        well: terminal_manpage 1.34x and web_pydoc 1.25x faster without it, interleaved A/B),
        while libspice's dictionary keeps the drawable it was given
        (``spice:server/glz-encoder-dict.c``).  The kept images the room overlaps are dropped
        now, as the next image would drop them (always safe: its ``win_head_dist`` says so).

        Until the room is taken by that image or given back (:meth:`unstage`), any other image
        raises :class:`~encoders.errors.GlzStaged` instead of overwriting what is being read
        there; the caller must not write into the room after encoding it, nor keep reading it
        once the dictionary has taken further images.
        """
        if not self.fits(width, height):
            return None
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._staged is not None:
                return None
            npixels = int(width) * int(height)
            _, virt, aoff, _ = self._place(npixels)
            self._staged = (virt, aoff, npixels)
            self.stagings += 1
            room = self._arena[aoff : aoff + npixels]
        finally:
            self._lock.release()
        return room.view(np.uint8).reshape(int(height), int(width), 4)

    def unstage(self, staging: int | None = None) -> None:
        """Take back the room lent out by :meth:`stage`, if it was not encoded (a no-op
        otherwise); ``staging``: only if it is still that one (:attr:`stagings` right after
        it), not one lent to someone else since."""
        with self._lock:
            if staging is None or staging == self.stagings:
                self._staged = None

    @property
    def staged(self) -> bool:
        """Whether arena room is lent out (see :meth:`stage`)."""
        return self._staged is not None

    def encode(self, pixels: np.ndarray) -> bytes:
        """Encode an (H, W, 4) B,G,R,X image as a GLZ_RGB stream, adding it to the window.

        Returns:
            The 33-byte header (id, win_head_dist) followed by the tokens.

        Raises:
            EncoderError: bad pixels, or the image does not :meth:`fits`.
        """
        return self.encode_stack((pixels,))

    def encode_stack(self, parts: Sequence[np.ndarray]) -> bytes:
        """Encode ``parts`` stacked top to bottom (each (H_k, W, 4), one width) as one image.

        Why: the server reads a damaged area in bands; sent as one GLZ image, as libspice-server
        sends a drawable (``spice:server/image-encoders.cpp``), it costs one call and one header
        instead of one per band, and its matches reach across band boundaries in-image.  The
        parts are copied into the arena one after another, which the dictionary does for any
        image anyway, so stacking costs no extra copy.

        Raises:
            EncoderError: no parts, bad pixels, widths differ, or the stack does not
                :meth:`fits`.
        """
        if len(parts) == 1 and _small_image(parts[0]):
            pixels = parts[0]
            self._require_fit(pixels.shape[1], pixels.shape[0])
            with self._lock:
                if self._staged is None:  # else the general path: lent room, or GlzStaged
                    return self._placed(pixels) or self._encode_small(pixels)
        rows = [as_pixel_rows(part, "glz") for part in parts]
        if not rows:
            raise EncoderError("glz: no image to encode")
        width = rows[0].shape[1]
        if any(r.shape[1] != width for r in rows):
            raise EncoderError(f"glz: stacked parts differ in width ({[r.shape[1] for r in rows]})")
        height = sum(r.shape[0] for r in rows)
        self._require_fit(width, height)
        with self._lock:
            staged, self._staged = self._staged, None
            if staged is not None and not _fill(rows, self._arena, staged):
                self._staged = staged
                raise GlzStaged("glz: the arena room is lent out (stage) to another image")
            return self._encode_locked(rows, width, height, staged)

    def encode_small(self, pixels: np.ndarray) -> bytes | None:
        """:meth:`encode_stack` of one small image in the fewest steps (one kernel call),
        for the path of every small change; None when it cannot go this way: not a small
        C-contiguous (H, W, 4) uint8 array, not one that :meth:`fits`, room lent out by
        :meth:`stage`, or the arena to resize first (:meth:`encode_stack` then)."""
        if not _small_image(pixels):
            return None
        npixels = pixels.shape[0] * pixels.shape[1]
        if not 0 < npixels < self.window_pixels or npixels > self.capacity:  # fits()
            return None
        with self._lock:
            return None if self._staged is not None else self._placed(pixels)

    def reset(self) -> None:
        """Start a new client session: ids restart at 0 and nothing is referencable (room
        lent out by :meth:`stage` is taken back).

        The arena and tables stay allocated (their pages committed): a reconnecting client
        does not pay for them again.
        """
        with self._lock:
            self._start_session()

    # -- internals --------------------------------------------------------------------------

    def _require_fit(self, width: int, height: int) -> None:
        if not self.fits(width, height):
            raise EncoderError(
                f"glz: {width}x{height} image does not fit a window of {self.window_pixels}"
                f" pixels (dictionary cap {self.capacity})"
            )

    def _start_session(self) -> None:
        self._staged = None
        self._next_id = 0
        self._oldest_id = 0
        self._kept_pixels = 0
        self._recent[:] = 0

    def _drop_oldest(self) -> None:
        slot = self._oldest_id % MAX_IMAGES
        self._kept_pixels -= int(self._img_size[slot])
        self._oldest_id += 1

    def _size_arena(self, npixels: int) -> None:
        """Reallocate the arena when the recent largest image calls for another size."""
        self._recent[self._next_id % RECENT_IMAGES] = npixels
        biggest = int(self._recent.max())
        target = min(self.capacity, max(MIN_ARENA_PIXELS, ARENA_IMAGES * biggest))
        size = self._arena.shape[0]
        if size < target or 2 * target <= size:
            # dropping every kept image is always safe (win_head_dist 0 says so)
            self._oldest_id = self._next_id
            self._kept_pixels = 0
            self._arena = np.empty(target, dtype=np.uint32)

    def _place(self, npixels: int) -> tuple[int, int, int, int]:
        """Room for the next image of ``npixels``: its ``(id, virtual start, arena offset,
        win_head_dist)``, dropping the kept images it displaces."""
        image_id = self._next_id
        self._size_arena(npixels)
        # the client's rule first (glz_dictionary_window_get_new_head()) ...
        while self._oldest_id < image_id and self._kept_pixels + npixels > self.window_pixels:
            self._drop_oldest()
        # ... then our own: a contiguous arena slot that overlaps no kept image, ring room.
        # With nothing kept (a new session, a reallocated arena) the image starts over at the
        # arena's start rather than at the ring's next slot, the memory written longest ago:
        # a session's first images reuse the same, likely cached, memory.  Only then: a kept
        # window makes the copy go to cold memory (measured: a first image after reset(),
        # as bench_c encodes each round, 7-9% faster on the corpus text frames)
        cap = self._arena.shape[0]
        virt = self._next_virt
        aoff = virt % cap
        if aoff + npixels > cap or (aoff and self._oldest_id == image_id):
            virt += cap - aoff
            aoff = 0
        while self._oldest_id < image_id and (
            virt + npixels - int(self._img_virt[self._oldest_id % MAX_IMAGES]) > cap
            or image_id - self._oldest_id >= MAX_IMAGES
        ):
            self._drop_oldest()
        win_head_dist = image_id - self._oldest_id if self._oldest_id < image_id else 0
        return image_id, virt, aoff, win_head_dist

    def _advance(self, image_id: int, virt: int, npixels: int, data: bytes) -> bytes:
        """Account for the image just encoded (its slot in ``_img_*`` already written)."""
        self._next_virt = virt + npixels
        self._next_id = image_id + 1
        self._kept_pixels += npixels
        self.images_encoded += 1
        self.bytes_out += len(data)
        return data

    def _placed(self, pixels: np.ndarray) -> bytes | None:
        """A small image placed, encoded and accounted for in one kernel call
        (``glz_encode_small_placed``); None: the arena is to be resized or the tables
        rebased first (:meth:`_encode_small` does both).  Called with the lock held."""
        npixels = pixels.shape[0] * pixels.shape[1]
        if npixels <= SMALL_OUT_PIXELS:  # a glyph's stream: room of its own, no lookup
            out = self._small_out
            if out is None:
                out = self._small_out = np.empty(SMALL_OUT_BYTES, dtype=np.uint8)
        else:
            out = buffer("glz", GLZ_HEADER_SIZE + literal_bound(npixels) + 16)
        tables = self._tables
        htab, ltab = tables.tables[0]
        end = glz_encode_small_placed(
            pixels, self._arena, self._state, self._recent, self.window_pixels, self.capacity,
            tables.base, tables.SLOT_LIMIT, htab, ltab, self._img_virt, self._img_aoff,
            self._img_size, out,
        )  # fmt: skip
        if end == NOT_PLACED:
            return None
        if end < 0:  # a kernel bounds check: a bug, never expected
            raise EncoderError("glz: output buffer overflow")
        return out[:end].tobytes()

    def _encode_small(self, pixels: np.ndarray) -> bytes:
        """One small C-contiguous image: copied, headed, encoded and recorded in one kernel
        call (``glz_encode_small``), the fewest Python and numpy steps on the path of a typed
        glyph.  Measured on a cold CPU (150 ms idle, the caches evicted): a 40x20 image
        145-155 us through :meth:`_encode_locked`, 83-92 us here."""
        height, width = pixels.shape[0], pixels.shape[1]
        npixels = height * width
        image_id, virt, aoff, win_head_dist = self._place(npixels)
        out = buffer("glz", GLZ_HEADER_SIZE + literal_bound(npixels) + 16)
        tables = self._tables
        if virt + npixels - tables.base > tables.SLOT_LIMIT:  # rare: see LaneTables.reach
            oldest = int(self._img_virt[self._oldest_id % MAX_IMAGES])
            tables.reach(oldest if win_head_dist else virt, virt + npixels)
        htab, ltab = tables.tables[0]
        end = glz_encode_small(
            pixels, self._arena, aoff, virt, tables.base, image_id, win_head_dist,
            htab, ltab, self._img_virt, self._img_aoff, self._img_size, self._oldest_id, out,
        )  # fmt: skip
        if end < 0:  # a kernel bounds check: a bug, never expected
            raise EncoderError("glz: output buffer overflow")
        return self._advance(image_id, virt, npixels, out[:end].tobytes())

    def _encode_locked(
        self,
        parts: list[np.ndarray],
        width: int,
        height: int,
        staged: tuple[int, int, int] | None = None,
    ) -> bytes:
        """``staged``: the parts fill the room :meth:`stage` lent out (checked by the caller,
        :func:`_fill`); when :meth:`_place` gives that room again, in the same arena (a new
        capacity may have reallocated it), they are not copied."""
        npixels = height * width
        arena = self._arena
        image_id, virt, aoff, win_head_dist = self._place(npixels)
        cur = self._arena[aoff : aoff + npixels]
        if staged is None or staged[:2] != (virt, aoff) or self._arena is not arena:
            at = 0
            for rows in parts:
                size = rows.size
                cur[at : at + size].reshape(rows.shape)[...] = rows
                at += size
        data = encode_lanes(
            cur,
            virt,
            image_id,
            self._arena,
            self._tables,
            self._img_virt,
            self._img_aoff,
            self._img_size,
            self._oldest_id,
            (width, height, image_id, win_head_dist),
        )
        slot = image_id % MAX_IMAGES
        self._img_virt[slot] = virt
        self._img_aoff[slot] = aoff
        self._img_size[slot] = npixels
        return self._advance(image_id, virt, npixels, data)
