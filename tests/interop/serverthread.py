"""Run a SpiceServer on its own event loop thread, for tests driving blocking real clients."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from spiceserver import FramebufferSource, SpiceServer

T = TypeVar("T")


class ServerThread:
    """``with ServerThread(source, password=...) as st: st.port``; ``st.call(fn)`` on the loop."""

    def __init__(self, source: FramebufferSource, **options: Any) -> None:
        options.setdefault("port", 0)
        self.source = source
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.server: SpiceServer | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="spice-server",
                                        daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.server = SpiceServer(self.source, **self.options)
        self.run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.server is not None:
                self.run(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def uri(self) -> str:
        return f"spice://127.0.0.1:{self.port}"

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the loop thread (where the source and server live)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def invoke() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiting test
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(invoke)
        return future.result(timeout)
