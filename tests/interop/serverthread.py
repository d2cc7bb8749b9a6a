"""A SpiceServer on its own event loop thread, for tests driving blocking real clients.

This is the test toolkit's :class:`spiceserver.testing.RunningServer` (``st.uri``, ``st.port``,
``st.call(fn)`` on the loop, ``st.run(coro)``, ``st.server``), under the name these tests use.
"""

from spiceserver.testing import RunningServer as ServerThread

__all__ = ["ServerThread"]
