"""Two readers written from schema/FORMAT.md alone, compared with what kreg's public API returns.

``tests/plain_reader.py`` (h5py, no kreg) reads whole registry directories and the built-in
database; ``tests/plain_reader.sh`` (h5dump, jq, sha256sum, dd and openssl: no HDF5 library)
reads one kernel of a pack and of a registry directory. Values must be bit-equal and records
equal; each kind of damage must make them refuse.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import PLAIN_READER_TOOLS, require_tool
from plain_reader import Refused, read_builtin, read_registry, strict_json

import registry
from registry._paths import builtin_db_path, schema_dir

SCHEMA_FILE = schema_dir() / "v1" / "kernel-record.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
HERE = Path(__file__).parent
PY = sys.executable


def kreg(db: Path, *args: str) -> str:
    """The kreg CLI in a child process; its stdout."""
    done = subprocess.run([PY, "-m", "registry", "--db", str(db), *args], check=False, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def make_registry(path: Path) -> registry.Registry:
    """Every dtype, every layout, a bias, tags, non-ASCII and whitespace in a description, a
    second version, and names whose digits sort naturally."""
    rng = np.random.default_rng(18)
    reg = registry.Registry(path, builtins=False)
    reg.add("team/half", rng.standard_normal((3, 3)).astype(np.float16), tags=["a", "b"],
            description="  Half\tprecision,\n  caf\u00e9 \u2603 \"quoted\" back\\slash  ")
    reg.add("team/half", rng.standard_normal((5, 5)).astype(np.float16), description="second version")
    reg.add("team/conv_11", rng.standard_normal((3, 3, 2, 4)).astype(np.float32), layout="HWIO",
            bias=[0.5, -0.25, 0.0, 1e-3])
    reg.add("team/conv_3", rng.standard_normal((5, 5)), dtype="float64", tags=["x:y"])
    reg.add("team/dw", np.arange(36, dtype=np.int8).reshape(3, 3, 2, 2) - 18, layout="HWIM", bias=[1, 2, 3, 4])
    reg.add("img/u8", np.arange(9, dtype=np.uint8).reshape(3, 3))
    reg.add("img/i16", (np.arange(9, dtype=np.int16) - 4).reshape(3, 3) * 1000)
    reg.add("img/i32", (np.arange(9, dtype=np.int32) - 4).reshape(3, 3) * 100000)
    return reg


def little_endian(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()


def assert_same_values(plain: np.ndarray, kernel: registry.Kernel) -> None:
    """Bit-equal: dtype, shape and every byte (NaN payloads and -0.0 included)."""
    assert (plain.dtype.name, plain.shape) == (kernel.dtype.name, kernel.array.shape)
    assert little_endian(plain) == little_endian(kernel.array)


def content_hash(dtype: str, shape: list[int], values: bytes) -> str:
    """FORMAT.md section 3, computed here again rather than taken from either reader."""
    return hashlib.sha256(f"kreg-v1:{dtype}:{','.join(map(str, shape))}\n".encode() + values).hexdigest()


def test_the_python_reader_imports_nothing_of_kreg() -> None:
    tree = ast.parse((HERE / "plain_reader.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m == "registry" or m.startswith("registry.")}


@pytest.mark.parametrize("text", ["[NaN]", "[Infinity]", "[-Infinity]", "[1e999]", "{\"a\": -1e400}", "[1] [2]"])
def test_the_python_reader_refuses_what_is_not_json(text: str) -> None:
    with pytest.raises(Refused):
        strict_json(text)


# -- the Python reader: registry directories and the built-in database ------------------------


def test_the_python_reader_reads_a_registry_directory_as_kreg_does(tmp_path: Path) -> None:
    reg = make_registry(tmp_path / "reg")
    plain = read_registry(tmp_path / "reg", SCHEMA)
    assert set(plain["kernels"]) == {info.ref for info in reg.list_kernels(all_versions=True)}
    for ref, read in plain["kernels"].items():
        assert type(read["offset"]) is int  # kreg records where the values start
        assert_same_values(read["values"], reg.load(ref))
        assert read["record"] == reg.records([ref])[0]


def test_the_python_reader_reads_null_offsets_of_a_migrated_registry(tmp_path: Path) -> None:
    """Rows carried over from a format-1 index have no offset: the object is read as a container."""
    shutil.copytree(HERE / "data" / "registry-v1", tmp_path / "reg")
    reg = registry.Registry(tmp_path / "reg", builtins=False)
    reg.add("fresh", np.ones((3, 3), np.float16))  # the first write migrates
    plain = read_registry(tmp_path / "reg", SCHEMA)
    assert {ref for ref, read in plain["kernels"].items() if read["offset"] is None} == {
        "blur@1", "conv1@1", "team/edge@1", "team/edge@2"}
    assert set(plain["kernels"]) == {info.ref for info in reg.list_kernels(all_versions=True)}
    for ref, read in plain["kernels"].items():
        assert_same_values(read["values"], reg.load(ref))
        assert read["record"] == reg.records([ref])[0]


def test_the_python_reader_reads_the_builtin_database_as_kreg_does(tmp_path: Path) -> None:
    plain = read_builtin(builtin_db_path().parent, SCHEMA)
    reg = registry.Registry(tmp_path / "empty")
    infos = {info.ref: info for info in reg.list_kernels(origin="builtin", all_versions=True)}
    assert set(plain["kernels"]) == set(infos) and len(infos) >= 50
    for ref, read in plain["kernels"].items():
        assert_same_values(read["values"], reg.load(ref))
        assert read["record"] == reg.records([ref])[0]
    for entry in plain["entries"]:  # the shipped listing: the same rows kreg lists
        _, name, version, shape, dtype, layout, origin, summary, tags, sha256 = entry.split("\t")
        info = infos[f"{name}@{version}"]
        assert (shape, dtype, layout, origin, summary, tags, sha256) == (
            "x".join(map(str, info.shape)), info.dtype, info.layout, info.origin, info.summary, ",".join(info.tags),
            info.sha256)


def run_python_reader(*args: str) -> dict:
    """plain_reader.py in a fresh interpreter that cannot find kreg."""
    out = subprocess.run([PY, str(HERE / "plain_reader.py"), *args, str(SCHEMA_FILE)], check=False,
                         capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert out.stderr == "", out.stderr
    return {"code": out.returncode, **json.loads(out.stdout)}


def test_the_python_reader_stands_alone(tmp_path: Path) -> None:
    reg = make_registry(tmp_path / "reg")
    for args, kernels in ((["--builtin", str(builtin_db_path().parent)], registry.Registry(tmp_path / "empty")),
                          ([str(tmp_path / "reg")], reg)):
        summary = run_python_reader(*args)
        assert summary["code"] == 0 and summary["kreg_imported"] is False, summary
        assert summary["values_sha256"] == {
            ref: hashlib.sha256(little_endian(kernels.load(ref).array)).hexdigest() for ref in summary["kernels"]}


def segment_of(db: Path) -> Path:
    (key,) = json.loads((db / "index.json").read_bytes())["segments"].values()
    return db / key


@pytest.mark.parametrize(("damage", "refusal"), [
    ("a value byte", "content hash"),
    ("a record line", "the object's record is not the segment's"),
    ("a listing entry", "the listing block is not what the rows say"),
    ("NaN in a record", "NaN is not JSON"),
    ("a root's listing facts", "the root's listing facts are wrong"),
    ("a byte after the object's end", "does not end where its superblock says"),
])
def test_the_python_reader_refuses_a_damaged_registry(tmp_path: Path, damage: str, refusal: str) -> None:
    db = tmp_path / "reg"
    make_registry(db)
    before = read_registry(db, SCHEMA)["kernels"]["team/conv_11@1"]
    obj = db / "kernels" / "team" / "conv_11" / "@1.h5"
    segment = segment_of(db)
    text = segment.read_text()
    if damage == "a value byte":
        data = bytearray(obj.read_bytes())
        data[before["offset"]] ^= 0x01
        obj.write_bytes(bytes(data))
    elif damage == "a record line":
        segment.write_text(text.replace('"bias":[0.5,', '"bias":[0.75,'))
    elif damage == "a listing entry":
        segment.write_text(text.replace("\t3x3x2x4\t", "\t3x3x4x2\t"))
    elif damage == "NaN in a record":
        segment.write_text(text.replace('"bias":[0.5,', '"bias":[NaN,'))
    elif damage == "a root's listing facts":
        root = json.loads((db / "index.json").read_bytes())
        for facts in root["listing"].values():
            facts[1] += 1
        (db / "index.json").write_text(json.dumps(root))
    else:
        with open(obj, "ab") as fh:
            fh.write(b"\0")
    assert segment.read_text() != text or damage in ("a value byte", "a root's listing facts",
                                                    "a byte after the object's end")
    with pytest.raises(Refused, match=refusal):
        read_registry(db, SCHEMA)


# -- the shell reader: one kernel of a pack and of a registry, with no HDF5 library ----------


@pytest.fixture(scope="module")
def tools() -> None:
    for tool in PLAIN_READER_TOOLS:
        require_tool(tool)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, tools: None) -> dict:
    """A registry made by kreg, and a signed pack exported from it with the CLI."""
    top = tmp_path_factory.mktemp("plain-sh")
    reg = make_registry(top / "reg")
    kreg(top / "reg", "keygen", "-o", str(top / "team.key"))
    kreg(top / "reg", "export", "team/*", "img/*", "team/half@1", "-o", str(top / "pack.h5"),
         "--sign", str(top / "team.key"), "--author", "plain")
    public_key = (top / "team.key.pub").read_text().strip()
    return {"top": top, "reg": reg, "db": top / "reg", "pack": top / "pack.h5", "public_key": public_key}


def run_shell_reader(kind: str, where: Path, ref: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(HERE / "plain_reader.sh"), kind, str(where), ref, str(out)], check=False,
                          capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"]})


def read_with_shell(kind: str, where: Path, ref: str, out: Path) -> tuple[dict, np.ndarray, bytes]:
    done = run_shell_reader(kind, where, ref, out)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    summary = json.loads(done.stdout)
    raw = (out / "values.bin").read_bytes()
    values = np.frombuffer(raw, np.dtype(summary["dtype"]).newbyteorder("<")).reshape(summary["shape"])
    return summary, values, (out / "record.json").read_bytes()


@pytest.mark.parametrize("ref", ["team/half@1", "team/half@2", "team/conv_11@1", "team/conv_3@1", "team/dw@1",
                                 "img/u8@1", "img/i16@1", "img/i32@1"])
def test_the_shell_reader_reads_a_pack_and_a_registry_as_kreg_does(made: dict, tmp_path: Path, ref: str) -> None:
    kernel, record = made["reg"].load(ref), made["reg"].records([ref])[0]
    with h5py.File(made["pack"], "r", locking=False) as f:
        (entry,) = [k for k in json.loads(f["manifest"][()].tobytes())["kernels"] if k["ref"] == ref]
    for kind, where in (("pack", made["pack"]), ("registry", made["db"])):
        summary, values, record_bytes = read_with_shell(kind, where, ref, tmp_path / kind)
        assert_same_values(values, kernel)
        assert np.array_equal(values, kernel.array)
        assert json.loads(record_bytes) == record
        # both hashes as FORMAT.md defines them, computed here from the bytes the reader found
        assert summary["sha256"] == content_hash(kernel.dtype.name, list(kernel.shape), little_endian(values))
        assert summary["sha256"] == kernel.sha256 == entry["sha256"]
        assert summary["record_sha256"] == hashlib.sha256(record_bytes).hexdigest() == entry["record_sha256"]
        assert summary["ref"] == ref
        assert summary["signer"] == (made["public_key"] if kind == "pack" else None)


def test_the_shell_reader_takes_a_bare_name_as_the_latest_version(made: dict, tmp_path: Path) -> None:
    summary, values, _ = read_with_shell("registry", made["db"], "team/half", tmp_path / "latest")
    assert summary["ref"] == "team/half@2"
    assert_same_values(values, made["reg"].load("team/half"))


def test_the_shell_reader_reads_a_null_offset_where_h5dump_says(tools: None, tmp_path: Path) -> None:
    shutil.copytree(HERE / "data" / "registry-v1", tmp_path / "reg")
    reg = registry.Registry(tmp_path / "reg", builtins=False)
    reg.add("fresh", np.ones((3, 3), np.float16))
    for ref in ("team/edge@1", "conv1@1", "fresh@1"):
        _, values, record_bytes = read_with_shell("registry", tmp_path / "reg", ref, tmp_path / ref)
        assert_same_values(values, reg.load(ref))
        assert json.loads(record_bytes) == reg.records([ref])[0]


def test_the_shell_reader_reads_the_builtin_database(tools: None, tmp_path: Path) -> None:
    reg = registry.Registry(tmp_path / "empty")
    for ref in ("sobel_x@1", "gaussian5@1", "gabor_bank8@1"):
        _, values, record_bytes = read_with_shell("pack", builtin_db_path(), ref, tmp_path / ref)
        assert_same_values(values, reg.load(ref))
        assert json.loads(record_bytes) == reg.records([ref])[0]


def flip(path: Path, find: bytes, replace: bytes) -> None:
    """Change bytes in place where ``find`` occurs exactly once in the file (no HDF5 library)."""
    data = path.read_bytes()
    assert data.count(find) == 1, find
    path.write_bytes(data.replace(find, replace))


@pytest.mark.parametrize(("damage", "refusal"), [
    ("a value byte of the pack", "content hash of team/half@1"),
    ("a record byte of the pack", "record_sha256 of team/half@1"),
    ("the pack's digest", "digest"),
    ("the pack's signature", "the signature does not verify"),
    ("a byte appended to the pack", "its superblock says"),
    ("a value byte of the object", "content hash of team/half@1"),
    ("the object's record", "its record is not the segment's"),
    ("NaN in the segment's record line", "NaN or infinity is not JSON"),
    ("the listing entry's shape", "the listing entry of team/half is not its row"),
])
def test_the_shell_reader_refuses_damage(made: dict, tmp_path: Path, damage: str, refusal: str) -> None:
    pack, db = tmp_path / "pack.h5", tmp_path / "reg"
    shutil.copy(made["pack"], pack)
    shutil.copytree(made["db"], db)
    kind, where = ("pack", pack) if "pack" in damage else ("registry", db)
    ref = "team/half@2" if "listing" in damage else "team/half@1"  # the listing block holds the latest
    good = read_with_shell(kind, where, ref, tmp_path / "good")[0]
    obj = db / "kernels" / "team" / "half" / "@1.h5"
    segment = segment_of(db)
    if damage in ("a value byte of the pack", "a value byte of the object"):
        target = pack if kind == "pack" else obj
        data = bytearray(target.read_bytes())
        data[good["offset"]] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "a record byte of the pack":
        flip(pack, b"quoted", b"quotes")
    elif damage in ("the pack's digest", "the pack's signature"):
        with h5py.File(made["pack"], "r", locking=False) as f:
            text = f.attrs["digest" if "digest" in damage else "signature"].encode()
        flip(pack, text, text[:-1] + (b"0" if text[-1:] != b"0" else b"1"))
    elif damage == "a byte appended to the pack":
        with open(pack, "ab") as fh:
            fh.write(b"\0")
    elif damage == "the object's record":
        flip(obj, b"quoted", b"quotes")
    elif damage == "NaN in the segment's record line":
        text = segment.read_text()
        start = text.index('{"dtype":"float16","layout":"HW","name":"team/half"')
        line = text[start:text.index("\n", start)]
        assert line.endswith('"version":1}')
        segment.write_text(text.replace(line, line.replace('"schema_version":1', '"schema_version":NaN')))
    else:
        flip(segment, b"\t5x5\tfloat16\t", b"\t5x4\tfloat16\t")
    done = run_shell_reader(kind, where, ref, tmp_path / "bad")
    assert done.returncode == 1 and done.stdout == ""
    assert refusal in done.stderr, done.stderr
