"""The pure parts of the RandR layer: CVT reduced-blanking timings, layout planning, screen mm.

The X side runs against real Xorg (dummy driver) and Xvfb in ``tests/interop/test_randr.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from spiceserver.sources.base import Head
from spiceserver.x11_randr import cvt_reduced_blanking, describe, plan_layout, screen_mm


class _XcvtMode(ctypes.Structure):
    """``struct libxcvt_mode_info`` (libxcvt: ``include/libxcvt/libxcvt_mode.h``)."""

    _fields_ = [
        ("hdisplay", ctypes.c_uint32),
        ("vdisplay", ctypes.c_uint32),
        ("vrefresh", ctypes.c_float),
        ("hsync", ctypes.c_float),
        ("dot_clock", ctypes.c_uint64),  # kHz
        ("hsync_start", ctypes.c_uint16),
        ("hsync_end", ctypes.c_uint16),
        ("htotal", ctypes.c_uint16),
        ("vsync_start", ctypes.c_uint16),
        ("vsync_end", ctypes.c_uint16),
        ("vtotal", ctypes.c_uint16),
        ("mode_flags", ctypes.c_int),
    ]


def xcvt(width: int, height: int) -> _XcvtMode:
    """X's own CVT generator (libxcvt0, which Xorg links: installed with xserver-xorg-core)."""
    path = ctypes.util.find_library("xcvt")
    assert path, "libxcvt (Debian libxcvt0, a dependency of xserver-xorg-core) is missing"
    lib = ctypes.CDLL(path)
    lib.libxcvt_gen_mode_info.restype = ctypes.POINTER(_XcvtMode)
    lib.libxcvt_gen_mode_info.argtypes = [
        ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_bool, ctypes.c_bool
    ]  # fmt: skip
    pointer = lib.libxcvt_gen_mode_info(width, height, 60.0, True, False)  # reduced blanking
    mode = _XcvtMode.from_buffer_copy(pointer.contents)
    ctypes.CDLL(None).free(pointer)
    return mode


SIZES = [(1920, 1080), (1280, 720), (1024, 768), (1920, 1200), (1280, 1024), (2560, 1440),
         (800, 600), (3840, 2160), (640, 480), (1600, 896)]  # fmt: skip


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_cvt_reduced_blanking_equals_libxcvt(size: tuple[int, int]) -> None:
    ref = xcvt(*size)
    mode = cvt_reduced_blanking(*size)
    assert (mode.width, mode.height) == (ref.hdisplay, ref.vdisplay) == size
    assert (mode.h_sync_start, mode.h_sync_end, mode.h_total) == (
        ref.hsync_start, ref.hsync_end, ref.htotal
    )  # fmt: skip
    assert (mode.v_sync_start, mode.v_sync_end, mode.v_total) == (
        ref.vsync_start, ref.vsync_end, ref.vtotal
    )  # fmt: skip
    assert mode.dot_clock == ref.dot_clock * 1000
    assert mode.flags == ref.mode_flags == 0x1 | 0x8  # +hsync -vsync, RandR's flag bits
    assert 59.0 < mode.refresh <= 60.0  # the clock is rounded down to 0.25 MHz


def test_cvt_keeps_a_width_that_is_no_multiple_of_8() -> None:
    # libxcvt rounds 1283 down to 1280 (CVT's 8-pixel cell); the frame must be the client's
    # window, so the width stays and the blanking follows it.
    ref = xcvt(1283, 721)
    mode = cvt_reduced_blanking(1283, 721)
    assert ref.hdisplay == 1280
    assert (mode.width, mode.h_total, mode.h_sync_end) == (1283, 1283 + 160, 1283 + 80)
    assert (mode.v_sync_start, mode.v_sync_end, mode.v_total) == (
        ref.vsync_start, ref.vsync_end, ref.vtotal
    )  # fmt: skip
    assert 59.0 < mode.refresh <= 60.0  # the clock is rounded down to 0.25 MHz
    with pytest.raises(ValueError):
        cvt_reduced_blanking(0, 720)


def test_plan_zero_bases_caps_and_clamps() -> None:
    heads = (Head(100, 50, 1280, 720, 300, 170), Head(1380, 50, 800, 600), Head(0, 0, 640, 480))
    plan, size = plan_layout(heads, outputs=2, min_size=(64, 64), max_size=(32767, 32767))
    assert plan == (Head(0, 0, 1280, 720, 300, 170), Head(1280, 0, 800, 600))
    assert size == (2080, 720)
    assert describe(plan) == "1280x720+0+0, 800x600+1280+0"
    # Too large for the screen: heads are cut to the maximum size.
    plan, size = plan_layout((Head(0, 0, 5000, 900),), 1, (64, 64), (4096, 4096))
    assert (plan, size) == ((Head(0, 0, 4096, 900),), (4096, 900))
    # Smaller than the minimum: the screen is the minimum, the head keeps its size.
    plan, size = plan_layout((Head(0, 0, 32, 16),), 1, (64, 64), (4096, 4096))
    assert (plan, size) == ((Head(0, 0, 32, 16),), (64, 64))
    # A head that starts beyond the maximum is left out.
    plan, size = plan_layout((Head(0, 0, 100, 100), Head(5000, 0, 9, 9)), 2, (1, 1), (4096, 4096))
    assert (plan, size) == ((Head(0, 0, 100, 100),), (100, 100))
    # One that starts inside but reaches beyond is cut.
    plan, size = plan_layout(
        (Head(0, 0, 100, 100), Head(4000, 0, 200, 50)), 2, (1, 1), (4096, 4096)
    )
    assert (plan, size) == ((Head(0, 0, 100, 100), Head(4000, 0, 96, 50)), (4096, 100))
    with pytest.raises(ValueError):
        plan_layout((Head(0, 0, 0, 0),), 1, (1, 1), (100, 100))


def test_screen_mm_uses_the_clients_density_else_96_dpi() -> None:
    assert screen_mm((Head(0, 0, 1280, 720, 300, 170),), 1280, 720) == (300, 170)
    assert screen_mm((Head(0, 0, 1280, 720, 300, 170), Head(1280, 0, 800, 600)), 2080, 720) == (
        488,
        170,
    )
    assert screen_mm((Head(0, 0, 1920, 1080),), 1920, 1080) == (508, 286)
