"""``kreg copy`` across a directory, S3 (SeaweedFS) and Azure Blob (Azurite): every ``name@v``,
hash and removed number survives local -> s3 -> az -> local, and a re-run copies nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_copy import raw_hash, same_refs, team

import registry
from registry.cli import cli


def test_local_s3_azure_local_keeps_every_ref_hash_and_removed_number(s3_url: str, az_url: str,
                                                                       tmp_path: Path) -> None:
    expected = team(tmp_path / "start")
    with registry.Registry(tmp_path / "start", builtins=False) as start:
        start.label("team/lap@3", "stable")
        start.deprecate("team/lap@1", "sign bug, use @3")
        pin = start.load("team/lap@1").pin
    hops = [str(tmp_path / "start"), s3_url, az_url, str(tmp_path / "end")]
    for source, target in zip(hops, hops[1:]):
        result = CliRunner().invoke(cli, ["copy", source, target])
        assert result.exit_code == 0 and "Copied 3 kernel versions" in result.output, result.output
        again = CliRunner().invoke(cli, ["copy", source, target])
        assert "Copied 0 kernel versions" in again.output and "3 already there" in again.output, again.output
    for where in hops[1:]:
        same_refs(where, expected)
        reg = registry.Registry(where, builtins=False)
        assert {i.ref: i.sha256 for i in reg.list_kernels(all_versions=True)} == {
            ref: raw_hash(values) for ref, values in expected.items()}
        assert reg.fsck().ok
        assert reg.labels("team/lap") == {"stable": 3} and reg.deprecations("team/lap") == {1: "sign bug, use @3"}
        with pytest.warns(registry.DeprecatedKernelWarning, match="sign bug"):
            np.testing.assert_array_equal(reg.load(pin).array, expected["team/lap@1"])
        copies = [e for e in reg.history("team/lap") if e["op"] == "copy"]
        assert sorted(e["ref"] for e in copies) == ["team/lap@1", "team/lap@3"], copies
    end = registry.Registry(hops[-1], builtins=False)
    assert end.add("team/lap", [[4.0]]).version == 4


def test_a_refused_name_writes_nothing_on_an_object_store(remote_url: str, tmp_path: Path) -> None:
    team(tmp_path / "a")
    with registry.Registry(remote_url, builtins=False) as target:
        target.add("team/lap", [[7.0]])
        before = sorted(target.backend.uncached().keys("kernels/"))
    result = CliRunner().invoke(cli, ["copy", str(tmp_path / "a"), remote_url, "team/lap"])
    assert result.exit_code == 1 and result.output.count("Refused") == 1, result.output
    target = registry.Registry(remote_url, builtins=False)
    assert sorted(target.backend.uncached().keys("kernels/")) == before
    np.testing.assert_array_equal(target.load("team/lap").array, [[7.0]])
    with pytest.raises(registry.KernelNotFoundError):
        target.load("team/lap@3")


def test_a_copy_to_s3_killed_mid_way_is_finished_by_a_rerun(s3_url: str, tmp_path: Path) -> None:
    import signal
    import time

    from test_copy import kreg, many

    expected = many(tmp_path / "a", 30)
    proc = kreg("copy", str(tmp_path / "a"), s3_url)
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        try:
            if len(registry.Registry(s3_url, builtins=False).list_kernels()) >= 2:
                break
        except registry.KregError:
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    reached = len(registry.Registry(s3_url, builtins=False).list_kernels())
    assert 2 <= reached < 30, reached
    again = CliRunner().invoke(cli, ["copy", str(tmp_path / "a"), s3_url])
    assert again.exit_code == 0, again.output
    target = registry.Registry(s3_url, builtins=False)
    assert {i.ref: i.sha256 for i in target.list_kernels(all_versions=True)} == {
        ref: raw_hash(values) for ref, values in expected.items()}
    assert target.verify() == []


def test_two_copies_racing_into_one_bucket_agree(s3_url: str, tmp_path: Path) -> None:
    from test_copy import kreg, many

    expected = many(tmp_path / "a", 10)
    procs = [kreg("copy", str(tmp_path / "a"), s3_url) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    target = registry.Registry(s3_url, builtins=False)
    assert {i.ref: i.sha256 for i in target.list_kernels(all_versions=True)} == {
        ref: raw_hash(values) for ref, values in expected.items()}
    assert target.fsck().ok


def test_a_copy_refuses_a_number_another_writer_issued_and_removed_meanwhile(remote_url: str,
                                                                           tmp_path: Path) -> None:
    # The copy builds on the root this machine holds (k@1, next 2) while another writer adds k@2
    # and removes it, deleting its object: the copy's create-only put of @2 then succeeds, but on
    # the replay its number turns out issued and removed. An add would move to @3; a copy must
    # keep its numbers, so it refuses the name and leaves nothing of it.
    from registry.store.mirror import mirror

    with registry.Registry(tmp_path / "a", builtins=False) as source:
        source.add("k", [[1.0]])
        source.add("k", [[2.0]])
    target = registry.Registry(remote_url, builtins=False)
    target.add("k", [[1.0]])
    other = registry.Registry(remote_url, builtins=False)
    assert other.add("k", [[5.0]]).ref == "k@2"
    assert other.remove("k@2") == ["k@2"]
    lines = mirror(registry.Registry(tmp_path / "a", builtins=False), target)
    assert [line.action for line in lines] == ["refuse"], lines
    assert "issued and removed there by another writer meanwhile" in lines[0].why
    fresh = registry.Registry(remote_url, builtins=False)
    assert [i.ref for i in fresh.list_kernels(all_versions=True)] == ["k@1"]
    keys = sorted(fresh.backend.uncached().keys("kernels/"))
    assert keys == ["kernels/k/@1.h5", "kernels/k/@1.json", "kernels/k/@2.gone"], keys
