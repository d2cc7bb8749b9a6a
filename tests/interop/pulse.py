"""A private PulseAudio daemon for the audio tests (SPICE-REFERENCE-2 §2.3), as a fixture.

Started once per test module that uses :func:`pulse_server`: as root is fine, in its own
``XDG_RUNTIME_DIR`` (a temporary directory), no default script (``-n``: no suspend-on-idle),
the native protocol, a null sink ``spice_null`` the desktop plays into, and always a sink.
The fixture points this process's environment at it (``parec``/``pactl`` the server runs find
it) and kills the daemon at the end.  A missing ``pulseaudio`` fails loudly.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["SINK", "pulse_server", "write_tone_wav"]

SINK = "spice_null"


@pytest.fixture(scope="module")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    for tool in ("pulseaudio", "pactl", "parec", "paplay"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: apt-get install pulseaudio pulseaudio-utils")
    runtime = tmp_path_factory.mktemp("xdg-runtime")
    runtime.chmod(0o700)
    saved = {name: os.environ.get(name) for name in ("XDG_RUNTIME_DIR", "PULSE_SERVER")}
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    os.environ.pop("PULSE_SERVER", None)
    env = dict(os.environ)
    command = [
        "pulseaudio",
        "--daemonize=yes",
        "--exit-idle-time=-1",
        "-n",
        "--load=module-native-protocol-unix",
        f"--load=module-null-sink sink_name={SINK}",
        "--load=module-always-sink",
    ]
    subprocess.run(command, env=env, check=True, timeout=30, capture_output=True)
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode:
            if time.monotonic() > deadline:
                pytest.fail("pulseaudio started but `pactl info` never answered")
            time.sleep(0.1)  # polling a daemon's socket: there is no event to wait on
        yield env
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=env, timeout=15, check=False)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_tone_wav(path: Path, frequency: float = 440.0, seconds: float = 3.0) -> Path:
    """A 48 kHz stereo S16 sine (what ``sox -n -r 48000 -c 2 X synth 3 sine 440`` makes)."""
    frames = int(48000 * seconds)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(48000)
        samples = bytearray()
        for i in range(frames):
            value = int(0.4 * 32767 * math.sin(2 * math.pi * frequency * i / 48000))
            samples += struct.pack("<hh", value, value)
        out.writeframes(bytes(samples))
    return path
