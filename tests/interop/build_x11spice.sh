#!/usr/bin/env bash
# Builds x11spice (an X desktop served by libspice-server: the benchmark's libspice peer,
# tests/interop/bench_video.py --x11spice PATH) from a source checkout, with Debian 12's
# libspice-server 0.15.  Only the program is built: its own test program does not link
# against this GLib (src/tests lacks the GLib libraries), and the benchmark needs none of it.
#
#   tests/interop/build_x11spice.sh SRC_DIR        # prints the binary's path
#
# SRC_DIR: a checkout of https://gitlab.freedesktop.org/xorg/app/x11spice (the benchmark
# figures came from the GitHub mirror jwhite66/x11spice, 6397449, version 1.1).
set -euo pipefail
src=$(cd "${1:?usage: $0 SRC_DIR}" && pwd)
packages=(libspice-server-dev libspice-protocol-dev libxcb-damage0-dev libxcb-xtest0-dev
          libxcb-shm0-dev libxcb-util-dev libxcb-xkb-dev libxcb-xfixes0-dev libgtk-3-dev
          libpixman-1-dev libglib2.0-dev autoconf automake libtool make gcc pkg-config)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
cd "$src"
./autogen.sh >/dev/null
make -C src x11spice >/dev/null
echo "$src/src/x11spice"
