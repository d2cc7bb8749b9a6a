"""Same-process differential test: the JIT-compiled kernels vs their pure-Python bodies.

numba widens integers where numpy scalars would wrap; the kernels ``int()`` every load and mask
every store so both agree.  Here every kernel of ``encoders.quic._kernels`` is swapped for its
``py_func`` (after the compiled versions exist: a compiled dispatcher keeps its compiled callees)
and both encoders must produce the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from encoders._jit import py_func
from encoders.quic import _kernels, warmup
from encoders.quic.api import _encode
from tests.encoders.quic.quic_images import images, make_image

Encode = Callable[[np.ndarray, bool], bytes]


@pytest.fixture(scope="module")
def encoders_pair() -> Iterator[tuple[Encode, Encode]]:
    """(compiled encode, pure-Python encode) of the same kernels."""
    warmup()
    compiled = _kernels.encode_image
    mp = pytest.MonkeyPatch()
    for name, obj in list(vars(_kernels).items()):
        if hasattr(obj, "py_func"):
            mp.setattr(_kernels, name, py_func(obj))
    pure = _kernels.encode_image

    def jit(img: np.ndarray, alpha: bool) -> bytes:
        return _encode(img, alpha, compiled)

    def python(img: np.ndarray, alpha: bool) -> bytes:
        return _encode(img, alpha, pure)

    yield jit, python
    mp.undo()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(img=images())
def test_jit_equals_python_random(encoders_pair: tuple[Encode, Encode], img: np.ndarray) -> None:
    jit, python = encoders_pair
    for alpha in (False, True):
        assert jit(img, alpha) == python(img, alpha)


@pytest.mark.parametrize(
    ("kind", "height", "width"),
    [("palette", 3, 4200), ("smooth", 2, 2049), ("noise", 2, 300), ("flat_alpha", 3, 2100)],
)
def test_jit_equals_python_wide(
    encoders_pair: tuple[Encode, Encode], kind: str, height: int, width: int
) -> None:
    """Rows crossing the 2048-pixel wait-mask segment boundaries, in both alpha modes."""
    jit, python = encoders_pair
    img = make_image(kind, height, width, seed=width)
    for alpha in (False, True):
        assert jit(img, alpha) == python(img, alpha)
