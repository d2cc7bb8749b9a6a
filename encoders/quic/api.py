"""Public QUIC API: validate the frame, hand the kernel a flat word view, frame the stream.

The kernel wants one word per pixel in a 1-D ``uint32`` array plus an offset and a row stride, so
a region of a larger frame (``frame[y0:y1, x0:x1]``) is encoded in place: we take a read-only
1-D view spanning the region's first to last pixel of the parent buffer (every byte of that span
belongs to the parent allocation) and tell the kernel where rows start.  Only frames whose layout
cannot be expressed that way (odd strides, misaligned data, big-endian hosts) are copied.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np

from encoders._scratch import buffer
from encoders.errors import EncoderError
from encoders.quic import _kernels

__all__ = ["QuicError", "quic_encode", "quic_encode_stack", "warmup"]

#: "QUIC" as a little-endian word (``QUIC_MAGIC``).
QUIC_MAGIC = 0x43495551
#: ``QUIC_VERSION`` 0.0.
QUIC_VERSION = 0
#: ``QuicImageType`` values of common/quic.h that we produce.
QUIC_IMAGE_TYPE_RGB32 = 4
QUIC_IMAGE_TYPE_RGBA = 5
#: quic.c ``SPICE_MAX_IMAGE_SIZE``: the decoders refuse anything larger.
MAX_PIXELS = 512 * 1024 * 1024 - 1
#: Worst-case bits one pixel can cost: three 26-bit escape codewords plus a failed (empty) run
#: of at most 16 bits and one melcode hit bit, and the same for the alpha plane (26 + 17).
_WORST_BITS_RGB = 3 * 26 + 17
_WORST_BITS_ALPHA = 26 + 17
#: Views with fewer pixels are copied: copying a 128x128 tile costs about what building a flat
#: view with ``as_strided`` does, and less below that.
_COPY_BELOW_PIXELS = 128 * 128
_LITTLE_ENDIAN = sys.byteorder == "little"


class QuicError(EncoderError):
    """A frame cannot be QUIC-encoded (bad dtype, shape, size) or the coder failed."""


def quic_encode(pixels: np.ndarray, /, *, alpha: bool = False) -> bytes:
    """Encode a B,G,R,X (or B,G,R,A with ``alpha``) frame as a QUIC RGB32 (RGBA) image.

    Args:
        pixels: ``uint8`` array of shape (height, width, 4), rows top to bottom; any view whose
            pixel and channel axes are contiguous is encoded without a copy.
        alpha: code the fourth byte as an alpha plane (image type RGBA) instead of ignoring it.

    Returns:
        The QUIC stream that follows ``data_size`` in a ``SpiceImage`` QUIC body: the 5-word
        header, the coded rows, the padded last word and one extra zero word.

    Raises:
        QuicError: wrong dtype, ndim or last dimension, an empty or oversized image.
    """
    return _encode(pixels, alpha, _kernels.encode_image)


def _encode(pixels: np.ndarray, alpha: bool, encode_image: Callable[..., int]) -> bytes:
    """:func:`quic_encode` with the image kernel passed in (tests pass its pure-Python body)."""
    px, off, rstride, height, width = _word_view(pixels)
    bits_per_pixel = _WORST_BITS_RGB + (_WORST_BITS_ALPHA if alpha else 0)
    words = 5 + 2 + (height * width * bits_per_pixel + 31) // 32
    # this thread's reused buffer (encoders._scratch: no page faults per call); the kernel is
    # told its worst-case length, so a larger buffer changes nothing
    out = buffer("quic", words, np.uint32)[:words]
    image_type = QUIC_IMAGE_TYPE_RGBA if alpha else QUIC_IMAGE_TYPE_RGB32
    out[:5] = (QUIC_MAGIC, QUIC_VERSION, image_type, width, height)
    n = encode_image(px, off, rstride, width, height, int(bool(alpha)), out)
    if n < 0 or n > words:
        raise QuicError(f"QUIC output overflowed its worst-case buffer ({words} words)")
    return out[:n].astype("<u4", copy=False).tobytes()


def quic_encode_stack(parts: Sequence[np.ndarray], /) -> bytes:
    """Encode bands of one width, stacked top to bottom, as one QUIC RGB32 image: the stream
    :func:`quic_encode` gives for the stacked image, without copying the bands into one.

    Why: the server reads a damaged area in bands (fresh copies each) and sends it as one image
    (``spiceserver.server.codecs.STACKED``); coding band after band with one coder state
    avoids copying the whole area again.  Where two bands meet, the row above lives in the
    other band: that one row and the one above it are copied into a 2-row buffer and coded
    from there.

    Raises:
        QuicError: no parts, widths differ, or a part :func:`quic_encode` would refuse.
    """
    if not parts:
        raise QuicError("no image to encode")
    whole = _adjacent(parts)
    if whole is not None:
        return quic_encode(whole)
    views = [_word_view(part) for part in parts]
    width = views[0][4]
    if any(view[4] != width for view in views):
        raise QuicError(f"stacked parts differ in width ({[view[4] for view in views]})")
    height = sum(view[3] for view in views)
    if height * width > MAX_PIXELS:
        raise QuicError(f"image too large: {width}x{height} exceeds {MAX_PIXELS} pixels")
    words = 5 + 2 + (height * width * _WORST_BITS_RGB + 31) // 32
    out = buffer("quic", words, np.uint32)[:words]
    out[:5] = (QUIC_MAGIC, QUIC_VERSION, QUIC_IMAGE_TYPE_RGB32, width, height)
    state, model, corr = _kernels.new_state(width)
    joint = buffer("quic_joint", 2 * width, np.uint32)[: 2 * width]
    last: tuple[np.ndarray, int] | None = None  # the row above the next part
    for px, off, rstride, rows, _ in views:
        first = 0
        if last is not None:
            joint[:width] = last[0][last[1] : last[1] + width]
            joint[width:] = px[off : off + width]
            _kernels.encode_rows(joint, width, width, width, 1, 1, 0, out, state, model, corr)
            first = 1
        if rows > first:
            start = off + first * rstride
            above = int(first > 0)
            _kernels.encode_rows(
                px, start, rstride, width, rows - first, above, 0, out, state, model, corr
            )
        last = (px, off + (rows - 1) * rstride)
    n = _kernels.finish(out, state)
    if n < 0 or n > words:
        raise QuicError(f"QUIC output overflowed its worst-case buffer ({words} words)")
    return out[:n].astype("<u4", copy=False).tobytes()


def _adjacent(parts: Sequence[np.ndarray]) -> np.ndarray | None:
    """The parts as one image when each starts in memory right where the one before ends
    (C-contiguous bands of one width: the views of one read the server makes of a damaged
    area), else None.

    Why: coded as one image the stack is one kernel call, not two per band plus the copy of
    the rows where bands meet; the bytes are the same (both are the stacked image's stream).
    Reading across the parts through one view stays inside memory they all own."""
    if len(parts) < 2:
        return None
    first = parts[0]
    if not isinstance(first, np.ndarray) or first.ndim != 3 or first.dtype != np.uint8:
        return None
    end, height = first.ctypes.data, 0
    for part in parts:
        if (
            not isinstance(part, np.ndarray)
            or part.dtype != np.uint8
            or part.shape[1:] != first.shape[1:]
            or not part.flags.c_contiguous
            or not part.flags.writeable
            or part.ctypes.data != end
        ):
            return None
        end += part.nbytes
        height += part.shape[0]
    return np.lib.stride_tricks.as_strided(first, shape=(height, *first.shape[1:]))


def warmup() -> None:
    """Compile (or load from cache) the kernel for exactly the types :func:`quic_encode` uses.

    Both alpha modes share one signature (``alpha`` is passed as an int), and contiguous frames,
    views and copies all reach the kernel as a writable C-contiguous ``uint32`` array, so one
    tiny call per mode covers production.
    """
    frame = np.zeros((4, 6, 4), dtype=np.uint8)
    frame[1:, 2:] = 7
    quic_encode(frame)
    quic_encode(frame[1:3, 1:5], alpha=True)
    quic_encode_stack([frame[2:], frame[:2]])  # not adjacent in memory: coded band by band


def _word_view(pixels: np.ndarray) -> tuple[np.ndarray, int, int, int, int]:
    """Validate ``pixels``; return (uint32 pixel words, first-pixel offset, row stride, h, w).

    The words array is always 1-D, C-contiguous, aligned and writable (the kernel never writes
    it): numba then reuses one compiled signature, and its dispatcher types such arrays on a fast
    path (a read-only array costs ~30 us per call there).  A C-contiguous frame is reinterpreted
    as is; a strided view of a large frame becomes a flat view spanning its first to last pixel
    (those bytes all lie inside the parent's buffer); small views, read-only, misaligned or
    oddly-strided inputs are copied, which for tiles is cheaper than building the view.
    """
    if not isinstance(pixels, np.ndarray):
        raise QuicError(f"pixels must be a numpy array, not {type(pixels).__name__}")
    if pixels.dtype != np.uint8:
        raise QuicError(f"pixels must have dtype uint8, not {pixels.dtype}")
    if pixels.ndim != 3 or pixels.shape[2] != 4:
        raise QuicError(f"pixels must have shape (height, width, 4), not {pixels.shape}")
    height, width = pixels.shape[0], pixels.shape[1]
    if height == 0 or width == 0:
        raise QuicError(f"cannot encode an empty image ({width}x{height})")
    if height * width > MAX_PIXELS:
        raise QuicError(f"image too large: {width}x{height} exceeds {MAX_PIXELS} pixels")
    flags = pixels.flags
    if flags.c_contiguous and flags.writeable and flags.aligned and _LITTLE_ENDIAN:
        return pixels.reshape(-1).view(np.uint32), 0, width, height, width
    s_row, s_px, s_ch = pixels.strides
    if (
        height * width > _COPY_BELOW_PIXELS
        and flags.writeable
        and flags.aligned
        and _LITTLE_ENDIAN
        and s_ch == 1
        and s_px == 4
        and s_row >= 4 * width
        and s_row % 4 == 0
    ):
        span = (height - 1) * s_row + 4 * width
        flat = np.lib.stride_tricks.as_strided(pixels, shape=(span,), strides=(1,))
        return flat.view(np.uint32), 0, s_row // 4, height, width
    frame = np.array(pixels, order="C", copy=True)
    if not _LITTLE_ENDIAN:
        # The kernel unpacks B | G<<8 | R<<16 | A<<24 from host-order words.
        frame = np.ascontiguousarray(frame[:, :, ::-1])
    return frame.reshape(-1).view(np.uint32), 0, width, height, width
