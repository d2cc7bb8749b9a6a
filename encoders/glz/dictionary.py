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
kept pixels live in one ``uint32`` arena of ``min(window_pixels, max_pixels)`` words (allocated
with ``np.empty``, so pages are only committed as images arrive).  Each image is copied
contiguously into the arena; one that would straddle the arena's end starts again at 0, and
older images are dropped from *our* window until the new one no longer overlaps any kept one.
Positions are recorded on a *virtual* number line (arena laps times arena size plus offset) that
never goes back, so the hash table (``2**hash_bits`` int64 slots: virtual position of the last
three-pixel string with that hash) never needs clearing: anything below the oldest kept image's
virtual start is stale by construction, and everything else is re-verified pixel by pixel.

Memory per dictionary: ``4 * min(window_pixels, max_pixels)`` bytes of arena (32 MiB at the
default cap of 8 Mi pixels, one 4K frame) + ``10 << hash_bits`` bytes of hash tables (1.25 MiB
at the default 17 bits: 3-pixel table and a quarter-size long-string table) + 96 KiB of image
records (4096 x 3 int64).

Every successful :meth:`GlzDictionary.encode` must reach the client, in id order; a stream that
is encoded and then not sent leaves a hole the client waits on.
"""

from __future__ import annotations

import struct
import threading

import numpy as np

from encoders._lzbase import as_pixel_rows, literal_bound
from encoders.errors import EncoderError
from encoders.glz._kernels import MAX_PIXEL_LONG_DISTANCE, glz_rgb32_compress

__all__ = [
    "DEFAULT_HASH_BITS",
    "DEFAULT_MAX_PIXELS",
    "GLZ_HEADER_SIZE",
    "LONG_TABLE_SHRINK",
    "GlzDictionary",
]

#: Default cap of the pixels kept per dictionary (arena of 32 MiB; a 3840x2160 frame fits).
DEFAULT_MAX_PIXELS = 8 << 20
#: log2 of the hash-table slots.  glz-encoder-priv.h uses 20, but 2**20 int64 slots (8 MiB)
#: miss the cache on every probe: 17 (1 MiB) is 4-5x faster on photos for +0.1% bytes.
DEFAULT_HASH_BITS = 17
#: The long-string table has ``2 ** (hash_bits - LONG_TABLE_SHRINK)`` slots.
LONG_TABLE_SHRINK = 2
#: Kept images at most (ring of image records); bounds image distances and the lookup.
MAX_IMAGES = 4096

LZ_MAGIC = 0x20205A4C
LZ_VERSION = 0x00010001
LZ_IMAGE_TYPE_RGB32 = 8
#: magic, version, type | top_down << 4, width, height, stride, id, win_head_dist (glz_encode()).
_HEADER = struct.Struct(">IIBIIIQI")
GLZ_HEADER_SIZE = _HEADER.size


class GlzDictionary:
    """The GLZ window of one client session: encodes images that may reference earlier ones.

    Thread-safe: every method takes the dictionary's lock, and the kernel runs without the GIL,
    so other dictionaries encode in parallel.

    Attributes:
        window_pixels: the client's window (``glz_dictionary_window_size`` of DISPLAY_INIT).
        capacity: pixels this dictionary keeps at most (``min(window_pixels, max_pixels)``).
        images_encoded: images encoded since construction (all sessions).
        bytes_out: stream bytes produced since construction.
    """

    def __init__(
        self,
        window_pixels: int,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        hash_bits: int = DEFAULT_HASH_BITS,
    ) -> None:
        """Create an empty window.

        Args:
            window_pixels: the client's GLZ window in pixels; 0 means "no GLZ" (spice-html5).
            max_pixels: cap on the pixels kept here (memory bound); at most 2**25, the
                longest offset a token can carry.
            hash_bits: log2 of the hash-table size, 10..26.

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
        self.images_encoded = 0
        self.bytes_out = 0
        self._lock = threading.Lock()
        self._arena = np.empty(max(self.capacity, 1), dtype=np.uint32)
        self._htab = np.full(1 << hash_bits, -1, dtype=np.int64)
        self._ltab = np.full(1 << (hash_bits - LONG_TABLE_SHRINK), -1, dtype=np.int64)
        self._img_virt = np.zeros(MAX_IMAGES, dtype=np.int64)
        self._img_aoff = np.zeros(MAX_IMAGES, dtype=np.int64)
        self._img_size = np.zeros(MAX_IMAGES, dtype=np.int64)
        self._next_virt = 0
        self._start_session()

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
    def nbytes(self) -> int:
        """Bytes of its arrays (the arena counted whole, though pages are committed only as
        images arrive): what it may come to cost."""
        arrays = (self._arena, self._htab, self._ltab, self._img_virt, self._img_aoff)
        return sum(array.nbytes for array in arrays) + self._img_size.nbytes

    @property
    def kept_pixels(self) -> int:
        """Pixels of the images currently kept for reference."""
        return self._kept_pixels

    def fits(self, width: int, height: int) -> bool:
        """Whether a ``width`` x ``height`` image can be sent as GLZ to this client.

        False when the window is 0, the image is not smaller than the client's window
        (``image_encoders_compress_glz()`` skips GLZ then), or bigger than this dictionary's
        memory cap: the caller then uses LZ or QUIC.
        """
        npixels = int(width) * int(height)
        return 0 < npixels < self.window_pixels and npixels <= self.capacity

    def encode(self, pixels: np.ndarray) -> bytes:
        """Encode an (H, W, 4) B,G,R,X image as a GLZ_RGB stream, adding it to the window.

        Returns:
            The 33-byte header (id, win_head_dist) followed by the tokens.

        Raises:
            EncoderError: bad pixels, or the image does not :meth:`fits`.
        """
        rows = as_pixel_rows(pixels, "glz")
        height, width = rows.shape
        if not self.fits(width, height):
            raise EncoderError(
                f"glz: {width}x{height} image does not fit a window of {self.window_pixels}"
                f" pixels (dictionary cap {self.capacity})"
            )
        with self._lock:
            return self._encode_locked(rows)

    def reset(self) -> None:
        """Start a new client session: ids restart at 0 and nothing is referencable."""
        with self._lock:
            self._start_session()

    # -- internals --------------------------------------------------------------------------

    def _start_session(self) -> None:
        self._next_id = 0
        self._oldest_id = 0
        self._kept_pixels = 0

    def _drop_oldest(self) -> None:
        slot = self._oldest_id % MAX_IMAGES
        self._kept_pixels -= int(self._img_size[slot])
        self._oldest_id += 1

    def _encode_locked(self, rows: np.ndarray) -> bytes:
        height, width = rows.shape
        npixels = height * width
        image_id = self._next_id
        # the client's rule first (glz_dictionary_window_get_new_head()) ...
        while self._oldest_id < image_id and self._kept_pixels + npixels > self.window_pixels:
            self._drop_oldest()
        # ... then our own: a contiguous arena slot that overlaps no kept image, ring room
        cap = self.capacity
        virt = self._next_virt
        aoff = virt % cap
        if aoff + npixels > cap:
            virt += cap - aoff
            aoff = 0
        while self._oldest_id < image_id and (
            virt + npixels - int(self._img_virt[self._oldest_id % MAX_IMAGES]) > cap
            or image_id - self._oldest_id >= MAX_IMAGES
        ):
            self._drop_oldest()
        win_head_dist = image_id - self._oldest_id if self._oldest_id < image_id else 0

        cur = self._arena[aoff : aoff + npixels]
        cur.reshape(height, width)[...] = rows
        out = np.empty(GLZ_HEADER_SIZE + literal_bound(npixels) + 16, dtype=np.uint8)
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
        try:
            end = glz_rgb32_compress(
                cur,
                virt,
                image_id,
                self._arena,
                self._htab,
                self._ltab,
                self._img_virt,
                self._img_aoff,
                self._img_size,
                self._oldest_id,
                out,
                GLZ_HEADER_SIZE,
            )
        except ValueError as exc:  # a kernel bounds check: a bug, never expected
            raise EncoderError(f"glz: {exc}") from exc
        slot = image_id % MAX_IMAGES
        self._img_virt[slot] = virt
        self._img_aoff[slot] = aoff
        self._img_size[slot] = npixels
        self._next_virt = virt + npixels
        self._next_id = image_id + 1
        self._kept_pixels += npixels
        self.images_encoded += 1
        self.bytes_out += end
        return out[:end].tobytes()
