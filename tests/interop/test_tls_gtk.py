"""spice-gtk over TLS: sent from the plain port to the TLS port, frames still pixel-exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spiceserver import NumpySource
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread
from tests.tlsutil import make_tls_files

pytestmark = pytest.mark.interop


def test_spice_gtk_switches_to_tls_and_decodes_exactly(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    frame = np.random.default_rng(7).integers(0, 256, (300, 400, 4), dtype=np.uint8)
    frame[..., 3] = 0
    source = NumpySource(frame=frame)
    with ServerThread(
        source, password="tls-pw", tls_port=0, tls_cert=str(tls.cert), tls_key=str(tls.key)
    ) as st:
        server = st.server
        assert server is not None
        # Only the plain port and the TLS port are given: every channel is refused with
        # NEED_SECURED on the plain port and spice-gtk reconnects it over TLS.
        args = [
            "--tls-port",
            str(server.tls_port),
            "--ca-file",
            str(tls.ca),
            "--cert-subject",
            tls.subject,
        ]
        with GtkClient(st.uri.split("?")[0], "tls-pw", extra_args=args) as client:
            for channel in ("main", "display", "inputs", "cursor"):
                client.wait_channel_open(channel, timeout=30)
            client.wait_for_frame(frame, timeout=30)
            linked = st.call(lambda: [c.secure for c in server.context.connections if c.channel])
            assert linked == [True] * 4
