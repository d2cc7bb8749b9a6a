"""The layering promises, checked in a fresh interpreter.

* :mod:`spiceserver.protocol` is the sans-I/O core (its ``__init__`` docstring): importing it, or
  any of its modules, loads no event loop, sockets, threads, clock or numpy, and nothing of
  :mod:`spiceserver` besides itself and :mod:`spiceserver.errors`.
* :mod:`encoders` is a library of its own: importing it, or a codec, never imports
  :mod:`spiceserver`.

Each check runs ``python -S`` from the repository root with site-packages put on ``sys.path`` by
hand: ``site``'s ``.pth`` hooks would import ``threading`` and more before the check starts.  So a
module found in ``sys.modules`` afterwards was loaded by the import under test.  ``time`` is part
of every interpreter's start-up, so the child drops it from ``sys.modules`` first: an
``import time`` below the protocol brings it back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

PROTOCOL_MODULES = [
    "spiceserver.protocol",
    "spiceserver.protocol.link",
    "spiceserver.protocol.channel",
    "spiceserver.protocol.messages",
    "spiceserver.protocol.enums",
    "spiceserver.protocol.events",
    "spiceserver.protocol.main",
    "spiceserver.protocol.display",
    "spiceserver.protocol.inputs",
    "spiceserver.protocol.cursor",
]
#: What the sans-I/O core must not load (``select``/``selectors``/``ssl`` come with asyncio).
FORBIDDEN = ["asyncio", "socket", "selectors", "ssl", "threading", "time", "numpy"]
#: The modules of this project the core may load.
ALLOWED_OWN = {"spiceserver", "spiceserver.errors"}

_PROBE = textwrap.dedent(
    """
    import importlib, json, site, sys
    forbidden, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    sys.path.extend(site.getsitepackages())  # the packages, not the .pth hooks (python -S)
    sys.modules.pop("time", None)
    preloaded = [name for name in forbidden if name in sys.modules]
    for module in modules:
        importlib.import_module(module)
    print(json.dumps({
        "preloaded": preloaded,
        "loaded": sorted(name for name in forbidden if name in sys.modules),
        "own": sorted(name for name in sys.modules
                      if name.split(".")[0] in ("spiceserver", "encoders")),
    }))
    """
)


def probe(modules: list[str]) -> dict[str, list[str]]:
    """Import ``modules`` in a fresh interpreter; what it then holds in ``sys.modules``."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", _PROBE, json.dumps(FORBIDDEN), json.dumps(modules)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("module", PROTOCOL_MODULES)
def test_protocol_core_loads_no_io(module: str) -> None:
    result = probe([module])
    assert result["preloaded"] == [], "the probe's premise: a bare interpreter holds none of these"
    assert result["loaded"] == [], f"importing {module} loads {result['loaded']}"
    outside = [
        name
        for name in result["own"]
        if name not in ALLOWED_OWN and not name.startswith("spiceserver.protocol")
    ]
    assert outside == [], f"importing {module} loads {outside}"


def test_whole_protocol_package_loads_no_io() -> None:
    result = probe(PROTOCOL_MODULES)
    assert result["loaded"] == []


@pytest.mark.parametrize(
    "modules",
    [["encoders"], ["encoders.quic", "encoders.lz", "encoders.glz", "encoders.bench"]],
    ids=["package", "codecs"],
)
def test_encoders_do_not_import_spiceserver(modules: list[str]) -> None:
    result = probe(modules)
    assert [name for name in result["own"] if name.startswith("spiceserver")] == []
