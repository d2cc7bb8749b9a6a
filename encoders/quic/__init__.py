"""QUIC, SPICE's lossless adaptive Golomb-Rice image codec (spice-common ``common/quic.c``).

Only the encoder lives here: :func:`quic_encode` turns a B,G,R,X (or B,G,R,A) frame into the
``SPICE_IMAGE_TYPE_QUIC`` payload, bit-identical to the reference C encoder.
"""

from __future__ import annotations

from encoders.quic.api import QuicError, quic_encode, quic_encode_stack, warmup

__all__ = ["QuicError", "quic_encode", "quic_encode_stack", "warmup"]
