"""pytest setup for the QUIC tests: make ``tests.reference`` and the helpers importable."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/ and tests/reference are plain folders (no package __init__): put the repository root on
# sys.path so `tests.reference.quic_decode` imports however pytest was started.
_ROOT = Path(__file__).resolve().parents[3]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))
