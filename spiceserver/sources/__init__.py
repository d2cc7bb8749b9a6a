"""Framebuffer sources: where the served pixels come from."""

from __future__ import annotations

from spiceserver.sources.base import FramebufferSource, Rect, SourceListener, default_cursor
from spiceserver.sources.image import ImageSource, load_image
from spiceserver.sources.numpy_source import NumpySource
from spiceserver.sources.pattern import PatternSource
from spiceserver.sources.scenario import ScenarioSource, ScenarioState

__all__ = [
    "FramebufferSource",
    "ImageSource",
    "NumpySource",
    "PatternSource",
    "Rect",
    "ScenarioSource",
    "ScenarioState",
    "SourceListener",
    "default_cursor",
    "load_image",
    "source_from_spec",
]


def source_from_spec(spec: str, *, max_fps: float = 30.0) -> FramebufferSource:
    """Build a source from a CLI spec: ``pattern``, ``pattern:WxH``, ``image:PATH``,
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
        if arg:
            width, sep, height = arg.partition("x")
            if not (sep and width.isdigit() and height.isdigit()):
                raise ValueError(
                    f"bad size in source {spec!r}: expected pattern:WIDTHxHEIGHT, "
                    "e.g. pattern:1280x800"
                )
            return PatternSource(int(width), int(height))
        return PatternSource()
    if kind == "image" and arg:
        return ImageSource(arg)
    if kind == "scenario" and arg:
        return ScenarioSource.from_file(arg)
    raise ValueError(
        f"unknown source {spec!r} (pattern, pattern:WxH, image:PATH, scenario:FILE, "
        "desktop[:DISPLAY], gnome[:CONNECTOR])"
    )
