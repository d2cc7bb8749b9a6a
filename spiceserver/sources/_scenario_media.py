"""Synthetic pictures for scenario steps, deterministic: a photographic still and a video.

``{"photo": [x, y, w, h], "seed": N}`` pastes a photo-like still there (a smooth colour
gradient with sensor-like noise: what the JPEG classifier calls smooth, ``codecs.classify``),
rendered once at compile time and shown like ``{"show": ..., "at": [x, y]}``.

``{"video": [x, y, w, h], "frames": K, "fps": F, "seed": N, "motion": [dx, dy], "trail":
COLOUR}`` plays K frames of a synthetic clip at F frames a second (default 30) in that
rectangle: the same kind of picture, panning 4 pixels a frame (a 64-pixel cycle), so every
frame changes all of it, like a video; with ``motion`` the rectangle moves (dx, dy) pixels a
frame and what it leaves is filled with COLOUR (default black).  Frame k is the same every
run: a server streaming it can be compared pixel by pixel with :func:`video_frame`.  Only
the clip's texture (w + 64 by h) is kept in memory, counted with the scenario's images.

Cursor image files load here too (``_load_cursor_image``).  Pure: no painting into a live
frame, no sleeping (``spiceserver.sources.scenario`` does that).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spiceserver.sources.base import Rect

if TYPE_CHECKING:
    from spiceserver.sources._scenario_script import Compiler

__all__ = ["PAN", "PAN_CYCLE", "Video", "VideoFrame", "photo_pixels", "video_frame"]

#: Pixels the clip pans each frame, and the cycle after which its picture repeats.
PAN = 4
PAN_CYCLE = 64
_MAX_SEED = 2**32 - 1
_MAX_FPS = 240.0


def photo_pixels(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like BGRX picture: three colour ramps at different angles, plus noise."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 4), np.uint8)
    for c, (fx, fy) in enumerate(((0.9, 0.2), (0.3, 0.8), (0.5, 0.5))):
        base = 40 + 170 * (fx * x / max(1, width) + fy * y / max(1, height)) / (fx + fy)
        out[..., c] = np.clip(base + rng.normal(0, 3, (height, width)), 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Video:
    """The compiled ``video`` step."""

    where: str
    rect: Rect
    frames: int
    fps: float
    move: tuple[int, int]
    fill: tuple[int, int, int]
    #: The clip's picture, PAN_CYCLE pixels wider than the rectangle (read-only).
    texture: np.ndarray

    def at(self, k: int) -> Rect:
        """Where frame ``k`` is drawn."""
        dx, dy = self.move
        return Rect(self.rect.x + k * dx, self.rect.y + k * dy, self.rect.width, self.rect.height)


@dataclass(frozen=True, slots=True, eq=False)
class VideoFrame:
    """Timeline operation: frame ``k`` of ``video``."""

    video: Video
    k: int


def video_frame(video: Video, k: int) -> np.ndarray:
    """Frame ``k``'s pixels (a view of the texture)."""
    shift = (PAN * k) % PAN_CYCLE
    return video.texture[:, shift : shift + video.rect.width]


def paint_video(op: VideoFrame, frame: np.ndarray) -> list[Rect]:
    """Draw frame ``op.k`` into ``frame`` (after frame k - 1); the rectangles that changed."""
    video, k = op.video, op.k
    rect = video.at(k)
    damage = [rect]
    if k > 0 and video.move != (0, 0):
        old = video.at(k - 1)
        frame[old.y : old.bottom, old.x : old.right] = (*video.fill, 0)
        damage.insert(0, old)
    frame[rect.y : rect.bottom, rect.x : rect.right] = video_frame(video, k)
    return damage


def run_video(video: Video, start: float) -> Iterator[VideoFrame | float]:
    """The step's frames and the times between them (seconds from the scenario's start, as
    ``At`` marks), frame k at start + k / fps, the last one held for 1 / fps."""
    for k in range(video.frames):
        if k:
            yield start + k / video.fps
        yield VideoFrame(video, k)
    yield start + video.frames / video.fps


def check_video_fits(video: Video, width: int, height: int) -> str | None:
    """Why the clip does not fit a ``width`` x ``height`` surface (None: it does); its
    motion is a straight line, so its two ends decide."""
    for k in (0, video.frames - 1):
        r = video.at(k)
        if r.x < 0 or r.y < 0 or r.right > width or r.bottom > height:
            return (
                f"frame {k} at {[r.x, r.y, r.width, r.height]} does not fit the "
                f"{width}x{height} surface"
            )
    return None


# ---------------------------------------------------------------------- compiling


def _rect(compiler: Compiler, value: Any, where: str, what: str) -> Rect:
    ints = isinstance(value, list) and len(value) == 4
    if not (ints and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise compiler.error(where, f"{what} is [x, y, width, height], got {value!r}")
    x, y, width, height = value
    if x < 0 or y < 0:
        raise compiler.error(where, f"{what} {value} needs x, y >= 0")
    compiler.check_area(width, height, where, what)
    return Rect(x, y, width, height)


def _preload(compiler: Compiler, pixels: int, where: str) -> None:
    from spiceserver.sources._scenario_script import MAX_PRELOAD_PIXELS

    compiler.preloaded += pixels
    if compiler.preloaded > MAX_PRELOAD_PIXELS:
        raise compiler.error(
            where, f"the scenario's images hold more than {MAX_PRELOAD_PIXELS} pixels in all"
        )


def compile_photo(compiler: Compiler, step: dict[str, Any], where: str) -> tuple[Any, ...]:
    """``photo`` → the arguments of a ``Show`` step (where, image, at)."""
    rect = _rect(compiler, step["photo"], where, "photo")
    seed = compiler.integer(step.get("seed", 1), where, "seed", 0, _MAX_SEED)
    _preload(compiler, rect.area, where)
    image = photo_pixels(rect.width, rect.height, seed)
    image.setflags(write=False)
    return where, image, (rect.x, rect.y)


def compile_video(compiler: Compiler, step: dict[str, Any], where: str) -> Video:
    from spiceserver.sources._scenario_script import MAX_OPERATIONS

    rect = _rect(compiler, step["video"], where, "video")
    frames = compiler.integer(step.get("frames", 30), where, "frames", 1, MAX_OPERATIONS)
    fps = compiler.number(step.get("fps", 30.0), where, "fps", 0.0, _MAX_FPS)
    if fps <= 0:
        raise compiler.error(where, "fps must be above 0")
    seed = compiler.integer(step.get("seed", 1), where, "seed", 0, _MAX_SEED)
    move = step.get("motion", [0, 0])
    if not (isinstance(move, list) and len(move) == 2 and all(isinstance(v, int) for v in move)):
        raise compiler.error(where, f"motion is [dx, dy] pixels a frame, got {move!r}")
    fill = compiler.colour(step.get("trail", [0, 0, 0]), where)
    _preload(compiler, (rect.width + PAN_CYCLE) * rect.height, where)
    texture = photo_pixels(rect.width + PAN_CYCLE, rect.height, seed)
    texture.setflags(write=False)
    return Video(where, rect, frames, fps, (move[0], move[1]), fill, texture)


def _load_cursor_image(path: Path) -> np.ndarray:
    """A cursor image as straight-alpha B, G, R, A ``uint8`` (height, width, 4).

    PNG and other PIL formats keep their alpha (none: opaque); a ``.npy`` file holds that
    layout already, like :class:`~spiceserver.CursorShape`'s pixels.
    """
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 4:
            raise ValueError(f"expected uint8 (H, W, 4) B,G,R,A, got {array.dtype} {array.shape}")
        return np.ascontiguousarray(array)
    from PIL import Image

    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"))
    return np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
