"""Errors raised by the :mod:`encoders` package."""

from __future__ import annotations

__all__ = ["EncoderError"]


class EncoderError(ValueError):
    """An image cannot be encoded: wrong dtype, shape or stride, empty, or too large."""
