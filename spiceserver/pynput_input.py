"""SPICE input through pynput: the portable backend (``--input pynput``).

:class:`PynputInput` is an :class:`~spiceserver.input.InputBackend` like
:class:`~spiceserver.desktop_input.X11Input`: called on the event loop, it queues; its thread
(``spice-pynput-input``) presses keys and moves the pointer with pynput's keyboard and mouse
Controllers (:class:`~spiceserver.injector.ThreadedInput` holds the queue, the release of held
keys and buttons on close, and the lock-key sync).  Keys go by physical position through the
per-platform tables of :mod:`spiceserver.keytables`; the pointer takes absolute positions
(client mouse mode) and relative motion (server mode), buttons including back/forward where
pynput has them (X: 8 and 9, Windows: X1 and X2, macOS: none), and the wheel.

Where it is for.  On X, XTEST (``--input xtest``, the default there) is better in every way:
pynput's X backend injects through XTEST too (``Xlib.ext.xtest.fake_input`` for keys with a
``vk``, the pointer and the buttons), so it is no fallback for a display without XTEST, and it
reaches keys only through keysyms.  Its value is macOS (Quartz ``CGEventCreateKeyboardEvent``
with ``kVK`` codes, which are positional) and Windows (``SendInput`` with VK and scan code),
where no XTEST exists.  Those two run here untested: this CI has no macOS or Windows machine;
X11 on Xvfb is what ``tests/interop/test_desktop.py`` checks, with the same tests as XTEST.

**Keys it cannot produce on X**, and why — pynput presses ``KeyCode.from_vk(keysym)`` as
"the keycode the server's keymap binds that keysym to" (python-xlib ``keysym_to_keycode``):

* keys whose keysym the server's keymap lacks: on a US keymap (Xvfb's default, pc105 us) the
  JIS "ro" key (scancode 0x73) and yen key (0x7D) have no keysym at all, so
  :data:`~spiceserver.keytables.NOT_ON` leaves them out; any table key whose keysym is missing
  from the running keymap (checked at :meth:`PynputInput.start`, logged once) is dropped too —
  the Japanese and media keys on a keymap without them, for instance;
* keys another keycode shares a keysym with: the lowest keycode (lowest level first) wins, so
  the two Print keys of a PC (0x54, ``E0 37``) are one key, as in the XTEST table;
* on a server keymap that is not US, printable keys follow the keysym, not the position (the
  US ``y`` keysym is on the German Z key; ``[`` is on a level a plain press does not reach, so
  it types ``8``), and keys whose US keysym the layout lacks are dropped: layouts other than
  US want XTEST, which sends keycodes;
* a keymap change after :meth:`~PynputInput.start` (``setxkbmap``) is not seen: pynput and
  python-xlib keep the keymap they read first.

Lock keys: a client's ``KEY_MODIFIERS`` taps the lock keys that differ from the desktop's
state, which is read from the X keyboard LEDs (python-xlib, as XTEST does), Windows'
``GetKeyState`` or macOS's ``CGEventSourceFlagsState`` (Caps Lock only: Macs have no Num or
Scroll Lock, and a synthetic Caps Lock press may not toggle the lock there).  On Windows the
keypad sends VK_NUMPAD codes, which type digits whatever Num Lock says.

Import pitfalls (see :mod:`spiceserver.desktop_input`): pynput is an optional extra
(``pip install 'spiceserver[pynput]'``), imported only by :meth:`PynputInput.start`; on X it
opens ``$DISPLAY`` when imported and its Controllers open it again, so both happen with
``DISPLAY`` set to the source's display for the moment (under a lock); and importing it loads
``Xlib.threaded``, which makes every python-xlib connection of the process thread-safe (a small
cost for the desktop source's connections too).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any

from spiceserver.errors import ConfigError
from spiceserver.injector import ThreadedInput
from spiceserver.keytables import (
    BUTTONS,
    MACOS_MEDIA,
    MACOS_VK,
    PLATFORMS,
    WINDOWS_VK,
    X_KEYSYMS,
    windows_key,
)
from spiceserver.protocol.enums import KeyModifiers, MouseButton
from spiceserver.protocol.events import InputEvent

if TYPE_CHECKING:
    from Xlib.display import Display

__all__ = ["PynputInput", "pynput_platform"]

logger = logging.getLogger("spiceserver.desktop")

#: KEYEVENTF_EXTENDEDKEY (winuser.h): the E0 prefix, for ``KeyCode(_flags=…)`` on Windows.
_KEYEVENTF_EXTENDEDKEY = 0x0001
#: Windows VK codes of the lock keys, for ``GetKeyState`` (bit 0: toggled on).
_WINDOWS_LOCK_VKS = (
    (KeyModifiers.CAPS_LOCK, 0x14),
    (KeyModifiers.NUM_LOCK, 0x90),
    (KeyModifiers.SCROLL_LOCK, 0x91),
)
#: ``$DISPLAY`` is process-wide: one import or Controller at a time sets it.
_DISPLAY_LOCK = threading.Lock()


def pynput_platform() -> str:
    """The pynput backend this process would load: ``xorg``, ``darwin`` or ``win32``.

    Raises:
        ConfigError: for a ``PYNPUT_BACKEND`` this module has no table for (``uinput`` types
            through the console keymap and has no mouse).
    """
    chosen = os.environ.get("PYNPUT_BACKEND_KEYBOARD") or os.environ.get("PYNPUT_BACKEND")
    if chosen is None:
        chosen = {"darwin": "darwin", "win32": "win32"}.get(sys.platform, "xorg")
    if chosen not in PLATFORMS:
        raise ConfigError(
            f"pynput backend {chosen!r} is not supported for input (only {', '.join(PLATFORMS)})"
        )
    return chosen


class PynputInput(ThreadedInput):
    """Injects SPICE input events through pynput; also usable as a context manager.

    Args:
        display: The X display (the one the source shows); unused on macOS and Windows.
        view_only: Ignore every event (lock state is still reported).
        on_locks: As for :class:`~spiceserver.injector.ThreadedInput`.
        platform: One of :data:`~spiceserver.keytables.PLATFORMS`; default
            :func:`pynput_platform`.

    Raises:
        ConfigError: From :meth:`start`: pynput missing or failing to load, or on X a display
            that cannot be opened or has no XTEST.
    """

    thread_name = "spice-pynput-input"
    label = "pynput input"

    def __init__(
        self,
        display: str | None = None,
        *,
        view_only: bool = False,
        on_locks: Callable[[KeyModifiers], None] | None = None,
        platform: str | None = None,
    ) -> None:
        super().__init__(view_only=view_only, on_locks=on_locks)
        self.display_name = display
        self.platform = platform or pynput_platform()
        #: Scancodes of the table this desktop cannot produce (X: keysym not in the keymap).
        self.unavailable: set[int] = set()
        self._keys: dict[int, Any] = {}
        self._buttons: dict[int, Any] = {}
        self._keyboard: Any = None
        self._mouse: Any = None
        self._x_display: Display | None = None  # the LEDs (and the XTEST check) on X

    # ------------------------------------------------------------------ hooks

    def _connect(self) -> None:
        if self.platform == "xorg":
            self._connect_x()
        if self.view_only:
            return  # only the lock state: pynput is not even needed
        try:
            with self._display_env():
                from pynput import keyboard, mouse

                self._keyboard = keyboard.Controller()
                self._mouse = mouse.Controller()
        except ImportError as exc:
            self._disconnect()
            if exc.name == "pynput":
                raise ConfigError(
                    "--input pynput needs pynput: pip install 'spiceserver[pynput]'"
                ) from None
            raise ConfigError(f"pynput failed to load: {exc}") from None
        except Exception:
            self._disconnect()
            raise
        self._keys = self._key_table(keyboard)
        self._buttons = {
            number: getattr(mouse.Button, name) for number, name in BUTTONS[self.platform].items()
        }
        logger.info(
            "pynput input (%s%s): %d keys, %d buttons",
            self.platform,
            f" on {self.display_name}" if self.display_name else "",
            len(self._keys),
            len(self._buttons),
        )

    def _connect_x(self) -> None:
        from spiceserver.sources.desktop import open_display

        if self.display_name is None:
            self.display_name = os.environ.get("DISPLAY", "")
        display = open_display(self.display_name)
        if not self.view_only and not display.has_extension("XTEST"):
            display.close()
            raise ConfigError(
                f"X display {self.display_name!r} has no XTEST extension: pynput's X backend "
                "injects through XTEST as well, so no backend can inject input (use --view-only)"
            )
        self._x_display = display

    def _key_table(self, keyboard: Any) -> dict[int, Any]:
        key_code = keyboard.KeyCode
        if self.platform == "xorg":
            # pynput's own view of the keymap (keysym → keycode): a keysym missing there would
            # make its fake_input fail on keycode 0.
            mapping = self._keyboard.keyboard_mapping
            table = {}
            for scancode, keysym in X_KEYSYMS.items():
                if keysym in mapping:
                    table[scancode] = key_code.from_vk(keysym)
                else:
                    self.unavailable.add(scancode)
            if self.unavailable:
                logger.info(
                    "pynput input: %d keys have no keysym on %s (dropped): %s",
                    len(self.unavailable),
                    self.display_name,
                    " ".join(f"{code:#06x}" for code in sorted(self.unavailable)),
                )
            return table
        if self.platform == "darwin":
            table = {scancode: key_code.from_vk(vk) for scancode, vk in MACOS_VK.items()}
            table.update({sc: getattr(keyboard.Key, name) for sc, name in MACOS_MEDIA.items()})
            return table
        return {
            scancode: key_code.from_vk(
                vk, _scan=scan, _flags=_KEYEVENTF_EXTENDEDKEY if extended else 0
            )
            for scancode in WINDOWS_VK
            if (key := windows_key(scancode)) is not None
            for vk, scan, extended in [key]
        }

    def _disconnect(self) -> None:
        # pynput's Controllers close their own X connections when collected.
        self._keyboard = self._mouse = None
        display, self._x_display = self._x_display, None
        if display is not None:
            display.close()

    def inject(self, event: InputEvent) -> None:
        try:
            super().inject(event)
        except Exception as exc:  # pynput's X11Error and the like: one event lost, not the thread
            logger.debug("pynput could not inject %s: %s", event, exc)

    def _key_target(self, scancode: int) -> Hashable | None:
        return self._keys.get(scancode)

    def _press_key(self, target: Hashable, pressed: bool) -> None:
        try:
            if pressed:
                self._keyboard.press(target)
            else:
                self._keyboard.release(target)
        except Exception as exc:  # as in inject(); here so release_all() goes on past it
            logger.debug(
                "pynput could not %s %r: %s", "press" if pressed else "release", target, exc
            )

    def _button_target(self, button: MouseButton) -> Hashable | None:
        target: Hashable | None = self._buttons.get(int(button))
        return target

    def _press_button(self, target: Hashable, pressed: bool) -> None:
        if pressed:
            self._mouse.press(target)
        else:
            self._mouse.release(target)

    def _wheel(self, steps: int) -> None:
        self._mouse.scroll(0, -steps)  # pynput: positive is up; SPICE: negative is up

    def _move_to(self, x: int, y: int) -> None:
        self._mouse.position = (x, y)

    def _move_by(self, dx: int, dy: int) -> None:
        self._mouse.move(dx, dy)

    def _read_locks(self) -> KeyModifiers | None:
        reader = _LOCK_READERS.get(self.platform)
        return None if reader is None else reader(self)

    # ------------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def _display_env(self) -> Iterator[None]:
        """``DISPLAY`` set to the source's display while pynput is imported and connects."""
        if self.platform != "xorg" or not self.display_name:
            yield
            return
        with _DISPLAY_LOCK:
            previous = os.environ.get("DISPLAY")
            os.environ["DISPLAY"] = self.display_name
            try:
                yield
            finally:
                if previous is None:
                    del os.environ["DISPLAY"]
                else:
                    os.environ["DISPLAY"] = previous


def _x_locks(backend: PynputInput) -> KeyModifiers | None:
    from spiceserver.desktop_input import read_x_locks

    return None if backend._x_display is None else read_x_locks(backend._x_display)


def _windows_locks(backend: PynputInput) -> KeyModifiers:
    import ctypes

    user32 = ctypes.WinDLL("user32")  # type: ignore[attr-defined,unused-ignore]
    locks = KeyModifiers(0)
    for flag, vk in _WINDOWS_LOCK_VKS:
        if user32.GetKeyState(vk) & 1:
            locks |= flag
    return locks


def _macos_locks(backend: PynputInput) -> KeyModifiers:
    import Quartz  # pyobjc-framework-Quartz: a dependency of pynput on macOS

    flags = Quartz.CGEventSourceFlagsState(Quartz.kCGEventSourceStateHIDSystemState)
    return KeyModifiers.CAPS_LOCK if flags & Quartz.kCGEventFlagMaskAlphaShift else KeyModifiers(0)


#: Platform → how that desktop's lock state is read.
_LOCK_READERS: dict[str, Callable[[PynputInput], KeyModifiers | None]] = {
    "xorg": _x_locks,
    "win32": _windows_locks,
    "darwin": _macos_locks,
}
