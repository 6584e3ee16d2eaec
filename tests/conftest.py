"""Shared fixtures: throw-away registries that clean up after themselves; in CI, security
tests fail instead of skipping when a tool they need is missing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import registry


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run the long reliability runs")


#: Test modules that back a security claim: under CI=true a skip there is a failure.
NEVER_SKIP_IN_CI = {"test_hostile.py", "test_guard.py", "test_ci_tools.py"}
#: The tools those tests need; .ci/run installs them.
SECURITY_TOOLS = {"strace": "watches which files libhdf5 opens", "gcc": "builds the marker HDF5 plugin"}


def in_ci() -> bool:
    """True when the environment says this is a CI run (``CI=true``, as GitHub Actions sets)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip locally; in CI, fail: a security test that cannot run there is a red build."""
    if in_ci():
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip (.ci/run installs strace and gcc)",
                    pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of the command ``name``; skips (locally) or fails (in CI) without it."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail_in_ci(f"{name} is not installed")
    return str(path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """In CI, a skipped security test (e.g. strace or gcc missing) is reported as failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if (report.skipped and in_ci() and item.path.name in NEVER_SKIP_IN_CI and "slow" not in item.keywords
            and not hasattr(report, "wasxfail")):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} skipped in CI ({reason}): security tests must run there; "
                           ".ci/run installs strace and gcc")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        # The long reliability runs take minutes by design: an hour each unless they say otherwise.
        for item in items:
            if "slow" in item.keywords and item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(3600))
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
