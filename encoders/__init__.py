"""SPICE's own image codecs (QUIC, LZ, GLZ) as numba kernels over numpy arrays.

Every encoder takes a frame or a region of one: a ``uint8`` array of shape ``(height, width, 4)``
holding B, G, R, X bytes (X ignored; A for the RGBA variants), rows top to bottom.  A view into a
larger frame is fine.  Each returns the image payload that follows ``data_size`` in a
``SpiceImage`` body (spice.proto ``QuicData`` / ``LZRGBData``).

Names are loaded lazily so that importing one codec never pays for compiling the others.
"""

from __future__ import annotations

import importlib
from typing import Any

from encoders.errors import EncoderError

__all__ = [
    "EncoderError",
    "GlzDictionary",
    "glz_encode",
    "lz_encode",
    "quic_encode",
    "warmup",
]

_LAZY = {
    "quic_encode": "encoders.quic",
    "lz_encode": "encoders.lz",
    "glz_encode": "encoders.glz",
    "GlzDictionary": "encoders.glz",
}

_CODEC_MODULES = ("encoders.quic", "encoders.lz", "encoders.glz")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'encoders' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def warmup() -> None:
    """Compile (or load from the on-disk cache) every kernel, so no frame waits on the JIT.

    Blocking and slow on a cold cache: call it from a worker thread, never the event loop.
    """
    for module in _CODEC_MODULES:
        importlib.import_module(module).warmup()
