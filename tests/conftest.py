"""Shared fixtures: throw-away registries that clean up after themselves; in CI, security
tests fail instead of skipping when a tool they need is missing."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azserver import CONTAINER, AzuriteServer, azurite_binary
from s3server import BUCKET, SeaweedServer

import registry


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run the long reliability runs")


#: Test modules that back a security claim: under CI=true a skip there is a failure.
NEVER_SKIP_IN_CI = {"test_hostile.py", "test_guard.py", "test_ci_tools.py", "test_site_browser.py"}
#: The tools those tests need; .ci/run installs them.
SECURITY_TOOLS = {"strace": "watches which files libhdf5 opens", "gcc": "builds the marker HDF5 plugin"}
#: What tests/plain_reader.sh reads kreg files with (no HDF5 library); .ci/run installs them too.
PLAIN_READER_TOOLS = {"h5dump": "prints offsets and attributes (hdf5-tools)", "jq": "parses the JSON",
                      "sha256sum": "hashes", "dd": "reads values at their offset", "openssl": "verifies signatures"}


def in_ci() -> bool:
    """True when the environment says this is a CI run (``CI=true``, as GitHub Actions sets)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip locally; in CI, fail: a security test that cannot run there is a red build."""
    if in_ci():
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip (.ci/run installs the tools tests need)",
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
    """Module-level functions never touch the user's real registry (or cache) during tests."""
    monkeypatch.setenv("KREG_DB", str(tmp_path / "default-reg"))
    monkeypatch.setenv("KREG_CACHE_DIR", str(tmp_path / "kreg-cache"))
    monkeypatch.delenv("KREG_FRESHNESS", raising=False)


# -- a real S3-compatible server (SeaweedFS) for the remote tests ---------------------


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A SeaweedFS per test module (it starts in ~2 s), on free ports, its data in a temporary
    directory; stopped when the module ends, so no server runs beside the other tests."""
    with SeaweedServer(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_url(s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh registry URL on the server; the client environment is the endpoint and a writer's keys."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


# -- a real Azure Blob API (Azurite) for the same tests on az:// ----------------------------------


@pytest.fixture(scope="module")
def az_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """An Azurite per test module (it starts in ~1 s), like ``s3_server``. Without Azurite
    (``make test`` installs it with npm) the az:// tests skip, except under CI=true, where
    they fail: CI must run them."""
    if azurite_binary() is None and not in_ci():
        pytest.skip("Azurite is not installed: make test installs it (npm ci --prefix tests/azurite)")
    with AzuriteServer(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture
def az_url(az_server: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh registry URL on Azurite; the client environment is Azure's emulator settings."""
    for key in list(os.environ):
        if key.startswith("AZURE_"):
            monkeypatch.delenv(key)
    for key, value in az_server.env().items():
        monkeypatch.setenv(key, value)
    return f"az://{CONTAINER}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["s3", "az"])
def remote_url(request: pytest.FixtureRequest) -> str:
    """A fresh registry URL on each real object store: SeaweedFS (S3) and Azurite (Azure Blob)."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(params=["local", "s3", "az"])
def any_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[registry.Registry]:
    """An empty registry without the built-in layer, in a directory, on S3 and on Azure Blob."""
    where = str(tmp_path / "reg") if request.param == "local" else request.getfixturevalue(f"{request.param}_url")
    with registry.Registry(where, builtins=False) as r:
        yield r
