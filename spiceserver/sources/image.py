"""A still image (PNG, JPEG or .npy) as a source."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spiceserver.sources.base import FramebufferSource

__all__ = ["ImageSource", "load_image"]


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as a B, G, R, X ``uint8`` array (X = 0).

    ``.npy`` files hold either that layout already (H, W, 4) or RGB (H, W, 3).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"{path}: expected uint8 (H, W, 3|4), got {array.dtype} {array.shape}")
        if array.shape[2] == 4:
            return np.ascontiguousarray(array)
        rgb = array
    else:
        from PIL import Image

        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    frame = np.zeros((rgb.shape[0], rgb.shape[1], 4), dtype=np.uint8)
    frame[..., 0] = rgb[..., 2]
    frame[..., 1] = rgb[..., 1]
    frame[..., 2] = rgb[..., 0]
    return frame


class ImageSource(FramebufferSource):
    """Shows one image, still."""

    kind = "image"

    def __init__(self, path: str | Path) -> None:
        frame = load_image(path)
        super().__init__(frame.shape[1], frame.shape[0])
        self.frame = frame
        self.path = Path(path)
