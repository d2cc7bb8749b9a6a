"""Ours against the reference C encoders, interleaved in one process: ``python3 -m
encoders.bench_c [--reps N] [--codecs quic,lz,glz] [IMAGE ...]``.

Needs the shared harness built (``../shared/refcodec/build.sh --native``; ``--refcodec DIR`` or
``$REFCODEC_DIR`` if it is elsewhere).  For each image and codec the contenders are called on
the same frame in rounds, each round starting with the next contender (so none always runs right
after another): ``c`` (gcc -O2) and ``c_native`` (-O3 -march=native; if built), the whole frame
in one C call; ``ours`` the whole frame (``encoders.<codec>_encode``, or a fresh
``GlzDictionary`` for GLZ: the new-surface image the server sends first); ``ours_bands`` the
frame as the server encodes a full update (``spiceserver.region.split_rows`` into
``MAX_BAND_PIXELS`` bands, read as the server reads a damaged area, one copy whose views the
bands are (``display.encode.read_in_areas``), outside the timer; QUIC/LZ bands stacked into one
image per damaged area by the server's ``stacks`` and ``codecs.encode_stack``, the stacks dealt
out to the server's ``encoder_threads`` workers; GLZ bands read as the server reads one big area
for a GLZ client (``display.encode.read_for_encode``: into the room the session dictionary
lends, so the encode copies nothing), stacked into one image per damaged area by the server's
own ``glz_stacks`` and ``ImageEncoder.encode_glz_stack``, on one worker); for GLZ also
``ours_each``, every band its own image (what the server did before stacking); ``c_worker`` and
``c_native_worker``, the same C calls made on a worker of that pool and awaited, timed as
``ours_bands`` is.  Why those: libspice encodes on its display worker thread, not on the thread
that asks, and on these VM guests a core that has sat idle runs its first milliseconds slower (a
QUIC frame encoded right after a 10 ms sleep took 1.3-1.9x its warm time, on either core), which
a call on a worker pays and a call on the timing thread, just warmed by the previous contender,
does not.  Printed: per image and codec the ratio ours/C (median over rounds of C time / our
time; > 1: ours faster), the ratio of the fastest calls against both C builds, ours against C on
a worker (``wk``), and bytes against C; then geometric means.  Only ratios from one run mean
anything on a shared machine.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

_HERE = Path(__file__).resolve().parent


def _refcodec(path: str | None) -> Any:
    default = _HERE.parent.parent / "shared" / "refcodec"
    where = Path(path) if path else Path(os.environ.get("REFCODEC_DIR", str(default)))
    sys.path.insert(0, str(where))
    import refcodec  # type: ignore[import-not-found]

    return refcodec


def _server_layout() -> tuple[int, int]:
    from spiceserver.config import ServerConfig
    from spiceserver.server.channels.display.update_loop import MAX_BAND_PIXELS

    threads = ServerConfig.__dataclass_fields__["encoder_threads"].default
    assert isinstance(threads, int)
    return int(MAX_BAND_PIXELS), threads


def _contenders(
    rc: Any, rc_native: Any, codec: str, frame: np.ndarray, pool: ThreadPoolExecutor, band_px: int
) -> dict[str, Callable[[], tuple[int, float]]]:
    import encoders
    from spiceserver.region import split_rows
    from spiceserver.sources.base import Rect

    height, width = frame.shape[:2]
    window = 8 << 20
    rects = split_rows(Rect(0, 0, width, height), band_px)
    # read as the server reads a lone display's damaged area: one copy, the bands its views
    from spiceserver.server.channels.display.encode import read_for_encode, read_in_areas

    area = Rect(0, 0, width, height)
    copy = frame.copy()
    bands = [pixels for _, pixels in read_in_areas(lambda r: copy, [(area, rects)])]
    out: dict[str, Callable[[], tuple[int, float]]] = {}
    for name, lib in (("c", rc), ("c_native", rc_native)):
        if lib is None:
            continue
        if codec == "glz":

            def c_call(lib: Any = lib) -> tuple[int, float]:
                with lib.glz_dictionary(window) as d:
                    n, ns = d.encode_timed(frame)
                return n, ns * 1e-9
        else:

            def c_call(lib: Any = lib) -> tuple[int, float]:
                n, ns = lib.encode_timed(codec, frame)
                return n, ns * 1e-9

        out[name] = c_call

        def c_on_worker(c_call: Callable[[], tuple[int, float]] = c_call) -> tuple[int, float]:
            t0 = time.perf_counter()
            n = pool.submit(c_call).result()[0]
            return n, time.perf_counter() - t0

        out[f"{name}_worker"] = c_on_worker
    if codec == "glz":
        from spiceserver.protocol.enums import ImageCompression
        from spiceserver.server.channels.display.encode import glz_stacks
        from spiceserver.server.codecs import ImageEncoder

        whole = encoders.GlzDictionary(window)
        banded = encoders.GlzDictionary(window)
        each = encoders.GlzDictionary(window)
        # the server's path: its ImageEncoder and its stacking of GLZ bands (encode_bands())
        encoder = ImageEncoder(ImageCompression.AUTO_GLZ, banded)
        stacks = glz_stacks(rects, ["glz"] * len(bands), encoder.glz_fits)
        # commit every arena page first, as in a running session: on KVM guests a first touch
        # costs ~5 us a page, which would swamp the first rounds (compare.py does the same)
        for d, images in ((whole, [frame]), (banded, [frame]), (each, bands)):
            while d._next_virt < 2 * max(d.arena_pixels, 1) + frame.size // 4:
                for image in images:
                    d.encode(image)

        def ours() -> tuple[int, float]:
            whole.reset()
            t0 = time.perf_counter()
            n = len(whole.encode(frame))
            return n, time.perf_counter() - t0

        def job(views: list[np.ndarray]) -> int:
            n = 0
            for stack in stacks:
                image, _ = encoder.encode_glz_stack([views[i] for i in stack])
                n += len(image.body[-1])  # the stream, without data_size
            return n

        def read_into(rect: Rect, out: np.ndarray) -> None:
            out[...] = frame[rect.y : rect.bottom, rect.x : rect.right]

        def ours_bands() -> tuple[int, float]:
            banded.reset()
            # read as the server reads: into the room the dictionary lends (outside the timer)
            snapshots, staged = read_for_encode(
                lambda rect: copy, read_into, encoder, [(area, rects)]
            )
            assert staged or not banded.fits(width, height)
            t0 = time.perf_counter()
            n = pool.submit(job, [pixels for _, pixels in snapshots]).result()
            return n, time.perf_counter() - t0

        def job_each() -> int:
            return sum(len(each.encode(b)) for b in bands)

        def ours_each() -> tuple[int, float]:
            each.reset()
            t0 = time.perf_counter()
            n = pool.submit(job_each).result()
            return n, time.perf_counter() - t0

        out["ours_each"] = ours_each
    else:
        from spiceserver.server.channels.display.encode import stacks as server_stacks
        from spiceserver.server.codecs import encode_stack

        encode = getattr(encoders, f"{codec}_encode")
        # the server's path (encode_bands()): the bands of one damaged area stacked into one
        # image where the codec allows (codecs.STACKED), the stacks dealt out to the workers
        own = server_stacks(rects, [codec] * len(rects), lambda codec, width, height: True)
        workers = pool._max_workers
        groups = [own[k::workers] for k in range(workers) if own[k::workers]]

        def ours() -> tuple[int, float]:
            t0 = time.perf_counter()
            n = len(encode(frame))
            return n, time.perf_counter() - t0

        def encode_group(group: list[list[int]]) -> int:
            images = [encode_stack([bands[i] for i in stack], codec) for stack in group]
            return sum(len(image.body[-1]) for image in images)

        def ours_bands() -> tuple[int, float]:
            t0 = time.perf_counter()
            futures = [pool.submit(encode_group, g) for g in groups]
            n = sum(f.result() for f in futures)
            return n, time.perf_counter() - t0

    out["ours"] = ours
    out["ours_bands"] = ours_bands
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m encoders.bench_c", description=__doc__)
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--codecs", default="quic,lz,glz")
    parser.add_argument("--refcodec", default=None, help="the refcodec folder (built)")
    parser.add_argument("images", nargs="*", type=Path)
    args = parser.parse_args(argv)
    rc_mod = _refcodec(args.refcodec)
    rc = rc_mod.RefCodec("o2")
    try:
        rc_native = rc_mod.RefCodec("native")
    except Exception:
        rc_native = None
    import encoders

    encoders.warmup()
    band_px, threads = _server_layout()
    images = args.images or sorted((_HERE.parent / "tests/data/corpus").glob("*.png"))
    pool = ThreadPoolExecutor(max_workers=threads)
    print(f"# bands of {band_px} pixels on {threads} workers; {args.reps} interleaved rounds;")
    print(f"# loadavg {os.getloadavg()[0]:.2f}; ratio = C time / our time (> 1: ours faster)")
    print("# best = fastest C call / our fastest call (noise on a shared machine only adds time)")
    print(
        "# wk = C called on a pool worker, as libspice encodes on its worker thread, the hop"
        " timed as ours is"
    )
    print(f"{'image':28} {'codec':5} {'contender':10} {'/C-O2':>7} {'/native':>8}"
          f" {'best/O2':>8} {'best/nat':>8} {'/O2 wk':>8} {'/nat wk':>8}"
          f" {'bytes':>10} {'C bytes':>10}")  # fmt: skip
    ratios: dict[tuple[str, str, str], list[float]] = {}
    for path in images:
        frame = rc_mod.load_frame(path)
        for codec in args.codecs.split(","):
            cs = _contenders(rc, rc_native, codec, frame, pool, band_px)
            names = list(cs)
            for name in names:  # warm-up: buffers, pages, arenas
                cs[name]()
                cs[name]()
            samples: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
            for i in range(args.reps):
                for j in range(len(names)):
                    name = names[(i + j) % len(names)]
                    samples[name].append(cs[name]())
            c_bytes = samples["c"][0][0]
            for name in [n for n in ("ours", "ours_bands", "ours_each") if n in samples]:
                cells = []
                for ref in (
                    "c",
                    "c_native",
                    "c best",
                    "c_native best",
                    "c_worker",
                    "c_native_worker",
                ):
                    c_name = ref.split()[0]
                    if c_name not in samples:
                        cells.append(float("nan"))
                        continue
                    if ref.endswith("best"):
                        r = min(t for _, t in samples[c_name]) / min(t for _, t in samples[name])
                    else:
                        per_round = [
                            a[1] / b[1] for a, b in zip(samples[ref], samples[name], strict=True)
                        ]
                        r = statistics.median(per_round)
                    ratios.setdefault((codec, name, ref), []).append(r)
                    cells.append(r)
                print(f"{path.stem[:28]:28} {codec:5} {name:10} {cells[0]:6.3f}x {cells[1]:7.3f}x"
                      f" {cells[2]:7.3f}x {cells[3]:7.3f}x {cells[4]:7.3f}x {cells[5]:7.3f}x"
                      f" {samples[name][0][0]:10,} {c_bytes:10,}", flush=True)  # fmt: skip
    pool.shutdown()
    print("# geometric means over images")
    for (codec, name, ref), values in ratios.items():
        gm = math.exp(statistics.fmean(math.log(v) for v in values))
        print(f"{codec:5} {name:10} vs {ref:15} {gm:6.3f}x  (min {min(values):.3f})")
    print(f"# loadavg at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
