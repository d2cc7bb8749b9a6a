"""LZ_RGB encoder (``SpiceImage`` type LZ_RGB): see :mod:`encoders.lz.api`."""

from __future__ import annotations

from encoders.lz.api import lz_encode, lz_encode_stack, warmup

__all__ = ["lz_encode", "lz_encode_stack", "warmup"]
