"""pytest setup: make ``tests.reference`` and the helper modules importable."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/ has no package __init__: put the repository root on sys.path so
# `tests.reference.*` and `tests.encoders.*.*_helpers` import however pytest was started.
_ROOT = Path(__file__).resolve().parents[3]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))
