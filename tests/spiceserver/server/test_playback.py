"""The playback channel: the sans-I/O state machine, and the whole server in memory.

In memory (tests/memory.py): a NumpyAudioSource feeds the real audio hub (its thread, its
encoder), a MemoryClient links main + playback and reads what the server wrote.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import time

import numpy as np
import pytest

from spiceserver import NumpySource, SpiceServer
from spiceserver.protocol import messages as m
from spiceserver.protocol.channel import ChannelLimits
from spiceserver.protocol.enums import (
    AudioDataMode,
    ChannelType,
    LinkError,
    MainServerMsg,
    PlaybackCap,
    PlaybackServerMsg,
)
from spiceserver.protocol.playback import PlaybackChannel
from spiceserver.record import MemoryRecorder
from spiceserver.server.audio import MAX_PENDING_BLOCKS, AudioHub, AudioPacket
from spiceserver.server.channels.playback import PlaybackHandler
from spiceserver.sources.audio import BLOCK_FRAMES, NumpyAudioSource, ToneSource
from tests.conftest import run
from tests.fakeclient import (
    MessageSplitter,
    encrypt_ticket,
    frame,
    link_message,
    parse_link_reply,
)
from tests.memory import FakeClock, MemoryClient, session_id

PASSWORD = "audio-pw"


def tone_frames(blocks: int, frequency: float = 440.0, start: int = 0) -> np.ndarray:
    source = ToneSource(frequency)
    pcm = b"".join(source.block(start + i) for i in range(blocks))
    return np.frombuffer(pcm, dtype=np.int16).reshape(-1, 2)


def peak_hz(pcm: np.ndarray, rate: int = 48000) -> float:
    mono = pcm.reshape(-1, 2)[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / rate)[int(np.argmax(spectrum))])


# ---------------------------------------------------------------------- sans I/O


def test_mode_goes_before_start_and_data_carries_the_mm_time() -> None:
    channel = PlaybackChannel(mini_header=True, channel_caps=(1 << PlaybackCap.OPUS,))
    channel.start(1.0)
    assert channel.desired_mode(opus_available=True) == AudioDataMode.OPUS
    assert channel.desired_mode(opus_available=False) == AudioDataMode.RAW
    channel.begin(2.5, AudioDataMode.OPUS)
    channel.data(2500, b"pkt")
    channel.end()
    channel.end()  # a second STOP is not sent
    splitter = MessageSplitter()
    out = splitter.feed(b"".join(bytes(c) for c in channel.data_to_send(3.0)))
    types = [type_ for type_, _ in out]
    assert types == [
        3,  # SET_ACK
        PlaybackServerMsg.MODE,
        PlaybackServerMsg.START,
        PlaybackServerMsg.DATA,
        PlaybackServerMsg.STOP,
    ]
    assert out[1][1] == struct.pack("<IH", 2500, AudioDataMode.OPUS)
    assert out[2][1] == struct.pack("<IHII", 2, 1, 48000, 2500)
    assert out[3][1] == struct.pack("<I", 2500) + b"pkt"


def test_data_outside_a_stream_is_a_server_bug() -> None:
    channel = PlaybackChannel(mini_header=True)
    with pytest.raises(RuntimeError):
        channel.data(0, b"x")


def test_raw_without_client_opus() -> None:
    channel = PlaybackChannel(mini_header=True, channel_caps=())
    assert channel.desired_mode(opus_available=True) == AudioDataMode.RAW


# ---------------------------------------------------------------------- in memory


class Counter:
    """An extra hub listener: wakes the test after ``count`` packets (events, no sleeps)."""

    wants_opus = False

    def __init__(self) -> None:
        self.packets = 0
        self.stops = 0
        self.changed = asyncio.Event()

    def on_audio(self, packet: AudioPacket) -> None:
        self.packets += 1
        self.changed.set()

    def on_audio_stop(self) -> None:
        self.stops += 1
        self.changed.set()

    async def wait(self, packets: int = 0, stops: int = 0) -> None:
        while self.packets < packets or self.stops < stops:
            self.changed.clear()
            await self.changed.wait()


async def audio_server(sound: NumpyAudioSource, **options: object) -> SpiceServer:
    server = SpiceServer(
        NumpySource(64, 48),
        password=PASSWORD,
        warmup_encoders=False,
        port=0,
        sound=sound,
        **options,  # type: ignore[arg-type]
    )
    server.context.keys.fill()
    await server.context.keys.take()
    server.context.keys.fill()
    assert server._audio is not None
    server._audio.start()
    return server


def link_playback(server: SpiceServer, caps: list[int]) -> tuple[MemoryClient, MemoryClient]:
    main = MemoryClient(server)
    assert main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
    (init_type, init), *_ = main.messages()
    assert init_type == MainServerMsg.INIT
    main.send(frame(104))  # ATTACH_CHANNELS
    lists = [body for type_, body in main.messages() if type_ == MainServerMsg.CHANNELS_LIST]
    assert lists == [struct.pack("<I", 4) + bytes([2, 0, 3, 0, 4, 0, 5, 0])]
    playback = MemoryClient(server, ("127.0.0.7", 40001))
    playback.send(link_message(ChannelType.PLAYBACK, 0, session_id(init), channel_caps=caps))
    reply = parse_link_reply(playback.transport.take())
    assert reply.error == LinkError.OK
    assert reply.channel_caps == (1 << PlaybackCap.VOLUME | 1 << PlaybackCap.OPUS,)
    playback.send(struct.pack("<I", 1) + encrypt_ticket(reply.public_key, PASSWORD))
    result = playback.transport.take()
    assert struct.unpack_from("<I", result)[0] == LinkError.OK
    playback._pending += playback.splitter.feed(result[4:])
    return main, playback


def playback_handler(server: SpiceServer) -> PlaybackHandler:
    (handler,) = [
        c.handler for c in server.context.connections if isinstance(c.handler, PlaybackHandler)
    ]
    return handler


@pytest.mark.parametrize("opus", [False, True])
def test_a_tone_reaches_the_client_as_mode_start_data_then_stop(opus: bool) -> None:
    async def scenario() -> None:
        sound = NumpyAudioSource()
        # A window of 100 (ACK after 100 messages, 200 in flight): this client reads but
        # sends no ACKs.
        server = await audio_server(sound, channel_limits=ChannelLimits(ack_window=100))
        assert server._audio is not None and server._audio.opus_available
        caps = [PlaybackCap.VOLUME, PlaybackCap.OPUS] if opus else [PlaybackCap.VOLUME]
        _, playback = link_playback(server, caps)
        counter = Counter()
        server._audio.add_listener(counter)
        sound.push(tone_frames(50))  # 0.5 s
        await counter.wait(packets=50)
        await counter.wait(stops=1)  # then the pause: STOP
        out = playback.messages()
        types = [type_ for type_, _ in out]
        assert types[1:3] == [PlaybackServerMsg.MODE, PlaybackServerMsg.START]
        assert types[-1] == PlaybackServerMsg.STOP
        mode = m.PlaybackMode.unpack(out[1][1])
        assert mode.mode == (AudioDataMode.OPUS if opus else AudioDataMode.RAW)
        data = [m.PlaybackData.unpack(body) for type_, body in out if type_ == 101]
        assert len(data) == 50
        times = [d.time for d in data]
        assert all(0 <= b - a <= 60 for a, b in itertools.pairwise(times))
        if opus:
            import av

            decoder = av.CodecContext.create("libopus", "r")
            decoder.sample_rate, decoder.layout = 48000, "stereo"  # type: ignore[attr-defined]
            assert all(len(d.data) <= 480 for d in data)
            frames = [
                decoded.to_ndarray() for d in data for decoded in decoder.decode(av.Packet(d.data))
            ]
            assert {f.shape for f in frames} == {(1, 960)}  # packed s16: 480 stereo frames
            assert abs(peak_hz(np.concatenate(frames, axis=1)) - 440) < 2
        else:
            assert {len(d.data) for d in data} == {BLOCK_FRAMES * 4}
            pcm = np.frombuffer(b"".join(d.data for d in data), dtype=np.int16)
            assert abs(peak_hz(pcm) - 440) < 2
        await server.close()

    run(scenario())


def test_a_client_that_never_reads_keeps_only_the_newest_audio() -> None:
    async def scenario() -> None:
        sound = NumpyAudioSource()
        server = await audio_server(sound)
        assert server._audio is not None
        _, playback = link_playback(server, [PlaybackCap.OPUS])
        handler = playback_handler(server)
        counter = Counter()
        server._audio.add_listener(counter)
        clock = FakeClock.install(server)
        written = []
        for second in range(10):  # 10 s of audio, in steps the hub takes whole
            for step in range(4):
                clock.advance(0.25)
                sound.push(tone_frames(25, start=second * 100 + step * 25))
                await counter.wait(packets=second * 100 + (step + 1) * 25)
            written.append(len(playback.transport.sent))
        # The client never ACKs: the window (2 × 20 messages) closed after 0.4 s of audio;
        # everything later waits in the bounded queue, oldest dropped.
        assert written[0] == written[-1] < 41 * 200
        assert handler._queued_bytes <= server.config.audio_queue_bytes
        assert handler.sent <= 41
        # What waits is the newest 0.2 s (audio_max_delay), the rest was dropped.
        assert len(handler._queue) <= 21
        assert handler.sent + handler.dropped + len(handler._queue) == 1000
        assert sum(len(p) for _, p in handler._queue) == handler._queued_bytes
        await server.close()

    run(scenario())


def test_bad_audio_messages_close_only_the_playback_channel() -> None:
    async def scenario() -> None:
        sound = NumpyAudioSource()
        server = await audio_server(sound)
        main, playback = link_playback(server, [])
        playback.send(frame(101, b"\0" * 8))  # DATA is a server message here
        assert playback.transport.closing
        assert not main.transport.closing
        assert server._audio is not None and not any(
            isinstance(listener, PlaybackHandler) for listener in server._audio.listeners
        )
        # The session goes on: a new playback channel links and plays.
        _, again = link_playback_again(server, main)
        assert not again.transport.closing
        await server.close()

    run(scenario())


def link_playback_again(server: SpiceServer, main: MemoryClient) -> tuple[None, MemoryClient]:
    sid = server.sessions()[0].id
    again = MemoryClient(server, ("127.0.0.7", 40002))
    assert again.link(ChannelType.PLAYBACK, PASSWORD, connection_id=sid) == LinkError.OK
    return None, again


def test_playback_is_offered_only_with_audio() -> None:
    async def scenario() -> None:
        server = SpiceServer(NumpySource(8, 8), password=PASSWORD, warmup_encoders=False)
        assert ChannelType.PLAYBACK not in dict(server.context.sessions.offered)
        tone = SpiceServer(NumpySource(8, 8), password=PASSWORD, audio="tone")
        assert (ChannelType.PLAYBACK, 0) in tone.context.sessions.offered

    run(scenario())


def test_digital_silence_stops_the_stream_and_sound_restarts_it() -> None:
    async def scenario() -> None:
        sound = NumpyAudioSource()
        recorder = MemoryRecorder()
        server = await audio_server(sound, channel_limits=ChannelLimits(ack_window=200))
        server.context.recorders.append(recorder)
        assert server._audio is not None
        _, playback = link_playback(server, [])
        counter = Counter()
        server._audio.add_listener(counter)
        # 0.7 s of zeros between tone, continuous (0.9 s in all: under the hub's 1 s bound).
        silence = np.zeros((33600, 2), np.int16)
        sound.push(tone_frames(10))
        sound.push(silence)
        sound.push(tone_frames(10, start=10))
        # 10 tone packets, 49 of zeros (the 50th makes 0.5 s: STOP), 10 of tone, the gap: STOP.
        await counter.wait(packets=69, stops=2)
        types = [type_ for type_, _ in playback.messages()]
        starts = [i for i, t in enumerate(types) if t == PlaybackServerMsg.START]
        stops = [i for i, t in enumerate(types) if t == PlaybackServerMsg.STOP]
        assert len(starts) == len(stops) == 2
        assert starts[0] < stops[0] < starts[1] < stops[1]
        assert types.count(PlaybackServerMsg.DATA) == 69
        audio = [e for e in recorder.events if e["event"].startswith("audio_")]
        assert [e["event"] for e in audio] == ["audio_start", "audio_stop"] * 2
        assert audio[0]["mode"] == "raw" and audio[0]["channel"] == "playback"
        await server.close()

    run(scenario())


def test_the_hub_keeps_at_most_a_second_of_pcm_for_a_stalled_thread() -> None:
    hub = AudioHub(NumpyAudioSource(), time.monotonic, opus=False)  # its thread not started
    for index in range(300):  # 3 s in 10 ms pushes
        hub.push(ToneSource().block(index))
    assert hub._pending_bytes <= MAX_PENDING_BLOCKS * BLOCK_FRAMES * 4
    assert hub.dropped_blocks == 200
