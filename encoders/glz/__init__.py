"""GLZ_RGB encoder (``SpiceImage`` type GLZ_RGB): :class:`GlzDictionary` per client session,
and :func:`glz_encode` for a one-off image.  See :mod:`encoders.glz.dictionary`."""

from __future__ import annotations

from encoders.glz.api import glz_encode, warmup
from encoders.glz.dictionary import GlzDictionary

__all__ = ["GlzDictionary", "glz_encode", "warmup"]
