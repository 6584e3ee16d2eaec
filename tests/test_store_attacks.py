"""Planted links and FIFOs, lost and stale indexes, repairs killed half way: the store's promises under attack.

Every planted object points outside the registry at a directory of files whose bytes are
hashed before and after: nothing outside may be read into kreg, written or deleted, and every
refusal is one kreg error (never a raw OSError, never a hang).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from registry import KregError, Registry, UnsafeFileError


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the registry, full of files someone cares about."""
    root = tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    for i in range(5):
        (root / f"precious-{i}.txt").write_bytes(os.urandom(64))
        (root / "sub" / f"put-{i}.tmp").write_bytes(b"not kreg's")  # named like kreg's tmp files
    (root / "@1.h5").write_bytes(b"an outside file named like an object")
    return root


def populated(path: Path) -> Registry:
    reg = Registry(path, builtins=False)
    reg.add("team/a", [[1.0, 2.0]])
    reg.add("team/a", [[3.0, 4.0]])
    reg.add("solo", np.eye(3, dtype=np.float32))
    return reg


def replace_with_link(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


# Each planted spot: (relative path in the registry, whether the link points at a dir or a file).
SPOTS = [
    ("tmp", "dir"),
    ("index", "dir"),
    ("kernels", "dir"),
    ("kernels/team", "dir"),
    ("kernels/team/a", "dir"),
    ("kernels/team/a/@2.h5", "file"),
    ("index.json", "file"),
    (".lock", "file"),
    ("kreg-registry.json", "file"),
]

OPERATIONS: dict[str, Callable[[Path], object]] = {
    "list": lambda p: Registry(p, builtins=False).list_kernels(),
    "load": lambda p: Registry(p, builtins=False).load("team/a"),
    "load_pinned": lambda p: Registry(p, builtins=False).load("solo@1"),
    "add_new_ns": lambda p: Registry(p, builtins=False).add("team/x", [[5.0]]),
    "add_existing": lambda p: Registry(p, builtins=False).add("team/a", [[9.0, 9.0]]),
    "remove": lambda p: Registry(p, builtins=False).remove("team/a@1"),
    "fsck": lambda p: Registry(p, builtins=False).fsck(),
    "repair": lambda p: Registry(p, builtins=False).fsck(repair=True),
    "verify": lambda p: Registry(p, builtins=False).verify(),
}


@pytest.mark.parametrize("spot,kind", SPOTS)
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_planted_symlink_is_refused_and_nothing_outside_changes(
    tmp_path: Path, outside: Path, spot: str, kind: str, operation: str
) -> None:
    path = tmp_path / "reg"
    populated(path)
    target = outside / "sub" if kind == "dir" else outside / "@1.h5"
    replace_with_link(path / spot, target)
    before = tree_digest(outside)
    try:
        result = OPERATIONS[operation](path)
    except KregError as exc:
        # The only acceptable failure: a kreg error (the link named, or the index it hid).
        assert isinstance(exc, KregError) and str(exc)
    except OSError as exc:  # pragma: no cover - the regression this test exists for
        pytest.fail(f"raw OSError: {exc!r}")
    else:
        # An operation whose path avoids the link may succeed; it must not have read through it.
        if operation == "fsck":
            assert any(spot in key or "link" in problem for key, problem in result.problems), result.problems
    assert tree_digest(outside) == before, f"{operation} changed files outside the registry"
    assert (path / spot).is_symlink(), "kreg removed or replaced the planted link"


@pytest.mark.parametrize("spot", ["index.json", "kernels/team/a/@2.h5", ".lock", "kreg-registry.json"])
def test_a_planted_fifo_is_refused_without_hanging(tmp_path: Path, spot: str) -> None:
    path = tmp_path / "reg"
    populated(path)
    (path / spot).unlink()
    os.mkfifo(path / spot)
    for name, operation in OPERATIONS.items():
        try:
            operation(path)
        except KregError:
            pass
        except OSError as exc:
            pytest.fail(f"{name}: raw OSError {exc!r}")
    assert any(spot in key for key, _ in Registry(path, builtins=False).fsck().problems)


def test_a_reader_never_deletes_anything(tmp_path: Path) -> None:
    path = tmp_path / "reg"
    populated(path)
    leftover = path / "tmp" / f"put-{'0' * 32}.tmp"
    leftover.write_bytes(b"left by a crashed writer")
    reg = Registry(path, builtins=False)
    reg.list_kernels()
    reg.load("team/a")
    reg.fsck()
    assert leftover.exists(), "a reader deleted a file"
    reg.add("next", [[1.0]])  # a writer, under the lock, sweeps it
    assert not leftover.exists()


def test_the_sweep_removes_only_what_kreg_writes(tmp_path: Path) -> None:
    path = tmp_path / "reg"
    populated(path)
    foreign = path / "tmp" / "notes.txt"
    foreign.write_bytes(b"mine")
    Registry(path, builtins=False).add("next", [[1.0]])
    assert foreign.read_bytes() == b"mine"
    assert any("notes.txt" in key for key, _ in Registry(path, builtins=False).fsck().problems)


def test_a_lost_index_is_rebuilt_and_no_number_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "reg"
    reg = populated(path)
    reg.add("team/a", [[5.0, 6.0]])
    reg.remove("team/a@3")  # the highest number is now held only by a tombstone
    reg.add("gone", [[1.0]])
    reg.remove("gone")
    objects = {p: p.read_bytes() for p in path.glob("kernels/**/*.h5")}
    (path / "index.json").unlink()
    with pytest.raises(UnsafeFileError, match=r"kreg fsck --repair"):
        Registry(path, builtins=False).load("team/a")
    with pytest.raises(UnsafeFileError, match=r"kreg fsck --repair"):
        Registry(path, builtins=False).add("team/a", [[7.0, 7.0]])
    assert {p: p.read_bytes() for p in path.glob("kernels/**/*.h5")} == objects, "an object was overwritten"
    report = Registry(path, builtins=False).fsck(repair=True)
    assert report.kernels == 3 and report.set_aside == []
    fresh = Registry(path, builtins=False)
    assert [i.ref for i in fresh.list_kernels(all_versions=True)] == ["solo@1", "team/a@1", "team/a@2"]
    assert fresh.add("team/a", [[7.0, 7.0]]).ref == "team/a@4"
    assert fresh.add("gone", [[2.0]]).ref == "gone@2"
    assert fresh.fsck().problems == [] and fresh.verify() == []


def test_a_stale_index_never_reissues_a_number_or_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "reg"
    reg = populated(path)
    stale_root = (path / "index.json").read_bytes()
    stale_segments = {p.name: p.read_bytes() for p in (path / "index").iterdir()}
    reg.add("team/a", [[5.0, 6.0]])  # team/a@3
    objects = {p: p.read_bytes() for p in path.glob("kernels/**/*.h5")}
    # Roll the index back to before @3 (a restored backup, a bad copy): @3's object is still there.
    for name, data in stale_segments.items():
        (path / "index" / name).write_bytes(data)
    (path / "index.json").write_bytes(stale_root)
    fresh = Registry(path, builtins=False)
    assert fresh.next_version("team/a") == 3
    assert fresh.add("team/a", [[8.0, 8.0]]).ref == "team/a@4"
    assert all(p.read_bytes() == data for p, data in objects.items()), "an object was overwritten"
    problems = fresh.fsck().problems
    assert any("@3.h5" in key and "orphan" in p for key, p in problems), problems


def repair_forever(path: str) -> None:
    while True:
        Registry(path, builtins=False).fsck(repair=True)


def test_sigkill_during_repair_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "reg"
    reg = Registry(path, builtins=False)
    with reg.batch():
        expected = {reg.add(f"k/{i}", np.full((4, 4), i, np.float32)).ref for i in range(60)}
    (path / "index.json").unlink()
    ctx = mp.get_context("fork")
    rnd = random.Random(5)
    for _ in range(15):
        child = ctx.Process(target=repair_forever, args=(str(path),))
        child.start()
        time.sleep(rnd.uniform(0.0, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        # Each kill leaves the index either lost (repair again) or whole: never half rebuilt.
        try:
            listed = {i.ref for i in Registry(path, builtins=False).list_kernels(all_versions=True)}
        except UnsafeFileError:
            continue
        assert listed == expected
    Registry(path, builtins=False).fsck(repair=True)
    fresh = Registry(path, builtins=False)
    assert {i.ref for i in fresh.list_kernels(all_versions=True)} == expected
    assert fresh.verify() == []


def test_a_format_1_registry_is_read_then_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v1"
    shutil.copytree(Path(__file__).parent / "data" / "registry-v1", path)
    objects = {p: p.read_bytes() for p in path.glob("kernels/**/*.h5")}
    reg = Registry(path, builtins=False)
    refs = [i.ref for i in reg.list_kernels(all_versions=True)]
    assert refs == ["blur@1", "conv1@1", "team/edge@1", "team/edge@2"]
    conv1 = reg.load("conv1")
    assert conv1.shape == (3, 3, 2, 4) and conv1._record["bias"] == [0.1, 0.2, 0.3, 0.4]
    assert reg.verify() == []
    # The first write migrates: the next numbers continue where format 1 left them.
    assert reg.add("team/edge", [[1.0]]).ref == "team/edge@4"  # @3 was removed in format 1
    assert reg.add("gone", [[1.0]]).ref == "gone@2"
    assert not (path / "index.h5").exists() and (path / "index.json").exists()
    fresh = Registry(path, builtins=False)
    assert [i.ref for i in fresh.list_kernels(all_versions=True)] == refs[:2] + [
        "gone@2", "team/edge@1", "team/edge@2", "team/edge@4"]
    assert all(p.read_bytes() == data for p, data in objects.items())
    assert fresh.verify() == [] and fresh.fsck().problems == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to bind-mount a registry read-only (CI runs as root)")
def test_a_read_only_registry_with_leftovers_reads_and_refuses_writes_cleanly(tmp_path: Path) -> None:
    import subprocess
    import sys

    path, mount = tmp_path / "reg", tmp_path / "ro"
    populated(path)
    (path / "tmp" / f"put-{'1' * 32}.tmp").write_bytes(b"a crashed writer's leftover")
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(path), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], check=True)

        def kreg(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "registry", "--db", str(mount), *args],
                                  capture_output=True, text=True)

        listed = kreg("list", "team/*")
        assert listed.returncode == 0 and "team/a" in listed.stdout, listed
        assert kreg("show", "solo").returncode == 0
        for args in (["add", "team/b", "--values", "[[1.0]]"], ["rm", "solo"], ["fsck", "--repair"]):
            done = kreg(*args)
            assert done.returncode == 1, done
            assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
            assert "read-only" in done.stderr and "Traceback" not in done.stderr, done.stderr
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    assert [i.ref for i in Registry(path, builtins=False).list_kernels()] == ["solo@1", "team/a@2"]


def test_a_file_where_the_registry_should_be_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_bytes(b"notes")
    for operation in (lambda: Registry(path).load("team/a"), lambda: Registry(path).add("team/a", [[1.0]]),
                      lambda: Registry(path).list_kernels()):
        with pytest.raises(UnsafeFileError, match="is a file; a registry is a directory"):
            operation()
    assert path.read_bytes() == b"notes"


def test_a_first_add_killed_before_its_commit_leaves_an_empty_readable_registry(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "reg"
    # The child places its object, then dies at the commit as a SIGKILL would leave it.
    code = (
        "import os, registry.store.local as local\n"
        "local.LocalBackend.commit_real = local.LocalBackend.commit\n"
        "def commit(self, root, token):\n"
        "    if b'first' in b''.join(self.read(k) for k in self.keys('index')):\n"
        "        os._exit(9)\n"
        "    return self.commit_real(root, token)\n"
        "local.LocalBackend.commit = commit\n"
        f"import registry; registry.Registry({str(path)!r}, builtins=False).add('first', [[1.0]])\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert list(path.glob("kernels/first/@1.h5")), "the object was not placed: nothing was tested"
    reg = Registry(path, builtins=False)
    assert reg.list_kernels() == []
    assert any("orphan" in p for _, p in reg.fsck().problems)
    assert reg.add("first", [[2.0]]).ref == "first@2"  # @1 is held by the orphan: never reissued
