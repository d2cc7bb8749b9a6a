"""Encoder throughput benchmark: ``python3 -m encoders.bench [--codec C] [--repeat N] IMAGE...``.

Prints one JSON object per line per image and codec::

    {"image": name, "codec": "quic", "width": W, "height": H, "bytes": N, "mpix_per_s": M}

``mpix_per_s`` is the median of ``--repeat`` timed encodes after one untimed warm-up encode, so JIT
compilation is excluded.  Machines differ and are noisy, hence the ``zlib1`` line (Python's
``zlib.compress(frame, 1)`` on the same bytes, in the same run): compare codecs against it rather
than against absolute numbers.  A codec whose module cannot be imported (or that fails) gets a line
with an ``"error"`` key instead of stopping the run.

Against the reference C encoders (interleaved, both C builds, whole frame and the server's bands):
``python3 -m encoders.bench_c`` (needs ``../shared/refcodec/build.sh --native``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_frame", "main"]

CODECS = ("quic", "lz", "glz", "zlib1")


def load_frame(path: Path) -> np.ndarray:
    """Read a PNG (as RGB, turned into B,G,R,X with X = 0) or a ``.npy`` (H, W, 4) uint8 array."""
    if path.suffix == ".npy":
        frame = np.load(path)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 4:
            raise ValueError(f"{path}: expected a (H, W, 4) uint8 array, got {frame.shape}")
        return frame
    from PIL import Image

    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    frame = np.zeros((*rgb.shape[:2], 4), dtype=np.uint8)
    frame[..., 0] = rgb[..., 2]
    frame[..., 1] = rgb[..., 1]
    frame[..., 2] = rgb[..., 0]
    return frame


def _encoder(codec: str) -> Callable[[np.ndarray], Any]:
    """The encode callable for ``codec`` (``encoders.<codec>_encode(frame)``, the stand-alone
    image encoders); import errors propagate and become an error line."""
    if codec == "zlib1":
        return lambda frame: zlib.compress(frame.tobytes(), 1)
    import encoders

    encode: Callable[[np.ndarray], Any] = getattr(encoders, f"{codec}_encode")
    return encode


def _payload_size(result: Any) -> int:
    """Byte size of what an encoder returned (bytes, memoryview, array or a tuple holding one)."""
    if isinstance(result, tuple):
        result = result[0]
    return len(memoryview(result).cast("B"))


def bench_one(frame: np.ndarray, codec: str, repeat: int) -> dict[str, Any]:
    """Time ``codec`` on ``frame``: one warm-up encode, then the median of ``repeat`` encodes."""
    height, width = frame.shape[:2]
    row: dict[str, Any] = {"codec": codec, "width": width, "height": height}
    try:
        encode = _encoder(codec)
        size = _payload_size(encode(frame))
        times = []
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            encode(frame)
            times.append(time.perf_counter() - t0)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    row["bytes"] = size
    row["mpix_per_s"] = round(width * height / statistics.median(times) / 1e6, 2)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m encoders.bench", description=__doc__)
    parser.add_argument("--codec", choices=(*CODECS, "all"), default="all")
    parser.add_argument("--repeat", type=int, default=5, help="timed encodes per codec (median)")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    args = parser.parse_args(argv)
    codecs = CODECS if args.codec == "all" else (args.codec,)
    for path in args.images:
        frame = load_frame(path)
        for codec in codecs:
            row = {"image": path.stem, **bench_one(frame, codec, args.repeat)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
