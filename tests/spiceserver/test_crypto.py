"""The ticket check, including spice-html5's short ciphertexts (crafted here)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from spiceserver.crypto import _OAEP, check_ticket

KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)


def ciphertext_with_leading_zero(password: bytes) -> bytes:
    """An OAEP ciphertext of ``password`` whose first byte is 0 (one in 256; bounded search)."""
    for _ in range(20_000):
        ciphertext = KEY.public_key().encrypt(password + b"\0", _OAEP)
        if ciphertext[0] == 0:
            return ciphertext
    raise AssertionError("no ciphertext with a leading zero in 20,000 tries")


def test_a_right_ticket_passes_and_a_wrong_one_fails() -> None:
    ticket = KEY.public_key().encrypt(b"pw\0", _OAEP)
    assert check_ticket(KEY, ticket, b"pw")
    assert not check_ticket(KEY, ticket, b"other")
    assert check_ticket(KEY, ticket, None)  # ticketing disabled: it must still decrypt
    assert not check_ticket(KEY, bytes(128), None)


def test_spice_html5s_short_ciphertext_is_repaired() -> None:
    good = ciphertext_with_leading_zero(b"pw")
    assert check_ticket(KEY, good, b"pw")
    as_sent = good[1:] + b"\0"  # the leading zero lost, a zero appended (spice-html5)
    assert check_ticket(KEY, as_sent, b"pw")
    assert not check_ticket(KEY, as_sent, b"other")


@pytest.mark.parametrize("garbage", [b"\0" * 128, b"\x01" + b"\0" * 127, b"\xff" * 120 + bytes(8)])
def test_garbage_ending_in_zeros_is_still_refused(garbage: bytes) -> None:
    assert not check_ticket(KEY, garbage, b"pw")
    assert not check_ticket(KEY, garbage, None)
