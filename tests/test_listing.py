"""The listing line of index segments: natural order from a plain string sort, across split
segments, old-layout segments, built-ins on top, and damage caught by ``kreg fsck``.

The reference order is a natural sort written here, independently of kreg's.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import Registry
from registry.format.names import NAME_PATTERN, natural_key, sort_key
from registry.format import index

PY = sys.executable


def reference_order(name: str) -> list[object]:
    """Natural order: digit runs compare as numbers, everything else as text."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def kreg(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "registry", "--db", str(db), *args], capture_output=True, text=True, check=False,
                          timeout=120)


def table(out: str) -> list[list[str]]:
    """The rows of a ``kreg list`` table, split on runs of two or more spaces."""
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAME", "VER", "SHAPE", "DTYPE", "LAYOUT", "ORIGIN", "DESCRIPTION"]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


names = st.from_regex(r"[a-c0-9][a-c0-9_./-]{0,12}", fullmatch=True).filter(lambda n: re.match(NAME_PATTERN, n))


@settings(max_examples=2000, deadline=None)
@given(names, names)
def test_sort_key_orders_as_the_natural_order(a: str, b: str) -> None:
    # A listing entry is the key, a tab, then the fields: the tab ends the key.
    if reference_order(a) == reference_order(b):
        return  # equal numbers written with different leading zeros: any order is natural
    assert (sort_key(a) + "\t" < sort_key(b) + "\t") == (reference_order(a) < reference_order(b)), (a, b)
    assert (natural_key(a) < natural_key(b)) == (reference_order(a) < reference_order(b))


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments split at 8 rows, so 60 names spread over many segments."""
    monkeypatch.setattr(index, "MAX_ROWS", 8)


def test_kreg_list_merges_split_segments_in_natural_order(tmp_path: Path, small_segments: None) -> None:
    db = tmp_path / "reg"
    reg = Registry(db, builtins=False)
    names = [f"k{i}" for i in range(25)] + [f"team/a{i}_v{i % 3}" for i in range(20)] + ["k", "k00", "k007", "z"]
    random.Random(4).shuffle(names)
    latest = {}
    with reg.batch():
        for i, name in enumerate(names):
            reg.add(name, np.full((3, 5), i, "f4"), description=f"kernel {i} of the test", tags=["t"])
            latest[name] = 1
    for name in names[:10]:  # second versions of some: the listing shows the latest
        reg.add(name, np.zeros((1, 2), "f4"), description="second", inherit=False)  # no tag: see below
        latest[name] = 2
    reg.remove(names[10])
    del latest[names[10]]
    assert len(reg._state.read(lambda view: view.segments)) > 4, "the test must span split segments"

    result = kreg(db, "list")
    assert result.returncode == 0, result.stderr
    everything = table(result.stdout)
    order = [reference_order(r[0]) for r in everything]
    assert order == sorted(order), "built-ins and user kernels are merged in one natural order"
    rows = [r for r in everything if r[5] != "builtin"]
    listed = [r[0] for r in rows]
    expected = sorted(latest, key=reference_order)
    # k7 and k007, k0 and k00 are equal numbers: either order is natural, the rest is fixed
    assert sorted(listed) == sorted(expected)
    ties = {"k0", "k00", "k7", "k007"}
    assert [n for n in listed if n not in ties] == [n for n in expected if n not in ties]
    for row in rows:
        name, version = row[0], int(row[1])
        assert version == latest[name], (name, row)
        assert row[2] == ("1x2" if version == 2 else "3x5")
        assert row[3:6] == ["float32", "HW", "handmade"]
        assert row[6] == ("second" if version == 2 else f"kernel {names.index(name)} of the test")

    every = [r for r in table(kreg(db, "list", "--all-versions", "k1*").stdout) if r[5] != "builtin"]
    assert [(r[0], r[1]) for r in every] == sorted(
        [(n, str(v)) for n in latest if n.startswith("k1") for v in range(1, latest[n] + 1)],
        key=lambda nv: (reference_order(nv[0]), int(nv[1])))
    tagged = [i.name for i in reg.list_kernels("team/*", tags=["t"], origin="handmade")]
    # the second versions carry no tag: their names drop out
    assert tagged == sorted([n for n, v in latest.items() if n.startswith("team/") and v == 1], key=reference_order)


def test_version_order_is_numeric_in_all_versions(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg", builtins=False)
    with reg.batch():
        for i in range(12):
            reg.add("w", np.full((2, 2), i, "f4"))
    assert [i.version for i in reg.list_kernels(all_versions=True)] == list(range(1, 13))


def three_kernels(tmp_path: Path) -> Path:
    """A registry holding n0, n1 and n2 (one segment)."""
    db = tmp_path / "reg"
    reg = Registry(db, builtins=False)
    for i in range(3):
        reg.add(f"n{i}", np.full((3, 3), i, "f4"))
    return db


def read_root(db: Path) -> dict:
    return json.loads((db / "index.json").read_text())


def write_root(db: Path, root: dict) -> None:
    """Replace the root in place (committed files are read-only: a test plays the attacker)."""
    (db / "index.json").chmod(0o644)
    (db / "index.json").write_text(json.dumps(root))


def segment_files(db: Path) -> list[Path]:
    root = json.loads((db / "index.json").read_text())
    return [db / key for key in root["segments"].values()]


def test_first_layout_segments_without_a_listing_block_still_list(tmp_path: Path, small_segments: None) -> None:
    db = tmp_path / "reg"
    reg = Registry(db, builtins=False)
    with reg.batch():
        for i in range(30):
            reg.add(f"n{i}", np.full((3, 3), i, "f4"), description=f"d{i}")
    before = kreg(db, "list").stdout
    for path in segment_files(db):  # rewrite each segment in the layout before the listing block
        data = path.read_bytes()
        assert data.startswith(b"n")  # entries first, then the header (the first line starting with "{")
        path.chmod(0o644)
        path.write_bytes(data[data.index(b"\n{") + 1:])
    root = read_root(db)  # whose roots gave no listing lengths
    assert set(root.pop("listing")) == {str(p.relative_to(db)) for p in segment_files(db)}
    write_root(db, root)
    assert kreg(db, "list").stdout == before
    assert Registry(db, builtins=False).load("n17").array[0, 0] == 17
    assert kreg(db, "fsck").returncode == 0


@pytest.mark.parametrize("damage", ["no fields", "too few fields", "drop an entry"])
def test_a_damaged_listing_block_is_one_error_and_fsck_finds_it(tmp_path: Path, damage: str) -> None:
    db = three_kernels(tmp_path)
    (path,) = segment_files(db)
    data = path.read_bytes()
    end = data.index(b"\n{") + 1
    entries = data[:end].decode().splitlines()
    assert [e.split("\t")[1] for e in entries] == ["n0", "n1", "n2"]
    block = {"no fields": "n0\nn1\nn2\n", "too few fields": "\n".join(e.rsplit("\t", 2)[0] for e in entries) + "\n",
             "drop an entry": "\n".join(entries[1:]) + "\n"}[damage]
    path.chmod(0o644)
    path.write_bytes(block.encode() + data[end:])
    root = read_root(db)  # and a root that agrees on the length
    root["listing"][str(path.relative_to(db))][0] = len(block.encode())
    write_root(db, root)

    listing = kreg(db, "list")
    if damage == "drop an entry":  # parses: only fsck can tell the line from the rows
        assert listing.returncode == 0
    else:
        assert listing.returncode != 0
        assert listing.stderr.startswith("Error: ") and len(listing.stderr.strip().splitlines()) == 1
        assert "damaged" in listing.stderr and "fsck --repair" in listing.stderr
    assert Registry(db, builtins=False).load("n2").array[0, 0] == 2  # loads do not read the listing block
    check = kreg(db, "fsck")
    assert check.returncode != 0 and "index/" in check.stdout + check.stderr
    assert kreg(db, "fsck", "--repair").returncode == 0
    assert [r[0] for r in table(kreg(db, "list", "n*").stdout)] == ["n0", "n1", "n2"]
    assert kreg(db, "fsck").returncode == 0


def test_a_user_kernel_hides_the_builtin_of_its_name_everywhere(tmp_path: Path) -> None:
    # Only a registry filled without the built-in layer (or before a release added the
    # built-in) can hold one: list, load, show, versions and records must then agree.
    db = tmp_path / "reg"
    mine = Registry(db, builtins=False)
    mine.add("sobel_x", np.ones((3, 3), "f4"), description="mine")
    mine.add("sobel_x", np.ones((5, 5), "f4"), description="mine too")
    mine.add("zzz", np.ones((3, 3), "f4"))
    reg = Registry(db)
    rows = reg.list_kernels("sobel_x", all_versions=True)
    assert [(r.version, r.shape, r.origin, r.builtin) for r in rows] == [(1, (3, 3), "handmade", False),
                                                                           (2, (5, 5), "handmade", False)]
    assert reg.load("sobel_x").shape == (5, 5) and reg.versions("sobel_x") == [1, 2] and "sobel_x@2" in reg
    assert reg.records(["sobel_x"])[0]["version"] == 2
    everything = reg.list_kernels()
    assert [r.name for r in everything].count("sobel_x") == 1
    assert everything[-1].name == "zzz" and not everything[-1].builtin
    assert any(r.builtin for r in everything)  # the other built-ins are there
    assert table(kreg(db, "list", "sobel_x").stdout) == [["sobel_x", "2", "5x5", "float32", "HW", "handmade", "mine too"]]
    assert reg.verify(["sobel_x"]) == []
    reg.remove("sobel_x@1")  # the user's own version: allowed
    assert reg.versions("sobel_x") == [2]


def test_tag_filters_treat_no_tags_as_none(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg", builtins=False)
    reg.add("untagged", np.ones((3, 3), "f4"))
    reg.add("tagged", np.ones((3, 3), "f4"), tags=["edge"])
    assert [r.name for r in reg.list_kernels(tags=["edge"])] == ["tagged"]
    assert reg.list_kernels(tags=[""]) == []


@pytest.mark.parametrize("wrong", ["length", "widths"])
def test_wrong_listing_facts_in_the_root_are_found(tmp_path: Path, wrong: str) -> None:
    # the widths: "n0", "1", "3x3", "float32", "HW", "handmade"
    db = three_kernels(tmp_path)
    root = read_root(db)
    (key,) = root["listing"]
    facts = root["listing"][key]
    assert facts == [(db / key).read_bytes().index(b"\n{") + 1, 2, 1, 3, 7, 2, 8]  # the block's length, widths
    if wrong == "length":
        facts[0] -= 7
    else:
        facts[1] = 1  # names are 2 wide
    write_root(db, root)

    listing = kreg(db, "list", "n*")
    if wrong == "length":  # a block cut short: one clear error
        assert listing.returncode != 0 and listing.stderr.startswith("Error: ") and "fsck --repair" in listing.stderr
        assert len(listing.stderr.strip().splitlines()) == 1
    else:  # a ragged table, and fsck says why
        assert listing.returncode == 0
    check = kreg(db, "fsck")
    assert check.returncode != 0 and "wrong listing length or widths" in check.stdout + check.stderr
    assert kreg(db, "fsck", "--repair").returncode == 0
    assert [r[0] for r in table(kreg(db, "list", "n*").stdout)] == ["n0", "n1", "n2"]


def test_the_shipped_builtin_listing_matches_the_pack_and_a_stale_one_is_ignored(tmp_path: Path) -> None:
    import shutil

    import tomllib

    from registry.kernels.builtins import BuiltinLayer
    from registry._paths import builtin_db_path

    shipped_layer = BuiltinLayer(builtin_db_path())
    shipped = shipped_layer._shipped_listing()
    assert shipped is not None, "kernels_db/builtin.listing.json is missing or stale: run 'make kernels'"
    toml = tomllib.loads((Path(__file__).parent.parent / "kernels_db" / "kernels.toml").read_text())
    toml_names = {k["name"] for k in toml["kernel"]} if "kernel" in toml else set(toml)
    assert {e.split("\t")[1] for e in shipped} == toml_names
    for entry in shipped:  # each entry says what the pack's own record says
        _, name, version, shape, dtype, layout, origin, _, _, sha256 = entry.split("\t")
        record = shipped_layer.records[name][int(version)]
        assert (shape, dtype, layout, sha256) == ("x".join(map(str, record["shape"])), record["dtype"],
                                                  record["layout"], record["sha256"])
        assert origin == "builtin"

    pack = tmp_path / "builtin.h5"
    shutil.copy(builtin_db_path(), pack)
    listing = json.loads(shipped_layer.listing_path.read_text())
    listing["entries"] = [e.replace("\tbuiltin\t", "\tbuiltin\tTAMPERED ") for e in listing["entries"]]
    (tmp_path / "builtin.listing.json").write_text(json.dumps(listing))
    assert all("TAMPERED" in e for e in BuiltinLayer(pack).listing())  # the pack's hash matches: used
    listing["pack_sha256"] = "0" * 64
    (tmp_path / "builtin.listing.json").write_text(json.dumps(listing))
    fallback = BuiltinLayer(pack).listing()
    assert not any("TAMPERED" in e for e in fallback) and sorted(fallback) == sorted(shipped)


# A child with its memory capped: the old reader waited on a FIFO forever and read /dev/zero
# until MemoryError, so each case must finish, quickly, within a small address space.
_LIST_BUILTINS = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
from pathlib import Path
from registry.kernels.builtins import BuiltinLayer
try:
    print(len(BuiltinLayer(Path(sys.argv[1])).listing(all_versions=True)))
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("planted", ["fifo listing", "dev/zero listing", "sparse 4 GiB listing", "fifo pack"])
def test_a_shipped_file_that_is_no_bounded_file_is_refused_without_waiting(tmp_path: Path, planted: str) -> None:
    import os
    import shutil

    from registry._paths import builtin_db_path
    from registry.kernels.builtins import BuiltinLayer

    pack, listing = tmp_path / "builtin.h5", tmp_path / "builtin.listing.json"
    shutil.copy(builtin_db_path(), pack)
    expected = len(BuiltinLayer(builtin_db_path()).listing(all_versions=True))
    if planted == "fifo listing":
        os.mkfifo(listing)
    elif planted == "dev/zero listing":
        listing.symlink_to("/dev/zero")
    elif planted == "sparse 4 GiB listing":
        with open(listing, "wb") as f:
            f.truncate(4 * 2**30)
    else:
        shutil.copy(builtin_db_path().with_name("builtin.listing.json"), listing)
        pack.unlink()
        os.mkfifo(pack)
    done = subprocess.run([PY, "-c", _LIST_BUILTINS, str(pack)], capture_output=True, text=True, timeout=30,
                          check=False)
    if planted == "fifo pack":  # no listing without its pack: the guarded reader names the FIFO
        assert done.stdout.startswith("UnsafeFileError") and "not a regular file" in done.stdout, done
    else:  # the listing is ignored: the pack itself lists the built-ins
        assert done.stdout.strip() == str(expected), (done.stdout, done.stderr[-500:])


@pytest.mark.parametrize("hostile", ["huge widths", "huge retired time", "a ragged block", "a terminal escape"])
def test_hostile_roots_and_blocks_give_one_error_or_are_ignored(tmp_path: Path, hostile: str) -> None:
    db = three_kernels(tmp_path)
    root = read_root(db)
    (key,) = root["listing"]
    if hostile == "huge widths":
        root["listing"][key][1] = 10**9
    elif hostile == "huge retired time":
        root["retired"] = {"index/" + "a" * 32 + ".json": 10**400}
    else:
        path = db / key
        data = path.read_bytes()
        end = data.index(b"\n{") + 1
        lines = data[:end].decode().splitlines()
        if hostile == "a ragged block":  # nine tabs too many on one line, one line with none
            block = "\n".join([lines[0] + "\t" * 9, "garbage", *lines[1:]]) + "\n"
        else:  # a name that would retitle the terminal, and a description that would clear it
            fields = lines[0].split("\t")
            fields[1], fields[7] = "n0\x1b]0;pwned\x07", "\x1b[2J"
            block = "\n".join(["\t".join(fields), *lines[1:]]) + "\n"
        path.chmod(0o644)
        path.write_bytes(block.encode() + data[end:])
        root["listing"][key][0] = len(block.encode())
    write_root(db, root)

    listing, mine, tagged, check = (kreg(db, *args) for args in (["list"], ["list", "n*"], ["list", "--tag", "x"],
                                                                  ["fsck"]))
    for result in (listing, mine, tagged, check):
        assert "Traceback" not in result.stderr, result.stderr
    if hostile == "a ragged block":
        for result in (listing, mine, tagged):
            assert result.returncode != 0 and result.stderr.startswith("Error: ") and "fsck --repair" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
    elif hostile == "a terminal escape":  # printed escaped, never raw
        assert mine.returncode == 0 and "\x1b" not in listing.stdout + mine.stdout
        assert "\\x1b]0;pwned\\x07" in mine.stdout and "\\x1b[2J" in mine.stdout
    else:  # a fact out of bounds is not believed: the listing is read the long way, and right
        assert [r[0] for r in table(mine.stdout)] == ["n0", "n1", "n2"]
        lines = listing.stdout.splitlines()
        assert {line.index("float32") for line in lines[1:]} == {lines[0].index("DTYPE")}  # aligned, not 10^9 wide
        assert tagged.returncode == 0 and "No kernels match" in tagged.stdout + tagged.stderr
    assert check.returncode != 0 if hostile != "huge retired time" else check.returncode == 0
    assert kreg(db, "fsck", "--repair").returncode == 0
    assert kreg(db, "fsck").returncode == 0
    assert [r[0] for r in table(kreg(db, "list", "n*").stdout)] == ["n0", "n1", "n2"]
