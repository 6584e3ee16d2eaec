"""``kreg label``, ``kreg deprecate``, ``kreg log`` and what ``list``, ``show`` and ``rm`` say of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from registry.cli import cli


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KREG_AUTHOR", "Ann <ann@example.org>")
    db = str(tmp_path / "db")

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, ["--db", db, *args])

    for values in ("[[1, -1]]", "[[-1, 1]]", "[[2, -2]]"):
        assert invoke("add", "team/edge", "--values", values, "-d", "step edge").exit_code == 0
    return invoke


def test_label_moves_and_show_and_list_say_so(run) -> None:  # type: ignore[no-untyped-def]
    result = run("label", "team/edge@2", "stable")
    assert result.exit_code == 0 and result.stdout == "team/edge@stable -> team/edge@2\n"
    result = run("label", "team/edge@3", "stable")
    assert result.stdout == "team/edge@stable -> team/edge@3\n" and "Moved from team/edge@2." in result.stderr
    shown = run("show", "team/edge@stable").stdout
    assert shown.startswith("team/edge@3 ") and "  labels                       stable\n" in shown
    assert "[stable] step edge" in run("list", "--all-versions").stdout
    result = run("label", "team/edge", "stable", "--rm")
    assert result.stdout == "removed label team/edge@stable (was team/edge@3)\n"
    result = run("show", "team/edge@stable")
    assert result.exit_code == 2 and result.stderr.startswith("Error: Kernel 'team/edge' has no label 'stable'")


@pytest.mark.parametrize("bad", ["12", "sha256"])
def test_a_label_that_is_a_number_or_sha256_is_one_error_line(run, bad: str) -> None:  # type: ignore[no-untyped-def]
    result = run("label", "team/edge@1", bad)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("Error: A label name is a word such as 'stable', never a number or 'sha256'")


def test_deprecate_warns_in_one_line_and_latest_skips_it(run) -> None:  # type: ignore[no-untyped-def]
    assert run("deprecate", "team/edge@3", "--reason", "sign bug, use @2").stdout == "deprecated team/edge@3\n"
    result = run("show", "team/edge@3")
    assert result.exit_code == 0
    assert result.stderr == "Warning: team/edge@3 is deprecated: sign bug, use @2\n"
    assert "  deprecated                   sign bug, use @2\n" in result.stdout
    latest = run("show", "team/edge")
    assert latest.stdout.startswith("team/edge@2 ") and latest.stderr == ""
    table = run("list", "team/*").stdout.splitlines()
    assert table[1].split()[:2] == ["team/edge", "2"]
    every = run("list", "--all-versions").stdout
    assert "(deprecated: sign bug, use @2) step edge" in every
    assert run("deprecate", "team/edge@3", "--undo").stdout == "undeprecated team/edge@3\n"
    assert run("show", "team/edge").stdout.startswith("team/edge@3 ")
    missing = run("deprecate", "team/edge@2")
    assert missing.exit_code == 2 and "needs a reason" in missing.stderr


def test_rm_of_a_version_points_to_deprecate(run) -> None:  # type: ignore[no-untyped-def]
    result = run("rm", "team/edge@1")
    assert result.exit_code == 0 and result.stdout == "removed team/edge@1\n"
    assert "kreg deprecate team/edge@1 --reason" in result.stderr


def test_log_shows_every_change_with_who_and_since_filters(run) -> None:  # type: ignore[no-untyped-def]
    run("label", "team/edge@2", "stable")
    run("deprecate", "team/edge@1", "-r", "old")
    run("rm", "team/edge@1")
    lines = run("log").stdout.splitlines()
    assert [line.split()[2:4] for line in lines] == [
        ["add", "team/edge@1"], ["add", "team/edge@2"], ["add", "team/edge@3"], ["label", "team/edge@2"],
        ["deprecate", "team/edge@1"], ["remove", "team/edge@1"]]
    assert all("Ann <ann@example.org>" in line for line in lines)
    assert "label=stable" in lines[3] and "reason=old" in lines[4]
    assert run("log", "team/*", "--since", "2999-01-01").stdout == ""
    assert run("log", "other/*").stderr == "No events match.\n"
    bad = run("log", "--since", "last week")
    assert bad.exit_code == 2 and bad.stderr.startswith("Error: A date is ISO 8601")


def test_list_long_author_and_since(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KREG_AUTHOR", "Bo <bo@example.org>")
    run("add", "team/blur", "--values", "[[0.5, 0.5]]", "-d", "box")
    long = run("list", "team/*", "--long").stdout.splitlines()
    assert long[0].split() == ["NAME", "VER", "AUTHOR", "CREATED", "DESCRIPTION"]
    assert [line.split()[:2] for line in long[1:]] == [["team/blur", "1"], ["team/edge", "3"]]
    assert "Bo <bo@example.org>" in long[1] and "Ann <ann@example.org>" in long[2]
    only = run("list", "team/*", "--author", "BO").stdout.splitlines()
    assert [line.split()[0] for line in only[1:]] == ["team/blur"]
    assert run("list", "--since", "2999-01-01").stderr == "No kernels match.\n"


def test_label_deprecate_and_log_import_no_framework(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = str(tmp_path / "db")
    code = (
        "import sys, warnings; from registry.cli import cli\n"
        "for args in (['add', 't/k', '--values', '[[1.0]]'], ['add', 't/k', '--values', '[[2.0]]'],\n"
        "             ['label', 't/k@1', 'stable'], ['deprecate', 't/k@2', '-r', 'why'], ['log'],\n"
        "             ['list', '--long'], ['show', 't/k@stable']):\n"
        f"    try: cli.main(['--db', {db!r}, *args], standalone_mode=False)\n"
        "    except SystemExit as exc:\n"
        "        if exc.code: raise\n"
        "print('LOADED', sorted(m for m in ('tensorflow', 'keras', 'torch', 'jax') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "LOADED []", result.stderr
