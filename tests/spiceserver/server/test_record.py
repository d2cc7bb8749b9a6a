"""The record channel: the sans-I/O state machine, and the whole server in memory.

In memory (tests/memory.py): a MemoryClient links main + record and plays spice-gtk's part
(MODE, START_MARK, one DATA per 10 ms: spice-gtk:src/channel-record.c); the real microphone hub
(its thread, PyAV's Opus decoder) writes into a NumpyRecordSink the test reads.
"""

from __future__ import annotations

import asyncio
import struct
import threading

import numpy as np
import pytest

from spiceserver import NumpySource, SpiceServer
from spiceserver.crypto import generate_key
from spiceserver.errors import DecodeError, UnexpectedMessage
from spiceserver.protocol.enums import (
    AudioDataMode,
    ChannelType,
    LinkError,
    MainServerMsg,
    RecordCap,
    RecordClientMsg,
    RecordServerMsg,
)
from spiceserver.protocol.record import RecordChannel, RecordModeSet, RecordPacket, RecordStarted
from spiceserver.record import MemoryRecorder
from spiceserver.server.audio import OpusEncoder
from spiceserver.server.channels.record import RecordHandler
from spiceserver.server.microphone import MAX_PENDING_BYTES, MAX_PENDING_PACKETS, MicrophoneHub
from spiceserver.sinks.audio import NumpyRecordSink
from spiceserver.sources.audio import ToneSource
from tests.conftest import run
from tests.fakeclient import MessageSplitter, encrypt_ticket, frame, link_message, parse_link_reply
from tests.memory import MemoryClient, session_id

PASSWORD = "record-pw"


def peak_hz(pcm: np.ndarray, rate: int = 48000) -> float:
    mono = pcm.reshape(-1, 2)[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / rate)[int(np.argmax(spectrum))])


def tone_packets(count: int, opus: bool) -> list[bytes]:
    """``count`` 10 ms packets of 440 Hz, as spice-gtk sends them (raw 1920 B, or Opus)."""
    tone = ToneSource(440.0)
    blocks = [tone.block(i) for i in range(count)]
    if not opus:
        return blocks
    encoder = OpusEncoder()
    return [packet for block in blocks if (packet := encoder.encode(block)) is not None]


def mode(mode_: AudioDataMode, time: int = 0) -> bytes:
    return frame(RecordClientMsg.MODE, struct.pack("<IH", time, mode_))


def data(packet: bytes, time: int = 0) -> bytes:
    return frame(RecordClientMsg.DATA, struct.pack("<I", time) + packet)


# ---------------------------------------------------------------------- sans I/O


def test_start_stop_and_the_client_messages_as_events() -> None:
    channel = RecordChannel(mini_header=True, channel_caps=(1 << RecordCap.OPUS,))
    channel.start(1.0)
    assert channel.client_opus
    channel.begin()
    channel.begin()  # once
    channel.receive_data(mode(AudioDataMode.OPUS, 5), 1.0)
    channel.receive_data(frame(RecordClientMsg.START_MARK, struct.pack("<I", 5)), 1.0)
    channel.receive_data(data(b"opus", 5), 1.0)
    channel.end()
    channel.receive_data(data(b"late", 15), 1.0)  # in flight after STOP: dropped
    assert channel.events_received() == [
        RecordModeSet(mode=AudioDataMode.OPUS, time=5),
        RecordStarted(time=5),
        RecordPacket(mode=AudioDataMode.OPUS, time=5, data=b"opus"),
    ]
    out = MessageSplitter().feed(b"".join(bytes(c) for c in channel.data_to_send(2.0)))
    assert [t for t, _ in out] == [3, RecordServerMsg.START, RecordServerMsg.STOP]
    assert out[1][1] == struct.pack("<IHI", 2, 1, 48000)


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([data(b"\0" * 8)], UnexpectedMessage),  # DATA before MODE
        ([mode(AudioDataMode.OPUS)], DecodeError),  # not advertised
        ([mode(AudioDataMode.CELT_0_5_1)], DecodeError),
        ([mode(AudioDataMode.RAW), data(b"\0" * 7)], DecodeError),  # not whole frames
    ],
)
def test_bad_record_messages_raise(messages: list[bytes], error: type[Exception]) -> None:
    channel = RecordChannel(mini_header=True, opus=False)
    channel.begin()
    with pytest.raises(error):
        for message in messages:
            channel.receive_data(message, 0.0)


def test_server_caps_offer_opus_only_with_a_decoder() -> None:
    assert RecordChannel.server_caps(True) == (RecordCap.OPUS,)
    assert RecordChannel.server_caps(False) == ()


# ---------------------------------------------------------------------- in memory


async def record_server(sink: NumpyRecordSink, **options: object) -> SpiceServer:
    server = SpiceServer(
        NumpySource(64, 48),
        password=PASSWORD,
        warmup_encoders=False,
        port=0,
        microphone=sink,
        **options,  # type: ignore[arg-type]
    )
    server.context.keys.fill()
    await server.context.keys.take()
    server.context.keys.fill()
    assert server.context.microphone is not None
    server.context.microphone.start()
    return server


def link_record(
    server: SpiceServer, caps: list[int], port: int = 40001, main: MemoryClient | None = None
) -> tuple[MemoryClient, MemoryClient, tuple[int, ...]]:
    if main is None:
        main = MemoryClient(server)
        assert main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
        (init_type, init), *_ = main.messages()
        assert init_type == MainServerMsg.INIT
        main.send(frame(104))  # ATTACH_CHANNELS
        lists = [body for type_, body in main.messages() if type_ == MainServerMsg.CHANNELS_LIST]
        assert lists == [struct.pack("<I", 4) + bytes([2, 0, 3, 0, 4, 0, 6, 0])]
        sid = session_id(init)
    else:
        sid = server.sessions()[0].id
    record = MemoryClient(server, ("127.0.0.7", port))
    record.send(link_message(ChannelType.RECORD, 0, sid, channel_caps=caps))
    reply = parse_link_reply(record.transport.take())
    assert reply.error == LinkError.OK
    record.send(struct.pack("<I", 1) + encrypt_ticket(reply.public_key, PASSWORD))
    result = record.transport.take()
    assert struct.unpack_from("<I", result)[0] == LinkError.OK
    record._pending += record.splitter.feed(result[4:])
    return main, record, reply.channel_caps


async def keys_ready(server: SpiceServer, count: int) -> None:
    """Wait until ``count`` RSA keys are ready (each link takes one)."""
    keys = server.context.keys
    loop = asyncio.get_running_loop()
    while len(keys._ready) < count:
        keys._ready.append(await loop.run_in_executor(None, generate_key))


@pytest.mark.parametrize("opus", [False, True])
def test_a_tone_from_the_client_reaches_the_numpy_sink(opus: bool) -> None:
    async def scenario() -> None:
        sink = NumpyRecordSink()
        recorder = MemoryRecorder()
        server = await record_server(sink, recorders=[recorder])
        hub = server.context.microphone
        assert hub is not None and hub.opus_available
        caps = [RecordCap.VOLUME, RecordCap.OPUS] if opus else [RecordCap.VOLUME]
        _, record, server_caps = link_record(server, caps)
        assert server_caps == (1 << RecordCap.OPUS,)
        await asyncio.sleep(0)  # the sink's want(True) arrives through call_soon_threadsafe
        types = [t for t, _ in record.messages()]
        assert types == [3, RecordServerMsg.START]
        chosen = AudioDataMode.OPUS if opus else AudioDataMode.RAW
        record.send(mode(chosen) + frame(RecordClientMsg.START_MARK, struct.pack("<I", 0)))
        packets = tone_packets(50, opus)
        record.send(b"".join(data(p, 10 * i) for i, p in enumerate(packets)))
        frames = 480 * len(packets)
        assert await asyncio.to_thread(sink.wait, frames, 10.0)
        pcm = sink.read()
        assert pcm.shape == (frames, 2) and pcm.dtype == np.int16
        assert abs(peak_hz(pcm) - 440) < 2
        # The microphone is let go: STOP, and the record says how much came.
        sink.want(False)
        await recorder.wait_for(lambda e: e["event"] == "record_stop")
        assert [t for t, _ in record.messages()] == [RecordServerMsg.STOP]
        events = [e for e in recorder.events if e["event"].startswith("record_")]
        assert [e["event"] for e in events] == [
            "record_start",
            "record_mode",
            "record_start_mark",
            "record_stop",
        ]
        assert events[1]["mode"] == chosen.name.lower()
        assert events[3]["packets"] == len(packets)
        assert events[3]["bytes"] == sum(len(p) for p in packets)
        await server.close()

    run(scenario())


def test_a_record_flood_stays_bounded() -> None:
    async def scenario() -> None:
        release = threading.Event()
        stalled = threading.Event()

        def slow(frames: np.ndarray) -> None:  # a sink that stops taking audio
            stalled.set()
            release.wait(10)

        sink = NumpyRecordSink(slow)
        server = await record_server(sink)
        hub = server.context.microphone
        assert hub is not None
        main, record, _ = link_record(server, [])
        await asyncio.sleep(0)
        record.send(mode(AudioDataMode.RAW))
        packet = data(bytes(1920))
        # 5 MB of DATA (27 s of audio) as fast as the loop takes it, in reads of 100 messages
        # (under the receive bound and the per-read budget, as a socket's reads are).
        burst = packet * 100
        peak = 0
        started = asyncio.get_running_loop().time()
        for _ in range(26):
            record.send(burst)
            assert record.transport.reading
            peak = max(peak, hub._pending_bytes)
            assert len(hub._pending) <= MAX_PENDING_PACKETS
        elapsed = asyncio.get_running_loop().time() - started
        assert await asyncio.to_thread(stalled.wait, 10)
        assert peak <= MAX_PENDING_BYTES
        assert hub.packets == 2600
        assert hub.dropped >= 2600 - MAX_PENDING_PACKETS - 2
        assert 5_000_000 / elapsed > 2_000_000  # megabytes per second went in, and bounded
        assert not record.transport.closing and not main.transport.closing
        release.set()
        await server.close()

    run(scenario())


def test_bad_audio_closes_only_the_record_channel() -> None:
    async def scenario() -> None:
        sink = NumpyRecordSink()
        recorder = MemoryRecorder()
        server = await record_server(sink, recorders=[recorder])
        hub = server.context.microphone
        assert hub is not None
        main, record, _ = link_record(server, [RecordCap.OPUS])
        await asyncio.sleep(0)
        # Opus garbage: the decoder (hub thread) rejects it, the loop closes the channel.
        record.send(mode(AudioDataMode.OPUS) + data(b"\xff" * 3))
        closed = await recorder.wait_for(lambda e: e["event"] == "disconnect")
        assert closed["channel"] == "record" and "bad microphone audio" in closed["reason"]
        assert record.transport.closing
        assert not main.transport.closing
        assert not hub.listeners
        # The session goes on: a new record channel links, and a bad MODE closes it alone.
        await keys_ready(server, 1)
        _, again, _ = link_record(server, [], port=40002, main=main)
        await asyncio.sleep(0)
        assert [t for t, _ in again.messages()] == [3, RecordServerMsg.START]
        again.send(mode(AudioDataMode.CELT_0_5_1))
        assert again.transport.closing and not main.transport.closing
        await server.close()

    run(scenario())


def test_the_newest_record_channel_has_the_microphone() -> None:
    async def scenario() -> None:
        server = await record_server(NumpyRecordSink())
        await keys_ready(server, 4)
        _, first, _ = link_record(server, [])
        second_main = MemoryClient(server, ("127.0.0.8", 40000))
        assert second_main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
        await asyncio.sleep(0)
        assert [t for t, _ in first.messages()] == [3, RecordServerMsg.START]
        sid = session_id(second_main.messages()[0][1])
        second = MemoryClient(server, ("127.0.0.8", 40001))
        assert second.link(ChannelType.RECORD, PASSWORD, connection_id=sid) == LinkError.OK
        assert [t for t, _ in first.messages()] == [RecordServerMsg.STOP]
        assert [t for t, _ in second.messages()] == [3, RecordServerMsg.START]
        second.transport.close()  # it leaves: the first gets the microphone back
        assert [t for t, _ in first.messages()] == [RecordServerMsg.START]
        await server.close()

    run(scenario())


def test_record_is_offered_only_with_a_sink_and_not_with_record_off() -> None:
    async def scenario() -> None:
        plain = SpiceServer(NumpySource(8, 8), password=PASSWORD, warmup_encoders=False)
        assert ChannelType.RECORD not in dict(plain.context.sessions.offered)
        tone = SpiceServer(NumpySource(8, 8), password=PASSWORD, audio="tone")
        assert ChannelType.RECORD not in dict(tone.context.sessions.offered)
        off = SpiceServer(
            NumpySource(8, 8), password=PASSWORD, microphone=NumpyRecordSink(), record=False
        )
        assert ChannelType.RECORD not in dict(off.context.sessions.offered)
        assert off.context.microphone is None
        raw = SpiceServer(
            NumpySource(8, 8), password=PASSWORD, microphone=NumpyRecordSink(), audio_opus=False
        )
        assert (ChannelType.RECORD, 0) in raw.context.sessions.offered
        assert raw.context.microphone is not None and not raw.context.microphone.opus_available
        assert RecordHandler.link_caps(raw.context) == ()

    run(scenario())


def test_the_numpy_sink_keeps_at_most_max_frames() -> None:
    sink = NumpyRecordSink(max_frames=1000)
    for _ in range(10):
        sink.write(bytes(480 * 4))
    assert sink.buffered == 1000 and sink.dropped == 3800 and sink.received == 4800
    assert sink.read(600).shape == (600, 2)
    assert sink.read().shape == (400, 2)
    assert sink.read().shape == (0, 2)


def test_the_hub_drops_the_oldest_for_a_stalled_thread() -> None:
    hub = MicrophoneHub(NumpyRecordSink(), opus=False)  # its thread not started

    class Listener:
        def set_recording(self, recording: bool) -> None:
            pass

        def decode_failed(self, reason: str) -> None:
            pass

    listener = Listener()
    hub.add_listener(listener)
    hub.wanted = True
    for _ in range(300):
        hub.feed(listener, AudioDataMode.RAW, bytes(1920))
    assert hub._pending_bytes <= MAX_PENDING_BYTES
    assert len(hub._pending) == MAX_PENDING_PACKETS
    assert hub.dropped == 200
