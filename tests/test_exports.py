"""The curated public API: every name in ``__all__`` imports and is documented.

A class or function needs its own docstring (not one inherited, nor the signature a dataclass
writes when there is none); a plain value such as a type alias needs a ``#:`` comment on the line
above its assignment, the convention Sphinx reads.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import tomllib
import types
from typing import Any

import pytest

import encoders
import spiceserver
from tests.conftest import ROOT

EXPORTS = [
    (module.__name__, name)
    for module in (spiceserver, encoders)
    for name in module.__all__
    if name != "__version__"
]


def defining_module(package: types.ModuleType, name: str) -> types.ModuleType:
    """The module whose source assigns ``name`` (a lazy package says where in ``_LAZY``; a value
    such as a union has no ``__module__`` of its own)."""
    lazy: dict[str, str] = getattr(package, "_LAZY", {})
    return importlib.import_module(lazy.get(name, package.__name__))


def own_docstring(value: Any) -> str | None:
    if isinstance(value, type):
        doc = value.__dict__.get("__doc__")
        if doc and doc.startswith(f"{value.__name__}(") and hasattr(value, "__dataclass_fields__"):
            return None  # dataclass() wrote the signature: nobody documented the class
        return str(doc) if doc else None
    if callable(value):
        return inspect.getdoc(value)
    return None


def comment_doc(module: types.ModuleType, name: str) -> str | None:
    """The ``#:`` comment right above ``name = ...`` (or ``name: T = ...``) in ``module``."""
    lines = inspect.getsource(module).splitlines()
    for node in ast.parse("\n".join(lines)).body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            return above.removeprefix("#:").strip() if above.startswith("#:") else None
    return None


@pytest.mark.parametrize(("package", "name"), EXPORTS, ids=[f"{p}.{n}" for p, n in EXPORTS])
def test_export_imports_and_is_documented(package: str, name: str) -> None:
    module = importlib.import_module(package)
    namespace: dict[str, Any] = {}
    exec(f"from {package} import {name}", namespace)
    value = namespace[name]
    assert value is getattr(module, name)
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType):
        doc = own_docstring(value)
    else:
        doc = comment_doc(defining_module(module, name), name)
    assert doc and doc.strip(), f"{package}.{name} has no docstring (or #: comment)"


@pytest.mark.parametrize("module", [spiceserver, encoders], ids=lambda m: m.__name__)
def test_all_is_sorted_and_unique(module: types.ModuleType) -> None:
    assert list(module.__all__) == sorted(set(module.__all__))


def test_star_import_gives_exactly_all() -> None:
    for module in (spiceserver, encoders):
        namespace: dict[str, Any] = {}
        exec(f"from {module.__name__} import *", namespace)
        assert sorted(k for k in namespace if k != "__builtins__") == sorted(module.__all__)


def test_lazy_names_match_the_type_checking_imports() -> None:
    """``spiceserver/__init__.py`` names each export twice (``_LAZY`` for the runtime,
    ``if TYPE_CHECKING:`` imports for type checkers): both must say the same."""
    tree = ast.parse((ROOT / "spiceserver" / "__init__.py").read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    imported = {
        alias.asname or alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == spiceserver._LAZY
    assert set(imported) == set(spiceserver.__all__) - {"__version__"}


def test_version_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert spiceserver.__version__ == project["version"]
