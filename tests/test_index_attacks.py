"""A root or segment rewritten by hand or by an attacker: refused as damage, never believed.

The registries here are small and local (the index code is the same on every backend); the
expected answers are the kernels each test added, never what kreg itself lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from registry import KregError, Registry, UnsafeFileError

NAMES = ["n0", "n1", "n2"]


def three_kernels(tmp_path: Path) -> Path:
    db = tmp_path / "reg"
    reg = Registry(db, builtins=False)
    for i, name in enumerate(NAMES):
        reg.add(name, np.full((2, 2), i, "f4"))
    return db


def read_root(db: Path) -> dict:
    return json.loads((db / "index.json").read_text())


def write_root(db: Path, data: bytes) -> None:
    """Replace the root in place (committed files are read-only: the test plays the attacker)."""
    (db / "index.json").chmod(0o644)
    (db / "index.json").write_bytes(data)


def kernel_files(db: Path) -> list[str]:
    return sorted(str(p.relative_to(db)) for p in (db / "kernels").rglob("*") if p.is_file())


# Each: the segments of a root whose one segment (key K) holds every name.
PREFIXES = {
    "overlapping": lambda k: {"": k, "0": k},  # every row listed twice
    "nested": lambda k: {"0": k, "01": k, "1": k},
    "incomplete": lambda k: {"0": k},  # half of the names have no segment
    "one key twice": lambda k: {"0": k, "1": k},
    "too deep": lambda k: {format(i, "025b"): k for i in range(2)},
}


@pytest.mark.parametrize("shape", sorted(PREFIXES))
def test_a_root_whose_prefixes_do_not_cover_each_name_once_is_damaged(tmp_path: Path, shape: str) -> None:
    db = three_kernels(tmp_path)
    root = read_root(db)
    (key,) = root["segments"].values()
    root["segments"] = PREFIXES[shape](key)
    forged = json.dumps(root).encode()
    write_root(db, forged)
    objects = kernel_files(db)

    reg = Registry(db, builtins=False)
    for action in (reg.list_kernels, lambda: reg.load("n1"), lambda: reg.load("n1@1")):
        with pytest.raises(UnsafeFileError, match="index root is damaged"):
            action()
    report = Registry(db, builtins=False).fsck()
    assert any(key == "index.json" and "damaged" in problem for key, problem in report.problems)
    with pytest.raises(UnsafeFileError, match="index root is damaged"):
        Registry(db, builtins=False).add("n3", [[3.0]])
    assert (db / "index.json").read_bytes() == forged  # nothing committed on top of it
    assert kernel_files(db) == objects  # and no object left behind

    Registry(db, builtins=False).fsck(repair=True)
    repaired = Registry(db, builtins=False)
    assert [info.ref for info in repaired.list_kernels()] == [f"{n}@1" for n in NAMES]
    assert repaired.fsck().problems == [] and repaired.fsck().kernels == len(NAMES)
