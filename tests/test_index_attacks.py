"""A root or segment rewritten by hand or by an attacker: refused as damage, never believed.

The registries here are small and local (the index code is the same on every backend); the
expected answers are the kernels each test added, never what kreg itself lists.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from registry import Registry, UnsafeFileError

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


DEEP = b"[" * 200_000  # far deeper than the JSON parser's recursion: a RecursionError if not caught


def segment_path(db: Path) -> Path:
    (key,) = read_root(db)["segments"].values()
    return db / key


def rewrite_segment(db: Path, change: str) -> None:
    """Replace the header line or n1's record line of the one segment with DEEP."""
    path = segment_path(db)
    lines = path.read_bytes().split(b"\n")
    header = next(i for i, line in enumerate(lines) if line.startswith(b"{"))
    assert len(lines) == header + 1 + len(NAMES) + 1  # the block, the header, a line per row, ""
    if change == "header":
        lines[header] = b'{"next":{},"rows":' + DEEP
    else:
        assert json.loads(lines[header + 2])["name"] == "n1"
        lines[header + 2] = DEEP
    path.chmod(0o644)
    path.write_bytes(b"\n".join(lines))


def test_a_deeply_nested_root_is_one_clear_error(tmp_path: Path) -> None:
    db = three_kernels(tmp_path)
    write_root(db, DEEP)
    reg = Registry(db, builtins=False)
    for action in (reg.list_kernels, lambda: reg.load("n1"), lambda: reg.load("n1@1"),
                   lambda: reg.add("n3", [[3.0]])):
        with pytest.raises(UnsafeFileError, match="index is not valid JSON"):
            action()
    assert (db / "index.json").read_bytes() == DEEP
    listing = subprocess.run([sys.executable, "-m", "registry", "--db", str(db), "list"], capture_output=True,
                             text=True, timeout=120, check=False)
    assert listing.returncode != 0 and listing.stderr.startswith("Error: ") and len(listing.stderr.splitlines()) == 1
    report = Registry(db, builtins=False).fsck()
    assert [key for key, _ in report.problems] == ["index.json"]
    Registry(db, builtins=False).fsck(repair=True)
    assert [info.ref for info in Registry(db, builtins=False).list_kernels()] == [f"{n}@1" for n in NAMES]


@pytest.mark.parametrize("change", ["header", "record line"])
def test_a_deeply_nested_segment_line_is_a_damaged_segment(tmp_path: Path, change: str) -> None:
    db = three_kernels(tmp_path)
    rewrite_segment(db, change)
    reg = Registry(db, builtins=False)
    with pytest.raises(UnsafeFileError, match="index segment index/[0-9a-f]{32}.json is damaged"):
        reg.load("n1")
    with pytest.raises(UnsafeFileError, match="is damaged"):
        reg.add("n1", [[9.0]])  # the writer compares with n1's latest record first
    report = Registry(db, builtins=False).fsck()
    damaged = [key for key, problem in report.problems if "is damaged" in problem]
    assert damaged == [("n1@1" if change == "record line" else str(segment_path(db).relative_to(db)))]
    Registry(db, builtins=False).fsck(repair=True)
    repaired = Registry(db, builtins=False)
    assert repaired.load("n1").array.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert repaired.fsck().problems == []


def test_a_deeply_nested_record_in_an_object_is_a_problem_fsck_reports(tmp_path: Path) -> None:
    import h5py

    db = three_kernels(tmp_path)
    path = db / "kernels" / "n1" / "@1.h5"
    path.chmod(0o644)
    with h5py.File(path, "r+") as f:
        f["kernels/n1/@1"].attrs["record"] = "[" * 30_000  # within the attribute cap
    report = Registry(db, builtins=False).fsck()
    assert [key for key, _ in report.problems] == ["n1@1"] and "not valid JSON" in report.problems[0][1]


def test_a_deeply_nested_format_1_index_is_one_clear_error(tmp_path: Path) -> None:
    import shutil

    import h5py

    db = tmp_path / "v1"
    shutil.copytree(Path(__file__).parent / "data" / "registry-v1", db)
    (db / "index.h5").chmod(0o644)
    with h5py.File(db / "index.h5", "r+") as f:
        del f["records"]
        f["records"] = np.frombuffer(DEEP, "u1")
    with pytest.raises(UnsafeFileError, match="format-1 index is damaged"):
        Registry(db, builtins=False).list_kernels()


def phantom_entries(count: int) -> bytes:
    """Listing entries (ten tab-separated fields) for kernels no row holds."""
    return b"".join(f"ph{i:06d}\tph{i:06d}\t1\t3x3\tfloat32\tHW\thandmade\tphantom\t\t{'0' * 64}\n".encode()
                    for i in range(count))


@pytest.mark.parametrize(("count", "root_facts"), [(150_000, "updated"), (5_000, "updated"), (150_000, "none"), (2, "none")])
def test_phantom_listing_entries_are_refused_on_list(tmp_path: Path, count: int, root_facts: str) -> None:
    db = three_kernels(tmp_path)
    path = segment_path(db)
    data = phantom_entries(count) + path.read_bytes()  # placed before the segment's listing block
    path.chmod(0o644)
    path.write_bytes(data)
    root = read_root(db)
    if root_facts == "none":  # the layout before the root gave lengths: the whole segment is read
        del root["listing"]
    else:  # a root that agrees on the new length: the block alone is read
        (key,) = root["listing"]
        root["listing"][key][0] = data.index(b"\n{") + 1
    write_root(db, json.dumps(root).encode())

    reg = Registry(db, builtins=False)
    with pytest.raises(UnsafeFileError, match="index segment index/[0-9a-f]{32}.json is damaged"):
        reg.list_kernels()
    listing = subprocess.run([sys.executable, "-m", "registry", "--db", str(db), "list"], capture_output=True,
                             text=True, timeout=120, check=False)
    assert listing.returncode != 0 and "phantom" not in listing.stdout
    assert listing.stderr.startswith("Error: ") and "fsck --repair" in listing.stderr
    assert reg.load("n1").array.tolist() == [[1.0, 1.0], [1.0, 1.0]]  # loads read the rows, not the block
    report = Registry(db, builtins=False).fsck()
    assert any("listing block does not match its rows" in problem for _, problem in report.problems)
    assert report.kernels == len(NAMES)
    Registry(db, builtins=False).fsck(repair=True)
    assert [info.ref for info in Registry(db, builtins=False).list_kernels()] == [f"{n}@1" for n in NAMES]


def test_deeply_nested_json_in_the_cache_the_shipped_listing_or_a_checkpoint_is_ignored(tmp_path: Path) -> None:
    """Three more readers of JSON that came from a file: each treats nesting too deep to parse as a
    damaged file (the cache entry re-read, the shipped listing rebuilt from the pack, the
    checkpoint's kreg record not trusted), never a RecursionError."""
    from registry.adapters.learned import from_checkpoint
    from registry.kernels.builtins import BuiltinLayer
    from registry.store.cache import DiskCache

    deep = b"[" * 200_000
    cache = DiskCache(tmp_path / "cache", max_bytes=1 << 20)
    cache.put_root("s3://b/p", b"{}", "etag")
    assert cache.get_root("s3://b/p") is not None
    root_file = next(p for p in (tmp_path / "cache" / "roots").rglob("*") if p.is_file())
    root_file.write_bytes(deep + b"\n{}")
    assert cache.get_root("s3://b/p") is None

    source = Registry(tmp_path / "r").builtin_path
    copy = tmp_path / "db" / source.name
    copy.parent.mkdir()
    copy.write_bytes(source.read_bytes())
    layer = BuiltinLayer(copy)
    layer.listing_path.write_bytes(deep)
    assert layer._shipped_listing() is None
    assert "sobel_x" in [entry.split("\t")[1] for entry in layer.listing(all_versions=False)]

    values = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    kernel = from_checkpoint({"conv.weight": values}, "conv.weight", {"kreg.record": deep.decode()})
    assert kernel.shape == (3, 3, 1, 1)
