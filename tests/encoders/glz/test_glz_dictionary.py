"""``GlzDictionary``: sequences decoded through a mirror of spice-gtk's window.

Every stream goes through :class:`tests.reference.glz_decode.GlzWindow`, which releases images
exactly as spice-gtk does and raises on a reference to an image it no longer (or never) held, or
past a referenced image's end: so a passing sequence is one the real client decodes.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import encoders.glz.dictionary as dictionary_module
from encoders import EncoderError
from encoders._jit import py_func
from encoders.glz import GlzDictionary, glz_encode
from tests.encoders.lz.lz_helpers import load_frame, needs_jit, rgb, text_like
from tests.reference.glz_decode import GlzImage, GlzWindow


def _send(d: GlzDictionary, window: GlzWindow, img: np.ndarray) -> tuple[bytes, GlzImage]:
    data = d.encode(img)
    decoded = window.decode(data)
    assert np.array_equal(decoded.pixels[..., :3], rgb(img))
    # our window is never larger than the client's: everything we may reference it holds
    assert decoded.id - decoded.win_head_dist == d.oldest_id or decoded.win_head_dist == 0
    assert all(i in window.images for i in range(d.oldest_id, d.next_id))
    return data, decoded


def test_ids_header_and_repeat() -> None:
    d = GlzDictionary(10_000, hash_bits=12)
    w = GlzWindow()
    img = text_like(40, 60, seed=1)
    first, dec0 = _send(d, w, img)
    assert (dec0.id, dec0.win_head_dist) == (0, 0)
    second, dec1 = _send(d, w, img)
    assert (dec1.id, dec1.win_head_dist) == (1, 1) and dec1.cross_refs >= 1
    assert len(second) < len(first) // 4
    assert d.images_encoded == 2 and d.bytes_out == len(first) + len(second)
    noise = np.random.default_rng(0).integers(0, 256, size=(40, 60, 4), dtype=np.uint8)
    _send(d, w, noise)
    data, dec = _send(d, w, noise)
    assert dec.cross_refs == 1 and len(data) < 33 + 20  # one match: the whole previous image
    assert struct.unpack_from(">Q", second, 21)[0] == 1


def test_scrolled_text_references_previous_frame() -> None:
    palette = np.random.default_rng(2).integers(0, 256, size=(6, 4), dtype=np.uint8)
    base = palette[np.random.default_rng(3).integers(0, 6, size=(120, 96))]
    d = GlzDictionary(50_000, hash_bits=14)
    w = GlzWindow()
    sizes = []
    for shift in range(0, 40, 9):
        frame = np.roll(base, -shift, axis=0)
        data, decoded = _send(d, w, frame[:80])
        sizes.append(len(data))
        if shift:
            assert decoded.cross_refs > 0
    assert max(sizes[1:]) < sizes[0] // 5


def test_eviction_follows_client_window() -> None:
    """Window of 2.5 images: each image may keep only the previous one or two."""
    n = 30 * 40
    d = GlzDictionary(int(2.5 * n), hash_bits=12)
    w = GlzWindow()
    imgs = [text_like(30, 40, seed=s) for s in range(3)]
    for k in range(12):
        _, decoded = _send(d, w, imgs[k % 3])
        assert decoded.win_head_dist == min(k, 1)
        assert d.kept_pixels == n * min(k + 1, 2)
        assert set(w.images) == set(range(max(0, k - 1), k + 1))


def test_mixed_sizes_and_arena_wrap() -> None:
    """A memory cap below the window: arena laps, gaps and our own extra evictions."""
    rng = np.random.default_rng(3)
    base = text_like(64, 64, seed=4)
    d = GlzDictionary(100_000, max_pixels=3000, hash_bits=11)
    w = GlzWindow()
    for _ in range(60):
        h, wd = int(rng.integers(1, 40)), int(rng.integers(1, 64))
        y, x = int(rng.integers(0, 64 - h + 1)), int(rng.integers(0, 64 - wd + 1))
        assert d.fits(wd, h)
        _send(d, w, base[y : y + h, x : x + wd])
        assert d.kept_pixels <= 3000
    assert d.images_encoded == 60


def test_reset_starts_a_new_session() -> None:
    d = GlzDictionary(10_000, hash_bits=12)
    img = text_like(20, 30, seed=5)
    w = GlzWindow()
    _send(d, w, img)
    _send(d, w, img)
    d.reset()
    assert (d.next_id, d.oldest_id, d.kept_pixels) == (0, 0, 0)
    w2 = GlzWindow()
    data, decoded = _send(d, w2, img)
    assert (decoded.id, decoded.cross_refs) == (0, 0)
    assert data == glz_encode(img)


def test_table_origin_moves_without_changing_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """int32 slots: with a tiny slot range the origin moves up every few images (kept images'
    slots survive, stale ones go), and every stream is the same as without a move."""
    rng = np.random.default_rng(7)
    base = text_like(64, 64, seed=8)
    crops = []
    for _ in range(40):
        h, wd = int(rng.integers(1, 40)), int(rng.integers(1, 64))
        y, x = int(rng.integers(0, 64 - h + 1)), int(rng.integers(0, 64 - wd + 1))
        crops.append(base[y : y + h, x : x + wd])
    plain = GlzDictionary(9000, max_pixels=3000, hash_bits=11)
    expected = [plain.encode(c) for c in crops]
    assert plain._tables.base == 0
    expected_fresh = [glz_encode(c) for c in crops[:3]] * 50
    monkeypatch.setattr(dictionary_module.LaneTables, "SLOT_LIMIT", 5000)
    moved = GlzDictionary(9000, max_pixels=3000, hash_bits=11)
    w = GlzWindow()
    assert [_send(moved, w, c)[0] for c in crops] == expected
    assert moved._tables.base > 0
    # the stand-alone encoder's tables move too (its virtual counter passes 5000)
    assert [glz_encode(c) for c in crops[:3] * 50] == expected_fresh


def test_a_stack_of_bands_is_one_image() -> None:
    """encode_stack(bands) == encode(the bands stacked): one header, in-image matches across
    the band boundaries; parts must share a width."""
    img = text_like(50, 40, seed=9)
    bands = [img[0:7].copy(), img[7:30], img[30:50, :]]
    a = GlzDictionary(10_000, hash_bits=12)
    b = GlzDictionary(10_000, hash_bits=12)
    w = GlzWindow()
    stacked = a.encode_stack(bands)
    assert stacked == b.encode(img)
    assert np.array_equal(w.decode(stacked).pixels[..., :3], rgb(img))
    assert a.next_id == 1 and a.kept_pixels == 2000
    with pytest.raises(EncoderError, match="width"):
        a.encode_stack([img[:5], img[5:, :30]])
    with pytest.raises(EncoderError, match="no image"):
        a.encode_stack([])
    with pytest.raises(EncoderError, match="does not fit"):
        GlzDictionary(1999).encode_stack(bands)


def test_fits_and_refusals() -> None:
    assert not GlzDictionary(0).fits(1, 1)
    d = GlzDictionary(100, max_pixels=50, hash_bits=10)
    assert d.fits(10, 5) and not d.fits(17, 3) and not d.fits(10, 10) and not d.fits(0, 3)
    with pytest.raises(EncoderError):
        d.encode(np.zeros((10, 10, 4), dtype=np.uint8))
    with pytest.raises(EncoderError):
        d.encode(np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(EncoderError):
        GlzDictionary(0).encode(np.zeros((1, 1, 4), dtype=np.uint8))
    assert d.next_id == 0  # refusals consume no id
    for kwargs in (
        {"window_pixels": -1},
        {"window_pixels": 9, "max_pixels": 0},
        {"window_pixels": 9, "max_pixels": 1 << 26},
        {"window_pixels": 9, "hash_bits": 9},
    ):
        with pytest.raises(EncoderError):
            GlzDictionary(**kwargs)


def test_threads_share_one_dictionary() -> None:
    d = GlzDictionary(20_000, hash_bits=12)
    imgs = [text_like(20, 25 + k, seed=k) for k in range(4)]
    results: list[bytes] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for _ in range(6):
            data = d.encode(imgs[k])
            with lock:
                results.append(data)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w = GlzWindow()
    by_id = sorted(results, key=lambda b: struct.unpack_from(">Q", b, 21)[0])
    for data in by_id:
        w.decode(data)
    assert w.next_id == 24


@st.composite
def _sequences(draw: st.DrawFn) -> tuple[int, int, list[np.ndarray]]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = text_like(48, 48, seed=seed % 1000)
    noise = rng.integers(0, 256, size=(48, 48, 4), dtype=np.uint8)
    imgs = []
    for _ in range(draw(st.integers(1, 12))):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        y, x = int(rng.integers(0, 48 - h + 1)), int(rng.integers(0, 48 - w + 1))
        src = noise if rng.random() < 0.2 else base
        img = src[y : y + h, x : x + w].copy()
        if rng.random() < 0.3:
            img[rng.random((h, w)) < 0.1] = 255
        imgs.append(img)
    window = draw(st.integers(2, 3000))
    cap = draw(st.integers(1, 3000))
    return window, cap, imgs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_sequences())
def test_random_sequences(case: tuple[int, int, list[np.ndarray]]) -> None:
    window, cap, imgs = case
    d = GlzDictionary(window, max_pixels=cap, hash_bits=10)
    w = GlzWindow()
    for img in imgs:
        if d.fits(img.shape[1], img.shape[0]):
            _send(d, w, img)


def test_kernel_jit_equals_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dictionary's output is the same with the pure-Python kernel body."""
    frames = [text_like(24, 32, seed=s % 2)[s % 5 :] for s in range(6)]
    jit = GlzDictionary(2000, max_pixels=1500, hash_bits=10)
    expected = [jit.encode(f) for f in frames]
    from encoders.glz import _kernels

    compress = py_func(dictionary_module.glz_rgb32_compress)
    monkeypatch.setattr(dictionary_module, "glz_rgb32_compress", compress)
    # the small-image kernel too, calling the Python body of the token kernel
    monkeypatch.setattr(_kernels, "glz_rgb32_compress", compress)
    monkeypatch.setattr(_kernels, "_put_be", py_func(_kernels._put_be))
    small = py_func(_kernels.glz_encode_small)
    monkeypatch.setattr(dictionary_module, "glz_encode_small", small)
    python = GlzDictionary(2000, max_pixels=1500, hash_bits=10)
    contiguous = [np.ascontiguousarray(f) for f in frames]
    assert [python.encode(f) for f in frames + contiguous] == expected + [
        jit.encode(f) for f in contiguous
    ]


def test_small_images_take_one_kernel_call_and_the_same_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small C-contiguous image goes through ``glz_encode_small_placed`` (placement, copy,
    header, tokens and bookkeeping in one call), or ``glz_encode_small`` when the arena is
    resized or the tables rebased first; its stream is the one the general path makes of the
    same pixels (read-only, so they take it), through window evictions, arena wraps, table
    rebases and resets, and it decodes."""
    calls: list[int] = []
    placed_calls: list[int] = []
    small = dictionary_module.glz_encode_small
    placed = dictionary_module.glz_encode_small_placed

    def counted(*args: object) -> int:
        calls.append(1)
        return small(*args)  # type: ignore[arg-type]

    def counted_placed(*args: object) -> int:
        end = placed(*args)  # type: ignore[arg-type]
        if end != dictionary_module.NOT_PLACED:
            placed_calls.append(1)
        return end

    monkeypatch.setattr(dictionary_module, "glz_encode_small", counted)
    monkeypatch.setattr(dictionary_module, "glz_encode_small_placed", counted_placed)
    monkeypatch.setattr(dictionary_module.LaneTables, "SLOT_LIMIT", 20_000)
    rng = np.random.default_rng(11)
    base = text_like(96, 96, seed=3)
    fast = GlzDictionary(6000, max_pixels=5000, hash_bits=10)
    general = GlzDictionary(6000, max_pixels=5000, hash_bits=10)
    w = GlzWindow()
    for i in range(120):
        h, wd = int(rng.integers(1, 60)), int(rng.integers(1, 96))
        y, x = int(rng.integers(0, 96 - h + 1)), int(rng.integers(0, 96 - wd + 1))
        img = base[y : y + h, x : x + wd].copy()
        if i % 7 == 0:
            img[rng.random((h, wd)) < 0.2] = 255
        if not fast.fits(wd, h):
            continue
        read_only = np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(img.shape)
        assert _send(fast, w, img)[0] == general.encode(read_only), i
        if i == 80:
            fast.reset()
            general.reset()
            w = GlzWindow()
    assert fast._tables.base > 0 and fast.oldest_id > 0
    assert len(calls) + len(placed_calls) == fast.images_encoded
    assert calls and len(placed_calls) > 10 * len(calls)  # the first sizes the arena, ...
    assert (fast.next_id, fast.oldest_id, fast.kept_pixels) == (
        general.next_id,
        general.oldest_id,
        general.kept_pixels,
    )
    # views, read-only buffers and large images take the general path
    calls.clear()
    placed_calls.clear()
    frame = text_like(300, 300, seed=4)
    ro = np.frombuffer(frame[:20, :30].tobytes(), dtype=np.uint8).reshape(20, 30, 4)
    d = GlzDictionary(1 << 20)
    for img in (frame[:20, :30], ro, frame):
        d.encode(img)
    assert calls == [] and placed_calls == []
    assert d.encode_small(frame[:20, :30]) is None and d.encode_small(ro) is None


@needs_jit
def test_corpus_sequence() -> None:
    """Full frames and regions of them against a realistic window."""
    d = GlzDictionary(8 << 20, hash_bits=20)
    w = GlzWindow()
    term = load_frame("terminal_manpage_1920x1080")
    _send(d, w, term)
    data, decoded = _send(d, w, np.roll(term, -17, axis=0))  # scrolled by one text line
    assert decoded.cross_refs > 0 and len(data) < 40_000
    data, _ = _send(d, w, term[200:500, 300:1500])  # a region already sent
    assert len(data) < 20_000
    desk = load_frame("desktop_xapps_1280x800")
    for _ in range(4):  # pushes the first frames out of the 8 Mi-pixel window
        _send(d, w, desk)
    assert d.oldest_id > 0


def test_warmup_covers_production_signatures() -> None:
    """After warmup(), no input layout makes numba compile again (a stall mid-session)."""
    from encoders._jit import JIT_ENABLED
    from encoders.glz import warmup
    from encoders.glz._kernels import (
        glz_encode_small,
        glz_encode_small_placed,
        glz_rgb32_compress,
    )

    if not JIT_ENABLED:
        pytest.skip("JIT disabled")
    warmup()
    before = len(glz_rgb32_compress.signatures)
    small = len(glz_encode_small.signatures)
    placed = len(glz_encode_small_placed.signatures)
    frame = np.arange(20 * 30 * 4, dtype=np.uint8).reshape(20, 30, 4)
    ro = np.frombuffer(frame.tobytes(), dtype=np.uint8).reshape(20, 30, 4)
    d = GlzDictionary(5000)
    for img in (frame, frame[3:9, 4:17], ro, ro[2:5, 1:3]):
        glz_encode(img)
        d.encode(img)
    assert len(glz_rgb32_compress.signatures) == before
    assert len(glz_encode_small.signatures) == small == 1
    assert len(glz_encode_small_placed.signatures) == placed == 1
    # and warmup() alone, in a fresh process, is what loads the small-image kernels (in this
    # one, earlier tests may have compiled them already)
    code = (
        "from encoders.glz import warmup; from encoders.glz import _kernels as k; warmup();"
        " print(len(k.glz_encode_small.signatures), len(k.glz_encode_small_placed.signatures))"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.split() == ["1", "1"]


def test_memory_follows_the_images_not_the_window() -> None:
    """A spice-gtk window (3,145,728 pixels): no pixel memory before the first image, then
    ARENA_IMAGES times the largest recent image, shrinking once big images stop coming, and
    never more than the window; every stream still decodes through the client's window."""
    from encoders.glz.dictionary import ARENA_IMAGES, MIN_ARENA_PIXELS, RECENT_IMAGES

    window = 3 * 1024 * 1024
    d = GlzDictionary(window, hash_bits=10)
    assert d.arena_pixels == 0
    w = GlzWindow()
    big = text_like(400, 700, seed=8)  # 280,000 pixels: a whole small surface
    first, _ = _send(d, w, big)
    assert d.arena_pixels == min(window, max(MIN_ARENA_PIXELS, ARENA_IMAGES * 280_000))
    data, decoded = _send(d, w, big)  # the previous image is still there
    assert decoded.cross_refs > 0 and len(data) < len(first) // 4
    for k in range(RECENT_IMAGES + 2):
        _send(d, w, big[k : k + 30, 100:300])
    assert d.arena_pixels == MIN_ARENA_PIXELS <= window
    assert d.nbytes <= 4 * MIN_ARENA_PIXELS + 200_000
    small = GlzDictionary(5000, hash_bits=10)
    _send(small, GlzWindow(), text_like(20, 30, seed=9))
    assert small.arena_pixels == 5000  # capped by the window
