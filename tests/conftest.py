"""Shared fixtures: paths to the shared corpus, and a server on a free loopback port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SPICESERVER_SHARED", ROOT.parent / "shared"))
CORPUS = SHARED / "corpus"


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"no shared corpus at {CORPUS}")
    return CORPUS


def run(coro: object, timeout: float = 60.0) -> object:
    """Run a coroutine on asyncio, or on uvloop with USE_UVLOOP=1, bounded in time."""
    import asyncio

    async def bounded() -> object:
        async with asyncio.timeout(timeout):
            return await coro  # type: ignore[misc]

    if os.environ.get("USE_UVLOOP") == "1":
        import uvloop

        return uvloop.run(bounded())
    return asyncio.run(bounded())
