"""A real full filesystem: a small tmpfs filled at several levels, with small and large kernels.

Needs root to mount a tmpfs (CI runs as root); anywhere else it skips and says why. Every add
that does not fit must fail with one StoreWriteError, leave the registry byte-for-byte as it
was, and every acknowledged kernel must still load with its hash checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from registry import Registry, StoreWriteError

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not sys.platform.startswith("linux"),
    reason="mounting a tmpfs needs root on Linux (CI runs as root)",
)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def fill(path: Path, free_bytes: int) -> None:
    """Leave about ``free_bytes`` free on the filesystem holding ``path``."""
    st = os.statvfs(path)
    spare = st.f_bavail * st.f_frsize - free_bytes
    if spare > 0:
        with open(path / "ballast", "wb") as f:
            f.write(b"\0" * spare)


@pytest.mark.parametrize("side", [4, 64, 300])
@pytest.mark.parametrize("free", [2_000, 20_000, 150_000])
def test_adds_on_a_full_disk_fail_cleanly_and_lose_nothing(small_fs: Path, side: int, free: int) -> None:
    path = small_fs / "reg"
    reg = Registry(path, builtins=False)
    acked = {reg.add("base", np.ones((3, 3), np.float32)).ref: None}
    fill(small_fs, free)
    failures = 0
    for i in range(40):
        before = snapshot(path)
        values = np.random.default_rng(i).standard_normal((side, side)).astype(np.float32)
        try:
            kernel = reg.add(f"team/k{i % 3}", values)
        except StoreWriteError as exc:
            failures += 1
            assert "No space left on device" in str(exc) and "Nothing was added" in str(exc), str(exc)
            assert snapshot(path) == before, "a failed add changed the registry"
            continue
        acked[kernel.ref] = kernel.sha256
    assert failures, "the disk never filled: the test sizes are off"
    fresh = Registry(path, builtins=False)
    listed = {i.ref for i in fresh.list_kernels(all_versions=True)}
    assert listed == set(acked)
    for ref, sha in acked.items():
        if sha is not None:
            assert fresh.load(ref).sha256 == sha
    assert fresh.verify() == []
    assert all(key.startswith("tmp/") for key, _ in fresh.fsck().problems)
    # Room again: the registry takes writes as before.
    (small_fs / "ballast").unlink()
    assert fresh.add("after", [[1.0]]).ref == "after@1"


def test_the_cli_prints_one_error_line_on_a_full_disk(small_fs: Path) -> None:
    path = small_fs / "reg"
    Registry(path, builtins=False).add("base", [[1.0]])
    fill(small_fs, 3_000)
    env = {**os.environ, "KREG_DB": str(path)}
    values = "[" + ",".join(["[" + ",".join(["1.5"] * 300) + "]"] * 30) + "]"
    proc = subprocess.run([sys.executable, "-m", "registry", "add", "team/wide", "--values", values],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: Could not write"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
