"""A server on its own thread for tests of SPICE clients (the engine of the pytest plugin).

Client tests are usually blocking code driving a client process, so the server runs on its
own event loop thread and every method here is safe to call from the test's thread::

    with RunningServer(NumpySource(640, 480)) as spice:
        launch_client(spice.uri_with_password)
        spice.wait_for_event("link", channel="display")
        version = spice.push(frame)
        spice.wait_client_frame(version)       # the client has drawn ``frame``
        spice.wait_for_event("key", key="A", pressed=True)

Async tests (on any loop) await the ``*_async`` twins instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np

from spiceserver.record import Event, MemoryRecorder
from spiceserver.server import SpiceServer
from spiceserver.server.channels.display import DisplayHandler
from spiceserver.sources import FramebufferSource, NumpySource, Rect, source_from_spec

__all__ = ["RunningServer", "make_source"]

T = TypeVar("T")

#: Every wait is bounded; a test that forgets a timeout still ends.
DEFAULT_TIMEOUT = 20.0


def make_source(source: FramebufferSource | str | np.ndarray | None) -> FramebufferSource:
    """A source from an object, a CLI spec (``pattern``, ``image:PATH``, ``scenario:FILE``) or
    a BGRX frame (served by a :class:`NumpySource`); None is the default test pattern."""
    if source is None:
        return source_from_spec("pattern")
    if isinstance(source, str):
        return source_from_spec(source)
    if isinstance(source, np.ndarray):
        return NumpySource(frame=source)
    return source


class RunningServer:
    """A :class:`~spiceserver.SpiceServer` on a free loopback port, recording client events.

    ``options`` are :class:`~spiceserver.config.ServerConfig` fields; by default a random
    password is set (see :attr:`password` and :attr:`uri_with_password`) and encoders warm up
    before the first client, so no frame waits on compilation.
    """

    def __init__(
        self, source: FramebufferSource | str | np.ndarray | None = None, **options: Any
    ) -> None:
        self.source = make_source(source)
        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", 0)
        if not options.get("disable_ticketing"):
            options.setdefault("password", secrets.token_urlsafe(12))
        self.password: str | None = options.get("password")
        self.recorder = MemoryRecorder()
        self._options = options
        self.loop = asyncio.new_event_loop()
        self.server: SpiceServer | None = None
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="spiceserver-test", daemon=True
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RunningServer:
        self._thread.start()

        async def start() -> SpiceServer:
            server = SpiceServer(self.source, recorders=[self.recorder], **self._options)
            await server.start()
            await server.encoders_ready()  # tests see the configured codec from the first frame
            return server

        try:
            self.server = self.run(start(), timeout=120.0)  # a cold numba cache compiles here
        except BaseException:
            self._stop_loop()
            raise
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            if self.server is not None:
                self.run(self.server.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        assert self.server is not None, "not started"
        return self.server.port

    @property
    def uri(self) -> str:
        """``spice://127.0.0.1:PORT`` (give the client :attr:`password` separately)."""
        return f"spice://127.0.0.1:{self.port}"

    @property
    def uri_with_password(self) -> str:
        """The URI with ``?password=`` (remote-viewer and spice-gtk accept it)."""
        if self.password is None:
            return self.uri
        return f"{self.uri}?password={quote(self.password, safe='')}"

    # ------------------------------------------------------------------ running code there

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = DEFAULT_TIMEOUT) -> T:
        """Run a coroutine on the server's loop and wait (bounded) for its result."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def call(self, fn: Callable[[], T], timeout: float = DEFAULT_TIMEOUT) -> T:
        """Run ``fn`` on the loop thread, where the source and the server live."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def invoke() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiting test
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(invoke)
        return future.result(timeout)

    async def _on_server_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await, from any other loop, a coroutine that runs on the server's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    # ------------------------------------------------------------------ recorded events

    @property
    def events(self) -> list[Event]:
        """A snapshot of every recorded client event so far (see :mod:`spiceserver.record`)."""
        return self.call(lambda: list(self.recorder.events))

    def wait_for_event(
        self,
        event: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        start: int = 0,
        where: Callable[[Event], bool] | None = None,
        **fields: Any,
    ) -> Event:
        """The first recorded event (from index ``start``) named ``event`` whose fields equal
        ``fields`` and that satisfies ``where``; TimeoutError after ``timeout`` seconds."""
        return self.run(self._wait_event(event, fields, where, start, timeout), timeout + 5)

    async def wait_for_event_async(
        self,
        event: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        start: int = 0,
        where: Callable[[Event], bool] | None = None,
        **fields: Any,
    ) -> Event:
        """:meth:`wait_for_event` for async tests, awaitable on any event loop."""
        return await self._on_server_loop(self._wait_event(event, fields, where, start, timeout))

    def _wait_event(
        self,
        name: str | None,
        fields: dict[str, Any],
        where: Callable[[Event], bool] | None,
        start: int,
        timeout: float,
    ) -> Coroutine[Any, Any, Event]:
        def matches(event: Event) -> bool:
            return (
                (name is None or event.get("event") == name)
                and all(event.get(k) == v for k, v in fields.items())
                and (where is None or where(event))
            )

        return self.recorder.wait_for(matches, start=start, timeout=timeout)

    # ------------------------------------------------------------------ frames

    def push(self, frame: np.ndarray, rect: Rect | tuple[int, int, int, int] | None = None) -> int:
        """Show ``frame`` (BGRX, uint8): the whole surface (a new size re-creates it), or
        the pixels for ``rect`` = (x, y, width, height) when the source is a NumpySource.
        Returns the source version to pass to :meth:`wait_client_frame`."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)

        def apply() -> int:
            if rect is not None:
                if not isinstance(self.source, NumpySource):
                    raise TypeError("push(rect=...) needs a NumpySource")
                self.source.update(frame, rect if isinstance(rect, Rect) else Rect(*rect))
            elif isinstance(self.source, NumpySource) and frame.shape == self.source.frame.shape:
                self.source.update(frame)
            else:
                self.source.replace_frame(frame.copy())
            return self.source.version

        return self.call(apply)

    @property
    def version(self) -> int:
        """The source's current version (every change so far)."""
        return self.call(lambda: self.source.version)

    def wait_client_frame(
        self, version: int | None = None, *, timeout: float = DEFAULT_TIMEOUT, clients: int = 1
    ) -> None:
        """Until at least ``clients`` display channels are connected and each has *handled*
        the pixels of source ``version`` (default: the current one).

        The server first waits until those pixels were sent, then PINGs the display channel
        and waits for the PONG: a client answers it only after the messages before it, the
        drawing included.
        """
        self.run(self._wait_frame(version, clients, timeout), timeout + 5)

    async def wait_client_frame_async(
        self, version: int | None = None, *, timeout: float = DEFAULT_TIMEOUT, clients: int = 1
    ) -> None:
        """:meth:`wait_client_frame` for async tests, awaitable on any event loop."""
        await self._on_server_loop(self._wait_frame(version, clients, timeout))

    async def _wait_frame(self, version: int | None, clients: int, timeout: float) -> None:
        assert self.server is not None
        server = self.server
        target = self.source.version if version is None else version
        async with asyncio.timeout(timeout):
            while True:
                displays = [
                    c.handler
                    for c in list(server.context.connections)
                    if isinstance(c.handler, DisplayHandler) and not c.closed
                ]
                if len(displays) >= clients:
                    break
                # Links and DISPLAY_INITs are recorded: look again after the next event.
                await self.recorder.wait_for(
                    lambda e: True, start=len(self.recorder), timeout=timeout
                )
            await asyncio.gather(*(self._handled(display, target) for display in displays))

    @staticmethod
    async def _handled(display: DisplayHandler, version: int) -> None:
        await display.wait_sent(version)
        await display.round_trip()

    def disconnect_clients(self) -> None:
        """End every client session (the clients see their connections close)."""
        assert self.server is not None
        self.call(self.server.disconnect_clients)
