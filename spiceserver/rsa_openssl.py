"""RSA-1024 keys and RSA-OAEP(SHA-1) decryption straight from OpenSSL's libcrypto (3.x).

Why not python ``cryptography``: its wheel links an OpenSSL of its own into an 11 MiB module,
and importing it, making a key and decrypting one ticket costs the server 10.5 MiB of RSS
(``python -m tests.interop.bench_rss``), for three calls per link.  Python's ``ssl`` module,
which asyncio imports anyway, has already mapped the system's libcrypto: these calls cost no
new library.  OpenSSL does all the cryptography (key generation, OAEP padding checks); this
module only passes buffers, checks return codes and frees what it made.

The calls are OpenSSL 3.0 API (``openssl:include/openssl/evp.h``, ``rsa.h``, ``x509.h``):
:func:`available` is False on another major version, and :mod:`spiceserver.crypto` then uses
``cryptography``.  ctypes releases the GIL during each call, so keys generated on the key
pool's threads do not hold up the event loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

__all__ = ["OpenSSLKey", "available"]

#: ``EVP_PKEY_RSA`` (openssl:include/openssl/obj_mac.h NID_rsaEncryption).
_EVP_PKEY_RSA = 6
#: ``RSA_PKCS1_OAEP_PADDING`` (openssl:include/openssl/rsa.h).
_RSA_PKCS1_OAEP_PADDING = 4

_lib: Any = None
_loaded = False
#: The key pool's threads ask at once: the second must wait for the first's answer.
_load_lock = threading.Lock()


def _load() -> Any:
    """libcrypto 3.x with the signatures used here, or None."""
    with _load_lock:
        return _lib if _loaded else _load_once()


def _load_once() -> Any:
    global _lib, _loaded
    _loaded = True
    import ssl  # noqa: F401 - maps the libcrypto Python itself uses (no second copy)

    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.OpenSSL_version_num.restype = ctypes.c_ulong
        if lib.OpenSSL_version_num() >> 28 != 3:
            return None
        p, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        signatures: dict[str, tuple[Any, list[Any]]] = {
            "EVP_PKEY_CTX_new_id": (p, [i, p]),
            "EVP_PKEY_CTX_new": (p, [p, p]),
            "EVP_PKEY_CTX_free": (None, [p]),
            "EVP_PKEY_keygen_init": (i, [p]),
            "EVP_PKEY_CTX_set_rsa_keygen_bits": (i, [p, i]),
            "EVP_PKEY_keygen": (i, [p, ctypes.POINTER(p)]),
            "EVP_PKEY_free": (None, [p]),
            "EVP_PKEY_get_bits": (i, [p]),
            "i2d_PUBKEY": (i, [p, ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte))]),
            "EVP_PKEY_decrypt_init": (i, [p]),
            "EVP_PKEY_CTX_set_rsa_padding": (i, [p, i]),
            "EVP_PKEY_CTX_set_rsa_oaep_md": (i, [p, p]),
            "EVP_PKEY_CTX_set_rsa_mgf1_md": (i, [p, p]),
            "EVP_sha1": (p, []),
            "EVP_PKEY_decrypt": (i, [p, p, ctypes.POINTER(sz), p, sz]),
            "ERR_clear_error": (None, []),
        }
        for function, (restype, argtypes) in signatures.items():
            handle = getattr(lib, function)
            handle.restype, handle.argtypes = restype, argtypes
    except (OSError, AttributeError):
        return None
    _lib = lib
    return lib


def available() -> bool:
    """Whether libcrypto 3.x could be loaded (else use ``cryptography``)."""
    return _load() is not None


class OpenSSLKey:
    """A fresh RSA key pair (public exponent 65537, OpenSSL's default), freed with the object."""

    def __init__(self, bits: int = 1024) -> None:
        lib = _load()
        if lib is None:
            raise RuntimeError("libcrypto 3.x is not available")
        self._lib = lib  # outlives the key: __del__ needs it at interpreter exit too
        self._pkey: int | None = None
        ctx = lib.EVP_PKEY_CTX_new_id(_EVP_PKEY_RSA, None)
        try:
            pkey = ctypes.c_void_p()
            if (
                not ctx
                or lib.EVP_PKEY_keygen_init(ctx) <= 0
                or lib.EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, bits) <= 0
                or lib.EVP_PKEY_keygen(ctx, ctypes.byref(pkey)) <= 0
                or not pkey.value
            ):
                lib.ERR_clear_error()
                raise RuntimeError("OpenSSL could not generate an RSA key")
            self._pkey = pkey.value
        finally:
            lib.EVP_PKEY_CTX_free(ctx)
        #: The modulus in bits (the ticket is this many bits long).
        self.key_size = int(lib.EVP_PKEY_get_bits(self._pkey))

    def __del__(self) -> None:
        if self._pkey is not None:
            self._lib.EVP_PKEY_free(self._pkey)
            self._pkey = None

    def public_der(self) -> bytes:
        """The DER SubjectPublicKeyInfo (162 bytes for 1024 bits)."""
        lib = self._lib
        size = lib.i2d_PUBKEY(self._pkey, None)
        if size <= 0:
            lib.ERR_clear_error()
            raise RuntimeError("OpenSSL could not encode the public key")
        out = (ctypes.c_ubyte * size)()
        cursor = ctypes.cast(out, ctypes.POINTER(ctypes.c_ubyte))  # i2d moves it past the end
        if lib.i2d_PUBKEY(self._pkey, ctypes.byref(cursor)) != size:
            lib.ERR_clear_error()
            raise RuntimeError("OpenSSL could not encode the public key")
        return bytes(out)

    def decrypt(self, ciphertext: bytes) -> bytes | None:
        """The RSA-OAEP (SHA-1, MGF1 SHA-1, no label) plaintext; None if it does not decrypt."""
        lib = self._lib
        ctx = lib.EVP_PKEY_CTX_new(self._pkey, None)
        try:
            sha1 = lib.EVP_sha1()
            out = ctypes.create_string_buffer(self.key_size // 8)
            length = ctypes.c_size_t(len(out))
            if (
                not ctx
                or lib.EVP_PKEY_decrypt_init(ctx) <= 0
                or lib.EVP_PKEY_CTX_set_rsa_padding(ctx, _RSA_PKCS1_OAEP_PADDING) <= 0
                or lib.EVP_PKEY_CTX_set_rsa_oaep_md(ctx, sha1) <= 0
                or lib.EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, sha1) <= 0
                or lib.EVP_PKEY_decrypt(ctx, out, ctypes.byref(length), ciphertext, len(ciphertext))
                <= 0
            ):
                lib.ERR_clear_error()  # a wrong ticket is no error of the thread's next caller
                return None
            return out.raw[: length.value]
        finally:
            lib.EVP_PKEY_CTX_free(ctx)
