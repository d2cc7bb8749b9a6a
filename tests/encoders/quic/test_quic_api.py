"""The public surface: argument validation, views and copies, stream framing, warmup."""

from __future__ import annotations

import numpy as np
import pytest

import encoders
from encoders.errors import EncoderError
from encoders.quic import QuicError, quic_encode, warmup
from tests.encoders.quic.quic_images import make_image


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4, 4), dtype=np.uint16),
        np.zeros((4, 4, 4), dtype=np.float32),
        np.zeros((4, 4, 4), dtype=np.int8),
        np.zeros((4, 4, 3), dtype=np.uint8),
        np.zeros((4, 16), dtype=np.uint8),
        np.zeros((2, 4, 4, 4), dtype=np.uint8),
        np.zeros((0, 4, 4), dtype=np.uint8),
        np.zeros((4, 0, 4), dtype=np.uint8),
    ],
    ids=["uint16", "float32", "int8", "3-channel", "2-d", "4-d", "no-rows", "no-columns"],
)
def test_rejects_bad_arrays(bad: np.ndarray) -> None:
    with pytest.raises(EncoderError):
        quic_encode(bad)


def test_rejects_non_arrays() -> None:
    with pytest.raises(QuicError, match="numpy array"):
        quic_encode(b"\0" * 64)  # type: ignore[arg-type]


def test_rejects_absurd_size() -> None:
    # A broadcast view: huge logical shape, 4 bytes of memory.
    huge = np.broadcast_to(np.zeros(4, dtype=np.uint8), (40000, 40000, 4))
    with pytest.raises(QuicError, match="too large"):
        quic_encode(huge)


def test_error_hierarchy() -> None:
    assert issubclass(QuicError, EncoderError)
    assert issubclass(QuicError, ValueError)


def test_stream_framing() -> None:
    img = make_image("smooth", 5, 7, seed=3)
    for alpha, qtype in ((False, 4), (True, 5)):
        data = quic_encode(img, alpha=alpha)
        assert isinstance(data, bytes)
        assert len(data) % 4 == 0
        words = np.frombuffer(data, dtype="<u4")
        assert list(words[:5]) == [0x43495551, 0, qtype, 7, 5]
        assert data[:4] == b"QUIC"
        assert words[-1] == 0  # flush() appends one extra zero word


def test_x_byte_ignored_without_alpha() -> None:
    img = make_image("noise", 6, 9, seed=4)
    other = img.copy()
    other[..., 3] = 255 - other[..., 3]
    assert quic_encode(img) == quic_encode(other)
    assert quic_encode(img, alpha=True) != quic_encode(other, alpha=True)


@pytest.mark.parametrize("alpha", [False, True])
def test_views_match_copies(alpha: bool) -> None:
    """Sub-rectangles, row steps, read-only, Fortran order and misaligned buffers all agree."""
    frame = make_image("palette", 40, 70, seed=5, colors=3)
    cases = {
        "region": frame[3:31, 5:66],
        "row-step": frame[::3, 2:50],
        "single-row": frame[7:8, 1:69],
        "single-column": frame[:, 9:10],
        "fortran": np.asfortranarray(frame[2:20, 3:40]),
        "channel-reversed": frame[1:30, 1:30, ::-1],
        "column-step": frame[:, ::2],
    }
    readonly = frame[4:20, 4:20].copy()
    readonly.flags.writeable = False
    cases["read-only"] = readonly
    raw = np.zeros(frame[2:12, 3:13].nbytes + 1, dtype=np.uint8)
    misaligned = raw[1:].reshape(10, 10, 4)
    misaligned[...] = frame[2:12, 3:13]
    cases["misaligned"] = misaligned
    for name, view in cases.items():
        assert quic_encode(view, alpha=alpha) == quic_encode(view.copy(), alpha=alpha), name


def test_input_not_modified() -> None:
    img = make_image("noise", 9, 11, seed=6)
    before = img.copy()
    quic_encode(img, alpha=True)
    assert np.array_equal(img, before)


def test_warmup_and_package_exports() -> None:
    warmup()
    assert encoders.quic_encode is quic_encode
    assert set(encoders.quic.__all__) == {"QuicError", "quic_encode", "quic_encode_stack", "warmup"}
