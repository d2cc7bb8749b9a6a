"""Interop tests need Debian's spice-gtk introspection data (see tests/interop/README.md)."""

from __future__ import annotations

import pytest

from tests.interop.clients import have_spice_gtk


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if have_spice_gtk():
        return
    skip = pytest.mark.skip(reason="spice-gtk (gir1.2-spiceclientglib-2.0, python3-gi) missing")
    for item in items:
        if "interop" in item.keywords:
            item.add_marker(skip)
