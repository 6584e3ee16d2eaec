"""Every environment variable kreg reads: a value it cannot use is one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import registry
from registry.adapters.plan import probe_enabled
from registry.cli import cli
from registry.store.object import ObjectBackend

# An endpoint nobody answers on: the values must be refused before any request is made.
OFFLINE = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}


@pytest.mark.parametrize(("variable", "value"), [
    ("KREG_CACHE_BYTES", "lots"), ("KREG_CACHE_BYTES", "-5"), ("KREG_CACHE_BYTES", "1.5"),
    ("KREG_CACHE_BYTES", "2e9"), ("KREG_FRESHNESS", "soon"), ("KREG_FRESHNESS", "-1"),
    ("KREG_FRESHNESS", "nan"), ("KREG_FRESHNESS", "inf"),
])
def test_a_bad_number_is_one_line_naming_the_variable(variable: str, value: str) -> None:
    result = CliRunner().invoke(cli, ["--db", "s3://b/p", "list"], env={**OFFLINE, variable: value},
                                catch_exceptions=False)
    line = result.output.strip()
    assert result.exit_code == 2 and line.count("\n") == 0, line
    assert line.startswith("Error: ") and f"{variable}={value!r}" in line and "unset it" in line


def test_the_command_prints_no_traceback() -> None:
    env = {**os.environ, **OFFLINE, "KREG_CACHE_BYTES": "lots"}
    done = subprocess.run([sys.executable, "-m", "registry", "--db", "s3://b/p", "list"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1 and "KREG_CACHE_BYTES='lots' is not a whole number" in done.stderr


def test_the_library_raises_kregs_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KREG_FRESHNESS", "soon")
    with pytest.raises(registry.ConfigError, match="KREG_FRESHNESS='soon' is not a number") as caught:
        registry.Registry("s3://b/p", builtins=False)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


def test_good_values_and_blanks_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KREG_FRESHNESS", " 90.5 ")
    monkeypatch.setenv("KREG_CACHE_BYTES", "12345")
    backend = ObjectBackend("s3://b/p")
    assert backend.freshness == 90.5 and backend.cache is not None and backend.cache.max_bytes == 12345
    monkeypatch.setenv("KREG_FRESHNESS", "")
    monkeypatch.setenv("KREG_CACHE_BYTES", "0")
    backend = ObjectBackend("s3://b/p")
    assert backend.freshness == 0 and backend.cache is None
    monkeypatch.setenv("KREG_CACHE_BYTES", " ")  # blank: the default, 2 GiB
    assert ObjectBackend("s3://b/p").cache.max_bytes == 2 * 2**30  # type: ignore[union-attr]


@pytest.mark.parametrize(("value", "expected"), [
    ("0", False), ("off", False), ("FALSE", False), ("no", False),
    ("1", True), ("yes", True), ("On", True), ("", True), (None, True),
])
def test_kreg_probe_takes_yes_or_no(value: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("KREG_PROBE", raising=False)
    else:
        monkeypatch.setenv("KREG_PROBE", value)
    assert probe_enabled(None) is expected
    assert probe_enabled(not expected) is (not expected)  # the argument wins


def test_kreg_probe_refuses_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    # "maybe" used to mean on, and "disable" too: a typo turned the check on without a word.
    monkeypatch.setenv("KREG_PROBE", "disable")
    with pytest.raises(registry.ConfigError, match=r"KREG_PROBE='disable' is not a yes or no\. Set it to 1"):
        probe_enabled(None)
