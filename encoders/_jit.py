"""The one door to numba.

Every kernel in :mod:`encoders` is declared with :data:`kernel`.  Kernels are compiled with
``nogil=True`` so the server can run them on a thread pool while the event loop keeps serving,
and with ``cache=True`` so a second start of the process loads machine code from disk instead
of compiling again.  Under ``NUMBA_DISABLE_JIT=1`` numba hands back the plain Python function,
which is how the test-suite checks the kernels' logic without the JIT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

__all__ = ["JIT_ENABLED", "ctz64", "inline_kernel", "kernel", "py_func"]

F = TypeVar("F", bound=Callable[..., Any])

#: False when ``NUMBA_DISABLE_JIT=1``: kernels then run as ordinary Python.
# numba.config fills in its options from the environment with globals().update(), which type
# checkers cannot see.
JIT_ENABLED: bool = not numba.config.DISABLE_JIT  # type: ignore[attr-defined]


def kernel(func: F) -> F:
    """Compile ``func`` as a nogil, disk-cached numba kernel (integer code: no fastmath)."""
    # The dispatcher numba returns is called like ``func`` itself (numba types it Dispatcher[F]).
    return cast(F, numba.njit(nogil=True, cache=True)(func))


def inline_kernel(func: F) -> F:
    """Like :func:`kernel`, and inlined into the kernels that call it (numba IR inlining).

    For helpers that take arrays and run per token or per pixel: a compiled call passes each
    array with an atomic reference-count increment and decrement (``NRT_incref`` /
    ``NRT_decref``), which took 13% of the GLZ encoder's time on a text frame; inlined, the
    calls and the counting are gone.  Callable on its own like any kernel.
    """
    return cast(F, numba.njit(nogil=True, cache=True, inline="always")(func))


def py_func(func: Callable[..., Any]) -> Callable[..., Any]:
    """The pure-Python body of a kernel (itself when the JIT is disabled)."""
    return getattr(func, "py_func", func)


def _ctz64_py(x: Any) -> int:
    """Pure-Python stand-in of :func:`ctz64` (``NUMBA_DISABLE_JIT=1``)."""
    x = int(x)
    return (x & -x).bit_length() - 1


if JIT_ENABLED:
    from numba.cpython.unsafe.numbers import trailing_zeros

    _tzcnt: Any = trailing_zeros  # an intrinsic: typed by numba, not by its Python signature

    def _ctz64_jit(x: Any) -> Any:
        return _tzcnt(x)

    #: Index of the lowest set bit of a nonzero unsigned integer: one ``tzcnt`` in a kernel
    #: (numba's own intrinsic), and callable from Python too (a kernel's ``py_func`` uses it).
    ctz64: Callable[[Any], int] = inline_kernel(_ctz64_jit)
else:
    ctz64 = _ctz64_py
