"""The ``spiceserver`` pytest plugin: a SPICE server per test, for testing SPICE clients.

Installed with the package (entry point ``pytest11: spiceserver``).  The ``spice_server``
fixture starts a server on a free loopback port and yields a
:class:`~spiceserver.testing.RunningServer`: its URI and password, the recorded client events
(waitable, and awaitable from async tests), ``push`` for frames and ``wait_client_frame`` to
wait until the client has handled one.  Choose the source and options with a marker::

    @pytest.mark.spice_server(source="scenario:tests/login.json", image_compression="quic")
    def test_client_shows_login(spice_server):
        ...

``source`` is a CLI spec (``pattern``, ``pattern:WxH``, ``image:PATH``, ``scenario:FILE``), a
source object or a BGRX numpy frame; the other keywords are ServerConfig fields.  For several
servers in one test, or options computed in the test, use ``spice_server_factory(...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from spiceserver.testing import RunningServer

__all__ = ["spice_server", "spice_server_factory"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "spice_server(source=..., **options): the spice_server fixture's source and "
        "ServerConfig options",
    )


@pytest.fixture
def spice_server_factory() -> Iterator[Callable[..., RunningServer]]:
    """``start(source=None, **options)`` → a started RunningServer, closed after the test."""
    from spiceserver.testing import RunningServer  # the server only when a test asks for it

    started: list[RunningServer] = []

    def start(source: Any = None, **options: Any) -> RunningServer:
        server = RunningServer(source, **options).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.close()


@pytest.fixture
def spice_server(
    request: pytest.FixtureRequest, spice_server_factory: Callable[..., RunningServer]
) -> RunningServer:
    """A SPICE server for this test (see the module docstring for the marker)."""
    marker = request.node.get_closest_marker("spice_server")
    options = dict(marker.kwargs) if marker is not None else {}
    return spice_server_factory(options.pop("source", None), **options)
