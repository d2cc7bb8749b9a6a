"""The ticket check, including spice-html5's short ciphertexts (crafted here), with each key
backend: OpenSSL's libcrypto through ctypes (the server's) and python ``cryptography`` (the
fallback).  Tickets are encrypted by ``cryptography`` from the DER public key the link reply
carries, as a client does."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from spiceserver import rsa_openssl
from spiceserver.crypto import CryptographyKey, RsaKey, check_ticket, oaep, public_key_der
from tests.conftest import python_output

assert rsa_openssl.available(), "libcrypto 3.x missing: the server would fall back"
KEYS: dict[str, RsaKey] = {
    "openssl": rsa_openssl.OpenSSLKey(1024),
    "cryptography": CryptographyKey(),
}


@pytest.fixture(params=sorted(KEYS))
def key(request: pytest.FixtureRequest) -> RsaKey:
    return KEYS[request.param]


def encrypt(key: RsaKey, plaintext: bytes) -> bytes:
    public = serialization.load_der_public_key(public_key_der(key))
    return public.encrypt(plaintext, oaep())  # type: ignore[union-attr]


def ciphertext_with_leading_zero(key: RsaKey, password: bytes) -> bytes:
    """An OAEP ciphertext of ``password`` whose first byte is 0 (one in 256; bounded search)."""
    for _ in range(20_000):
        ciphertext = encrypt(key, password + b"\0")
        if ciphertext[0] == 0:
            return ciphertext
    raise AssertionError("no ciphertext with a leading zero in 20,000 tries")


def test_the_public_key_is_a_1024_bit_rsa_key_in_162_bytes(key: RsaKey) -> None:
    der = public_key_der(key)
    assert len(der) == 162 and key.key_size == 1024
    public = serialization.load_der_public_key(der)
    assert public.key_size == 1024 and public.public_numbers().e == 65537  # type: ignore[union-attr]


def test_a_right_ticket_passes_and_a_wrong_one_fails(key: RsaKey) -> None:
    ticket = encrypt(key, b"pw\0")
    assert check_ticket(key, ticket, b"pw")
    assert not check_ticket(key, ticket, b"other")
    assert check_ticket(key, ticket, None)  # ticketing disabled: it must still decrypt
    assert not check_ticket(key, bytes(128), None)
    assert not check_ticket(key, ticket[:-1], b"pw")  # a length other than the key's
    assert not check_ticket(key, ticket + b"\1", b"pw")
    assert not check_ticket(
        KEYS["openssl" if key is KEYS["cryptography"] else "cryptography"], ticket, b"pw"
    )  # fmt: skip - another link's key


def test_spice_html5s_short_ciphertext_is_repaired(key: RsaKey) -> None:
    good = ciphertext_with_leading_zero(key, b"pw")
    assert check_ticket(key, good, b"pw")
    as_sent = good[1:] + b"\0"  # the leading zero lost, a zero appended (spice-html5)
    assert check_ticket(key, as_sent, b"pw")
    assert not check_ticket(key, as_sent, b"other")


@pytest.mark.parametrize("garbage", [b"\0" * 128, b"\x01" + b"\0" * 127, b"\xff" * 120 + bytes(8)])
def test_garbage_ending_in_zeros_is_still_refused(key: RsaKey, garbage: bytes) -> None:
    assert not check_ticket(key, garbage, b"pw")
    assert not check_ticket(key, garbage, None)


def test_a_failed_decryption_leaves_no_openssl_error_queued() -> None:
    """OpenSSL's error queue is per thread and shared with the ssl module: a refused ticket
    must leave nothing there for the loop thread's next TLS call to report."""
    import ctypes

    lib = rsa_openssl._load()
    lib.ERR_peek_error.restype = ctypes.c_ulong
    assert not check_ticket(KEYS["openssl"], bytes(128), b"pw")
    assert not check_ticket(KEYS["openssl"], b"short", b"pw")
    assert lib.ERR_peek_error() == 0


def test_the_server_side_never_imports_cryptography() -> None:
    script = (
        "import sys\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from spiceserver.crypto import generate_key, check_ticket, public_key_der\n"
        "with ThreadPoolExecutor(4) as pool:\n"  # as the key pool: threads at once
        "    keys = list(pool.map(lambda _: generate_key(), range(4)))\n"
        "for key in keys:\n"
        "    assert len(public_key_der(key)) == 162 and not check_ticket(key, bytes(128), b'x')\n"
        "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n"
    )
    assert python_output(script) == "[]"
