"""PC AT (set 1) scancodes, as SPICE carries them, to Linux evdev and X keycodes.

A SPICE client sends *physical* keys: the set-1 make code of the key the person pressed,
``0xE000 | code`` for keys that come with an E0 prefix and ``0xE11D`` for Pause (see
:mod:`spiceserver.protocol.events`).  Mapping that to an X keycode — rather than to the
character the client's layout would type — makes a key mean on the server what it means on a
PC keyboard plugged into the server, whatever layout either side uses; this is what QEMU and
spice-server do for a guest.

The table goes through the Linux evdev code (``KEY_*`` of ``linux/input-event-codes.h``):
X servers that use the ``evdev`` XKB keycodes (Xorg with libinput or evdev, Xvfb, Xwayland,
xrdp's xorgxrdp) number keys as evdev + 8.  The older ``xfree86`` keycodes (the Xorg ``kbd``
driver, some VNC servers) agree for the main block but number the E0 keys differently;
:data:`XFREE86_E0` holds those.

Pure data and functions: no X connection here, so the tables are unit-tested on their own.
"""

from __future__ import annotations

__all__ = [
    "EVDEV_OFFSET",
    "PAUSE",
    "SCANCODE_TO_EVDEV",
    "XFREE86_E0",
    "scancode_to_evdev",
    "scancode_to_x_keycode",
]

#: X keycode = evdev code + 8 on ``evdev`` XKB keycodes (X keycodes start at 8).
EVDEV_OFFSET = 8

#: The E1-prefixed Pause key as :class:`~spiceserver.protocol.events.KeyEvent` reports it.
PAUSE = 0xE11D

# Set-1 make codes 0x01..0x53 and 0x56..0x58 equal their evdev codes: the Linux numbering
# was taken from the AT keyboard (KEY_ESC 1 … KEY_KPDOT 83, KEY_102ND 86, KEY_F11 87, KEY_F12 88).
_IDENTITY = [*range(0x01, 0x54), 0x56, 0x57, 0x58]

_OTHER_PLAIN = {
    0x54: 99,  # Alt+SysRq sends its own make code: KEY_SYSRQ
    0x59: 117,  # KEY_KPEQUAL
    0x70: 93,  # KEY_KATAKANAHIRAGANA
    0x73: 89,  # KEY_RO
    0x79: 92,  # KEY_HENKAN
    0x7B: 94,  # KEY_MUHENKAN
    0x7D: 124,  # KEY_YEN
}

_E0 = {
    0x1C: 96,  # KEY_KPENTER
    0x1D: 97,  # KEY_RIGHTCTRL
    0x35: 98,  # KEY_KPSLASH
    0x37: 99,  # KEY_SYSRQ (Print Screen)
    0x38: 100,  # KEY_RIGHTALT (AltGr)
    0x47: 102,  # KEY_HOME
    0x48: 103,  # KEY_UP
    0x49: 104,  # KEY_PAGEUP
    0x4B: 105,  # KEY_LEFT
    0x4D: 106,  # KEY_RIGHT
    0x4F: 107,  # KEY_END
    0x50: 108,  # KEY_DOWN
    0x51: 109,  # KEY_PAGEDOWN
    0x52: 110,  # KEY_INSERT
    0x53: 111,  # KEY_DELETE
    0x5B: 125,  # KEY_LEFTMETA (left Super / Windows)
    0x5C: 126,  # KEY_RIGHTMETA
    0x5D: 127,  # KEY_COMPOSE (Menu)
    0x5E: 116,  # KEY_POWER
    0x5F: 142,  # KEY_SLEEP
    0x63: 143,  # KEY_WAKEUP
    0x10: 165,  # KEY_PREVIOUSSONG
    0x19: 163,  # KEY_NEXTSONG
    0x20: 113,  # KEY_MUTE
    0x21: 140,  # KEY_CALC
    0x22: 164,  # KEY_PLAYPAUSE
    0x24: 166,  # KEY_STOPCD
    0x2E: 114,  # KEY_VOLUMEDOWN
    0x30: 115,  # KEY_VOLUMEUP
    0x32: 172,  # KEY_HOMEPAGE
    0x65: 217,  # KEY_SEARCH
    0x66: 156,  # KEY_BOOKMARKS
    0x67: 173,  # KEY_REFRESH
    0x68: 128,  # KEY_STOP
    0x69: 159,  # KEY_FORWARD
    0x6A: 158,  # KEY_BACK
    0x6B: 157,  # KEY_COMPUTER
    0x6C: 155,  # KEY_MAIL
    0x6D: 226,  # KEY_MEDIA
}

#: Scancode (``code``, ``0xE000 | code`` or :data:`PAUSE`) → Linux evdev key code.
SCANCODE_TO_EVDEV: dict[int, int] = {
    **{code: code for code in _IDENTITY},
    **_OTHER_PLAIN,
    **{0xE000 | code: evdev for code, evdev in _E0.items()},
    PAUSE: 119,  # KEY_PAUSE
}

#: X keycodes of the E0 keys (and Pause) under the ``xfree86`` XKB keycodes; the main block
#: is scancode + 8 there as with evdev.
XFREE86_E0: dict[int, int] = {
    0xE01C: 108,  # KPEN
    0xE01D: 109,  # RCTL
    0xE035: 112,  # KPDV
    0xE037: 111,  # PRSC
    0xE038: 113,  # RALT
    0xE047: 97,  # HOME
    0xE048: 98,  # UP
    0xE049: 99,  # PGUP
    0xE04B: 100,  # LEFT
    0xE04D: 102,  # RGHT
    0xE04F: 103,  # END
    0xE050: 104,  # DOWN
    0xE051: 105,  # PGDN
    0xE052: 106,  # INS
    0xE053: 107,  # DELE
    0xE05B: 115,  # LWIN
    0xE05C: 116,  # RWIN
    0xE05D: 117,  # MENU
    PAUSE: 110,  # PAUS
}


def scancode_to_evdev(scancode: int) -> int | None:
    """The evdev code of a SPICE scancode; None for codes no PC key sends.

    The fake shifts a PC keyboard wraps around some E0 keys (``E0 2A``, ``E0 36``) and
    anything unknown map to None: dropping them is what a real keyboard controller does.
    """
    return SCANCODE_TO_EVDEV.get(scancode)


def scancode_to_x_keycode(scancode: int, *, xfree86: bool = False) -> int | None:
    """The X keycode for a SPICE scancode, on ``evdev`` (default) or ``xfree86`` keycodes."""
    if xfree86:
        if scancode in XFREE86_E0:
            return XFREE86_E0[scancode]
        if scancode > 0xFF:
            return None
        return scancode + EVDEV_OFFSET if scancode in SCANCODE_TO_EVDEV else None
    evdev = SCANCODE_TO_EVDEV.get(scancode)
    return None if evdev is None else evdev + EVDEV_OFFSET
