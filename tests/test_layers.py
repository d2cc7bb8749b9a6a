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
import site
import subprocess
import sys
import textwrap
from pathlib import Path

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
    "spiceserver.protocol.playback",
    "spiceserver.protocol.record",
]
#: What the sans-I/O core must not load (``select``/``selectors``/``ssl`` come with asyncio).
FORBIDDEN = ["asyncio", "socket", "selectors", "ssl", "threading", "time", "numpy"]
#: The modules of this project the core may load.
ALLOWED_OWN = {"spiceserver", "spiceserver.errors"}

_PROBE = textwrap.dedent(
    """
    import importlib, json, sys
    forbidden, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    sys.path.extend(json.loads(sys.argv[3]))  # the packages, not the .pth hooks (python -S)
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
        [
            sys.executable,
            "-S",
            "-c",
            _PROBE,
            json.dumps(FORBIDDEN),
            json.dumps(modules),
            # this process's site-packages: under -S, Python 3.11 leaves sys.prefix at the
            # base interpreter's (site.py is what moves it into a venv)
            json.dumps(site.getsitepackages()),
        ],
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


def _module_imports(root: Path, package: str) -> dict[str, set[str]]:
    """Each module of ``package`` → the package's modules it imports when it is imported
    (module-level imports; not those under ``if TYPE_CHECKING:`` or inside functions)."""
    import ast

    modules: dict[str, Path] = {}
    for path in (root / package).rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        targets: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            imports = [node] if isinstance(node, ast.Import | ast.ImportFrom) else []
            for imp in imports:
                if isinstance(imp, ast.ImportFrom) and imp.module:
                    base = imp.module
                    for alias in imp.names:
                        sub = f"{base}.{alias.name}"
                        targets.add(sub if sub in modules else base)
                elif isinstance(imp, ast.Import):
                    targets.update(alias.name for alias in imp.names)
        own_package = name if path.name == "__init__.py" else None
        graph[name] = {
            t
            for t in targets
            if t in modules
            and t != name
            # A package re-exporting its own submodules is not a circle of the design.
            and not (own_package and t.startswith(own_package + "."))
        }
    return graph


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _module_imports(ROOT, "spiceserver")
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for target in sorted(graph[node]):
            if seen.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in seen:
                visit(target, [*path, target])
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)
