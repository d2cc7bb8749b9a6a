"""``GlzDictionary.stage``: an image read straight into the arena is encoded without a copy,
to the very stream a copied one gets, and the lent room is never written over while lent."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from encoders.errors import GlzStaged
from encoders.glz import GlzDictionary
from tests.encoders.lz.lz_helpers import text_like
from tests.reference.glz_decode import GlzWindow


def _staged_encode(d: GlzDictionary, img: np.ndarray, bands: int) -> bytes:
    """``img`` read into the room ``d`` lends, then encoded as ``bands`` views of it."""
    height, width = img.shape[:2]
    room = d.stage(width, height)
    assert room is not None and d.staged
    room[...] = img
    cuts = np.linspace(0, height, bands + 1).astype(int)
    parts = [room[a:b] for a, b in itertools.pairwise(cuts) if b > a]
    before = d.stagings
    data = d.encode_stack(parts)
    assert not d.staged and d.stagings == before
    return data


@pytest.mark.parametrize("cap", [3000, 100_000])
def test_a_staged_image_is_the_stream_of_a_copied_one(cap: int) -> None:
    """Whole-arena images (a capacity of one image: the server's one-frame dictionaries),
    images beside kept ones, arena laps and reallocations: the same bytes, decoded exactly."""
    rng = np.random.default_rng(7)
    base = text_like(60, 80, seed=8)
    copied = GlzDictionary(100_000, max_pixels=cap, hash_bits=11)
    staged = GlzDictionary(100_000, max_pixels=cap, hash_bits=11)
    window = GlzWindow()
    for k in range(40):
        h, w = int(rng.integers(2, 50)), int(rng.integers(2, 60))
        if k % 7 == 0:
            h, w = 50, 60  # the whole arena when cap is 3000
        y, x = int(rng.integers(0, 60 - h + 1)), int(rng.integers(0, 80 - w + 1))
        img = base[y : y + h, x : x + w].copy()
        if not copied.fits(w, h):
            assert staged.stage(w, h) is None
            continue
        want = copied.encode(img)
        got = _staged_encode(staged, img, 1 + k % 4) if k % 3 else staged.encode(img)
        assert got == want
        decoded = window.decode(got)
        assert np.array_equal(decoded.pixels[..., :3], img[..., :3])


def test_lent_room_is_guarded_until_encoded_or_given_back() -> None:
    d = GlzDictionary(100_000, hash_bits=11)
    window = GlzWindow()
    first = text_like(30, 40, seed=1)
    window.decode(d.encode(first))
    room = d.stage(40, 30)
    assert room is not None
    room[...] = text_like(30, 40, seed=2)
    token = d.stagings
    assert d.stage(40, 30) is None  # lent once at a time
    other = text_like(10, 10, seed=3)
    with pytest.raises(GlzStaged):
        d.encode(other)  # small images too (their one-call path)
    with pytest.raises(GlzStaged):
        d.encode_stack([room[:10]])  # a part of the room is not the image read there
    assert np.array_equal(room, text_like(30, 40, seed=2))  # nothing written over it
    d.unstage(token - 1)  # someone else's, older: not this one
    assert d.staged
    d.unstage(token)
    assert not d.staged
    for img in (other, first):
        decoded = window.decode(d.encode(img))
        assert np.array_equal(decoded.pixels[..., :3], img[..., :3])


def test_no_room_while_another_thread_encodes_nor_for_what_does_not_fit() -> None:
    d = GlzDictionary(1000, hash_bits=10)
    assert d.stage(40, 30) is None  # 1,200 pixels: not below the client's window
    with d._lock:  # an encode running on a worker: a caller on the loop must not wait
        assert d.stage(20, 20) is None
    assert d.stage(20, 20) is not None


def test_a_new_capacity_after_staging_copies_from_the_room() -> None:
    """set_capacity (the screen was resized) may move the arena between stage and encode:
    the image is then copied out of the old room, and still right."""
    img = text_like(40, 50, seed=4)
    for capacity in (2500, 20_000):
        d = GlzDictionary(100_000, max_pixels=4000, hash_bits=11)
        window = GlzWindow()
        window.decode(d.encode(text_like(40, 50, seed=5)))
        room = d.stage(50, 40)
        assert room is not None
        room[...] = img
        d.set_capacity(capacity)
        for stream in (d.encode_stack([room[:13], room[13:]]), d.encode(img)):
            decoded = window.decode(stream)
            assert np.array_equal(decoded.pixels[..., :3], img[..., :3])
        # the kept image is the one read: the repeat is one match into it
        assert decoded.cross_refs == 1 and len(stream) < 64


def test_reset_takes_the_room_back() -> None:
    d = GlzDictionary(100_000, hash_bits=11)
    assert d.stage(30, 30) is not None
    d.reset()
    assert not d.staged and d.stage(30, 30) is not None
