"""Who did what to a registry: authors, inherited metadata, labels, deprecation and the history of events.

Run against a local directory and the real SeaweedFS (``where``), and Azurite where the backend
code differs (receipts): every change commits its event in the same compare-and-swap.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

import registry
from registry._env import _machine_author, default_author


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "reg") if request.param == "local" else request.getfixturevalue("s3_url")


# -- who -------------------------------------------------------------------------------------


def test_the_author_is_kreg_author_else_git_else_login_at_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KREG_AUTHOR", "Ann Lee <ann@example.org>")
    reg = registry.Registry(tmp_path / "r", builtins=False)
    assert reg.add("team/a", [[1.0]]).to_dict()["provenance"]["author"] == "Ann Lee <ann@example.org>"
    assert reg.add("team/b", [[1.0]], author="Bo").to_dict()["provenance"]["author"] == "Bo"  # given wins

    monkeypatch.delenv("KREG_AUTHOR")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    monkeypatch.chdir(home)  # no repository's own user.name in the way
    subprocess.run(["git", "config", "--global", "user.name", "Cy Git"], check=True)
    subprocess.run(["git", "config", "--global", "user.email", "cy@example.org"], check=True)
    _machine_author.cache_clear()
    assert default_author() == "Cy Git <cy@example.org>"
    assert reg.add("team/c", [[1.0]]).to_dict()["provenance"]["author"] == "Cy Git <cy@example.org>"

    (home / ".gitconfig").unlink()
    _machine_author.cache_clear()
    assert default_author() == f"{getpass.getuser()}@{socket.gethostname()}"
    _machine_author.cache_clear()


def test_a_kreg_author_with_control_characters_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KREG_AUTHOR", "evil\x1b]0;owned\x07")
    with pytest.raises(registry.ConfigError, match="KREG_AUTHOR"):
        default_author()


# -- inheritance -----------------------------------------------------------------------------


def test_a_new_version_inherits_what_it_is_not_given(where: str) -> None:
    reg = registry.Registry(where, builtins=False)
    reg.add("team/lap", [[0, 1, 0], [1, -4, 1], [0, 1, 0]], description="Laplacian", tags=["laplacian", "edge"],
            license="MIT", references=["https://example.org/lap"], author="Ann")
    second = reg.add("team/lap", [[0, 2, 0], [2, -8, 2], [0, 2, 0]], description="Laplacian, doubled")
    assert reg.last_inherited == ("team/lap@1", ["author", "license", "references", "tags"])
    prov = second.to_dict()["provenance"]
    assert (prov["description"], prov["license"], prov["author"]) == ("Laplacian, doubled", "MIT", "Ann")
    assert second.to_dict()["tags"] == ["laplacian", "edge"] and prov["references"] == ["https://example.org/lap"]
    assert [i.ref for i in reg.list_kernels(tags=["laplacian"])] == ["team/lap@2"]

    third = reg.add("team/lap", [[1.0]], inherit=False, author="Bo")
    assert reg.last_inherited is None and third.to_dict()["tags"] == [] and not third.to_dict()["provenance"].get("license")


def test_kreg_add_says_what_it_kept(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from registry.cli import cli

    db = str(tmp_path / "db")
    run = CliRunner().invoke
    assert run(cli, ["--db", db, "add", "t/k", "--values", "[[1.0]]", "-t", "laplacian", "--license", "MIT"]).exit_code == 0
    result = run(cli, ["--db", db, "add", "t/k", "--values", "[[2.0]]"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "t/k@2\n"
    assert "Kept author, license, tags from t/k@1 (--no-inherit to start afresh)." in result.stderr
    listed = run(cli, ["--db", db, "list", "--tag", "laplacian"]).stdout.splitlines()
    assert len(listed) == 2 and listed[1].split()[:2] == ["t/k", "2"]
    result = run(cli, ["--db", db, "add", "t/k", "--values", "[[3.0]]", "--no-inherit"])
    assert result.stdout == "t/k@3\n" and "Kept" not in result.stderr


# -- labels ----------------------------------------------------------------------------------


def test_a_label_points_at_a_version_moves_and_goes(where: str) -> None:
    reg = registry.Registry(where, builtins=False)
    for value in (1.0, 2.0, 3.0):
        reg.add("team/edge", [[value, -value]])
    assert reg.label("team/edge@3", "stable") is None
    other = registry.Registry(where, builtins=False)  # another machine, sees the commit
    np.testing.assert_array_equal(other.load("team/edge@stable").array, [[3.0, -3.0]])
    assert other.load("team/edge@stable").ref == "team/edge@3"
    assert reg.label("team/edge@1", "stable") == "team/edge@3"  # moved: the old target returned
    assert registry.Registry(where, builtins=False).load("team/edge@stable").ref == "team/edge@1"
    assert other.load("team/edge@stable").ref == "team/edge@1"  # a long-lived object follows the move
    assert "team/edge@stable" in other and "team/edge@nightly" not in other
    assert [i.labels for i in reg.list_kernels(all_versions=True)] == [("stable",), (), ()]
    reg.label("team/edge", "stable", remove=True)
    with pytest.raises(registry.KernelNotFoundError, match="has no label 'stable'"):
        registry.Registry(where, builtins=False).load("team/edge@stable")
    assert reg.labels("team/edge") == {}


@pytest.mark.parametrize("bad", ["3", "sha256", "Stable", "-x", "a b", "x" * 65, "sta\x1bble"])
def test_a_label_is_never_a_number_or_sha256(tmp_path: Path, bad: str) -> None:
    reg = registry.Registry(tmp_path / "r", builtins=False)
    reg.add("t/k", [[1.0]])
    with pytest.raises(registry.InvalidNameError, match="A label name is a word such as 'stable', never a number or 'sha256'"):
        reg.label("t/k@1", bad)
    assert reg.labels("t/k") == {} and reg.history("t/k")[-1]["op"] == "add"


def test_a_label_on_a_missing_version_or_a_builtin_is_refused_with_nothing_committed(tmp_path: Path) -> None:
    reg = registry.Registry(tmp_path / "r")
    reg.add("t/k", [[1.0]])
    with pytest.raises(registry.KernelNotFoundError, match=r"has no version 7 \(it has: 1\)"):
        reg.label("t/k@7", "stable")
    with pytest.raises(registry.ReadOnlyError, match="built-in"):
        reg.label("sobel_x@1", "stable")
    assert len(reg.history("*")) == 1


# -- deprecation -----------------------------------------------------------------------------


def test_latest_skips_a_deprecated_version_which_still_loads_pinned_with_a_warning(where: str) -> None:
    reg = registry.Registry(where, builtins=False)
    reg.add("team/edge", [[1.0, -1.0]])
    reg.add("team/edge", [[-1.0, 1.0]])
    reg.label("team/edge@2", "stable")
    assert reg.deprecate("team/edge@2", "sign bug, use @1") == "team/edge@2"
    fresh = registry.Registry(where, builtins=False)
    assert fresh.load("team/edge").ref == "team/edge@1"
    with pytest.warns(registry.DeprecatedKernelWarning, match=r"^team/edge@2 is deprecated: sign bug, use @1$"):
        np.testing.assert_array_equal(fresh.load("team/edge@2").array, [[-1.0, 1.0]])
    with pytest.warns(registry.DeprecatedKernelWarning, match="sign bug"):
        assert fresh.load("team/edge@stable").ref == "team/edge@2"
    assert issubclass(registry.DeprecatedKernelWarning, registry.KregWarning)
    assert issubclass(registry.KregWarning, UserWarning)
    listed = {i.ref: i.deprecated for i in fresh.list_kernels(all_versions=True)}
    assert listed == {"team/edge@1": None, "team/edge@2": "sign bug, use @1"}
    assert [i.ref for i in fresh.list_kernels()] == ["team/edge@1"]  # the row `load("team/edge")` gives

    reg.deprecate("team/edge@2", undo=True)
    assert registry.Registry(where, builtins=False).load("team/edge").ref == "team/edge@2"
    assert fresh.load("team/edge").ref == "team/edge@2"  # kept open meanwhile: sees the undo


def test_every_version_deprecated_leaves_the_latest_with_a_warning(tmp_path: Path) -> None:
    reg = registry.Registry(tmp_path / "r", builtins=False)
    reg.add("t/k", [[1.0]])
    reg.add("t/k", [[2.0]])
    reg.deprecate("t/k@1", "old")
    reg.deprecate("t/k@2", "older")
    with pytest.warns(registry.DeprecatedKernelWarning, match="older"):
        assert reg.load("t/k").ref == "t/k@2"


@pytest.mark.parametrize("reason", ["", "   ", "ansi\x1b[31m", "x" * 501])
def test_a_deprecation_needs_a_one_line_reason(tmp_path: Path, reason: str) -> None:
    reg = registry.Registry(tmp_path / "r", builtins=False)
    reg.add("t/k", [[1.0]])
    with pytest.raises(registry.InvalidKernelError, match="needs a reason"):
        reg.deprecate("t/k@1", reason)
    with pytest.raises(registry.InvalidKernelError, match="one version"):
        reg.deprecate("t/k", "why")
    assert reg.deprecations("t/k") == {}


def test_a_cold_pinned_load_of_a_deprecated_version_warns_on_each_store(any_registry: registry.Registry) -> None:
    """The receipt a pinned load reads on an object store (S3 and Azure alike) says nothing of a
    deprecation: it goes before the deprecation commits, so a new machine goes by the index."""
    reg = any_registry
    reg.add("t/k", [[1.0]])
    reg.add("t/k", [[2.0]])
    reg.deprecate("t/k@1", "use @2")
    from registry.store.object import ObjectBackend

    url = reg.url
    cold = registry.Registry(ObjectBackend(url, cache=False) if "://" in url else url, builtins=False)
    with pytest.warns(registry.DeprecatedKernelWarning, match="use @2"):
        np.testing.assert_array_equal(cold.load("t/k@1").array, [[1.0]])
    assert reg.fsck().problems == []


# -- history ---------------------------------------------------------------------------------


def test_every_change_is_one_event_with_who_when_what_and_where(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KREG_AUTHOR", "Ann <ann@example.org>")
    reg = registry.Registry(where, builtins=False)
    reg.add("team/edge", [[1.0]])
    reg.add("team/edge", [[1.0]])  # the same kernel: no change, no event
    reg.add("team/edge", [[2.0]])
    reg.label("team/edge@2", "stable")
    reg.label("team/edge@2", "stable")  # already there: no event
    reg.deprecate("team/edge@1", "use @2")
    reg.remove("team/edge@1")
    reg.add("team/other", [[3.0]])
    events = registry.Registry(where, builtins=False).history("team/edge")
    assert [(e["op"], e["ref"]) for e in events] == [
        ("add", "team/edge@1"), ("add", "team/edge@2"), ("label", "team/edge@2"), ("deprecate", "team/edge@1"),
        ("remove", "team/edge@1")]
    assert {e["by"] for e in events} == {"Ann <ann@example.org>"} and {e["host"] for e in events} == {socket.gethostname()}
    assert events[2]["label"] == "stable" and events[3]["reason"] == "use @2"
    assert [e["at"] for e in events] == sorted(e["at"] for e in events) and events[0]["at"].endswith("Z")
    assert len(reg.history("team/*")) == 6 and reg.history("team/*", since="2999-01-01") == []
    assert len(reg.history("*", since=events[2]["at"])) == 4
    with pytest.raises(registry.InvalidKernelError, match="ISO 8601"):
        reg.history("*", since="yesterday")


def test_an_event_survives_a_split_and_a_batch_commits_one_event_per_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.format import index

    monkeypatch.setattr(index, "MAX_ROWS", 4)
    reg = registry.Registry(tmp_path / "r", builtins=False)
    with reg.batch():
        for i in range(20):
            reg.add(f"k{i}", [[float(i)]])
        reg.label("k3@1", "stable")
    assert len(reg._state.read(lambda view: view.segments)) > 2
    again = registry.Registry(tmp_path / "r", builtins=False)
    assert sorted(e["ref"] for e in again.history("*") if e["op"] == "add") == sorted(f"k{i}@1" for i in range(20))
    assert again.load("k3@stable").ref == "k3@1" and again.fsck().problems == []


def test_a_repair_keeps_labels_deprecations_and_history(tmp_path: Path) -> None:
    reg = registry.Registry(tmp_path / "r", builtins=False)
    reg.add("t/k", [[1.0]])
    reg.add("t/k", [[2.0]])
    reg.label("t/k@1", "stable")
    reg.deprecate("t/k@2", "broken")
    before = reg.history("*")
    reg.fsck(repair=True)
    again = registry.Registry(tmp_path / "r", builtins=False)
    assert again.labels("t/k") == {"stable": 1} and again.deprecations("t/k") == {2: "broken"}
    assert again.history("*") == before and again.load("t/k").ref == "t/k@1"


def test_rm_by_label_removes_the_version_it_points_at_only(tmp_path: Path) -> None:
    reg = registry.Registry(tmp_path / "r", builtins=False)
    for value in (1.0, 2.0, 3.0):
        reg.add("t/k", [[value]])
    reg.label("t/k@2", "stable")
    assert reg.remove("t/k@stable") == ["t/k@2"]
    assert reg.versions("t/k") == [1, 3] and reg.labels("t/k") == {}
    with pytest.raises(registry.KernelNotFoundError, match="no label 'stable'"):
        reg.remove("t/k@stable")


def test_an_import_is_an_event_naming_its_pack(tmp_path: Path) -> None:
    src = registry.Registry(tmp_path / "a", builtins=False)
    src.add("t/k", [[1.0]])
    pack = src.export(["t/k"], tmp_path / "p.h5")
    dst = registry.Registry(tmp_path / "b", builtins=False)
    dst.import_pack(pack)
    assert [(e["op"], e["ref"], e["source"]) for e in dst.history("*")] == [("add", "t/k@1", "pack p")]


def test_forged_labels_and_reasons_in_a_segment_are_escaped_never_emitted(tmp_path: Path) -> None:
    """A party with write access to the store writes labels, reasons and events with terminal
    escapes: every face escapes them, and a segment whose meta has the wrong shape is damaged."""
    import json

    from click.testing import CliRunner

    from registry.cli import cli

    db = tmp_path / "r"
    reg = registry.Registry(db, builtins=False)
    reg.add("t/k", [[1.0]])
    reg.add("t/k", [[2.0]])
    reg.deprecate("t/k@1", "old")
    root = json.loads((db / "index.json").read_text())
    key = next(iter(root["segments"].values()))
    lines = (db / key).read_text().split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("{"))
    header = json.loads(lines[at])
    header["meta"]["t/k"]["deprecated"] = {"1": "evil\x1b]0;owned\x07"}
    header["meta"]["t/k"]["labels"] = {"x\x1b[2J": 1}
    header["meta"]["t/k"]["events"].append({"op": "add\x1b[31m", "at": "2026", "by": "\x1b]52;c;AAAA\x07"})
    lines[at] = json.dumps(header)
    (db / key).write_text("\n".join(lines))
    run = CliRunner().invoke
    for args in (["show", "t/k@1"], ["list", "--all-versions"], ["log"]):
        result = run(cli, ["--db", str(db), *args])
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.stdout + result.stderr and "\\x1b" in result.stdout + result.stderr, args
    header["meta"]["t/k"]["labels"] = {"stable": "1"}
    lines[at] = json.dumps(header)
    (db / key).write_text("\n".join(lines))
    with pytest.raises(registry.UnsafeFileError, match="damaged"):
        registry.Registry(db, builtins=False).load("t/k")
