#!/usr/bin/env bash
# The test command: installs what the suite needs (Debian packages for the real clients, the
# project with its test extra in .venv, the browser driver's npm package), then runs ruff,
# mypy and pytest.  Extra arguments go to pytest; PYTHON=... uses that interpreter instead
# of .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers: spice-gtk through GObject introspection (Debian's python3), remote-viewer on
# Xvfb with xdotool and ImageMagick's import for screenshots, tshark/dumpcap for captures,
# ffmpeg's ffprobe to read capture mode's display.mp4, a real Xorg (dummy video driver)
# for the desktop tests besides Xvfb, and spice-html5 in headless Chromium (driven from
# node by puppeteer-core, installed below from npm), spicy-screenshot (spice-client-gtk), and
# PulseAudio with its tools for the sound tests (tests/interop/pulse.py starts its own daemon),
# and the GStreamer elements spice-gtk plays sound through (appsrc, audioconvert, pulsesink).
# gcc and linux-libc-dev: pynput (the test extra) pulls python-evdev on Linux, which pip
# builds from source against linux/input.h.
# The GNOME Wayland tests: headless mutter with pipewire + wireplumber under dbus-run-session,
# foot as the window, PipeWire's GStreamer plugin, what building PyGObject (the gnome
# extra) needs, and wl-clipboard (wl-copy, wl-paste) for the GNOME clipboard test.
DEBIAN_PACKAGES=(python3 python3-gi gir1.2-spiceclientglib-2.0 virt-viewer xvfb x11-utils
                 xdotool imagemagick tshark xterm x11-apps x11-xserver-utils ffmpeg
                 xserver-xorg-core xserver-xorg-video-dummy chromium spice-html5 nodejs
                 spice-client-gtk python3-venv pulseaudio pulseaudio-utils sox
                 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-pulseaudio
                 gstreamer1.0-plugins-bad gstreamer1.0-libav
                 gcc linux-libc-dev xclip
                 mutter pipewire wireplumber gstreamer1.0-pipewire foot dbus-daemon
                 gir1.2-gstreamer-1.0 libgirepository1.0-dev libcairo2-dev pkg-config
                 python3-dev wl-clipboard)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$package")
done
# Debian's npm, unless the installed node brings its own (NodeSource's nodejs does).
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

source tests/venv.sh
PYTHON=${PYTHON:-$(project_python)}
# PyGObject from 3.51 on builds against GLib 2.80's girepository-2.0 (Debian 12 has 2.74).
pygobject=()
pkg-config --exists girepository-2.0 || pygobject=('PyGObject<3.51')
"$PYTHON" -m pip install -q -e '.[test,capture,gnome]' "${pygobject[@]}"
# The browser driver's one npm dependency, exactly as locked (no browser download).
npm ci --prefix tests/interop/html5 --no-audit --no-fund --loglevel=error >/dev/null
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check --quiet .
"$PYTHON" -m mypy
if [ $# -eq 0 ]; then
    # The kernels' logic (codecs, the desktop's compare) once more as plain Python, then
    # compiled with bounds checks (its own cache, so the checked build never replaces the
    # fast one).
    kernels="tests/encoders tests/spiceserver/sources/test_tiles_kernel.py"
    # shellcheck disable=SC2086
    NUMBA_DISABLE_JIT=1 "$PYTHON" -m pytest -q $kernels
    # shellcheck disable=SC2086
    NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR="${TMPDIR:-/tmp}/spiceserver-numba-boundscheck" \
        "$PYTHON" -m pytest -q $kernels
    # The whole suite prints its slowest tests: it has a 15-minute budget to keep.
    set -- --durations=15
fi
"$PYTHON" -m pytest -q "$@"
