"""Shared fixtures and paths: the test data in ``tests/data/``, and running coroutines on a loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_output(script: str, timeout: float = 60.0) -> str:
    """What ``script`` prints, run by a fresh interpreter from the repository's root (what a
    module imports, say, where this process has imported everything already); fails the
    test with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


#: Test data kept in the repository (see each folder's README for provenance and licences).
DATA = ROOT / "tests" / "data"
#: Five desktop frames (PNG), the codec tests' and benchmarks' realistic inputs.
CORPUS = DATA / "corpus"
#: QUIC golden vectors: the reference C encoder's output for small frames and the corpus.
QUIC_GOLDEN = DATA / "quic"


def data_file(path: Path) -> Path:
    """``path`` (a file under ``tests/data/``), failing the test when it is missing: the data is
    part of the repository, so a missing file is a broken checkout, never a reason to skip."""
    if not path.is_file():
        pytest.fail(f"test data file missing: {path}", pytrace=False)
    return path


@pytest.fixture
def corpus() -> Path:
    """The corpus folder (``tests/data/corpus/``)."""
    data_file(CORPUS / "README.md")
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


async def eventually(condition: object, timeout: float = 10.0, what: str = "") -> None:
    """Until ``condition()`` holds, checked each few milliseconds, for at most ``timeout``
    seconds: for server state that a peer's action changes without an event to wait on
    (a socket closed on the client's side, say)."""
    import asyncio

    for _ in range(int(timeout / 0.005) + 1):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"not within {timeout}s: {what or condition}")
