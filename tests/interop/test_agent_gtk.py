"""spice-gtk 0.42 against the built-in agent: clipboard both ways (text and PNG, CLIPBOARD and
PRIMARY, 5 MB), file transfer with file_copy_async, monitors configs (real client)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from spiceserver import PatternSource
from spiceserver.clipboard import ClipboardType, MemoryClipboard, Selection
from spiceserver.sources.base import Head
from tests.conftest import CORPUS, data_file
from tests.interop.clients import GtkClient
from tests.interop.serverthread import ServerThread

pytestmark = pytest.mark.interop

PASSWORD = "agent pw"


def agent_client(st: ServerThread, tmp_path: Path) -> GtkClient:
    clips = tmp_path / "clips"
    clips.mkdir(exist_ok=True)
    client = GtkClient(st.uri, PASSWORD, extra_args=["--clipboard-dir", str(clips)])
    client.wait_for("agent-update", lambda e: e["connected"] and e["caps0"], timeout=20)
    return client


def desktop_to_client(
    st: ServerThread,
    client: GtkClient,
    memory: MemoryClipboard,
    selection: Selection,
    type_: ClipboardType,
    data: bytes,
) -> None:
    st.call(lambda: memory.offer(selection, {type_: data}))
    client.wait_for(
        "clipboard-grab",
        lambda e: e["selection"] == selection and e["types"] == [type_],
        timeout=10,
    )
    client.command("clipboard_request", selection=int(selection), type=int(type_))
    got = client.wait_for("clipboard", lambda e: e["selection"] == selection, timeout=30)
    assert (got["type"], got["size"]) == (type_, len(data))
    assert got["sha256"] == hashlib.sha256(data).hexdigest()


def client_to_desktop(
    st: ServerThread,
    client: GtkClient,
    memory: MemoryClipboard,
    selection: Selection,
    type_: ClipboardType,
    data: bytes,
    tmp_path: Path,
) -> None:
    path = tmp_path / f"offer-{int(selection)}-{int(type_)}.bin"
    path.write_bytes(data)
    client.command("clipboard_grab", selection=int(selection), data={str(int(type_)): str(path)})
    assert st.run(memory.wait_client(selection, timeout=10)) == (type_,)
    assert st.run(memory.fetch(selection, type_), timeout=60) == data
    client.wait_for("clipboard-request", lambda e: e["answered"], timeout=10)


def test_text_and_png_both_ways_on_clipboard_and_primary(tmp_path: Path) -> None:
    memory = MemoryClipboard()
    png = data_file(CORPUS / "testpattern_bars_1024x768.png").read_bytes()
    source = PatternSource(320, 240)
    with (
        ServerThread(source, password=PASSWORD, clipboard=memory) as st,
        agent_client(st, tmp_path) as client,
    ):
        text = "hello from the server ✓\nline two\n".encode()
        desktop_to_client(st, client, memory, Selection.CLIPBOARD, ClipboardType.UTF8_TEXT, text)
        desktop_to_client(st, client, memory, Selection.PRIMARY, ClipboardType.PNG, png)
        client_to_desktop(st, client, memory, Selection.CLIPBOARD, ClipboardType.PNG, png, tmp_path)
        client_to_desktop(
            st,
            client,
            memory,
            Selection.PRIMARY,
            ClipboardType.UTF8_TEXT,
            "primary ✓".encode(),
            tmp_path,
        )
        # The client's release reaches the desktop side.
        client.command("clipboard_release", selection=int(Selection.PRIMARY))
        st.run(_until(lambda: memory.client_types(Selection.PRIMARY) is None))


def test_five_megabytes_both_ways(tmp_path: Path) -> None:
    memory = MemoryClipboard()
    big = os.urandom(5 * 1024 * 1024 // 2).hex().encode()  # 5 MiB of text
    with (
        ServerThread(PatternSource(320, 240), password=PASSWORD, clipboard=memory) as st,
        agent_client(st, tmp_path) as client,
    ):
        desktop_to_client(st, client, memory, Selection.CLIPBOARD, ClipboardType.UTF8_TEXT, big)
        # ~2,560 AGENT_DATA from the client: far past the 10-token window, so tokens flow.
        client_to_desktop(
            st, client, memory, Selection.CLIPBOARD, ClipboardType.UTF8_TEXT, big, tmp_path
        )
        # And many small messages after it still get through (tokens keep coming back).
        for i in range(12):
            text = f"message {i}".encode()
            desktop_to_client(st, client, memory, Selection.PRIMARY, ClipboardType.UTF8_TEXT, text)


def test_file_copy_lands_byte_exact_with_unique_safe_names(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    sources = tmp_path / "sources"
    sources.mkdir()
    report = sources / "report.pdf"
    report.write_bytes(os.urandom(150_000))  # three 64 KiB chunks
    hidden = sources / ".bashrc"
    hidden.write_bytes(b"alias ll='ls -l'\n")
    big = sources / "big.iso"
    big.write_bytes(os.urandom(200_001))
    with (
        ServerThread(
            PatternSource(320, 240),
            password=PASSWORD,
            file_transfer_dir=str(downloads),
            file_transfer_max=200_000,
        ) as st,
        agent_client(st, tmp_path) as client,
    ):
        for _ in range(2):
            client.command("file_copy", paths=[str(report)])
            done = client.wait_for("file-copy-done", timeout=30)
            assert done["ok"], done
        client.command("file_copy", paths=[str(hidden)])
        assert client.wait_for("file-copy-done", timeout=30)["ok"]
        client.command("file_copy", paths=[str(big)])
        refused = client.wait_for("file-copy-done", timeout=30)
        assert not refused["ok"]
        # The agent's NOT_ENOUGH_SPACE, as spice-gtk words it for the user.
        task = client.wait_for(
            "file-transfer-finished", lambda e: e["name"] == "big.iso", timeout=10, since=0
        )
        assert "space" in task["error"].lower(), task
    assert (downloads / "report.pdf").read_bytes() == report.read_bytes()
    assert (downloads / "report (1).pdf").read_bytes() == report.read_bytes()
    assert (downloads / "bashrc").read_bytes() == hidden.read_bytes()
    assert sorted(p.name for p in downloads.iterdir()) == ["bashrc", "report (1).pdf", "report.pdf"]


def test_monitors_config_reaches_the_layout(tmp_path: Path) -> None:
    requests: list[tuple[Head, ...]] = []
    with (
        ServerThread(PatternSource(320, 240), password=PASSWORD) as st,
        agent_client(st, tmp_path) as client,
    ):
        assert st.server is not None
        layout = st.server.context.layout
        st.call(lambda: setattr(layout, "request", lambda _s, heads: requests.append(heads)))
        client.wait_channel_open("display")
        client.command(
            "monitors",
            displays=[
                {"id": 0, "x": 0, "y": 0, "width": 1280, "height": 720},
                {"id": 1, "x": 1280, "y": 0, "width": 800, "height": 600},
            ],
        )
        st.run(_until(lambda: bool(requests)))
    assert requests[-1] == (Head(0, 0, 1280, 720), Head(1280, 0, 800, 600))


async def _until(check: object, timeout: float = 10.0) -> None:
    """Poll the server's state from its loop (it has no event for these)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not within the timeout"
        await asyncio.sleep(0.01)
