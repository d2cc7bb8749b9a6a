"""Fuzzing the parsers: any bytes give a parsed result or one of our protocol errors.

"Parsed, or a documented error — nothing else" (h11's fuzz rule): no struct.error,
IndexError, ValueError or KeyError may escape the protocol layer, whatever a client sends.
The budget is bounded (hypothesis ``max_examples``) so the suite stays fast; set
``SPICESERVER_FUZZ_EXAMPLES`` for a longer run.
"""

from __future__ import annotations

import contextlib
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiceserver.crypto import generate_key, public_key_der
from spiceserver.errors import LinkRefused, ProtocolError
from spiceserver.protocol.channel import ChannelLimits
from spiceserver.protocol.cursor import CursorChannel
from spiceserver.protocol.display import DisplayChannel
from spiceserver.protocol.inputs import InputsChannel
from spiceserver.protocol.link import LinkProtocol
from spiceserver.protocol.main import MainChannel
from spiceserver.protocol.messages import REGISTRY
from tests.fakeclient import link_message

EXAMPLES = int(os.environ.get("SPICESERVER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = generate_key()
CHANNELS = {
    1: lambda: MainChannel(
        session_id=1,
        channels=((2, 0),),
        mini_header=True,
        limits=ChannelLimits(max_message_size=4096),
    ),
    2: lambda: DisplayChannel(mini_header=True, limits=ChannelLimits(max_message_size=4096)),
    3: lambda: InputsChannel(mini_header=True, limits=ChannelLimits(max_message_size=4096)),
    4: lambda: CursorChannel(mini_header=True, limits=ChannelLimits(max_message_size=4096)),
}
KNOWN_TYPES = sorted({t for (direction, _, t) in REGISTRY if direction == "client"})


def feed_link(data: bytes, chunk: int) -> None:
    link = LinkProtocol()
    try:
        for i in range(0, len(data), chunk):
            event = link.receive_data(data[i : i + chunk])
            if event is not None and not link.done and not link.closed:
                if hasattr(event, "channel_type"):
                    link.accept(public_key_der(KEY), common_caps=[0, 1, 3], channel_caps=[])
                    event = link.receive_data(b"")
                if event is not None and hasattr(event, "ciphertext"):
                    link.finish()
    except LinkRefused:
        assert link.closed


@FUZZ
@given(st.binary(max_size=600), st.integers(1, 64))
def test_link_stage_random_bytes(data: bytes, chunk: int) -> None:
    feed_link(data, chunk)


@FUZZ
@given(
    st.binary(max_size=200),
    st.integers(0, 40),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 255),
    st.integers(1, 64),
)
def test_link_stage_mutated_valid_messages(
    tail: bytes, cut: int, connection_id: int, channel_type: int, chunk: int
) -> None:
    valid = link_message(channel_type, connection_id=connection_id)
    data = bytearray(valid[: len(valid) - cut % len(valid)] if cut else valid)
    feed_link(bytes(data) + tail, chunk)


message_strategy = st.tuples(
    st.sampled_from(KNOWN_TYPES) | st.integers(0, 0xFFFF),
    st.binary(max_size=48),
)


@FUZZ
@given(
    st.sampled_from(sorted(CHANNELS)),
    st.lists(message_strategy, max_size=12),
    st.binary(max_size=16),
    st.integers(1, 97),
)
def test_channel_parsers_random_messages(
    channel_type: int, messages: list[tuple[int, bytes]], junk: bytes, chunk: int
) -> None:
    channel = CHANNELS[channel_type]()
    data = b"".join(struct.pack("<HI", t, len(body)) + body for t, body in messages) + junk
    try:
        for i in range(0, len(data), chunk):
            channel.receive_data(data[i : i + chunk], now=0.0)
            channel.events_received()
            channel.data_to_send()
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=400))
def test_full_header_framing_random_bytes(data: bytes) -> None:
    channel = InputsChannel(mini_header=False, limits=ChannelLimits(max_message_size=4096))
    with contextlib.suppress(ProtocolError):
        channel.receive_data(data, now=0.0)
