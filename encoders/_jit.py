"""The one door to numba.

Every kernel in :mod:`encoders` is declared with :data:`kernel`.  Kernels are compiled with
``nogil=True`` so the server can run them on a thread pool while the event loop keeps serving,
and with ``cache=True`` so a second start of the process loads machine code from disk instead
of compiling again.  Under ``NUMBA_DISABLE_JIT=1`` numba hands back the plain Python function,
which is how the test-suite checks the kernels' logic without the JIT.

Loading from the cache without numba's compiler.  numba's ``Cache.load_overload`` first calls
``target_context.refresh()``, which imports and registers every implementation numba has
(``numba.cpython.*``, ``numba.np.*``, typed containers, jitclass …: 47,000 objects, ~11 MiB of
a server's RSS) although a cached kernel is machine code that needs none of them.  Our
kernels' caches skip that: they initialise only numba's runtime (NRT, whose symbols the code
links against; numba's C helpers and math functions are installed when the target context is
made).  A miss, or a kernel that has to be compiled, goes through numba's compiler, which
refreshes everything itself.  The kernels are integer code over arrays; one that used a helper
only a registry installs (string hashing's secrets, for one) would fail to link on a cached
load, which the encoder tests (cached, in one process) would show at once.

Once loaded, :func:`release_link_modules` frees the LLVM IR numba parses for each cached kernel
(``CPUCodeLibrary._shared_module``): it only serves to link a kernel into another one being
compiled, and costs ~4.5 MiB of LLVM's heap for our 15 kernel libraries.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

__all__ = ["JIT_ENABLED", "ctz64", "inline_kernel", "kernel", "py_func", "release_link_modules"]

F = TypeVar("F", bound=Callable[..., Any])

#: False when ``NUMBA_DISABLE_JIT=1``: kernels then run as ordinary Python.
# numba.config fills in its options from the environment with globals().update(), which type
# checkers cannot see.
JIT_ENABLED: bool = not numba.config.DISABLE_JIT  # type: ignore[attr-defined]


def _load_overload(cache: Any, sig: Any, target_context: Any) -> Any:
    """numba's ``Cache.load_overload`` without its ``target_context.refresh()`` (see above)."""
    from numba.core.runtime.nrt import rtsys

    rtsys.initialize(target_context)  # idempotent; under numba's compiler lock (our caller)
    with cache._guard_against_spurious_io_errors():
        return cache._load_overload(sig, target_context)
    return None  # the guard swallowed an error: compile


#: Every kernel's dispatcher (see release_link_modules).
_DISPATCHERS: list[Any] = []


def _lean(dispatcher: Any) -> Any:
    """``dispatcher`` with its disk cache loading as :func:`_load_overload` does."""
    if JIT_ENABLED:
        _DISPATCHERS.append(dispatcher)
    cache: Any = getattr(dispatcher, "_cache", None)
    # numba's private API: with another layout, numba's own (slower, larger) load stays.
    needs = ("_load_overload", "_guard_against_spurious_io_errors")
    if all(hasattr(cache, name) for name in needs):
        cache.load_overload = types.MethodType(_load_overload, cache)
    return dispatcher


def kernel(func: F) -> F:
    """Compile ``func`` as a nogil, disk-cached numba kernel (integer code: no fastmath)."""
    # The dispatcher numba returns is called like ``func`` itself (numba types it Dispatcher[F]).
    return cast(F, _lean(numba.njit(nogil=True, cache=True)(func)))


def inline_kernel(func: F) -> F:
    """Like :func:`kernel`, and inlined into the kernels that call it (numba IR inlining).

    For helpers that take arrays and run per token or per pixel: a compiled call passes each
    array with an atomic reference-count increment and decrement (``NRT_incref`` /
    ``NRT_decref``), which took 13% of the GLZ encoder's time on a text frame; inlined, the
    calls and the counting are gone.  Callable on its own like any kernel.
    """
    return cast(F, _lean(numba.njit(nogil=True, cache=True, inline="always")(func)))


def py_func(func: Callable[..., Any]) -> Callable[..., Any]:
    """The pure-Python body of a kernel (itself when the JIT is disabled)."""
    return getattr(func, "py_func", func)


def _relink_from(library: Any, bitcode: bytes) -> None:
    """Make ``library`` parse ``bitcode`` again when a compile links it in (numba's
    ``CPUCodeLibrary._get_module_for_linking`` returns ``_shared_module`` when set)."""
    get_module = library._get_module_for_linking

    def module_for_linking() -> Any:
        if library._shared_module is None:
            import llvmlite.binding as ll  # type: ignore[import-untyped]

            library._shared_module = ll.parse_bitcode(bitcode)
        return get_module()

    library._get_module_for_linking = module_for_linking


def release_link_modules() -> int:
    """Free the LLVM module each loaded kernel keeps for linking (its bitcode stays, parsed
    again if a later compile needs it); returns the number of modules freed.  Call once the
    kernels are loaded; the memory goes back to the OS with ``malloc_trim``."""
    from numba.core.compiler_lock import global_compiler_lock

    freed = 0
    with global_compiler_lock:  # no compile links one in meanwhile
        for dispatcher in _DISPATCHERS:
            for result in list(dispatcher.overloads.values()):
                library: Any = getattr(result, "library", None)
                module = getattr(library, "_shared_module", None)
                if module is None or not hasattr(library, "_get_module_for_linking"):
                    continue
                _relink_from(library, module.as_bitcode())
                library._shared_module = None
                freed += 1
    return freed


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
