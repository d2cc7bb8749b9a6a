"""Fault injection (``--fault``): spec parsing, the pure helpers, and each fault over loopback."""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import numpy as np
import pytest

from spiceserver import ImageCompression, NumpySource, ServerConfig
from spiceserver.__main__ import build_parser, config_from_args
from spiceserver.bandwidth import NET_TEST_BYTES
from spiceserver.errors import ConfigError
from spiceserver.faults import UNKNOWN_MESSAGE_BODY, UNKNOWN_MESSAGE_TYPE, Fault, parse_faults
from spiceserver.protocol.display import EncodedImage
from spiceserver.protocol.enums import ChannelType, CommonCap, ImageType, LinkError
from spiceserver.protocol.inputs import InputsChannel
from spiceserver.server.codecs import ImageEncoder, encode_bitmap, intact_prefix
from spiceserver.server.fault_injection import CORRUPT_STRIDE, ImageCorrupter, corrupt_image
from tests.conftest import run
from tests.fakeclient import LoopbackClient
from tests.spiceserver.server.test_loopback import (
    PASSWORD,
    Canvas,
    open_display,
    open_session,
    random_frame,
    raw_server,
    receive_until,
)

# ---------------------------------------------------------------------------- spec parsing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("delay:display:0.5", Fault("delay", "display", seconds=0.5)),
        ("delay:*:2", Fault("delay", "*", seconds=2.0)),
        ("close-after:main:20", Fault("close-after", "main", messages=20)),
        ("unknown-message:inputs", Fault("unknown-message", "inputs")),
        ("unknown-message:cursor:3", Fault("unknown-message", "cursor", count=3)),
        ("unknown-message:*:3:0.25", Fault("unknown-message", "*", count=3, interval=0.25)),
        ("corrupt-image", Fault("corrupt-image", "display")),
        ("corrupt-image:10", Fault("corrupt-image", "display", every=10)),
    ],
)
def test_specs_parse_and_print_back(spec: str, expected: Fault) -> None:
    fault = Fault.parse(spec)
    assert fault == expected
    assert Fault.parse(str(fault)) == fault
    assert fault.describe().startswith(str(fault))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus:main:1", "unknown fault"),
        ("delay", "expected delay:CHANNEL:SECONDS"),
        ("delay:display", "expected delay:CHANNEL:SECONDS"),
        ("delay:display:1:2", "expected delay:CHANNEL:SECONDS"),
        ("delay:display:soon", "expected delay:CHANNEL:SECONDS"),
        ("delay:display:0", "SECONDS must be positive"),
        ("delay:display:-1", "SECONDS must be positive"),
        ("delay:display:nan", "SECONDS must be positive"),
        ("delay:bogus:1", "unknown channel 'bogus'"),
        ("close-after:main:0", "N must be at least 1"),
        ("close-after:main:2.5", "expected close-after:CHANNEL:N"),
        ("unknown-message", "expected unknown-message:CHANNEL"),
        ("unknown-message:inputs:0", "COUNT must be at least 1"),
        ("unknown-message:inputs:1:0", "INTERVAL must be positive"),
        ("unknown-message:inputs:1:1:1", "expected unknown-message:CHANNEL"),
        ("corrupt-image:0", "EVERY_N must be at least 1"),
        ("corrupt-image:display", "expected corrupt-image[:EVERY_N]"),
        ("corrupt-image:1:2", "expected corrupt-image[:EVERY_N]"),
    ],
)
def test_bad_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Fault.parse(spec)


def test_one_fault_of_a_kind_per_channel() -> None:
    assert len(parse_faults(["delay:main:1", "delay:display:2", "close-after:main:3"])) == 3
    for specs in (
        ["delay:*:1", "delay:main:2"],
        ["unknown-message:inputs", "unknown-message:inputs:2"],
        ["corrupt-image", "corrupt-image:2"],
    ):
        with pytest.raises(ConfigError, match="both apply to the same channel"):
            parse_faults(specs)
    with pytest.raises(ConfigError, match="only applies to the display channel"):
        Fault("corrupt-image", "main")


def test_server_config_and_command_line_take_faults() -> None:
    config = ServerConfig(password="x", faults=["delay:display:0.5", Fault("corrupt-image")])
    assert config.faults == (Fault("delay", "display", seconds=0.5), Fault("corrupt-image"))
    assert ServerConfig(password="x").faults == ()
    with pytest.raises(ConfigError, match="list of specs"):
        ServerConfig(password="x", faults="delay:display:0.5")
    args = build_parser().parse_args(
        ["serve", "--fault", "close-after:main:20", "--fault", "corrupt-image:3"]
    )
    config, _ = config_from_args(args)
    assert config.faults == (
        Fault("close-after", "main", messages=20),
        Fault("corrupt-image", every=3),
    )


def test_bad_fault_on_the_command_line_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["serve", "--fault", "delay:display"])
    assert exc.value.code == 2
    assert "expected delay:CHANNEL:SECONDS" in capsys.readouterr().err


# ---------------------------------------------------------------------------- pure helpers


def queued(
    mini_header: bool, bodies: list[tuple[bytes | memoryview, ...]]
) -> tuple[InputsChannel, list[bytes]]:
    """Messages queued on a real channel protocol, and each message's bytes."""
    channel = InputsChannel(mini_header=mini_header)
    reference = InputsChannel(mini_header=mini_header)
    for i, body in enumerate(bodies):
        channel.send_raw(200 + i, body)
        reference.send_raw(200 + i, body)
    stream = b"".join(bytes(c) for c in reference.data_to_send())
    messages, offset = [], 0
    for body in bodies:
        end = offset + (6 if mini_header else 18) + sum(len(c) for c in body)
        messages.append(stream[offset:end])
        offset = end
    assert offset == len(stream)
    return channel, messages


@pytest.mark.parametrize("mini_header", [True, False])
def test_take_messages_cuts_at_message_boundaries(mini_header: bool) -> None:
    """close-after's cut: whole messages only, the rest stays queued in order."""
    bodies = [(b"ab", memoryview(b"cdef")), (), (b"x" * 1000,), (b"1", b"2", b"3")]
    for count in range(6):
        channel, messages = queued(mini_header, bodies)
        taken, n = channel.take_messages(count)
        assert n == min(count, 4)
        assert b"".join(bytes(c) for c in taken) == b"".join(messages[:n])
        rest = b"".join(bytes(c) for c in channel.data_to_send())
        assert rest == b"".join(messages[n:])


def encoded_images() -> list[EncodedImage]:
    pixels = random_frame(40, 30, 7)
    pixels[:, :20] = 90  # some structure, so LZ and QUIC have runs to code
    images = [encode_bitmap(pixels)]
    for mode in (ImageCompression.QUIC, ImageCompression.LZ, ImageCompression.GLZ):
        from encoders import GlzDictionary

        encoder = ImageEncoder(mode, glz=GlzDictionary(1 << 20))
        images.append(encoder.encode(pixels)[0])
    assert [i.type for i in images] == [
        ImageType.BITMAP,
        ImageType.QUIC,
        ImageType.LZ_RGB,
        ImageType.GLZ_RGB,
    ]
    return images


@pytest.mark.parametrize("image", encoded_images(), ids=lambda i: i.type.name)
def test_corrupt_image_keeps_lengths_and_headers(image: EncodedImage) -> None:
    original = b"".join(bytes(c) for c in image.body)
    damaged = corrupt_image(image)
    data = b"".join(bytes(c) for c in damaged.body)
    keep = intact_prefix(image.type)
    assert len(data) == len(original) and damaged.size == image.size
    assert data[:keep] == original[:keep]  # data_size and the codec header
    if image.type != ImageType.BITMAP:
        assert struct.unpack_from("<I", data)[0] == len(data) - 4
    changed = [i for i in range(len(data)) if data[i] != original[i]]
    assert changed == list(range(keep, len(data), CORRUPT_STRIDE))
    assert b"".join(bytes(c) for c in image.body) == original  # never in place
    assert (damaged.type, damaged.width, damaged.height) == (image.type, image.width, image.height)


def test_corrupt_image_leaves_unknown_types_alone() -> None:
    jpeg = EncodedImage(type=ImageType.JPEG, width=1, height=1, body=(b"\x04\0\0\0abcd",))
    assert corrupt_image(jpeg) is jpeg


def test_image_corrupter_takes_every_nth(caplog: pytest.LogCaptureFixture) -> None:
    image = encoded_images()[2]
    corrupter = ImageCorrupter(3, "peer display")
    with caplog.at_level(logging.INFO, "spiceserver.faults"):
        out = [corrupter(image) is image for _ in range(7)]
    assert out == [True, True, False, True, True, False, True]
    assert corrupter.corrupted == 2
    assert "peer display: fault corrupt-image: image 6 (LZ_RGB 40x30" in caplog.text


# ---------------------------------------------------------------------------- loopback


async def read_to_eof(client: LoopbackClient, timeout: float = 10.0) -> list[tuple[int, bytes]]:
    """Every message still to come until the server closes; the stream must end on a boundary."""
    messages, client.pending = client.pending, []
    async with asyncio.timeout(timeout):
        while data := await client.reader.read(65536):
            messages += client.splitter.feed(data)
    assert not client.splitter.buffer, "the connection ended inside a message"
    return messages


def fault_server(source: NumpySource, *faults: str, **options: Any) -> Any:
    return raw_server(source, faults=list(faults), **options)


def test_start_up_logs_active_faults(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with fault_server(NumpySource(16, 16), "delay:display:0.5", "corrupt-image:4"):
            pass

    with caplog.at_level(logging.WARNING, "spiceserver.faults"):
        run(scenario())
    lines = [r for r in caplog.records if "FAULT INJECTION active" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING] * 2
    assert "delay:display:0.5: every message on the display channel held 0.5s" in caplog.text
    assert "corrupt-image:4: one image in 4 on the display channel" in caplog.text


def test_delay_holds_every_message_in_order(event_loop_name: str) -> None:
    delay = 0.3
    # uvloop's timers have millisecond resolution and may fire up to half a millisecond early.
    slack = 0.0 if event_loop_name == "asyncio" else 0.002

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        source = NumpySource(frame=random_frame(64, 48, 1))
        async with fault_server(source, f"delay:main:{delay}", f"delay:display:{delay}") as server:
            main = await LoopbackClient.open(server.port)
            assert await main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
            init = await main.receive(103)
            session_id = struct.unpack_from("<I", init)[0]
            sent = loop.time()
            main.send(104)  # ATTACH_CHANNELS
            await main.receive(104)  # CHANNELS_LIST
            assert loop.time() - sent >= delay - slack
            # Held in order: MULTI_MEDIA_TIME and PING came with INIT, before the list, and
            # the net test's two PINGs (spiceserver.bandwidth).
            assert [t for t, _ in main.pending] == [106, 4, 4, 4]
            # The display, delayed too, still gets exact frames, each at least `delay` late.
            display = await open_display(server.port, session_id)
            canvas = Canvas(64, 48)
            await receive_until(display, canvas, source.frame)
            changed = random_frame(64, 48, 2)
            updated = loop.time()
            source.update(changed)
            await receive_until(display, canvas, changed)
            assert loop.time() - updated >= delay - slack
            await display.close()
            await main.close()

    run(scenario(), loop=event_loop_name)


def test_delay_pauses_production_above_the_write_buffer_mark() -> None:
    """Held bytes count as unsent ones: the display stops producing (latest-wins)."""

    async def scenario() -> None:
        source = NumpySource(frame=random_frame(256, 256, 3))
        async with fault_server(
            source, "delay:display:0.5", write_buffer_high=64 * 1024, max_fps=1000
        ) as server:
            main, session_id = await open_session(server.port)
            display = await open_display(server.port, session_id)
            (connection,) = [
                c
                for c in server.context.connections
                if c.request and c.request.channel_name == "display"
            ]
            assert connection.faults is not None
            for _ in range(500):  # the first frame (256 KiB) enters the delay line (<= 5 s)
                if connection.faults.held_bytes > 64 * 1024:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the first frame never reached the delay line")
            assert connection.writing_paused and not connection.writable
            for seed in range(10, 30):  # 20 updates while paused: they merge
                source.update(random_frame(256, 256, seed))
                await asyncio.sleep(0.005)
            assert connection.faults.held_bytes < 2 * 256 * 256 * 4
            canvas = Canvas(256, 256)
            await receive_until(display, canvas, source.frame)
            assert not connection.writing_paused
            await display.close()
            await main.close()

    run(scenario())


def test_close_after_n_messages(caplog: pytest.LogCaptureFixture, event_loop_name: str) -> None:
    async def scenario() -> None:
        async with fault_server(NumpySource(64, 48), "close-after:main:6") as server:
            for _ in range(2):  # the server keeps serving: the next session gets the same
                main = await LoopbackClient.open(server.port)
                assert await main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
                # INIT; MULTI_MEDIA_TIME, PING and the net test's two PINGs follow: 5 messages
                await main.receive(103)
                main.send(104)  # ATTACH_CHANNELS: CHANNELS_LIST is the 6th and last
                assert [t for t, _ in await read_to_eof(main)] == [106, 4, 4, 4, 104]
                await main.close()

    with caplog.at_level(logging.INFO, "spiceserver.faults"):
        run(scenario(), loop=event_loop_name)
    assert caplog.text.count("fault close-after: closing after 6 messages") == 2


def test_close_after_cuts_a_display_update_between_messages() -> None:
    """Three 1 MiB DRAW_COPYs in one flush: the connection ends right after the 7th message."""

    async def scenario() -> None:
        first = random_frame(640, 1024, 4)
        source = NumpySource(frame=first.copy())
        async with fault_server(source, "close-after:display:7") as server:
            main, session_id = await open_session(server.port)
            display = await open_display(server.port, session_id)
            # SET_ACK and PING (taken by open_display), SURFACE_CREATE, the first frame as one
            # DRAW_COPY, MARK: 5 messages.  Then an update in 3 bands (MAX_BAND_PIXELS) in one
            # flush: the 6th and 7th go out, the 3rd band would have been the 8th.
            canvas = Canvas(640, 1024)
            canvas.apply(await display.receive(304))
            await display.receive(102)
            source.update(random_frame(640, 1024, 5))
            messages = await read_to_eof(display)
            assert [t for t, _ in messages] == [314, 304, 304]
            for _, body in messages[1:]:
                canvas.apply(body)
            cut = struct.unpack_from("<4i", messages[-1][1], 4)[2]  # the 2nd band's bottom
            assert np.array_equal(canvas.pixels[:cut, :, :3], source.frame[:cut, :, :3])
            assert np.array_equal(canvas.pixels[cut:, :, :3], first[cut:, :, :3])
            # Only that channel went: the main channel still answers.
            main.send(105, struct.pack("<H", 1))  # MOUSE_MODE_REQUEST server
            assert struct.unpack("<HH", await main.receive(105)) == (3, 1)
            await main.close()

    run(scenario())


def test_close_after_with_delay_closes_once_the_last_message_is_written() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with fault_server(
            NumpySource(64, 48), "close-after:main:3", "delay:main:0.2"
        ) as server:
            main = await LoopbackClient.open(server.port)
            assert await main.link(ChannelType.MAIN, PASSWORD) == LinkError.OK
            linked = loop.time()
            assert [t for t, _ in await read_to_eof(main)] == [103, 106, 4]
            assert loop.time() - linked >= 0.19
            await main.close()

    run(scenario())


def test_unknown_message_arrives_framed(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        received = asyncio.Event()
        async with fault_server(
            NumpySource(64, 48),
            "unknown-message:inputs:3:0.05",
            on_input=lambda event: received.set(),
        ) as server:
            main, session_id = await open_session(server.port)
            inputs = await LoopbackClient.open(server.port)
            assert await inputs.link(ChannelType.INPUTS, PASSWORD, connection_id=session_id) == 0
            await inputs.receive(101)  # INIT comes first
            for _ in range(3):
                assert await inputs.receive(UNKNOWN_MESSAGE_TYPE) == UNKNOWN_MESSAGE_BODY
            assert not inputs.splitter.buffer
            # The channel goes on working.
            inputs.send(101, struct.pack("<I", 0x1E))  # KEY_DOWN A
            await asyncio.wait_for(received.wait(), 5)
            await inputs.close()
            await main.close()

    with caplog.at_level(logging.INFO, "spiceserver.faults"):
        run(scenario())
    assert caplog.text.count("inputs: fault unknown-message: sent type 0xffff") == 3


def test_unknown_message_with_full_headers_has_the_next_serial() -> None:
    async def scenario() -> None:
        async with fault_server(NumpySource(64, 48), "unknown-message:*") as server:
            main = await LoopbackClient.open(server.port)
            # Without MINI_HEADER: SpiceDataHeader, serials from 1 (SPICE-REFERENCE 2.1).
            caps = [CommonCap.PROTOCOL_AUTH_SELECTION]
            assert await main.link(ChannelType.MAIN, PASSWORD, common_caps=caps) == 0
            data = b""
            headers = []
            async with asyncio.timeout(10):
                while len(headers) < 6:
                    data += await main.reader.read(65536)
                    while len(data) >= 18:
                        serial, type_, size, sub_list = struct.unpack_from("<QHII", data)
                        if len(data) < 18 + size:
                            break
                        headers.append((serial, type_, size, sub_list, data[18 : 18 + size]))
                        data = data[18 + size :]
            # INIT, MULTI_MEDIA_TIME, PING, the net test's two PINGs, the unknown message.
            assert [h[:4] for h in headers] == [
                (1, 103, headers[0][2], 0),
                (2, 106, 4, 0),
                (3, 4, headers[2][2], 0),
                (4, 4, 12, 0),
                (5, 4, 12 + NET_TEST_BYTES, 0),
                (6, UNKNOWN_MESSAGE_TYPE, len(UNKNOWN_MESSAGE_BODY), 0),
            ]
            assert headers[5][4] == UNKNOWN_MESSAGE_BODY
            await main.close()

    run(scenario())


@pytest.mark.parametrize("mode", [ImageCompression.QUIC, ImageCompression.LZ, ImageCompression.GLZ])
def test_corrupt_image_on_the_wire(mode: ImageCompression) -> None:
    """Valid framing and lengths, intact codec header, a payload unlike the clean encoding."""
    frame = random_frame(64, 48, 5)
    frame[:, :32] = 200

    async def scenario() -> None:
        source = NumpySource(frame=frame.copy())
        async with fault_server(source, "corrupt-image", image_compression=mode) as server:
            main, session_id = await open_session(server.port)
            display = await open_display(server.port, session_id)
            body = await display.receive(304)
            await display.close()
            await main.close()
        _id, image_type, _flags, width, height = struct.unpack_from("<QBBII", body, 57)
        (data_size,) = struct.unpack_from("<I", body, 75)
        stream = body[79:]
        assert (width, height) == (64, 48) and data_size == len(stream)
        from encoders import GlzDictionary

        clean = ImageEncoder(mode, glz=GlzDictionary(1 << 20)).encode(frame)[0]
        assert image_type == clean.type
        expected = b"".join(bytes(c) for c in clean.body)[4:]
        assert len(stream) == len(expected)
        keep = intact_prefix(clean.type) - 4
        assert stream[:keep] == expected[:keep] and stream != expected

    run(scenario())


def test_corrupt_every_second_image() -> None:
    """Raw bitmaps: the first frame (image 1) exact, then of 3 bands (images 2-4) the 1st and
    the 3rd damaged, the 2nd exact."""

    async def scenario() -> None:
        source = NumpySource(frame=random_frame(640, 1024, 6))
        async with fault_server(source, "corrupt-image:2") as server:
            main, session_id = await open_session(server.port)
            display = await open_display(server.port, session_id)
            canvas = Canvas(640, 1024)
            canvas.apply(await display.receive(304))
            assert np.array_equal(canvas.pixels[..., :3], source.frame[..., :3])
            source.update(random_frame(640, 1024, 7))
            bands = []
            for _ in range(3):
                body = await display.receive(304)
                canvas.apply(body)
                bands.append(struct.unpack_from("<4i", body, 4))
            for n, (top, _left, bottom, _right) in enumerate(bands, 1):
                same = np.array_equal(canvas.pixels[top:bottom], source.frame[top:bottom])
                assert same == (n == 2)
            await display.close()
            await main.close()

    run(scenario())
