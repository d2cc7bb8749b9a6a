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


def run(coro: object, timeout: float = 60.0, loop: str | None = None) -> object:
    """Run a coroutine on asyncio or uvloop (default: USE_UVLOOP=1 picks uvloop), bounded."""
    import asyncio

    async def bounded() -> object:
        async with asyncio.timeout(timeout):
            return await coro  # type: ignore[misc]

    if loop is None:
        loop = "uvloop" if os.environ.get("USE_UVLOOP") == "1" else "asyncio"
    if loop == "uvloop":
        import uvloop

        return uvloop.run(bounded())
    return asyncio.run(bounded())


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_name(request: pytest.FixtureRequest) -> str:
    """Run a test's scenario on both event loops the server supports."""
    return str(request.param)
