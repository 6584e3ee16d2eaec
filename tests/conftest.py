"""Shared fixtures: throw-away registries that clean up after themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import registry


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run the long reliability runs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="long run: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def reg_path(tmp_path: Path) -> Path:
    return tmp_path / "reg"


@pytest.fixture
def reg(reg_path: Path) -> Iterator[registry.Registry]:
    """An empty registry without the built-in layer."""
    with registry.Registry(reg_path, builtins=False) as r:
        yield r


@pytest.fixture(autouse=True)
def _isolated_default_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Module-level functions never touch the user's real registry during tests."""
    monkeypatch.setenv("KREG_DB", str(tmp_path / "default-reg"))
