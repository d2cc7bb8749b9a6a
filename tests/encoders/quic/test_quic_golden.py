"""Byte-exact agreement with the reference C encoder (golden vectors), and decoder sanity."""

from __future__ import annotations

import pytest

from encoders.quic import quic_encode
from tests.encoders.quic.quic_helpers import (
    GOLDEN,
    SMALL_VECTORS,
    golden_bytes,
    golden_names,
    load_frame,
    skip_if_slow,
)
from tests.reference.quic_decode import quic_decode

NAMES = golden_names()


@pytest.mark.parametrize("name", NAMES)
def test_matches_c_encoder(name: str) -> None:
    """QUIC leaves the encoder no freedom: our stream must equal the C encoder's bytes."""
    expected = golden_bytes(name)  # read first: a missing vector fails even without the JIT
    skip_if_slow(name)
    got = quic_encode(load_frame(name))
    assert len(got) == len(expected)
    assert got == expected


@pytest.mark.parametrize("name", SMALL_VECTORS)
def test_reference_decoder_reads_golden(name: str) -> None:
    """The oracle itself decodes C-encoder output exactly (so round trips through it mean
    something for RGBA, which has no golden vector)."""
    qtype, img = quic_decode(golden_bytes(name))
    assert qtype == 4
    assert (img == load_frame(name)).all()


def test_golden_view_of_larger_frame() -> None:
    """A golden frame embedded in a bigger one encodes identically from the view (no copy path)."""
    frame = load_frame("runs_300x120")
    big = (frame[:1, :1] * 0 + 77).repeat(130, 0).repeat(333, 1).copy()
    big[5:125, 20:320] = frame
    expected = golden_bytes("runs_300x120")
    assert quic_encode(big[5:125, 20:320]) == expected


def test_folder_holds_exactly_the_listed_vectors() -> None:
    """Every ``.quic`` in ``tests/data/quic/`` is tested: none unlisted, none missing."""
    assert sorted(p.stem for p in GOLDEN.glob("*.quic")) == NAMES
