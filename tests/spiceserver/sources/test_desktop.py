"""The pure parts of the desktop source: change detection, grab planning, cursors.

The X side is covered by ``tests/interop/test_desktop.py`` against a real Xvfb.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spiceserver.errors import ConfigError
from spiceserver.sources import source_from_spec
from spiceserver.sources.base import Rect
from spiceserver.sources.desktop import DesktopSource, cursor_from_argb
from spiceserver.sources.tiles import MAX_GRAB_BOXES, changed_rects, damage_boxes, tile_boxes


def frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)


def covered(rects: list[Rect], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for r in rects:
        mask[r.y : r.bottom, r.x : r.right] = True
    return mask


def test_identical_frames_have_no_changes() -> None:
    old = frame(100, 70)
    assert changed_rects(old, old.copy()) == []


def test_padding_byte_is_ignored() -> None:
    old = frame(40, 40)
    new = old.copy()
    new[..., 3] ^= 0xFF
    assert changed_rects(old, new) == []


def test_one_pixel_is_one_exact_rect() -> None:
    old = frame(200, 100)
    new = old.copy()
    new[57, 133, 1] ^= 1
    assert changed_rects(old, new) == [Rect(133, 57, 1, 1)]


def test_rects_are_tight_and_cover_every_change() -> None:
    rng = np.random.default_rng(5)
    for trial in range(40):
        width, height = int(rng.integers(1, 300)), int(rng.integers(1, 200))
        old = frame(width, height, trial)
        new = old.copy()
        for _ in range(int(rng.integers(1, 6))):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            w, h = int(rng.integers(1, 50)), int(rng.integers(1, 50))
            new[y : y + h, x : x + w, :3] ^= 0x80
        diff = (old[..., :3] != new[..., :3]).any(axis=2)
        rects = changed_rects(old, new, tile=16)
        assert (covered(rects, height, width) >= diff).all()
        for r in rects:  # each rect's border rows and columns hold a change
            sub = diff[r.y : r.bottom, r.x : r.right]
            assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()


def test_small_box_kernel_matches_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled comparison of small boxes (tiles.load_kernel) answers as numpy does,
    on boxes cut from a frame (strided) and on whole arrays."""
    from spiceserver.sources import _tiles_kernel, tiles

    monkeypatch.setattr(tiles, "_changed_box", None)  # changed_rects: numpy's answer
    rng = np.random.default_rng(11)
    big = frame(300, 200, 3)
    for _ in range(200):
        height, width = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        y, x = int(rng.integers(0, 200 - height)), int(rng.integers(0, 300 - width))
        old = big[y : y + height, x : x + width]
        new = old.copy()
        for _ in range(int(rng.integers(0, 3))):
            new[rng.integers(0, height), rng.integers(0, width), rng.integers(0, 4)] ^= 1
        x0, y0, x1, y1 = _tiles_kernel.changed_box(old, new)
        found = [] if x1 < x0 else [Rect(x0, y0, x1 + 1 - x0, y1 + 1 - y0)]
        assert found == changed_rects(old, new)


def test_loaded_kernel_never_compiles_on_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """After tiles.load_kernel, arrays of a kind it did not compile for (read-only here) get
    numpy's answer instead of a compile (seconds, on the event loop)."""
    from spiceserver.sources import tiles

    monkeypatch.setattr(tiles, "_changed_box", None)
    tiles.load_kernel()
    kernel = tiles._changed_box
    assert kernel is not None
    compiled = len(getattr(kernel, "signatures", ()))
    old = frame(40, 30)
    new = old.copy()
    new[7, 9, 2] ^= 4
    assert changed_rects(old[:, 5:], new[:, 5:].copy()) == [Rect(4, 7, 1, 1)]  # the kernel's
    new.flags.writeable = False
    assert changed_rects(old, new) == [Rect(9, 7, 1, 1)]  # numpy's
    assert len(getattr(kernel, "signatures", ())) == compiled


def test_separate_changes_stay_separate() -> None:
    old = frame(640, 480)
    new = old.copy()
    new[10:20, 10:30, 0] ^= 1  # a glyph top left
    new[400:410, 600:620, 0] ^= 1  # a clock bottom right
    assert changed_rects(old, new) == [Rect(10, 10, 20, 10), Rect(600, 400, 20, 10)]


def test_tile_boxes_merge_columns_of_equal_runs() -> None:
    grid = np.zeros((4, 5), dtype=bool)
    grid[0:3, 1:3] = True  # one window, three tile rows
    grid[3, 4] = True  # something else below
    assert tile_boxes(grid, 10, 45, 38) == [Rect(10, 0, 20, 30), Rect(40, 30, 5, 8)]


def test_damage_boxes_snap_to_tiles_and_clip() -> None:
    boxes = damage_boxes([Rect(5, 5, 3, 3), Rect(-10, 90, 500, 500)], 100, 100, tile=32)
    assert boxes == [Rect(0, 0, 32, 32), Rect(0, 64, 100, 36)]


def test_too_many_damage_boxes_become_one() -> None:
    rects = [Rect(i * 64, i * 64, 1, 1) for i in range(MAX_GRAB_BOXES + 1)]
    assert damage_boxes(rects, 1000, 1000, tile=32) == [Rect(0, 0, 544, 544)]


def test_cursor_unpremultiplied() -> None:
    # ARGB premultiplied: opaque red, half-transparent white (0x80 0x80 0x80), clear.
    argb = [0xFFFF0000, 0x80808080, 0x00000000, 0xFF00FF00]
    shape = cursor_from_argb(argb, 2, 2, 1, 0, unique=42)
    assert shape is not None
    assert (shape.width, shape.height, shape.hot_x, shape.hot_y, shape.unique) == (2, 2, 1, 0, 42)
    pixels = np.frombuffer(shape.pixels, np.uint8).reshape(4, 4)
    assert pixels.tolist() == [
        [0, 0, 255, 255],  # B, G, R, A
        [255, 255, 255, 128],
        [0, 0, 0, 0],
        [0, 255, 0, 255],
    ]


def test_invisible_cursor_is_none() -> None:
    assert cursor_from_argb([0] * 16, 4, 4, 0, 0, unique=1) is None


def test_no_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(ConfigError, match="DISPLAY"):
        DesktopSource()
    with pytest.raises(ConfigError, match="DISPLAY"):
        source_from_spec("desktop")


def test_unreachable_display_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"cannot open X display ':4242'.*X server running"):
        source_from_spec("desktop:4242")


def test_lean_damage_events_parse_as_python_xlib_does() -> None:
    from types import SimpleNamespace

    from Xlib.ext import damage

    from spiceserver.sources.x11_events import LeanDamageNotify, use_lean_damage_events

    rng = np.random.default_rng(3)
    for _ in range(200):
        data = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
        ours = LeanDamageNotify(binarydata=data)
        # resource ids as plain ints, as the lean event keeps them
        plain = SimpleNamespace(get_resource_class=lambda name: None)
        theirs = damage.DamageNotify(display=plain, binarydata=data)
        names = ("type", "send_event", "level", "sequence_number", "drawable", "damage")
        for name in (*names, "timestamp"):
            assert getattr(ours, name) == getattr(theirs, name), name
        for box in ("area", "drawable_geometry"):
            for field in ("x", "y", "width", "height"):
                assert getattr(getattr(ours, box), field) == getattr(getattr(theirs, box), field)
    display = SimpleNamespace(display=SimpleNamespace(event_classes={91: damage.DamageNotify}))
    assert use_lean_damage_events(display, 91)  # type: ignore[arg-type]
    assert display.display.event_classes[91] is LeanDamageNotify
    # anything else in that slot (another python-xlib) is left alone
    assert not use_lean_damage_events(display, 91)  # type: ignore[arg-type]
    assert not use_lean_damage_events(SimpleNamespace(), 91)  # type: ignore[arg-type]


def test_sources_loading_the_compare_kernel_at_once_all_get_it(tmp_path: Path) -> None:
    # Each desktop source loads the kernel on a timer thread of its own: a thread that found
    # the kernel uncompiled while another compiled it was refused by numba ("compilation
    # disabled") once the first had disabled compiling.  A fresh cache makes the compile slow
    # enough for the threads to meet.
    probe = textwrap.dedent(
        """
        import threading
        from spiceserver.sources import tiles
        errors = []
        def load():
            try:
                tiles.load_kernel()
            except Exception as exc:
                errors.append(repr(exc))
        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(errors, tiles._changed_box is not None)
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_DISABLE_JIT", None)
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"]


def test_own_shared_memory_grabs_only_for_a_local_x_server() -> None:
    import socket

    from spiceserver.sources.x11_grab import _local

    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert _local(ours)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as tcp:
            assert _local(tcp)
    with socket.socket() as unconnected:
        assert not _local(unconnected)
