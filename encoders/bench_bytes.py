"""Bytes against the reference C encoders on frames that are not in the corpus:
``python3 -m encoders.bench_bytes [--window PIXELS] [--seed N] [IMAGE ...]``.

Why: a corpus of five frames is easy to fit by accident; "bytes <= C on every frame" has to hold
on frames nobody tuned for.  From each image (by default the public corpus) this makes three
random crops, bilinear rescales to 0.5, 0.75 and 1.33, and composites (a photo pasted into the
text frames), adds synthetic desktops drawn with Pillow (filled windows with borders, lines of
text in the default font, a gradient bar) at four common sizes, anti-aliased drawings on
white, near-noise "grain" (``grain_frame``), noise and a flat frame, and prints for each frame
ours/C for QUIC, LZ and GLZ as the server encodes them: the frame cut into the server's bands
and stacked into one image per damaged area (``codecs.encode_stack``; LZ in one lane and in
two, which may differ by a few tokens), GLZ into a fresh dictionary of
``--window`` pixels (spice-gtk's 3,145,728 by default; frames larger than that are not GLZ
images in the server and are skipped).  Ends with the worst ratio per codec.  Needs the shared
harness built, as ``encoders.bench_c`` does.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.bench_c import _HERE, _refcodec, _server_layout

#: Synthetic desktops: the sizes of common screens.
_DESKTOP_SIZES = ((1366, 768), (1600, 900), (1920, 1200), (800, 600))


def _bgrx(rgb: np.ndarray) -> np.ndarray:
    frame = np.zeros((*rgb.shape[:2], 4), dtype=np.uint8)
    frame[..., :3] = rgb[..., 2::-1]
    return frame


def _desktop(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    def colour(lo: int = 0) -> tuple[int, int, int]:
        r, g, b = (int(v) for v in rng.integers(lo, 256, 3))
        return r, g, b

    image = Image.new("RGB", (width, height), colour(180))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for _ in range(60):
        x0, y0 = int(rng.integers(0, width - 50)), int(rng.integers(0, height - 30))
        box = (x0, y0, x0 + int(rng.integers(20, 400)), y0 + int(rng.integers(10, 300)))
        draw.rectangle(box, fill=colour(), outline=(0, 0, 0))
    for _ in range(300):
        at = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        draw.text(at, "The quick brown fox 0123", fill=colour(), font=font)
    for y in range(60):
        draw.line([(0, height - 60 + y), (width, height - 60 + y)], fill=(4 * y, 100, 255 - 4 * y))
    return _bgrx(np.asarray(image))


def grain_frame(height: int, width: int, amplitude: int, seed: int) -> np.ndarray:
    """A near-noise frame (film grain on slow diagonal ramps): each channel a triangle wave
    plus integer-hash noise of +-``amplitude``, so neighbours are rarely, but not never, the
    same pixel (as in ImageMagick's ``plasma:fractal``).  Integer arithmetic only: the same
    pixels with any numpy, so C's byte count can be pinned in a test."""
    y, x = np.mgrid[0:height, 0:width].astype(np.uint64)
    frame = np.zeros((height, width, 4), dtype=np.uint8)
    word = np.uint64(0xFFFFFFFF)
    for c in range(3):
        salt = np.uint64(seed * 3 + c) * np.uint64(0xC2B2AE3D)
        k = (x * np.uint64(0x9E3779B1) + y * np.uint64(0x85EBCA77) + salt) & word
        k = ((k ^ (k >> np.uint64(15))) * np.uint64(0x2C1B3C6D)) & word
        noise = ((k ^ (k >> np.uint64(12))) % np.uint64(2 * amplitude + 1)).astype(np.int64)
        ramp = (x.astype(np.int64) // (3 + c) + y.astype(np.int64) // (5 + c)) % 200
        frame[..., c] = np.clip(78 + np.abs(ramp - 100) + noise - amplitude, 0, 255)
    return frame


def _drawing(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased strokes on white (drawn 4x larger, then downscaled): smooth edges whose
    pixels repeat one row up and one on, as in a vector logo."""
    from PIL import Image, ImageDraw

    k = 4
    image = Image.new("RGB", (width * k, height * k), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(150):
        x, y = int(rng.integers(0, k * width)), int(rng.integers(0, k * height))
        r = int(rng.integers(20, 60 * k))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        stroke = int(rng.integers(k, 6 * k))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), outline=fill, width=stroke)
        else:
            end = (x + int(rng.integers(-r, r)), y + int(rng.integers(-r, r)))
            draw.line((x, y, *end), fill=fill, width=stroke)
    return _bgrx(np.asarray(image.resize((width, height), Image.Resampling.LANCZOS)))


def varied_frames(images: dict[str, np.ndarray], seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """The frames described in the module docstring, as (name, BGRX array)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, frame in images.items():
        yield name, frame
        height, width = frame.shape[:2]
        for k in range(3):
            h, w = int(rng.integers(height // 3, height)), int(rng.integers(width // 3, width))
            y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            yield f"{name}/crop{k}_{w}x{h}", np.ascontiguousarray(frame[y : y + h, x : x + w])
        rgb = Image.fromarray(np.ascontiguousarray(frame[..., 2::-1]))
        for scale in (0.5, 0.75, 1.33):
            size = (int(width * scale), int(height * scale))
            yield (
                f"{name}/scale{scale}",
                _bgrx(np.asarray(rgb.resize(size, Image.Resampling.BILINEAR))),
            )
    photos = [f for n, f in images.items() if "photo" in n]
    for name, frame in images.items():
        if photos and "photo" not in name and frame.shape[0] >= 700 and frame.shape[1] >= 1100:
            mixed = frame.copy()
            mixed[200:700, 300:1100] = photos[0][:500, :800]
            yield f"{name}/with_photo", mixed
    for width, height in _DESKTOP_SIZES:
        yield f"synthetic_desktop_{width}x{height}", _desktop(width, height, rng)
    for width, height in ((1920, 1080), (1280, 800)):
        yield f"drawing_{width}x{height}", _drawing(width, height, rng)
    for amplitude in (6, 16):
        yield f"grain{amplitude}_1600x900", grain_frame(900, 1600, amplitude, seed)
    noise = rng.integers(0, 256, (300, 500, 4), dtype=np.uint8)
    noise[..., 3] = 0
    yield "noise_500x300", noise
    yield "flat_900x700", np.full((700, 900, 4), 77, dtype=np.uint8)


def _server_sizes(frame: np.ndarray, band_px: int, window: int) -> dict[str, int | None]:
    """Stream bytes of ``frame`` as the server encodes a full update of it, per contender."""
    import encoders
    from encoders.lz import api as lz_api
    from spiceserver.protocol.enums import ImageCompression
    from spiceserver.region import split_rows
    from spiceserver.server.channels.display.encode import glz_stacks
    from spiceserver.server.codecs import ImageEncoder, encode_stack
    from spiceserver.sources.base import Rect

    height, width = frame.shape[:2]
    rects = split_rows(Rect(0, 0, width, height), band_px)
    bands = [np.ascontiguousarray(frame[r.y : r.bottom]) for r in rects]
    sizes: dict[str, int | None] = {"quic": len(encode_stack(bands, "quic").body[-1])}

    class _Always(encoders._lanes.Pacer):
        def wanted(self) -> bool:
            return True

    pacer, lane_min = lz_api._stack_pacer, lz_api.STACK_LANE_MIN_PIXELS
    try:
        lz_api.STACK_LANE_MIN_PIXELS = 1 << 62
        sizes["lz"] = len(encode_stack(bands, "lz").body[-1])
        lz_api.STACK_LANE_MIN_PIXELS, lz_api._stack_pacer = 2, _Always()
        sizes["lz_2lanes"] = len(encode_stack(bands, "lz").body[-1])
    finally:
        lz_api._stack_pacer, lz_api.STACK_LANE_MIN_PIXELS = pacer, lane_min
    sizes["glz"] = None
    if width * height <= window:
        encoder = ImageEncoder(ImageCompression.AUTO_GLZ, encoders.GlzDictionary(window))
        glz = 0
        for stack in glz_stacks(rects, ["glz"] * len(rects), encoder.glz_fits):
            image, _ = encoder.encode_glz_stack([bands[i] for i in stack])
            glz += len(image.body[-1])
        sizes["glz"] = glz
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m encoders.bench_bytes", description=__doc__)
    parser.add_argument("--window", type=int, default=3_145_728, help="GLZ window, pixels")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--refcodec", default=None, help="the refcodec folder (built)")
    parser.add_argument("images", nargs="*", type=Path)
    args = parser.parse_args(argv)
    rc_mod: Any = _refcodec(args.refcodec)
    rc = rc_mod.RefCodec("o2")
    import encoders

    encoders.warmup()
    band_px, _ = _server_layout()
    paths = args.images or sorted((_HERE.parent / "tests/data/corpus").glob("*.png"))
    images = {path.stem: rc_mod.load_frame(path) for path in paths}
    contenders = ("quic", "lz", "lz_2lanes", "glz")
    print(f"# ours/C bytes as the server encodes (bands of {band_px} px, GLZ window {args.window})")
    print(f"{'frame':46} {'pixels':>9} " + " ".join(f"{c:>9}" for c in contenders))
    worst: dict[str, tuple[float, str]] = {}
    for name, frame in varied_frames(images, args.seed):
        ours = _server_sizes(frame, band_px, args.window)
        c_sizes = {"quic": rc.encode("quic", frame), "lz": rc.encode("lz", frame)}
        c_sizes["lz_2lanes"] = c_sizes["lz"]
        cells = []
        for contender in contenders:
            size = ours[contender]
            if size is None:
                cells.append(f"{'-':>9}")
                continue
            if contender == "glz":
                with rc.glz_dictionary(args.window) as d:
                    c_sizes["glz"] = d.encode(frame)
            ratio = size / c_sizes[contender]
            cells.append(f"{ratio:9.4f}")
            if ratio > worst.get(contender, (0.0, ""))[0]:
                worst[contender] = (ratio, name)
        print(f"{name:46} {frame.shape[0] * frame.shape[1]:9,} " + " ".join(cells), flush=True)
    for contender, (ratio, name) in worst.items():
        verdict = "ok" if ratio <= 1.0 else "ABOVE C"
        print(f"# worst {contender:9} {ratio:.4f}  {name}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
