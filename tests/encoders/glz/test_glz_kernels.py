"""Same-process differential tests: GLZ kernels under numba vs their pure-Python bodies."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings

from encoders._jit import py_func
from encoders.glz._kernels import (
    glz_prime,
    glz_rgb32_compress,
    hash_long,
    match_cost,
    put_glz_match,
)
from tests.encoders.lz.lz_helpers import images
from tests.reference.glz_decode import GlzWindow

_E64 = np.zeros(1, dtype=np.int64)
_E32 = np.zeros(1, dtype=np.uint32)


def _run(kernel: object, prime: object, img: np.ndarray, split: int | None = None) -> bytes:
    """The whole image in one lane, or (``split``) two lanes, the second one primed."""
    src = np.ascontiguousarray(img).view(np.uint32).reshape(-1)
    n = src.shape[0]
    out = np.zeros(4 * n + 64, dtype=np.uint8)
    htab = np.full(1 << 10, -1, dtype=np.int64)
    ltab = np.full(1 << 8, -1, dtype=np.int64)
    stop = n if split is None else split
    end = kernel(src, 0, stop, 5, 0, _E32, htab, ltab, _E64, _E64, _E64, 0, out, 0)  # type: ignore[operator]
    if split is not None:
        htab = np.full(1 << 10, -1, dtype=np.int64)
        ltab = np.full(1 << 8, -1, dtype=np.int64)
        prime(src, 0, split, 5, htab)  # type: ignore[operator]
        end = kernel(src, split, n, 5, 0, _E32, htab, ltab, _E64, _E64, _E64, 0, out, end)  # type: ignore[operator]
    return out[:end].tobytes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images(max_width=32, max_height=12))
def test_compress_jit_equals_python(img: np.ndarray) -> None:
    py = (py_func(glz_rgb32_compress), py_func(glz_prime))
    assert _run(glz_rgb32_compress, glz_prime, img) == _run(*py, img)
    split = img.shape[0] * img.shape[1] // 2
    two = _run(glz_rgb32_compress, glz_prime, img, split)
    assert two == _run(*py, img, split)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images(max_width=32, max_height=12))
def test_two_lanes_decode(img: np.ndarray) -> None:
    """Two lanes' tokens, concatenated, decode to the image (the split is any pixel)."""
    import struct

    h, w = img.shape[:2]
    for split in {0, (h * w) // 3, (h * w) // 2, h * w - 1}:
        body = _run(glz_rgb32_compress, glz_prime, img, split)
        head = struct.pack(">IIBIIIQI", 0x20205A4C, 0x00010001, 24, w, h, 4 * w, 0, 0)
        got = GlzWindow().decode(head + body).pixels
        assert np.array_equal(got[..., :3], img[..., :3])


def test_token_writer_all_forms() -> None:
    """Every offset / image-distance form: JIT == Python, and the oracle reads it back."""
    for offset in (0, 15, 4095, 4096, 131_071, 131_072, (1 << 25) - 1):
        for idist in (0, 1, 63, 64, 255, 256, 16_383, 16_384, 65_535, 65_536, (1 << 24) - 1):
            if idist == 0 and offset > 100:
                continue
            for length in (1, 6, 7, 261, 262, 700):
                a = np.zeros(32, dtype=np.uint8)
                b = np.zeros(32, dtype=np.uint8)
                end = put_glz_match(a, 0, length, offset, idist)
                assert end == py_func(put_glz_match)(b, 0, length, offset, idist)
                assert a.tobytes() == b.tobytes()
                assert end - (length >= 7) - (length - 7) // 255 * (length >= 7) == match_cost(
                    offset, idist
                )
    assert hash_long(1, 2, 3, 4, 5, 17) == py_func(hash_long)(1, 2, 3, 4, 5, 17)


def test_token_fields_decode() -> None:
    """A hand-built window: image 0 of 300_000 pixels, then references at chosen offsets."""
    import struct

    n = 300_000
    head0 = struct.pack(">IIBIIIQI", 0x20205A4C, 0x00010001, 24, n, 1, 4 * n, 0, 0)
    unique = np.arange(n) + 1
    lit = np.stack([unique & 0xFF, (unique >> 8) & 0xFF, unique >> 16], -1).astype(np.uint8)
    body = bytearray()
    for k in range(0, n, 32):
        chunk = lit[k : k + 32]
        body.append(len(chunk) - 1)
        body += chunk.tobytes()
    window = GlzWindow()
    window.decode(head0 + bytes(body))
    for offset in (0, 4095, 4096, 131_071, 131_072, n - 3):
        out = np.zeros(16, dtype=np.uint8)
        image_id = window.next_id
        end = put_glz_match(out, 0, 3, offset, image_id)  # into image 0
        head = struct.pack(">IIBIIIQI", 0x20205A4C, 0x00010001, 24, 3, 1, 12, image_id, image_id)
        img = window.decode(head + out[:end].tobytes())
        got = img.pixels[0, :, :3].astype(np.int64)
        assert [int(p[0] | p[1] << 8 | p[2] << 16) for p in got] == [
            offset + 1 + j for j in range(3)
        ]
