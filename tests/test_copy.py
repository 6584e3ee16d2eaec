"""``kreg copy`` mirrors: ``name@v`` is the same kernel in both registries, removed numbers stay
unused, a number the target issued for other content refuses the name, a re-run copies nothing,
and an interrupted copy (SIGINT, SIGKILL) leaves the target consistent for a re-run to finish."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import registry
from registry.cli import cli

LAPLACE = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], "f4")
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def raw_hash(array: np.ndarray) -> str:
    """The content hash from its definition (FORMAT.md section 3), not from kreg."""
    a = np.ascontiguousarray(array)
    head = f"kreg-v1:{a.dtype.name}:{','.join(map(str, a.shape))}\n".encode()
    return hashlib.sha256(head + a.astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest()


def team(where: str | Path) -> dict[str, np.ndarray]:
    """team/lap@1 the Laplacian, @2 removed, @3 a box; team/one@1; returns what each live ref holds."""
    with registry.Registry(where, builtins=False) as reg:
        reg.add("team/lap", LAPLACE, description="laplace", tags=["laplacian"])
        reg.add("team/lap", np.ones((2, 2), "f4"))
        reg.add("team/lap", np.full((3, 3), 1 / 9, "f8"), description="box")
        reg.remove("team/lap@2")
        reg.add("team/one", [[1.0, -1.0]])
    return {"team/lap@1": LAPLACE, "team/lap@3": np.full((3, 3), 1 / 9, "f8"),
            "team/one@1": np.array([[1.0, -1.0]], "f4")}


def same_refs(where: str | Path, expected: dict[str, np.ndarray]) -> None:
    """Every ref holds the values given (hashed from the definition), team/lap@2 is gone and its
    number unused, and nothing else is there."""
    reg = registry.Registry(where, builtins=False)
    assert sorted(i.ref for i in reg.list_kernels(all_versions=True)) == sorted(expected)
    for ref, values in expected.items():
        kernel = reg.load(ref)
        np.testing.assert_array_equal(kernel.array, values)
        assert kernel.array.dtype == values.dtype and kernel.sha256 == raw_hash(values)
    with pytest.raises(registry.KernelNotFoundError):
        reg.load("team/lap@2")
    assert reg.next_version("team/lap") == 4


def test_copy_keeps_every_number_and_never_issues_a_removed_one(tmp_path: Path) -> None:
    expected = team(tmp_path / "a")
    result = run("copy", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert "team/lap@3 -> team/lap@3" in result.output and "Copied 3 kernel versions" in result.output
    same_refs(tmp_path / "b", expected)
    b = registry.Registry(tmp_path / "b", builtins=False)
    record = b.records(["team/lap@1"])[0]
    assert record["tags"] == ["laplacian"] and record["provenance"]["description"] == "laplace"
    assert record["provenance"]["references"][-1] == f"copied from {tmp_path / 'a'} (team/lap@1)"
    assert b.add("team/lap", [[5.0]]).version == 4  # 2 was issued in the source: never here
    assert b.fsck().ok


def test_copy_keeps_labels_and_deprecations_and_never_overrules_the_target(tmp_path: Path) -> None:
    team(tmp_path / "a")
    with registry.Registry(tmp_path / "a", builtins=False) as a:
        a.label("team/lap@3", "stable")
        a.label("team/lap@1", "old")
        a.deprecate("team/lap@1", "sign bug, use @3")
    with registry.Registry(tmp_path / "b", builtins=False) as b:
        b.add("team/other", [[1.0]])
    assert run("copy", str(tmp_path / "a"), str(tmp_path / "b")).exit_code == 0
    b = registry.Registry(tmp_path / "b", builtins=False)
    assert b.labels("team/lap") == {"stable": 3, "old": 1} and b.deprecations("team/lap") == {1: "sign bug, use @3"}
    with pytest.warns(registry.DeprecatedKernelWarning, match="sign bug"):
        b.load("team/lap@old")
    assert b.load("team/lap").version == 3  # the latest not deprecated
    events = [(e["op"], e["ref"], e.get("source")) for e in b.history("team/lap")]
    source = str(tmp_path / "a")
    assert ("copy", "team/lap@1", source) in events and ("label", "team/lap@3", source) in events
    assert ("deprecate", "team/lap@1", source) in events
    # the target's team moves its label: a copy again leaves it, and commits nothing
    b.label("team/lap@1", "stable")
    root = (tmp_path / "b" / "index.json").read_bytes()
    assert run("copy", str(tmp_path / "a"), str(tmp_path / "b")).exit_code == 0
    assert (tmp_path / "b" / "index.json").read_bytes() == root
    assert registry.Registry(tmp_path / "b", builtins=False).labels("team/lap")["stable"] == 1


def test_a_rerun_copies_nothing_and_commits_nothing(tmp_path: Path) -> None:
    team(tmp_path / "a")
    assert run("copy", str(tmp_path / "a"), str(tmp_path / "b")).exit_code == 0
    root = (tmp_path / "b" / "index.json").read_bytes()
    result = run("copy", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.exit_code == 0 and "Copied 0 kernel versions" in result.output and "3 already there" in result.output
    assert (tmp_path / "b" / "index.json").read_bytes() == root


def test_latest_copies_the_newest_version_under_its_own_number(tmp_path: Path) -> None:
    team(tmp_path / "a")
    assert run("copy", "--latest", str(tmp_path / "a"), str(tmp_path / "b"), "team/lap").exit_code == 0
    b = registry.Registry(tmp_path / "b", builtins=False)
    assert b.versions("team/lap") == [3] and b.next_version("team/lap") == 4
    np.testing.assert_array_equal(b.load("team/lap").array, np.full((3, 3), 1 / 9))
    assert run("copy", str(tmp_path / "a"), str(tmp_path / "b"), "team/lap").exit_code == 0  # then the rest
    assert b.versions("team/lap") == [1, 3]


@pytest.mark.parametrize("taken", ["other content", "removed there"])
def test_a_number_the_target_issued_for_other_content_refuses_the_name(tmp_path: Path, taken: str) -> None:
    expected = team(tmp_path / "a")
    with registry.Registry(tmp_path / "b", builtins=False) as b:
        b.add("team/lap", [[7.0]])  # team/lap@1 here is another kernel
        if taken == "removed there":
            b.add("team/lap", [[8.0]])
            b.remove("team/lap@1")
    lap = tmp_path / "b" / "kernels" / "team" / "lap"
    before = sorted(p.name for p in lap.iterdir())
    result = CliRunner().invoke(cli, ["copy", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 1
    refused = [line for line in result.output.splitlines() if line.startswith("Refused")]
    assert len(refused) == 1 and "team/lap" in refused[0] and "--prefix" in refused[0], result.output
    assert "team/one@1 -> team/one@1" in result.output  # the other names are copied
    b = registry.Registry(tmp_path / "b", builtins=False)
    np.testing.assert_array_equal(b.load("team/lap").array, [[8.0]] if taken == "removed there" else [[7.0]])
    assert sorted(p.name for p in lap.iterdir()) == before  # nothing of team/lap was written
    assert b.fsck().ok
    moved = run("copy", "--prefix", "theirs/", str(tmp_path / "a"), str(tmp_path / "b"))
    assert moved.exit_code == 0, moved.output
    same_refs_under = {f"theirs/{ref}": values for ref, values in expected.items()}
    for ref, values in same_refs_under.items():
        np.testing.assert_array_equal(b.load(ref).array, values)
    assert b.next_version("theirs/team/lap") == 4


def test_a_missing_source_is_an_error_not_copied_0(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["copy", str(tmp_path / "nothing-here"), str(tmp_path / "b")])
    assert result.exit_code == 2 and result.output.startswith("Error: ") and "Copied" not in result.output
    assert "nothing-here" in result.output and not (tmp_path / "b").exists()


def test_a_progress_bar_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    team(tmp_path / "a")
    monkeypatch.setattr("registry.cli.remote.show_progress", lambda: True)
    result = CliRunner().invoke(cli, ["copy", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0 and "copying" in result.stderr, result.stderr


def many(where: Path, names: int) -> dict[str, np.ndarray]:
    expected = {}
    with registry.Registry(where, builtins=False) as reg, reg.batch():
        for i in range(names):
            for v in (1, 2):
                values = np.full((2, 2), i * 10 + v, "f4")
                reg.add(f"n/k{i}", values)
                expected[f"n/k{i}@{v}"] = values
    return expected


def kreg(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "registry", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def committed_names(where: Path) -> int:
    try:
        return len(registry.Registry(where, builtins=False).list_kernels())
    except registry.KregError:
        return 0


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_copy_leaves_the_target_consistent_and_a_rerun_finishes_it(tmp_path: Path, how: int) -> None:
    expected = many(tmp_path / "a", 60)
    proc = kreg("copy", str(tmp_path / "a"), str(tmp_path / "b"))
    deadline = time.time() + 60
    while committed_names(tmp_path / "b") < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(how)
    out, err = proc.communicate(timeout=60)
    reached = committed_names(tmp_path / "b")
    assert 3 <= reached < 60, (reached, err)  # the signal landed mid-copy
    b = registry.Registry(tmp_path / "b", builtins=False)
    for info in b.list_kernels(all_versions=True):  # what is there is whole and right
        np.testing.assert_array_equal(b.load(info.ref).array, expected[info.ref])
    assert sorted(b.versions(f"n/k{reached - 1}")) in ([1, 2], [])
    if how == signal.SIGINT:
        assert proc.returncode == 130 and "Interrupted" in err and "Copied" in err and "again" in err, err
        assert "Traceback" not in err
    again = kreg("copy", str(tmp_path / "a"), str(tmp_path / "b"))
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    b = registry.Registry(tmp_path / "b", builtins=False)
    got = {i.ref: (i.sha256) for i in b.list_kernels(all_versions=True)}
    assert got == {ref: raw_hash(values) for ref, values in expected.items()}
    assert b.verify() == []
    problems = b.fsck().problems
    assert all("orphan" in text or "not listed" in text for _, text in problems), problems


@pytest.mark.parametrize("prefix, code, words", [("ns", 2, "ending in '/'"), ("/", 2, "ending in '/'"),
                                                  ("NS/", 2, "lowercase"), ("a" * 125 + "/", 1, "Refused")])
def test_a_bad_prefix_is_one_error_and_a_name_it_makes_too_long_is_refused(tmp_path: Path, prefix: str, code: int,
                                                                            words: str) -> None:
    team(tmp_path / "a")
    result = CliRunner().invoke(cli, ["copy", "--prefix", prefix, str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == code and words in result.output and "Traceback" not in result.output, result.output
    assert "Copied" not in result.output or "2 names refused" in result.output


def test_a_source_path_with_a_percent_sign_is_noted_as_it_is(tmp_path: Path) -> None:
    team(tmp_path / "50%d off")
    assert run("copy", str(tmp_path / "50%d off"), str(tmp_path / "b"), "team/one").exit_code == 0
    record = registry.Registry(tmp_path / "b", builtins=False).records(["team/one@1"])[0]
    assert record["provenance"]["references"][-1] == f"copied from {tmp_path / '50%d off'} (team/one@1)"


def test_two_copies_racing_into_one_target_agree(tmp_path: Path) -> None:
    expected = many(tmp_path / "a", 20)
    procs = [kreg("copy", str(tmp_path / "a"), str(tmp_path / "b")) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    b = registry.Registry(tmp_path / "b", builtins=False)
    assert {i.ref: i.sha256 for i in b.list_kernels(all_versions=True)} == {
        ref: raw_hash(values) for ref, values in expected.items()}
    assert b.fsck().ok
