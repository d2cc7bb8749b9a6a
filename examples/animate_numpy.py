"""Serve a numpy array that this program animates: a red square sliding over a gradient.

python examples/animate_numpy.py --port 5900 --password secret
remote-viewer spice://127.0.0.1:5900     # then type the password
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import numpy as np

from spiceserver import InputEvent, KeyEvent, NumpySource, Rect, SpiceServer


def on_input(event: InputEvent) -> None:
    if isinstance(event, KeyEvent) and event.pressed:
        print(f"key {event.scancode:#x}")


async def main(port: int, password: str) -> None:
    width, height = 640, 480
    source = NumpySource(width, height)
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    source.frame[..., 0] = ramp  # blue rises from left to right
    source.frame[..., 1] = ramp[::-1]
    band = Rect(0, 200, width, 40)
    background = source.frame[band.y : band.bottom].copy()  # the gradient under the square
    async with SpiceServer(source, password=password, port=port, on_input=on_input) as server:
        print(f"serving on {server.uri}")
        step = 0
        while True:
            x = (step * 4) % (width - 40)
            source.frame[band.y : band.bottom] = background
            source.frame[band.y : band.bottom, x : x + 40, :3] = (0, 0, 255)  # B, G, R: red
            source.damage([band])
            step += 1
            await asyncio.sleep(1 / 30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=5900)
    parser.add_argument("--password", default="secret")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(args.port, args.password))
