"""The pynput key tables: every platform covers the XTEST table, and agrees with pynput.

pynput names some keys itself on every backend (``Key.up``, ``Key.ctrl_r``,
``Key.media_next`` …).  Its backends' sources are read here (parsed, not imported: the macOS
and Windows ones import Quartz and ctypes.windll), and each such key is followed from our X
table (its keysym) to the macOS and Windows tables, which must give the same code pynput does.
So the tables for the platforms this CI cannot run are at least checked against a second,
independent source.  The X table is checked against a real X server's keymap in
``tests/interop/test_pynput_input.py``.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from spiceserver.keymap import PAUSE, SCANCODE_TO_EVDEV
from spiceserver.keytables import (
    BUTTONS,
    MACOS_MEDIA,
    MACOS_VK,
    NOT_ON,
    PLATFORMS,
    WINDOWS_VK,
    X_KEYSYMS,
    windows_key,
)

TABLES = {
    "xorg": set(X_KEYSYMS),
    "darwin": set(MACOS_VK) | set(MACOS_MEDIA),
    "win32": set(WINDOWS_VK),
}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_platform_covers_the_xtest_table_less_its_listed_exceptions(platform: str) -> None:
    table, missing = TABLES[platform], set(NOT_ON[platform])
    assert not table & missing, f"{platform}: both mapped and listed missing"
    assert table | missing == set(SCANCODE_TO_EVDEV), (
        f"{platform}: not in the XTEST table: {sorted(map(hex, table - set(SCANCODE_TO_EVDEV)))}"
        f"; neither mapped nor listed: {sorted(map(hex, set(SCANCODE_TO_EVDEV) - table - missing))}"
    )
    assert all(reason.strip() for reason in NOT_ON[platform].values())
    assert not set(MACOS_VK) & set(MACOS_MEDIA)


def test_no_two_keys_share_a_code() -> None:
    """Physical keys stay apart (the two Print codes aside: one X key, as in XTEST's table)."""
    for name, table in [("xorg", X_KEYSYMS), ("darwin", MACOS_VK), ("win32", WINDOWS_VK)]:
        codes = [value for scancode, value in table.items() if scancode != 0x54]
        duplicates = {hex(v) for v in codes if codes.count(v) > 1}
        # Windows: keypad Enter is VK_RETURN extended; JIS ro/yen reuse the ISO and \\ VKs.
        allowed = {"0xd", "0xe2", "0xdc"} if name == "win32" else set()
        assert duplicates <= allowed, (name, duplicates)


def test_windows_scan_codes_and_extended_flags() -> None:
    assert windows_key(0x1E) == (0x41, 0x1E, False)  # A
    assert windows_key(0xE048) == (0x26, 0x48, True)  # Up: E0 48
    assert windows_key(0xE01C) == (0x0D, 0x1C, True)  # keypad Enter
    assert windows_key(0x1C) == (0x0D, 0x1C, False)  # Enter
    assert windows_key(0x45) == (0x90, 0x45, True)  # Num Lock: extended, as Windows reports it
    assert windows_key(PAUSE) == (0x13, 0x45, False)  # Pause: plain 0x45
    assert windows_key(0xE05E) is None  # Power


# ------------------------------------------------------------------ pynput's own Key members


def _pynput_path(module: str) -> Path:
    spec = importlib.util.find_spec("pynput")  # found, not imported (that needs $DISPLAY)
    assert spec is not None and spec.submodule_search_locations, "pynput is not installed"
    return Path(next(iter(spec.submodule_search_locations)), *module.split(".")).with_suffix(".py")


def _pynput_source(module: str) -> ast.Module:
    return ast.parse(_pynput_path(module).read_text())


def _key_members(module: str) -> dict[str, tuple[str, Any]]:
    """``Key`` member → (constructor, first argument) as the backend's source spells them."""
    tree = _pynput_source(module)
    (key_class,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Key"]
    members = {}
    for node in key_class.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            assert isinstance(call.func, ast.Attribute) and isinstance(node.targets[0], ast.Name)
            arg = call.args[0]
            value = (
                arg.value
                if isinstance(arg, ast.Constant)
                else arg.attr
                if isinstance(arg, ast.Attribute)
                else ast.unparse(arg)
            )
            members[node.targets[0].id] = (call.func.attr, value)
    return members


def _scancodes_by_pynput_key() -> dict[str, int]:
    """pynput ``Key`` member → our scancode, through the keysym pynput's X backend gives it."""
    from Xlib import XK

    for group in ("latin1", "miscellany", "xf86"):
        XK.load_keysym_group(group)
    by_keysym: dict[int, int] = {}
    for scancode, keysym in X_KEYSYMS.items():
        if scancode != 0x54:  # Alt+SysRq's code: Print Screen is E0 37
            by_keysym.setdefault(keysym, scancode)
    found = {}
    for name, (how, arg) in _key_members("keyboard._xorg").items():
        symbol = "XF86_Audio" + arg if how == "_from_media" else arg
        keysym = XK.string_to_keysym(symbol)
        # The generic modifiers (``Key.ctrl``) are the left ones on X; Windows gives them the
        # side-less VK, our table the sided one (VK_LCONTROL), as SendInput wants.
        if keysym in by_keysym and name not in {"alt", "ctrl", "shift", "cmd"}:
            found[name] = by_keysym[keysym]
    return found


def test_pynput_keys_follow_from_the_x_table() -> None:
    names = _scancodes_by_pynput_key()
    # The keys pynput names and we map: the non-printable block but F13 … F20.
    assert len(names) >= 45, sorted(names)
    assert names["up"] == 0xE048 and names["ctrl_r"] == 0xE01D and names["f12"] == 0x58
    assert names["media_next"] == 0xE019 and names["print_screen"] == 0xE037


def test_macos_table_agrees_with_pynputs_darwin_keys() -> None:
    darwin = _key_members("keyboard._darwin")
    checked = 0
    for name, scancode in _scancodes_by_pynput_key().items():
        if name not in darwin or scancode in NOT_ON["darwin"]:
            continue
        how, arg = darwin[name]
        if how == "_from_media":
            assert MACOS_MEDIA.get(scancode) == name, (name, hex(scancode))
        else:
            assert how == "from_vk"
            assert MACOS_VK[scancode] == arg, (name, hex(scancode), hex(arg))
        checked += 1
    assert checked >= 40


def test_windows_table_agrees_with_pynputs_win32_keys() -> None:
    # Plain constants; loaded from the file, since importing pynput's package needs $DISPLAY.
    path = _pynput_path("_util.win32_vks")
    spec = importlib.util.spec_from_file_location("pynput_win32_vks", path)
    assert spec is not None and spec.loader is not None
    vks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vks)
    win32 = _key_members("keyboard._win32")
    checked = 0
    for name, scancode in _scancodes_by_pynput_key().items():
        if name not in win32 or name == "alt_gr":
            continue
        _how, vk_name = win32[name]
        key = windows_key(scancode)
        assert key is not None, name
        # pynput's extended flags are not all right (Key.menu, Key.cmd lack the E0 flag the
        # real keys carry), so only the VK is compared; the flag is the E0 prefix (above).
        assert key[0] == getattr(vks, vk_name), (name, hex(scancode), vk_name)
        checked += 1
    assert checked >= 45


@pytest.mark.parametrize(
    ("platform", "module"), [("xorg", "_xorg"), ("darwin", "_darwin"), ("win32", "_win32")]
)
def test_button_names_exist_in_pynput(platform: str, module: str) -> None:
    source = ast.unparse(_pynput_source("mouse." + module))
    for name in BUTTONS[platform].values():
        # X builds button8 … button30 in a loop; the others are spelled out.
        assert f"{name} =" in source or f"('{name}'" in source or name.startswith("button"), name
