"""Framebuffer sources: where the served pixels come from."""

from __future__ import annotations

import re

from spiceserver.sources.base import (
    FramebufferSource,
    Head,
    Rect,
    SourceListener,
    default_cursor,
)
from spiceserver.sources.image import ImageSource, load_image
from spiceserver.sources.numpy_source import NumpySource
from spiceserver.sources.pattern import PatternSource
from spiceserver.sources.scenario import ScenarioSource, ScenarioState

__all__ = [
    "FramebufferSource",
    "Head",
    "ImageSource",
    "NumpySource",
    "PatternSource",
    "Rect",
    "ScenarioSource",
    "ScenarioState",
    "SourceListener",
    "default_cursor",
    "load_image",
    "parse_heads",
    "source_from_spec",
]


_HEAD = re.compile(r"(\d{1,5})x(\d{1,5})(?:\+(\d{1,5})\+(\d{1,5}))?")


def parse_heads(text: str) -> tuple[Head, ...] | None:
    """Monitor heads from ``WxH[+X+Y],...`` (None if it does not parse).  A head without a
    position goes right of the previous one, top-aligned (as spice-gtk lines up windows)."""
    heads: list[Head] = []
    for item in text.split(","):
        match = _HEAD.fullmatch(item.strip())
        if match is None:
            return None
        width, height = int(match[1]), int(match[2])
        if match[3] is None:
            x = max((h.x + h.width for h in heads), default=0)
            heads.append(Head(x, 0, width, height))
        else:
            heads.append(Head(int(match[3]), int(match[4]), width, height))
    return tuple(heads)


def source_from_spec(spec: str, *, max_fps: float = 30.0) -> FramebufferSource:
    """Build a source from a CLI spec: ``pattern``, ``pattern:WxH``, ``pattern:HEADS``
    (several monitors, ``WxH[+X+Y],...``: :func:`parse_heads`), ``image:PATH``,
    ``scenario:FILE`` (a JSON scenario, see :mod:`spiceserver.sources.scenario`) or
    ``desktop[:DISPLAY]`` (the running X server; ``$DISPLAY`` by default) or
    ``gnome[:CONNECTOR]`` (a monitor of the GNOME Wayland session; the primary by default)."""
    kind, _, arg = spec.partition(":")
    if kind == "gnome":
        from spiceserver.sources.gnome import GnomeSource  # D-Bus and GStreamer only when needed

        return GnomeSource(arg or None, max_fps=max_fps)
    if kind == "desktop":
        from spiceserver.sources.desktop import DesktopSource  # python-xlib only when needed

        return DesktopSource(
            f":{arg}" if arg and not arg.startswith(":") and arg.isdigit() else arg or None,
            max_fps=max_fps,
        )
    if kind == "pattern":
        if not arg:
            return PatternSource()
        heads = parse_heads(arg)
        if heads is None:
            raise ValueError(
                f"bad size in source {spec!r}: expected pattern:WIDTHxHEIGHT, e.g. "
                "pattern:1280x800, or heads pattern:WxH[+X+Y],WxH[+X+Y],... e.g. "
                "pattern:640x480,800x600 (side by side) or pattern:640x480+0+0,640x480+0+480"
            )
        if len(heads) == 1:
            return PatternSource(heads[0].width, heads[0].height)
        return PatternSource(heads=heads)
    if kind == "image" and arg:
        return ImageSource(arg)
    if kind == "scenario" and arg:
        return ScenarioSource.from_file(arg)
    raise ValueError(
        f"unknown source {spec!r} (pattern, pattern:WxH[,WxH...], image:PATH, scenario:FILE, "
        "desktop[:DISPLAY], gnome[:CONNECTOR])"
    )
