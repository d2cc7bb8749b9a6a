"""SPICE scancodes to what pynput presses, per platform: pure data.

A SPICE client sends the PC AT set-1 make code of the key pressed (``0xE000 | code`` for the
E0 keys, :data:`~spiceserver.keymap.PAUSE` for Pause).  :mod:`spiceserver.keymap` turns that
into an X keycode for XTEST; these tables turn it into what pynput's Controllers take on each
platform, so :class:`~spiceserver.pynput_input.PynputInput` can press the same keys:

* **X** (pynput's ``xorg`` backend): a keysym, as ``KeyCode.from_vk(keysym)``.  pynput's X
  backend treats ``vk`` as a keysym and presses the keycode the server's keymap binds it to
  (``keysym_to_keycode``, then XTEST; pynput/keyboard/_xorg.py ``Controller._handle``).  Its
  named ``Key`` members are exactly that too (``Key.up`` is ``from_vk(XK_Up)``), but there are
  none for the keypad or the media keys, so the table holds keysyms throughout: the US layout's
  unshifted keysym of each key (keypad keys as with Num Lock off, so X applies Num Lock as
  on a real keyboard).  Latin-1 keysyms equal their character's code point, hence ``ord``.
* **macOS** (``darwin``): the ``kVK_*`` virtual keycodes of Carbon's HIToolbox/Events.h, which
  name physical keys like scancodes do; the media keys are not key codes there but pynput
  ``Key`` members (NX system-defined events): :data:`MACOS_MEDIA`.
* **Windows** (``win32``): the VK code of the US layout (winuser.h) plus the set-1 code itself
  as the scan code, with the extended flag for E0 keys: ``KeyCode.from_vk(vk, _scan=scan,
  _flags=KEYEVENTF_EXTENDEDKEY)`` (:func:`windows_key`).

Scancodes the XTEST table covers that a platform has no key for are listed, with the reason,
in :data:`NOT_ON` (``tests/spiceserver/test_keytables.py`` checks that every platform covers
the XTEST table exactly, less those).  The values were checked against qemu/keycodemapdb
``data/keymaps.csv`` (where it and this table differ a comment says why) and against pynput's
own ``Key`` members of each backend (the same test).
"""

from __future__ import annotations

from spiceserver.keymap import PAUSE

__all__ = [
    "BUTTONS",
    "MACOS_MEDIA",
    "MACOS_VK",
    "NOT_ON",
    "PLATFORMS",
    "WINDOWS_VK",
    "X_KEYSYMS",
    "windows_key",
]

#: pynput's backend names, as its ``PYNPUT_BACKEND`` and ``sys.platform`` choose them.
PLATFORMS = ("xorg", "darwin", "win32")

_LETTERS_SET1 = {
    0x10: "q", 0x11: "w", 0x12: "e", 0x13: "r", 0x14: "t", 0x15: "y", 0x16: "u", 0x17: "i",
    0x18: "o", 0x19: "p", 0x1E: "a", 0x1F: "s", 0x20: "d", 0x21: "f", 0x22: "g", 0x23: "h",
    0x24: "j", 0x25: "k", 0x26: "l", 0x2C: "z", 0x2D: "x", 0x2E: "c", 0x2F: "v", 0x30: "b",
    0x31: "n", 0x32: "m",
}  # fmt: skip
_DIGITS_SET1 = {0x02 + i: "1234567890"[i] for i in range(10)}
#: The US layout's punctuation keys, unshifted.
_PUNCTUATION_SET1 = {
    0x0C: "-", 0x0D: "=", 0x1A: "[", 0x1B: "]", 0x27: ";", 0x28: "'", 0x29: "`", 0x2B: "\\",
    0x33: ",", 0x34: ".", 0x35: "/", 0x39: " ",
    0x56: "<",  # the ISO key left of Z (KEY_102ND): < > on pc105 keymaps, US included
}  # fmt: skip

# ----------------------------------------------------------------------------------- X keysyms

#: Scancode → X keysym (keysymdef.h, XF86keysym.h) of the US layout, level 1.
X_KEYSYMS: dict[int, int] = {
    **{code: ord(char) for code, char in _LETTERS_SET1.items()},
    **{code: ord(char) for code, char in _DIGITS_SET1.items()},
    **{code: ord(char) for code, char in _PUNCTUATION_SET1.items()},
    0x01: 0xFF1B,  # Escape
    0x0E: 0xFF08,  # BackSpace
    0x0F: 0xFF09,  # Tab
    0x1C: 0xFF0D,  # Return
    0x1D: 0xFFE3,  # Control_L
    0x2A: 0xFFE1,  # Shift_L
    0x36: 0xFFE2,  # Shift_R
    0x37: 0xFFAA,  # KP_Multiply
    0x38: 0xFFE9,  # Alt_L
    0x3A: 0xFFE5,  # Caps_Lock
    **{0x3B + i: 0xFFBE + i for i in range(10)},  # F1 … F10
    0x45: 0xFF7F,  # Num_Lock
    0x46: 0xFF14,  # Scroll_Lock
    0x47: 0xFF95,  # KP_Home (7)
    0x48: 0xFF97,  # KP_Up (8)
    0x49: 0xFF9A,  # KP_Prior (9)
    0x4A: 0xFFAD,  # KP_Subtract
    0x4B: 0xFF96,  # KP_Left (4)
    0x4C: 0xFF9D,  # KP_Begin (5)
    0x4D: 0xFF98,  # KP_Right (6)
    0x4E: 0xFFAB,  # KP_Add
    0x4F: 0xFF9C,  # KP_End (1)
    0x50: 0xFF99,  # KP_Down (2)
    0x51: 0xFF9B,  # KP_Next (3)
    0x52: 0xFF9E,  # KP_Insert (0)
    0x53: 0xFF9F,  # KP_Delete (.)
    0x54: 0xFF61,  # Print: Alt+SysRq's make code is the Print Screen key (KEY_SYSRQ)
    0x57: 0xFFC8,  # F11
    0x58: 0xFFC9,  # F12
    0x59: 0xFFBD,  # KP_Equal
    0x70: 0xFF27,  # Hiragana_Katakana
    0x79: 0xFF23,  # Henkan_Mode
    0x7B: 0xFF22,  # Muhenkan
    0xE01C: 0xFF8D,  # KP_Enter
    0xE01D: 0xFFE4,  # Control_R
    0xE035: 0xFFAF,  # KP_Divide
    0xE037: 0xFF61,  # Print
    0xE038: 0xFFEA,  # Alt_R (the US layout's right Alt; AltGr layouts bind ISO_Level3_Shift)
    0xE047: 0xFF50,  # Home
    0xE048: 0xFF52,  # Up
    0xE049: 0xFF55,  # Prior
    0xE04B: 0xFF51,  # Left
    0xE04D: 0xFF53,  # Right
    0xE04F: 0xFF57,  # End
    0xE050: 0xFF54,  # Down
    0xE051: 0xFF56,  # Next
    0xE052: 0xFF63,  # Insert
    0xE053: 0xFFFF,  # Delete
    0xE05B: 0xFFEB,  # Super_L
    0xE05C: 0xFFEC,  # Super_R
    0xE05D: 0xFF67,  # Menu
    0xE05E: 0x1008FF2A,  # XF86PowerOff
    0xE05F: 0x1008FF2F,  # XF86Sleep
    0xE063: 0x1008FF2B,  # XF86WakeUp
    0xE010: 0x1008FF16,  # XF86AudioPrev
    0xE019: 0x1008FF17,  # XF86AudioNext
    0xE020: 0x1008FF12,  # XF86AudioMute
    0xE021: 0x1008FF1D,  # XF86Calculator
    0xE022: 0x1008FF14,  # XF86AudioPlay
    0xE024: 0x1008FF15,  # XF86AudioStop
    0xE02E: 0x1008FF11,  # XF86AudioLowerVolume
    0xE030: 0x1008FF13,  # XF86AudioRaiseVolume
    0xE032: 0x1008FF18,  # XF86HomePage
    0xE065: 0x1008FF1B,  # XF86Search
    0xE066: 0x1008FF30,  # XF86Favorites
    0xE067: 0x1008FF73,  # XF86Reload
    0xE068: 0xFF69,  # Cancel (KEY_STOP: xkeyboard-config's evdev map binds it so)
    0xE069: 0x1008FF27,  # XF86Forward
    0xE06A: 0x1008FF26,  # XF86Back
    0xE06B: 0x1008FF33,  # XF86MyComputer
    0xE06C: 0x1008FF19,  # XF86Mail
    0xE06D: 0x1008FF32,  # XF86AudioMedia
    PAUSE: 0xFF13,  # Pause
}

# ------------------------------------------------------------------------------ macOS kVK codes

_MACOS_LETTERS = {
    "a": 0x00, "s": 0x01, "d": 0x02, "f": 0x03, "h": 0x04, "g": 0x05, "z": 0x06, "x": 0x07,
    "c": 0x08, "v": 0x09, "b": 0x0B, "q": 0x0C, "w": 0x0D, "e": 0x0E, "r": 0x0F, "y": 0x10,
    "t": 0x11, "o": 0x1F, "u": 0x20, "i": 0x22, "p": 0x23, "l": 0x25, "j": 0x26, "k": 0x28,
    "n": 0x2D, "m": 0x2E,
    "1": 0x12, "2": 0x13, "3": 0x14, "4": 0x15, "6": 0x16, "5": 0x17, "9": 0x19, "7": 0x1A,
    "8": 0x1C, "0": 0x1D,
    "=": 0x18, "-": 0x1B, "]": 0x1E, "[": 0x21, "'": 0x27, ";": 0x29, "\\": 0x2A, ",": 0x2B,
    "/": 0x2C, ".": 0x2F, "`": 0x32, " ": 0x31,
    "<": 0x0A,  # kVK_ISO_Section: the ISO key left of Z
}  # fmt: skip

#: Scancode → macOS virtual keycode (``kVK_*``, Carbon HIToolbox/Events.h).
MACOS_VK: dict[int, int] = {
    **{
        code: _MACOS_LETTERS[char]
        for table in (_LETTERS_SET1, _DIGITS_SET1, _PUNCTUATION_SET1)
        for code, char in table.items()
    },
    0x01: 0x35,  # kVK_Escape
    0x0E: 0x33,  # kVK_Delete (backspace)
    0x0F: 0x30,  # kVK_Tab
    0x1C: 0x24,  # kVK_Return
    0x1D: 0x3B,  # kVK_Control
    0x2A: 0x38,  # kVK_Shift
    0x36: 0x3C,  # kVK_RightShift
    0x37: 0x43,  # kVK_ANSI_KeypadMultiply
    0x38: 0x3A,  # kVK_Option
    0x3A: 0x39,  # kVK_CapsLock
    0x3B: 0x7A,  # kVK_F1
    0x3C: 0x78,  # kVK_F2
    0x3D: 0x63,  # kVK_F3
    0x3E: 0x76,  # kVK_F4
    0x3F: 0x60,  # kVK_F5
    0x40: 0x61,  # kVK_F6
    0x41: 0x62,  # kVK_F7
    0x42: 0x64,  # kVK_F8
    0x43: 0x65,  # kVK_F9
    0x44: 0x6D,  # kVK_F10
    0x45: 0x47,  # kVK_ANSI_KeypadClear: where Num Lock sits on Apple keypads
    0x47: 0x59,  # kVK_ANSI_Keypad7
    0x48: 0x5B,  # kVK_ANSI_Keypad8
    0x49: 0x5C,  # kVK_ANSI_Keypad9
    0x4A: 0x4E,  # kVK_ANSI_KeypadMinus
    0x4B: 0x56,  # kVK_ANSI_Keypad4
    0x4C: 0x57,  # kVK_ANSI_Keypad5
    0x4D: 0x58,  # kVK_ANSI_Keypad6
    0x4E: 0x45,  # kVK_ANSI_KeypadPlus
    0x4F: 0x53,  # kVK_ANSI_Keypad1
    0x50: 0x54,  # kVK_ANSI_Keypad2
    0x51: 0x55,  # kVK_ANSI_Keypad3
    0x52: 0x52,  # kVK_ANSI_Keypad0
    0x53: 0x41,  # kVK_ANSI_KeypadDecimal
    0x57: 0x67,  # kVK_F11
    0x58: 0x6F,  # kVK_F12
    0x59: 0x51,  # kVK_ANSI_KeypadEquals
    0x73: 0x5E,  # kVK_JIS_Underscore (the JIS "ro" key)
    0x7D: 0x5D,  # kVK_JIS_Yen
    0xE01C: 0x4C,  # kVK_ANSI_KeypadEnter
    0xE01D: 0x3E,  # kVK_RightControl
    0xE035: 0x4B,  # kVK_ANSI_KeypadDivide
    0xE038: 0x3D,  # kVK_RightOption
    0xE047: 0x73,  # kVK_Home
    0xE048: 0x7E,  # kVK_UpArrow
    0xE049: 0x74,  # kVK_PageUp
    0xE04B: 0x7B,  # kVK_LeftArrow
    0xE04D: 0x7C,  # kVK_RightArrow
    0xE04F: 0x77,  # kVK_End
    0xE050: 0x7D,  # kVK_DownArrow
    0xE051: 0x79,  # kVK_PageDown
    0xE053: 0x75,  # kVK_ForwardDelete
    0xE05B: 0x37,  # kVK_Command (the Windows key's place)
    0xE05C: 0x36,  # kVK_RightCommand
    0xE05D: 0x6E,  # kVK_ContextualMenu
}

#: Scancode → pynput ``Key`` member: macOS sends these as NX system-defined media events,
#: which pynput's darwin backend makes for its media keys.
MACOS_MEDIA: dict[int, str] = {
    0xE010: "media_previous",
    0xE019: "media_next",
    0xE020: "media_volume_mute",
    0xE022: "media_play_pause",
    0xE02E: "media_volume_down",
    0xE030: "media_volume_up",
}

# ----------------------------------------------------------------------------- Windows VK codes

_WINDOWS_PUNCTUATION = {
    "-": 0xBD, "=": 0xBB, "[": 0xDB, "]": 0xDD, ";": 0xBA, "'": 0xDE, "`": 0xC0, "\\": 0xDC,
    ",": 0xBC, ".": 0xBE, "/": 0xBF, " ": 0x20,
    "<": 0xE2,  # VK_OEM_102
}  # fmt: skip

#: Scancode → Windows virtual-key code (winuser.h ``VK_*``) of the US layout.
WINDOWS_VK: dict[int, int] = {
    **{code: ord(char.upper()) for code, char in _LETTERS_SET1.items()},  # VK_A … VK_Z
    **{code: ord(char) for code, char in _DIGITS_SET1.items()},  # VK_0 … VK_9
    **{code: _WINDOWS_PUNCTUATION[char] for code, char in _PUNCTUATION_SET1.items()},
    0x01: 0x1B,  # VK_ESCAPE
    0x0E: 0x08,  # VK_BACK
    0x0F: 0x09,  # VK_TAB
    0x1C: 0x0D,  # VK_RETURN
    0x1D: 0xA2,  # VK_LCONTROL
    0x2A: 0xA0,  # VK_LSHIFT
    0x36: 0xA1,  # VK_RSHIFT
    0x37: 0x6A,  # VK_MULTIPLY
    0x38: 0xA4,  # VK_LMENU
    0x3A: 0x14,  # VK_CAPITAL
    **{0x3B + i: 0x70 + i for i in range(10)},  # VK_F1 … VK_F10
    0x45: 0x90,  # VK_NUMLOCK
    0x46: 0x91,  # VK_SCROLL
    0x47: 0x67,  # VK_NUMPAD7
    0x48: 0x68,  # VK_NUMPAD8
    0x49: 0x69,  # VK_NUMPAD9
    0x4A: 0x6D,  # VK_SUBTRACT
    0x4B: 0x64,  # VK_NUMPAD4
    0x4C: 0x65,  # VK_NUMPAD5
    0x4D: 0x66,  # VK_NUMPAD6
    0x4E: 0x6B,  # VK_ADD
    0x4F: 0x61,  # VK_NUMPAD1
    0x50: 0x62,  # VK_NUMPAD2
    0x51: 0x63,  # VK_NUMPAD3
    0x52: 0x60,  # VK_NUMPAD0
    0x53: 0x6E,  # VK_DECIMAL
    0x54: 0x2C,  # VK_SNAPSHOT (Alt+SysRq)
    0x57: 0x7A,  # VK_F11
    0x58: 0x7B,  # VK_F12
    0x59: 0x92,  # VK_OEM_NEC_EQUAL ("'=' key on numpad"; keycodemapdb has none)
    0x70: 0xF2,  # VK_OEM_COPY = VK_DBE_HIRAGANA (katakana/hiragana)
    0x73: 0xE2,  # VK_OEM_102: the JIS "ro" key in the Japanese layout
    0x79: 0x1C,  # VK_CONVERT (henkan)
    0x7B: 0x1D,  # VK_NONCONVERT (muhenkan)
    0x7D: 0xDC,  # VK_OEM_5: the JIS yen key in the Japanese layout
    0xE01C: 0x0D,  # VK_RETURN, extended: keypad Enter
    0xE01D: 0xA3,  # VK_RCONTROL
    0xE035: 0x6F,  # VK_DIVIDE
    0xE037: 0x2C,  # VK_SNAPSHOT
    0xE038: 0xA5,  # VK_RMENU
    0xE047: 0x24,  # VK_HOME
    0xE048: 0x26,  # VK_UP
    0xE049: 0x21,  # VK_PRIOR
    0xE04B: 0x25,  # VK_LEFT
    0xE04D: 0x27,  # VK_RIGHT
    0xE04F: 0x23,  # VK_END
    0xE050: 0x28,  # VK_DOWN
    0xE051: 0x22,  # VK_NEXT
    0xE052: 0x2D,  # VK_INSERT
    0xE053: 0x2E,  # VK_DELETE
    0xE05B: 0x5B,  # VK_LWIN
    0xE05C: 0x5C,  # VK_RWIN
    0xE05D: 0x5D,  # VK_APPS
    0xE05F: 0x5F,  # VK_SLEEP
    0xE010: 0xB1,  # VK_MEDIA_PREV_TRACK
    0xE019: 0xB0,  # VK_MEDIA_NEXT_TRACK
    0xE020: 0xAD,  # VK_VOLUME_MUTE
    0xE021: 0xB7,  # VK_LAUNCH_APP2 (the calculator key)
    0xE022: 0xB3,  # VK_MEDIA_PLAY_PAUSE
    0xE024: 0xB2,  # VK_MEDIA_STOP
    0xE02E: 0xAE,  # VK_VOLUME_DOWN
    0xE030: 0xAF,  # VK_VOLUME_UP
    0xE032: 0xAC,  # VK_BROWSER_HOME
    0xE065: 0xAA,  # VK_BROWSER_SEARCH
    0xE066: 0xAB,  # VK_BROWSER_FAVORITES
    0xE067: 0xA8,  # VK_BROWSER_REFRESH
    0xE068: 0xA9,  # VK_BROWSER_STOP
    0xE069: 0xA7,  # VK_BROWSER_FORWARD
    0xE06A: 0xA6,  # VK_BROWSER_BACK
    0xE06B: 0xB6,  # VK_LAUNCH_APP1 ("my computer")
    0xE06C: 0xB4,  # VK_LAUNCH_MAIL
    0xE06D: 0xB5,  # VK_LAUNCH_MEDIA_SELECT
    PAUSE: 0x13,  # VK_PAUSE
}

#: Scan code and extended flag where Windows does not report a key as its set-1 code: the
#: keyboard driver gives Num Lock the extended flag and Pause plain 0x45 (its E1 1D 45
#: sequence), as pynput's own ``Key.num_lock`` and ``Key.pause`` do.
_WINDOWS_SCAN = {0x45: (0x45, True), PAUSE: (0x45, False)}


def windows_key(scancode: int) -> tuple[int, int, bool] | None:
    """(VK, scan code, extended) for ``KeyCode.from_vk(vk, _scan=scan, _flags=…)``."""
    vk = WINDOWS_VK.get(scancode)
    if vk is None:
        return None
    scan, extended = _WINDOWS_SCAN.get(scancode, (scancode & 0xFF, scancode >> 8 == 0xE0))
    return vk, scan, extended


# ------------------------------------------------------------------------------- what is missing

_NO_US_KEYSYM = "the US layout binds no keysym to this JIS key, and pynput presses keysyms"
_NO_MAC_KEY = "macOS has no key code for it"
_NO_MAC_MEDIA = "a consumer key macOS keeps to itself: no key code, no NX media event in pynput"
_NO_WINDOWS_VK = "Windows has no virtual-key code for it (the system handles it itself)"

_MAC_LACKS_CONSUMER_KEYS = (
    0xE021, 0xE024, 0xE032, 0xE065, 0xE066, 0xE067, 0xE068, 0xE069, 0xE06A, 0xE06B, 0xE06C,
    0xE06D,
)  # fmt: skip

#: Platform → scancode of the XTEST table → why that platform's table lacks it.
NOT_ON: dict[str, dict[int, str]] = {
    "xorg": {0x73: _NO_US_KEYSYM, 0x7D: _NO_US_KEYSYM},
    "darwin": {
        0x46: "no Scroll Lock on Mac keyboards (kVK has none)",
        0x54: "no Print Screen / SysRq on Mac keyboards (kVK has none)",
        0xE037: "no Print Screen / SysRq on Mac keyboards (kVK has none)",
        PAUSE: "no Pause on Mac keyboards (kVK has none)",
        0xE052: "no Insert on Mac keyboards: the Help key in its place (kVK_Help) is another key",
        0x70: "Mac JIS keyboards have Eisu and Kana, not katakana/hiragana, henkan, muhenkan",
        0x79: "Mac JIS keyboards have Eisu and Kana, not katakana/hiragana, henkan, muhenkan",
        0x7B: "Mac JIS keyboards have Eisu and Kana, not katakana/hiragana, henkan, muhenkan",
        0xE05E: _NO_MAC_KEY,
        0xE05F: _NO_MAC_KEY,
        0xE063: _NO_MAC_KEY,
        # calculator, stop, browser home/search/favourites/refresh/stop/forward/back,
        # my computer, mail, media
        **dict.fromkeys(_MAC_LACKS_CONSUMER_KEYS, _NO_MAC_MEDIA),
    },
    "win32": {0xE05E: _NO_WINDOWS_VK, 0xE063: _NO_WINDOWS_VK},
}

# ---------------------------------------------------------------------------------- buttons

#: Platform → SPICE button number (``MouseButton``) → pynput ``Button`` member.  X's 8 and 9
#: are back and forward (evdev BTN_SIDE, BTN_EXTRA); Windows calls them X1 and X2; pynput's
#: macOS backend has only three buttons.  The wheel (4, 5) goes through ``Controller.scroll``.
BUTTONS: dict[str, dict[int, str]] = {
    "xorg": {1: "left", 2: "middle", 3: "right", 6: "button8", 7: "button9"},
    "darwin": {1: "left", 2: "middle", 3: "right"},
    "win32": {1: "left", 2: "middle", 3: "right", 6: "x1", 7: "x2"},
}
