"""RSA keys for the link stage and the ticket check (SPICE-REFERENCE 1.6–1.7).

spice-server makes a fresh 1024-bit key for every link.  Generating one takes tens of
milliseconds, so :class:`KeyPool` keeps a few ready and refills in a worker thread: the event
loop never generates a key itself.

Keys come from OpenSSL's libcrypto through :mod:`spiceserver.rsa_openssl` (10.5 MiB less RSS
than python ``cryptography``, which is used where libcrypto 3.x is not found).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from spiceserver import rsa_openssl

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["KeyPool", "RsaKey", "check_ticket", "generate_key", "public_key_der"]

#: Leading zero bytes spice-html5 may lose (k of them: one ticket in 256**k); more are not tried.
_MAX_LOST_ZEROS = 4


class CryptographyKey:
    """The same key made with python ``cryptography`` (no libcrypto 3.x on this system)."""

    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._key = key or rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.key_size = self._key.key_size

    def public_der(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def decrypt(self, ciphertext: bytes) -> bytes | None:
        try:
            return self._key.decrypt(ciphertext, oaep())
        except ValueError:
            return None


#: A link's key pair: ``key_size``, ``public_der()``, ``decrypt(ciphertext) -> bytes | None``.
RsaKey = rsa_openssl.OpenSSLKey | CryptographyKey


def oaep() -> Any:
    """``cryptography``'s OAEP(SHA-1, MGF1 SHA-1) padding, as spice-gtk encrypts the ticket."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
    )


def generate_key() -> RsaKey:
    """A fresh 1024-bit key (public exponent 65537): libcrypto's, else ``cryptography``'s."""
    if rsa_openssl.available():
        return rsa_openssl.OpenSSLKey(1024)
    return CryptographyKey()


def public_key_der(key: RsaKey) -> bytes:
    """The 162-byte DER SubjectPublicKeyInfo the link reply carries (pitfall 4)."""
    return key.public_der()


def check_ticket(key: RsaKey, ciphertext: bytes, password: bytes | None) -> bool:
    """Decrypt the RSA-OAEP(SHA-1) ticket and compare it in constant time.

    The plaintext is the password plus a NUL (spice-gtk ``spice_channel_send_spice_ticket``);
    like spice-server we take it up to the first NUL.  With ticketing disabled (``password``
    None) the ticket must still decrypt, as spice-server requires.
    """
    plaintext = _decrypt(key, ciphertext)
    if plaintext is None:
        return False
    if password is None:
        return True
    return hmac.compare_digest(plaintext.split(b"\0", 1)[0], password)


def _decrypt(key: RsaKey, ciphertext: bytes) -> bytes | None:
    """OAEP-decrypt; else undo spice-html5's short-ciphertext bug and try again.

    spice-html5 (``spice-html5:src/ticket.js`` ``rsa_encrypt``) turns the ciphertext integer
    into bytes through ``toString(16)``, which drops leading zero bytes, and its link message
    then pads the short result with zeros at the end (``spicemsg.js``
    ``SpiceLinkAuthTicket.to_buffer``): about one ticket in 256 arrives as ``c[k:] + k * 00``.
    Moving the trailing zeros back to the front gives the real ciphertext; nothing else is
    accepted (each candidate must still decrypt and hold the password).
    """
    plaintext = key.decrypt(ciphertext)
    if plaintext is not None:
        return plaintext
    zeros = len(ciphertext) - len(ciphertext.rstrip(b"\0"))
    for k in range(1, min(zeros, _MAX_LOST_ZEROS) + 1):
        plaintext = key.decrypt(bytes(k) + ciphertext[:-k])
        if plaintext is not None:
            return plaintext
    return None


class KeyPool:
    """A few RSA keys generated ahead in a worker thread; each key is used for one link."""

    def __init__(self, executor: Executor | None, size: int = 4) -> None:
        self._executor = executor
        self._size = max(1, size)
        self._ready: collections.deque[RsaKey] = collections.deque()
        self._pending = 0

    def fill(self) -> None:
        """Start generating keys until the pool is full (call on the event loop)."""
        loop = asyncio.get_running_loop()
        while len(self._ready) + self._pending < self._size:
            self._pending += 1
            future = loop.run_in_executor(self._executor, generate_key)
            future.add_done_callback(self._generated)

    def _generated(self, future: asyncio.Future[RsaKey]) -> None:
        self._pending -= 1
        if not future.cancelled() and future.exception() is None:
            self._ready.append(future.result())

    def take_nowait(self) -> RsaKey | None:
        """A ready key, or None when the pool is momentarily empty."""
        key = self._ready.popleft() if self._ready else None
        self.fill()
        return key

    def recycle(self, key: RsaKey) -> None:
        """A key whose link ended before any ticket was encrypted with it: reusable, since it
        never decrypted anything (a flood of abandoned links costs no key generation)."""
        if len(self._ready) < self._size:
            self._ready.append(key)

    async def take(self) -> RsaKey:
        """A key: from the pool, or generated off the loop when the pool is empty."""
        key = self.take_nowait()
        if key is not None:
            return key
        return await asyncio.get_running_loop().run_in_executor(self._executor, generate_key)
