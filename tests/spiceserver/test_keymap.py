"""The scancode tables: set-1 make codes to evdev and X keycodes."""

from __future__ import annotations

import pytest

from spiceserver.keymap import (
    PAUSE,
    SCANCODE_TO_EVDEV,
    XFREE86_E0,
    scancode_to_evdev,
    scancode_to_x_keycode,
)

# (scancode, evdev, X keycode under evdev keycodes, XKB key name) — from
# linux/input-event-codes.h and xkeyboard-config's keycodes/evdev, typed in by hand.
KNOWN = [
    (0x01, 1, 9, "ESC"),
    (0x02, 2, 10, "AE01"),
    (0x0E, 14, 22, "BKSP"),
    (0x10, 16, 24, "AD01"),
    (0x1C, 28, 36, "RTRN"),
    (0x1D, 29, 37, "LCTL"),
    (0x1E, 30, 38, "AC01"),
    (0x29, 41, 49, "TLDE"),
    (0x2A, 42, 50, "LFSH"),
    (0x2B, 43, 51, "BKSL"),
    (0x36, 54, 62, "RTSH"),
    (0x37, 55, 63, "KPMU"),
    (0x38, 56, 64, "LALT"),
    (0x39, 57, 65, "SPCE"),
    (0x3A, 58, 66, "CAPS"),
    (0x3B, 59, 67, "FK01"),
    (0x44, 68, 76, "FK10"),
    (0x45, 69, 77, "NMLK"),
    (0x46, 70, 78, "SCLK"),
    (0x47, 71, 79, "KP7"),
    (0x48, 72, 80, "KP8"),
    (0x52, 82, 90, "KP0"),
    (0x53, 83, 91, "KPDL"),
    (0x56, 86, 94, "LSGT"),
    (0x57, 87, 95, "FK11"),
    (0x58, 88, 96, "FK12"),
    (0x73, 89, 97, "AB11"),
    (0x7D, 124, 132, "AE13"),
    (0xE01C, 96, 104, "KPEN"),
    (0xE01D, 97, 105, "RCTL"),
    (0xE035, 98, 106, "KPDV"),
    (0xE037, 99, 107, "PRSC"),
    (0xE038, 100, 108, "RALT"),
    (0xE047, 102, 110, "HOME"),
    (0xE048, 103, 111, "UP"),
    (0xE049, 104, 112, "PGUP"),
    (0xE04B, 105, 113, "LEFT"),
    (0xE04D, 106, 114, "RGHT"),
    (0xE04F, 107, 115, "END"),
    (0xE050, 108, 116, "DOWN"),
    (0xE051, 109, 117, "PGDN"),
    (0xE052, 110, 118, "INS"),
    (0xE053, 111, 119, "DELE"),
    (0xE05B, 125, 133, "LWIN"),
    (0xE05C, 126, 134, "RWIN"),
    (0xE05D, 127, 135, "MENU"),
    (PAUSE, 119, 127, "PAUS"),
]


@pytest.mark.parametrize(("scancode", "evdev", "keycode", "name"), KNOWN)
def test_known_keys(scancode: int, evdev: int, keycode: int, name: str) -> None:
    assert scancode_to_evdev(scancode) == evdev, name
    assert scancode_to_x_keycode(scancode) == keycode, name


def test_main_block_is_identity() -> None:
    """KEY_ESC (1) … KEY_KPDOT (83): the evdev numbering is the AT make code."""
    for code in range(0x01, 0x54):
        assert scancode_to_evdev(code) == code


@pytest.mark.parametrize("scancode", [0x00, 0x55, 0x80, 0xE02A, 0xE036, 0xE0AA, 0xE000, 0xFFFF])
def test_unknown_and_fake_shift_codes_map_to_nothing(scancode: int) -> None:
    assert scancode_to_evdev(scancode) is None
    assert scancode_to_x_keycode(scancode) is None


def test_no_two_scancodes_share_a_key() -> None:
    """Except SysRq, which is both Alt+SysRq (0x54) and Print Screen (E0 37) on a PC."""
    evdev = [code for scancode, code in SCANCODE_TO_EVDEV.items() if scancode != 0x54]
    assert len(evdev) == len(set(evdev))


def test_x_keycodes_are_in_the_core_range() -> None:
    for scancode in SCANCODE_TO_EVDEV:
        keycode = scancode_to_x_keycode(scancode)
        assert keycode is not None and 8 <= keycode <= 255


def test_xfree86_keycodes() -> None:
    assert scancode_to_x_keycode(0x1E, xfree86=True) == 38  # main block: scancode + 8 too
    assert scancode_to_x_keycode(0xE048, xfree86=True) == 98  # Up
    assert scancode_to_x_keycode(PAUSE, xfree86=True) == 110
    assert scancode_to_x_keycode(0xE02A, xfree86=True) is None
    assert all(8 <= code <= 255 for code in XFREE86_E0.values())
    assert len(set(XFREE86_E0.values())) == len(XFREE86_E0)
