"""Optional dependencies (the ``pyproject.toml`` extras), imported when first needed."""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from spiceserver.errors import ConfigError

__all__ = ["optional_module"]


@functools.cache
def optional_module(module: str, feature: str, extra: str) -> ModuleType:
    """``module``, imported once; a clear :class:`ConfigError` naming the extra to install
    when it is missing (``feature`` says what needs it)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{feature} need {module}: pip install 'spiceserver[{extra}]'") from exc
