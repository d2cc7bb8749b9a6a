"""Three spice-gtk clients on one pattern server at once, each pixel-exact (real clients).

With ``auto-lz`` every band is LZ or QUIC, so the sessions share encodings through the
server's encode cache; with ``auto-glz`` the box and the counter are GLZ, encoded per session
against each client's own dictionary, while the photographic band (QUIC) is still shared.
"""

from __future__ import annotations

import contextlib

import pytest

from spiceserver import ImageCompression, PatternSource
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

PASSWORD = "three clients"
CLIENTS = 3


@pytest.mark.parametrize("mode", [ImageCompression.AUTO_LZ, ImageCompression.AUTO_GLZ])
def test_three_clients_see_pixel_exact_frames(mode: ImageCompression) -> None:
    source = PatternSource(1024, 768)
    with (
        ServerThread(source, password=PASSWORD, image_compression=mode) as st,
        contextlib.ExitStack() as stack,
    ):
        clients = [stack.enter_context(GtkClient(st.uri, PASSWORD)) for _ in range(CLIENTS)]
        for client in clients:
            client.wait_for("mark", timeout=30)
        for _ in range(3):  # three arbitrary animation frames, frozen one at a time
            for client in clients:
                client.wait_for("invalidate", timeout=10)
            n = st.call(lambda: (source.pause(), source.frame_index)[1])
            for client in clients:
                client.wait_for_frame(source.render(n), timeout=30)
            st.call(source.resume)
        server = st.server
        assert server is not None
        sessions = st.call(lambda: list(server.sessions()))
        assert len(sessions) == CLIENTS
        stats = st.call(lambda: server.context.encode_cache.stats)
        assert stats.hits > 0 and sum(s.metrics.shared_draws for s in sessions) == stats.hits
        if mode is ImageCompression.AUTO_GLZ:
            for session in sessions:
                assert session.metrics.bytes_by_codec["glz"] > 0
                assert session.metrics.bytes_by_codec["quic"] > 0
