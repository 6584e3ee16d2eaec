"""Removal is one answer per machine: once a machine has seen the root that removed a version,
load, show, list, verify and versions all say it is gone, and a long-lived Registry sees
another machine's adds and removals on its next call (two cache directories: two machines)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import registry
from registry.cli import cli
from registry.store.cache import DiskCache
from registry.store.object import ObjectBackend

ROOT = Path(__file__).resolve().parent.parent


def machine(url: str, cache: Path) -> registry.Registry:
    return registry.Registry(ObjectBackend(url, cache=DiskCache(cache)), builtins=False)


def other_machine(url: str, cache: Path, code: str) -> None:
    """Run ``code`` (``reg`` is the registry) in another process with its own cache: another machine."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KREG_CACHE_DIR": str(cache)}
    script = f"import registry, numpy as np\nreg = registry.Registry({url!r}, builtins=False)\n{code}\n"
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=120)


def test_once_a_machine_saw_the_removal_every_command_agrees(remote_url: str, tmp_path: Path) -> None:
    a = machine(remote_url, tmp_path / "a")
    a.add("team/x", [[1.0, 2.0]])
    a.add("team/x", [[1.0, 3.0]])
    b_env = {"KREG_CACHE_DIR": str(tmp_path / "b")}

    def b(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, ["--db", remote_url, *args], env=b_env)

    assert b("show", "team/x@2").exit_code == 0  # machine b now holds team/x@2 in its cache
    a.remove("team/x@2")
    listed = b("list", "team/*")  # b reads the root that removed it
    assert listed.exit_code == 0 and "team/x " in listed.output and " 2 " not in listed.output
    for args in (("show", "team/x@2"), ("verify", "team/x@2")):
        result = b(*args)
        assert result.exit_code == 2 and "no version 2" in result.output, (args, result.output)
    os.environ["KREG_CACHE_DIR"] = str(tmp_path / "b")  # the library on machine b
    try:
        reg = registry.Registry(remote_url, builtins=False)
        with pytest.raises(registry.KernelNotFoundError, match="no version 2"):
            reg.load("team/x@2")
        assert reg.versions("team/x") == [1]
        assert [i.ref for i in reg.list_kernels(all_versions=True)] == ["team/x@1"]
    finally:
        del os.environ["KREG_CACHE_DIR"]


def test_a_long_lived_registry_sees_other_machines_changes_on_its_next_call(remote_url: str,
                                                                            tmp_path: Path) -> None:
    reg = machine(remote_url, tmp_path / "here")  # kept open, as a service would
    reg.add("team/x", [[1.0]])
    reg.add("team/x", [[2.0]])
    np.testing.assert_array_equal(reg.load("team/x@2").array, [[2.0]])
    assert reg.load("team/x").version == 2
    other_machine(remote_url, tmp_path / "there", "reg.remove('team/x@2')")
    with pytest.raises(registry.KernelNotFoundError):
        reg.load("team/x@2")
    assert reg.load("team/x").version == 1 and reg.versions("team/x") == [1]
    other_machine(remote_url, tmp_path / "there", "reg.add('team/x', [[3.0]]); reg.add('team/y', [[4.0]])")
    np.testing.assert_array_equal(reg.load("team/x").array, [[3.0]])
    assert reg.load("team/x").version == 3 and [i.name for i in reg.list_kernels()] == ["team/x", "team/y"]


def test_within_the_freshness_window_a_long_lived_registry_answers_from_what_it_saw(
        remote_url: str, tmp_path: Path) -> None:
    reg = registry.Registry(ObjectBackend(remote_url, cache=DiskCache(tmp_path / "here"), freshness=3600),
                            builtins=False)
    reg.add("team/x", [[1.0]])
    reg.add("team/x", [[2.0]])
    reg.load("team/x@2")
    other_machine(remote_url, tmp_path / "there", "reg.remove('team/x@2')")
    reg.backend.stats.clear()
    assert reg.load("team/x@2").version == 2 and reg.load("team/x").version == 2  # the window the user chose
    assert sum(reg.backend.stats.values()) == 0


def test_an_offline_machine_that_never_saw_the_removal_loads_its_cached_copy(
        s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = machine(s3_url, tmp_path / "a")
    a.add("team/x", [[1.0]])
    a.add("team/x", [[2.0]])
    machine(s3_url, tmp_path / "b").load("team/x@2")
    a.remove("team/x@2")
    offline = machine(s3_url, tmp_path / "b")  # the cache is filed by endpoint: made before it changes...
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # ...to one where nobody listens: offline
    np.testing.assert_array_equal(offline.load("team/x@2").array, [[2.0]])  # what FORMAT.md allows
    assert sum(offline.backend.stats.values()) == 0
    np.testing.assert_array_equal(offline.load("team/x@2").array, [[2.0]])  # still offline: the last root
    with pytest.raises(registry.RemoteError):
        offline.load("team/x")
