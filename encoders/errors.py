"""Errors raised by the :mod:`encoders` package."""

from __future__ import annotations

__all__ = ["EncoderError", "GlzStaged"]


class EncoderError(ValueError):
    """An image cannot be encoded: wrong dtype, shape or stride, empty, or too large."""


class GlzStaged(EncoderError):
    """A GLZ dictionary's next arena room is lent out (``GlzDictionary.stage``) and this image
    is not the one read into it: encoding it would overwrite pixels someone is still reading.
    The caller sends the image another way (LZ)."""
