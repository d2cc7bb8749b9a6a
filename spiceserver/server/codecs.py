"""Image codecs, declared once, and the per-client choice among them.

Pixels → :class:`~spiceserver.protocol.display.EncodedImage`.  :data:`CODECS` has one entry per
codec: its SPICE image type, whether its encodings can be shared by sessions (and under which
settings key), whether it is lossy, the bytes of its body a corrupting fault must keep intact,
its size limits and its encoder.  :data:`MODES` says, for each SpiceImageCompression, which
codecs a client in that mode may receive.  A new codec (JPEG, LZ4) is a row in each table.

Runs in worker threads: everything here takes numpy snapshots and returns wire-ready images.
The choice mirrors spice-server's ``get_compression_for_bitmap`` (``spice:server/dcc.cpp``) in
spirit:

* images under 54 bytes stay raw bitmaps, and QUIC needs at least 3×3 pixels;
* ``auto-glz`` / ``auto-lz`` send photographic regions ("high graduality", or smooth: see
  :func:`classify`) as QUIC and everything else as GLZ (when the client's window takes the
  image) or LZ;
* ``glz`` falls back to LZ when the image does not fit the client's GLZ window;
* a client's PREFERRED_COMPRESSION replaces the server's default for that client;
* with lossy allowed (:attr:`ImageEncoder.lossy`: the JPEG policy, display/lossy.py), smooth
  photographic regions go JPEG instead, as libspice replaces QUIC by JPEG on slow links
  (``dcc_compress_image``), but only in the auto modes: a client that named a codec gets it.
"""

from __future__ import annotations

import logging
import math
import struct
import weakref
import zlib
from collections.abc import Callable, Container
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from encoders.errors import GlzStaged
from spiceserver.errors import ConfigError
from spiceserver.extras import optional_module
from spiceserver.protocol.display import EncodedImage
from spiceserver.protocol.enums import (
    BITMAP_FLAG_TOP_DOWN,
    BitmapFormat,
    ImageCompression,
    ImageType,
)

if TYPE_CHECKING:
    from encoders.glz import GlzDictionary

__all__ = [
    "CODECS",
    "MODES",
    "STACKED",
    "Codec",
    "CodecKey",
    "CodecSettings",
    "CompressionMode",
    "ImageClass",
    "ImageEncoder",
    "classify",
    "encode_bitmap",
    "encode_shared",
    "encode_stack",
    "intact_prefix",
    "is_photographic",
    "jpeg_available",
    "jpeg_frame",
    "shared_codec_key",
    "stacked_pixels",
]

logger = logging.getLogger("spiceserver.codecs")

_BITMAP = struct.Struct("<BBIIII")  # format, flags, x, y, stride, Palette* (0 = none)
_DATA_SIZE = struct.Struct("<I")
_ZLIB_GLZ = struct.Struct("<II")  # glz_data_size, data_size (spice.proto ZlibGlzRGBData)
#: libspice wraps GLZ streams of at least this many bytes in zlib, at this level
#: (``spice:server/image-encoders.cpp`` MIN_GLZ_SIZE_FOR_ZLIB, ZLIB_DEFAULT_COMPRESSION_LEVEL).
MIN_GLZ_SIZE_FOR_ZLIB = 100
ZLIB_GLZ_LEVEL = 3
#: spice-server sends images smaller than this many bytes uncompressed.
MIN_COMPRESS_BYTES = 54

#: A codec and the settings it encodes with: equal keys, equal pixels → equal bytes.
CodecKey = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CodecSettings:
    """Server-wide encoder settings (from ServerConfig); a codec's share key names those it
    depends on (:attr:`Codec.keyed_by`)."""

    #: libjpeg quality, 1..100 (libspice: 85, fixed; andris ``--jpeg-quality`` 85).
    jpeg_quality: int = 85


DEFAULT_SETTINGS = CodecSettings()


def encode_bitmap(pixels: np.ndarray) -> EncodedImage:
    """A raw 32BIT top-down bitmap (spice.proto ``BitmapData``)."""
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels)
    header = _BITMAP.pack(BitmapFormat.FMT_32BIT, BITMAP_FLAG_TOP_DOWN, width, height, width * 4, 0)
    return EncodedImage(
        type=ImageType.BITMAP,
        width=width,
        height=height,
        body=(header, data.data.cast("B")),
    )


def _wrap(image_type: ImageType, width: int, height: int, stream: bytes) -> EncodedImage:
    # QUIC, LZ_RGB and GLZ_RGB bodies: u32 data_size, then the stream (spice.proto).
    return EncodedImage(
        type=image_type, width=width, height=height, body=(_DATA_SIZE.pack(len(stream)), stream)
    )


def _encode_raw(pixels: np.ndarray, settings: CodecSettings) -> EncodedImage:
    return encode_bitmap(pixels)


def _encode_quic(pixels: np.ndarray, settings: CodecSettings) -> EncodedImage:
    from encoders import quic_encode

    height, width = pixels.shape[:2]
    return _wrap(ImageType.QUIC, width, height, quic_encode(pixels))


def _encode_lz(pixels: np.ndarray, settings: CodecSettings) -> EncodedImage:
    from encoders import lz_encode

    height, width = pixels.shape[:2]
    return _wrap(ImageType.LZ_RGB, width, height, lz_encode(pixels))


def _stack_quic(parts: list[np.ndarray], settings: CodecSettings) -> EncodedImage:
    from encoders.quic import quic_encode_stack

    width, height = parts[0].shape[1], sum(part.shape[0] for part in parts)
    return _wrap(ImageType.QUIC, width, height, quic_encode_stack(parts))


def _stack_lz(parts: list[np.ndarray], settings: CodecSettings) -> EncodedImage:
    from encoders.lz import lz_encode_stack

    width, height = parts[0].shape[1], sum(part.shape[0] for part in parts)
    return _wrap(ImageType.LZ_RGB, width, height, lz_encode_stack(parts))


def jpeg_available() -> bool:
    """Whether the ``jpeg`` extra (simplejpeg) is installed."""
    try:
        _jpeg()
    except ConfigError:
        return False
    return True


def _jpeg() -> ModuleType:
    """The libjpeg-turbo binding (the ``jpeg`` extra)."""
    return optional_module("simplejpeg", "JPEG images", "jpeg")


def jpeg_frame(pixels: np.ndarray, quality: int) -> bytes:
    """A baseline JFIF stream of BGRX ``pixels``, 4:2:0, as libspice's encoders make them:
    for JPEG images and MJPEG stream frames alike (spice-gtk decodes both with libjpeg:
    spice-common:common/canvas_base.c canvas_get_jpeg, spice-gtk:src/channel-display-mjpeg.c).
    X is ignored."""
    return bytes(
        _jpeg().encode_jpeg(
            np.ascontiguousarray(pixels),
            quality=quality,
            colorspace="BGRX",
            colorsubsampling="420",
        )
    )


def _encode_jpeg(pixels: np.ndarray, settings: CodecSettings) -> EncodedImage:
    # SpiceJPEGData is u32 data_size then the JFIF stream (spice.proto).
    height, width = pixels.shape[:2]
    return _wrap(ImageType.JPEG, width, height, jpeg_frame(pixels, settings.jpeg_quality))


@dataclass(frozen=True, slots=True)
class Codec:
    """One image codec as the display channel sees it."""

    name: str
    image_type: ImageType
    #: Sessions may share its encodings under this key (the codec and its settings); None:
    #: an encoding belongs to one session.  GLZ never shares: a GLZ image carries the id the
    #: session's dictionary gave it and refers back to images that one client decoded
    #: (``spice-gtk:src/decode-glz.c``), so its bytes are meaningless to any other client.
    share_key: CodecKey | None
    #: Whether decoding gives back other pixels than were encoded.
    lossy: bool
    #: Bytes at the start of its body (after the 18-byte descriptor) that hold lengths and the
    #: codec's own header: a corrupting fault keeps them so the client's framing and size
    #: checks pass and its decoder meets the damage.  BITMAP: format, flags, width, height,
    #: stride, Palette* (18).  QUIC: u32 data_size, then magic, version, type, width, height
    #: (5 words, ``spice-common:common/quic.c``).  LZ_RGB: u32 data_size, then 7 big-endian
    #: words (magic, version, type, width, height, stride, top_down; ``common/lz.c``).
    #: GLZ_RGB: u32 data_size, then the 33-byte header (``spice-gtk:src/decode-glz.c``
    #: ``decode_header()``), whose image id and window distance keep the client's GLZ window
    #: in step with ours.
    intact_prefix: int
    #: Smallest width and height it encodes.
    min_side: int = 1
    #: Pixels → image, for codecs without per-session state (None: see ImageEncoder).
    encode: Callable[[np.ndarray, CodecSettings], EncodedImage] | None = None
    #: The ``encoders`` module whose numba kernels must be compiled first (None: none).
    kernels: str | None = None
    #: CodecSettings fields its encodings depend on (they join the share key).
    keyed_by: tuple[str, ...] = ()
    #: Bands of one width, top to bottom → one image (None: one image per band), for the
    #: bands of a damaged area the server sends as one image (see :data:`STACKED`).
    encode_stack: Callable[[list[np.ndarray], CodecSettings], EncodedImage] | None = None


#: Every codec, by the name used in metrics and the encode cache.
CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (
        Codec("raw", ImageType.BITMAP, ("raw", "32bit"), False, 18, encode=_encode_raw),
        # QUIC and LZ are always RGB32 without alpha here; a new setting (QUIC alpha, an LZ4
        # level) must join the share key.
        Codec(
            "quic",
            ImageType.QUIC,
            ("quic", "rgb32"),
            False,
            4 + 20,
            min_side=3,
            encode=_encode_quic,
            kernels="encoders.quic",
            encode_stack=_stack_quic,
        ),
        Codec(
            "lz",
            ImageType.LZ_RGB,
            ("lz", "rgb32"),
            False,
            4 + 28,
            encode=_encode_lz,
            kernels="encoders.lz",
            encode_stack=_stack_lz,
        ),
        Codec("glz", ImageType.GLZ_RGB, None, False, 4 + 33, kernels="encoders.glz"),
        # GLZ in zlib on slow links (libspice's zlib-glz-wan-compression): both sizes and the
        # zlib header kept intact; its GLZ image still takes its place in the window.
        Codec("zlib-glz", ImageType.ZLIB_GLZ_RGB, None, False, 8 + 2, kernels="encoders.glz"),
        # JPEG: u32 data_size, then SOI and the JFIF APP0 segment (20 bytes) kept intact.
        # Below 8x8 a JPEG is all header.
        Codec(
            "jpeg",
            ImageType.JPEG,
            ("jpeg", "bgrx", "420"),
            True,
            4 + 20,
            min_side=8,
            encode=_encode_jpeg,
            keyed_by=("jpeg_quality",),
        ),
    )
}
_BY_IMAGE_TYPE = {codec.image_type: codec for codec in CODECS.values()}

#: Codecs whose bands of one damaged area go out as one image (``encode.stacks``), as
#: libspice-server sends one drawable as one image (``spice:server/image-encoders.cpp``):
#: QUIC's adaptive model and LZ's window then run through the whole area, so the stream is
#: the one the reference encoders make of it (QUIC identical to C; LZ with C's window),
#: where bands started every model and window afresh (terminal_manpage 1080p: QUIC 697,124
#: bytes in 8 bands against 664,116 whole; LZ 158,834 against C's 156,570).  One kernel call
#: and header; QUIC codes the bands one after another without copying them into one
#: (``encoders.quic.quic_encode_stack``), and so does LZ (``encoders.lz.lz_encode_stack``,
#: its matches reaching into the band above).  Not raw (its body is a view of the pixels)
#: nor JPEG (lossy areas are tracked per band).
STACKED = frozenset(name for name, codec in CODECS.items() if codec.encode_stack is not None)


@dataclass(frozen=True, slots=True)
class CompressionMode:
    """What a client in one SpiceImageCompression mode receives."""

    #: Candidates in order: the first that can take an image is used.
    codecs: tuple[str, ...]
    #: For photographic areas, when it can take them (the auto modes).
    photographic: str | None = None
    #: For smooth photographic areas when lossy images are allowed (the auto modes: the
    #: server chooses; a client that named a codec keeps it, lossless).
    lossy: str | None = None


#: The modes we serve (libspice-server's meanings); LZ4 (7) is not implemented, so a client
#: asking for it keeps ours.
MODES: dict[ImageCompression, CompressionMode] = {
    ImageCompression.OFF: CompressionMode(("raw",)),
    ImageCompression.AUTO_GLZ: CompressionMode(("glz", "lz"), photographic="quic", lossy="jpeg"),
    ImageCompression.AUTO_LZ: CompressionMode(("lz",), photographic="quic", lossy="jpeg"),
    ImageCompression.QUIC: CompressionMode(("quic", "lz")),
    ImageCompression.GLZ: CompressionMode(("glz", "lz")),
    ImageCompression.LZ: CompressionMode(("lz",)),
}


def warm_order(compression: ImageCompression) -> tuple[str, ...]:
    """The codecs a client in ``compression`` mode gets first: its first candidate, then its
    photographic codec, then the other candidates (the order their kernels best load in)."""
    mode = MODES[compression]
    photographic = () if mode.photographic is None else (mode.photographic,)
    return tuple(dict.fromkeys((*mode.codecs[:1], *photographic, *mode.codecs[1:])))


def shared_codec_key(codec: str, settings: CodecSettings = DEFAULT_SETTINGS) -> CodecKey | None:
    """The key under which sessions may share images of ``codec``; None when they may not."""
    entry = CODECS[codec]
    if entry.share_key is None or not entry.keyed_by:
        return entry.share_key
    return entry.share_key + tuple(f"{name}={getattr(settings, name)}" for name in entry.keyed_by)


def intact_prefix(image_type: ImageType) -> int | None:
    """Body bytes of an image of this type a corrupting fault keeps (None: unknown type)."""
    codec = _BY_IMAGE_TYPE.get(image_type)
    return None if codec is None else codec.intact_prefix


def stacked_pixels(parts: list[np.ndarray]) -> np.ndarray:
    """Bands of one width, top to bottom, as one image: the one band itself, or a copy into
    this thread's reused buffer (``encoders._scratch``: no fresh pages per update), valid
    until this thread's next call; the encoders copy their stream out, so it never leaks."""
    if len(parts) == 1:
        return parts[0]
    from encoders._scratch import buffer

    width = parts[0].shape[1]
    height = sum(part.shape[0] for part in parts)
    out = buffer("stack", height * width * 4)[: height * width * 4].reshape(height, width, 4)
    y = 0
    for part in parts:
        out[y : y + part.shape[0]] = part
        y += part.shape[0]
    return out


def encode_stack(
    parts: list[np.ndarray], codec: str, settings: CodecSettings = DEFAULT_SETTINGS
) -> EncodedImage:
    """Encode bands of one width, stacked top to bottom, as one image of a :data:`STACKED`
    codec (or one band of any shareable codec)."""
    if len(parts) == 1:
        return encode_shared(parts[0], codec, settings)
    encode = CODECS[codec].encode_stack
    if encode is None:
        raise ValueError(f"{codec} images are not stacked")
    return encode(parts, settings)


_GLZ_MIN_SIDE = CODECS["glz"].min_side


def encode_shared(
    pixels: np.ndarray, codec: str, settings: CodecSettings = DEFAULT_SETTINGS
) -> EncodedImage:
    """Encode with a codec that keeps no per-client state (``raw``, ``quic``, ``lz``,
    ``jpeg``)."""
    encode = CODECS[codec].encode
    if encode is None:
        raise ValueError(f"{codec} images depend on the client: not shareable")
    return encode(pixels, settings)


@dataclass(frozen=True, slots=True)
class ImageClass:
    """What the codec choice needs to know of a region (one sample, both answers)."""

    #: Photo-like for QUIC: few flat steps, many small ones.
    gradual: bool = False
    #: Safe to send lossy: no hard edges at all and many colours (photos, skies,
    #: gradients); text and UI never are.
    smooth: bool = False


NOT_PHOTOGRAPHIC = ImageClass()
#: Regions of at most this many pixels are never sampled (GLZ or LZ, never QUIC or JPEG):
#: the sample is a dozen numpy calls, 40 us on a warm CPU but 150-300 us on the first
#: change after an idle spell, on the path of every typed glyph (``bench_desktop
#: --trace-hops``); and the bytes at stake are few: a 32x32 photo crop is 2.5 KB as GLZ,
#: 1.4 KB as QUIC (photo_dune, mean of 32 crops).
MIN_SAMPLED_PIXELS = 32 * 32
#: Steps above this (largest channel difference between neighbours) are hard edges: glyph
#: strokes and UI borders have many (text 2-9 % of steps on tests/data/corpus, photos 0 %).
HARD_EDGE = 64
#: Lossy needs at least this fraction of distinct colours among the sampled pixels (text and
#: UI at most 1.5 % on the corpus; a photo's smooth sky 8 %) ...
MIN_DISTINCT_COLOURS = 0.05
#: ... and at least this fraction of non-flat steps (not a flat fill with a few shades) ...
MIN_VARYING = 0.15
#: ... and either hardly a hard edge (fewer than this fraction of steps) ...
MAX_HARD_EDGES = 0.002
#: ... or a few (fewer than this fraction), isolated: object outlines, a hue wrapping round.
#: Glyphs are strokes, a hard edge with another within :data:`STROKE` pixels of the same row
#: (92-99 % of text's hard edges, anti-aliased text drawn onto a photo included; 10 % of
#: the animated pattern's gradient band), so no more than :data:`MAX_PAIRED` of them.
MAX_ISOLATED_EDGES = 0.03
STROKE = 4
MAX_PAIRED = 0.3
#: Buckets of the distinct-colour estimate (``_smooth``): 64 KiB of flags, so that the
#: estimate near the threshold is within a fraction of a percent.
DISTINCT_BUCKET_BITS = 16
DISTINCT_BUCKETS = 1 << DISTINCT_BUCKET_BITS


def classify(pixels: np.ndarray, sample_rows: int = 16) -> ImageClass:
    """Whether a region looks like a photo (smooth, noisy colour) rather than text or UI.

    Samples a few rows and looks at each pixel's largest channel step from its left
    neighbour: photos have few flat steps and many small ones; text, UI and flat colour have
    many flat steps and a few sharp edges.  (spice-server samples pixel segments for the same
    decision in ``bitmap_get_graduality_level``.)  The lossy test (``smooth``) is stricter
    in another way: many colours, and no hard edges but isolated ones (text, anti-aliased
    onto a photo or not, is strokes: pairs of hard edges).  About 0.2 ms for 16 rows of 1920.
    """
    height, width = pixels.shape[:2]
    if width < 8 or height < 8:
        return NOT_PHOTOGRAPHIC
    rows = pixels[np.linspace(0, height - 1, min(sample_rows, height)).astype(np.intp)]
    # The largest of the three channel steps, one channel at a time: numpy's reduction over
    # a 3-long last axis (and the strided :3 copy) took 1 ms of the event loop per 1920-wide
    # band, 8-9 ms for a 1080p frame's bands; this takes a tenth of that, same steps.
    wide = rows.astype(np.int16)
    steps = np.abs(wide[:, 1:, 0] - wide[:, :-1, 0])
    for channel in (1, 2):
        np.maximum(steps, np.abs(wide[:, 1:, channel] - wide[:, :-1, channel]), out=steps)
    flat = float(np.mean(steps == 0))
    small = float(np.mean((steps > 0) & (steps <= 24)))
    gradual = flat < 0.35 and small > 0.45
    return ImageClass(gradual=gradual, smooth=1.0 - flat >= MIN_VARYING and _smooth(rows, steps))


def _smooth(rows: np.ndarray, steps: np.ndarray) -> bool:
    hard = steps > HARD_EDGE
    edges = int(hard.sum())
    if edges >= MAX_HARD_EDGES * hard.size:
        if edges >= MAX_ISOLATED_EDGES * hard.size:
            return False
        near = np.zeros_like(hard)
        for k in range(1, STROKE + 1):
            near[:, :-k] |= hard[:, k:]
            near[:, k:] |= hard[:, :-k]
        if int((hard & near).sum()) > MAX_PAIRED * edges:
            return False
    packed: np.ndarray
    if rows.shape[-1] == 4 and rows.flags.c_contiguous:  # BGRX: one word a pixel, X masked
        packed = rows.view(np.uint32).reshape(-1) & np.uint32(0xFFFFFF)
    else:
        colours = rows.reshape(-1, rows.shape[-1])[:, :3].astype(np.uint32)
        packed = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    # Distinct colours, estimated by linear counting (Whang, Vander-Zanden and Taylor, 1990):
    # each colour hashed into one of 2**16 one-bit buckets, n = -m ln(1 - filled / m).  Near
    # the threshold (about 1,500 colours in 16 rows of 1920) its error is a few colours; an
    # exact count by sorting took 1 ms a band of a photo (0.07 ms of text, few colours), 7 ms
    # of the event loop for a 1080p photo update, np.unique 2.3 ms.
    buckets = np.zeros(DISTINCT_BUCKETS, dtype=np.bool_)
    buckets[(packed * np.uint32(0x9E3779B1)) >> np.uint32(32 - DISTINCT_BUCKET_BITS)] = True
    empty = DISTINCT_BUCKETS - int(np.count_nonzero(buckets))
    if empty == 0:
        return True
    distinct = DISTINCT_BUCKETS * math.log(DISTINCT_BUCKETS / empty)
    return distinct >= MIN_DISTINCT_COLOURS * len(packed)


def is_photographic(pixels: np.ndarray, sample_rows: int = 16) -> bool:
    """Whether QUIC suits a region better than LZ/GLZ (:func:`classify`'s ``gradual``)."""
    return classify(pixels, sample_rows).gradual


class ImageEncoder:
    """Per-client codec choice; one instance per display channel.

    ``glz`` is the session's GLZ dictionary (None when the client's window is 0, as with
    spice-html5).  Every image :meth:`encode` returns must be sent, in order: GLZ ids are
    consecutive and the client waits for each one.
    """

    def __init__(
        self,
        compression: ImageCompression = ImageCompression.OFF,
        glz: GlzDictionary | None = None,
        ready: Container[str] | None = None,
    ) -> None:
        self.compression = compression
        #: Smooth photographic regions may go lossy (JPEG) in the auto modes: set per update
        #: by the display's JPEG policy (display/lossy.py).
        self.lossy = False
        #: GLZ images go out wrapped in zlib when that is smaller (slow links: the policy's).
        self.zlib_glz = False
        self.settings = DEFAULT_SETTINGS
        self._glz = glz
        self._glz_ref: weakref.ref[GlzDictionary] | None = None
        #: The dictionary's ``stagings`` count for room lent to this encoder (stage_glz).
        self._staging: int | None = None
        #: Codecs whose kernels are compiled (None: all; see ``SpiceServer.encoders_ready``):
        #: while one compiles, its images go out as the next candidate, raw at worst.
        self.ready = ready

    @property
    def glz(self) -> GlzDictionary | None:
        """The GLZ dictionary: owned (given to the constructor or assigned) or borrowed
        (:meth:`borrow_glz`: None once its owner dropped it)."""
        if self._glz is not None:
            return self._glz
        return None if self._glz_ref is None else self._glz_ref()

    @glz.setter
    def glz(self, dictionary: GlzDictionary | None) -> None:
        self._glz, self._glz_ref = dictionary, None

    def borrow_glz(self, dictionary: GlzDictionary) -> None:
        """Use a dictionary someone else keeps (the session's, ``server/glz.py``), through a
        weak reference: when the session ends and drops it, it is freed at once and this
        encoder sends LZ (to a display that is closing anyway)."""
        self._glz, self._glz_ref = None, weakref.ref(dictionary)

    def prefer(self, compression: int) -> bool:
        """Apply a client's PREFERRED_COMPRESSION; False if we cannot serve that mode."""
        try:
            mode = ImageCompression(compression)
        except ValueError:
            return False
        if mode not in MODES:
            return False
        self.compression = mode
        return True

    def _fits(self, codec: str, width: int, height: int, *, ready_only: bool = True) -> bool:
        if min(width, height) < CODECS[codec].min_side:
            return False
        if ready_only and self.ready is not None and codec not in self.ready:
            return False
        if codec == "glz":  # the client's window must hold the image (DISPLAY_INIT)
            return self.glz is not None and self.glz.fits(width, height)
        return True

    def choose(
        self,
        pixels: np.ndarray,
        sample: Callable[[np.ndarray], ImageClass] = classify,
        *,
        lossless: bool = False,
        lossy: bool | None = None,
    ) -> str:
        """The codec for one region (a sample, but not free: ``sample`` may answer from a
        memo shared by sessions).  ``lossless``: never lossy (a lossless refresh);
        ``lossy``: lossy allowed or not whatever :attr:`lossy` says (None: as it says)."""
        height, width = pixels.shape[:2]
        if width * height * 4 < MIN_COMPRESS_BYTES:
            return "raw"
        mode = MODES[self.compression]
        photo, lossy_codec = mode.photographic, mode.lossy
        if width * height <= MIN_SAMPLED_PIXELS:
            photo = lossy_codec = None  # a glyph, a cursor blink: not worth a sample
        allowed = self.lossy if lossy is None else lossy
        if lossy_codec is not None and allowed and not lossless:  # noqa: SIM102 - cheap first
            if self._fits(lossy_codec, width, height) and sample(pixels).smooth:
                return lossy_codec
        if photo is not None and self._fits(photo, width, height):
            # Smooth areas too: a photo's sky is no "gradual" image but QUIC takes half the
            # bytes GLZ does (tests/data/corpus photo_dune, top bands: 437 KB vs 874 KB).
            image_class = sample(pixels)
            if image_class.gradual or image_class.smooth:
                return photo
        for codec in mode.codecs:
            if self._fits(codec, width, height):
                return codec
        return "raw"

    def codecs_for(self, width: int, height: int) -> set[str]:
        """The codecs a ``width`` x ``height`` image may go out with in this mode once every
        codec is ready: the first candidate that takes it, and the mode's photographic one."""
        mode = MODES[self.compression]
        usable = {mode.photographic} if mode.photographic is not None else set()
        first = (c for c in mode.codecs if self._fits(c, width, height, ready_only=False))
        return usable | {next(first, "raw")}

    def encode(self, pixels: np.ndarray, codec: str | None = None) -> tuple[EncodedImage, str]:
        """Encode one region with ``codec`` (default: :meth:`choose`); returns image and codec.

        GLZ images must be encoded in the order they are sent (their ids are consecutive and
        a client blocks on a reference to an id it has not decoded yet); the other codecs may
        run in parallel.
        """
        codec = codec or self.choose(pixels)
        if codec == "glz":
            return self.encode_glz_stack([pixels])
        return encode_shared(pixels, codec, self.settings), codec

    def encode_small(self, pixels: np.ndarray) -> tuple[EncodedImage, str]:
        """:meth:`encode` of a region of at most :data:`MIN_SAMPLED_PIXELS` (a glyph, a
        clock's digits: never sampled, never lossy), GLZ going straight to the dictionary:
        the choice without its general loop, on the path of every small change."""
        height, width = pixels.shape[0], pixels.shape[1]
        if width * height > MIN_SAMPLED_PIXELS:
            raise ValueError(f"{width}x{height} is not a small region")
        glz = self.glz
        if (
            glz is not None
            and MODES[self.compression].codecs[0] == "glz"
            and width * height * 4 >= MIN_COMPRESS_BYTES
            and (self.ready is None or "glz" in self.ready)
            and min(width, height) >= _GLZ_MIN_SIDE
        ):
            stream = glz.encode_small(pixels)  # one kernel call
            if stream is not None:
                return self._glz_wrap(stream, width, height)
            if glz.fits(width, height):
                return self._glz_image(glz, [pixels], width, height)
        return self.encode(pixels)

    def glz_fits(self, width: int, height: int) -> bool:
        """Whether a ``width`` x ``height`` GLZ image fits this client's window now."""
        return self._fits("glz", width, height)

    def stage_glz(self, width: int, height: int) -> np.ndarray | None:
        """Room in the GLZ dictionary's arena to read a ``width`` x ``height`` area into
        (``GlzDictionary.stage``): encoded as one GLZ image, it is then not copied.  None
        when this client's mode would not send it as GLZ (or only after a lossy test: JPEG
        allowed), or the dictionary cannot lend room now."""
        if self.lossy or MODES[self.compression].codecs[0] != "glz":
            return None
        glz = self.glz
        if glz is None or not self._fits("glz", width, height):
            return None
        room = glz.stage(width, height)
        if room is not None:
            self._staging = glz.stagings
        return room

    def unstage_glz(self) -> None:
        """Give back room lent by :meth:`stage_glz` and not encoded (a no-op otherwise, and
        for room another display of the session was lent since)."""
        glz = self.glz
        if glz is not None and self._staging is not None:
            glz.unstage(self._staging)
        self._staging = None

    def encode_glz_stack(self, parts: list[np.ndarray]) -> tuple[EncodedImage, str]:
        """Encode bands of one width, stacked top to bottom, as one GLZ image (see
        ``GlzDictionary.encode_stack``), wrapped in zlib on slow links when that is smaller;
        LZ if the session's dictionary is gone meanwhile (the display is closing: nobody
        decodes it).  Same ordering rule as :meth:`encode`."""
        width = parts[0].shape[1]
        height = sum(part.shape[0] for part in parts)
        return self._glz_image(self.glz, parts, width, height)

    def _glz_image(
        self, glz: GlzDictionary | None, parts: list[np.ndarray], width: int, height: int
    ) -> tuple[EncodedImage, str]:
        stream = None
        if glz is not None:
            try:
                stream = glz.encode_stack(parts)
            except GlzStaged:  # another display of the session is reading into the arena
                logger.debug("glz: arena room lent out, this image goes as LZ")
        if stream is not None:
            return self._glz_wrap(stream, width, height)
        return encode_shared(stacked_pixels(parts), "lz", self.settings), "lz"

    def _glz_wrap(self, stream: bytes, width: int, height: int) -> tuple[EncodedImage, str]:
        """A GLZ stream as its image: wrapped in zlib on slow links when that is smaller."""
        if self.zlib_glz and len(stream) >= MIN_GLZ_SIZE_FOR_ZLIB:
            wrapped = zlib.compress(stream, ZLIB_GLZ_LEVEL)
            if len(wrapped) < len(stream):  # else plain GLZ, as libspice does
                head = _ZLIB_GLZ.pack(len(stream), len(wrapped))
                image = EncodedImage(
                    type=ImageType.ZLIB_GLZ_RGB, width=width, height=height, body=(head, wrapped)
                )
                return image, "zlib-glz"
        return _wrap(ImageType.GLZ_RGB, width, height, stream), "glz"
