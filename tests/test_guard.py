"""The guarded reader refuses files that could read other files, lie about sizes, or are not kreg's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from registry import IntegrityError, InvalidKernelError, Registry, UnsafeFileError
from registry.format.container import write_container
from registry.format.content import content_hash
from registry.format.guard import GuardedFile


def record_for(name: str, values: np.ndarray, version: int = 1) -> dict:
    return {
        "schema_version": 1,
        "name": name,
        "version": version,
        "shape": list(values.shape),
        "dtype": values.dtype.name,
        "layout": "HW",
        "operation": "correlation",
        "provenance": {"origin": "handmade", "created_at": "2026-11-25T00:00:00Z"},
        "sha256": content_hash(values),
    }


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    values = np.arange(16, dtype=np.float32).reshape(4, 4)
    path = tmp_path / "pack.h5"
    write_container(path, "pack", [(record_for("good", values), values)])
    return path


def test_a_valid_pack_passes(pack: Path) -> None:
    with GuardedFile(pack, kind="pack") as f:
        assert list(f.entries) == ["good@1"]
        assert f.read(f.entries["good@1"]).sum() == 120
        assert repr(f) == f"<GuardedFile {str(pack)!r} (pack, 1 kernels)>"
    assert repr(f).endswith("(pack, closed)>")


def edit(pack: Path, change) -> Path:
    with h5py.File(pack, "r+") as f:
        change(f)
    return pack


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: f.__setitem__("kernels/evil", h5py.ExternalLink("/etc/passwd", "/")), "an external link"),
        (lambda f: f.__setitem__("kernels/soft", h5py.SoftLink("/kernels/good")), "a soft link"),
        (lambda f: f.create_group("other"), "an unknown top-level group"),
        (lambda f: f.create_dataset("kernels/good/@2", data=np.array([b"x"], dtype="S1")), "not a plain number type"),
        (lambda f: f.create_dataset("kernels/good/@3", data=np.ones((2, 2), np.int64)), "dtype int64"),
        (lambda f: f.create_dataset("kernels/Bad", data=np.ones(2, np.float32)), "a link name outside"),
        (lambda f: f.attrs.__setitem__("kreg_format", "other"), "not a kreg container"),
        (lambda f: f["kernels"].attrs.__setitem__("x", "y"), "attributes on a group"),
        (lambda f: f["kernels/good/@1"].attrs.__setitem__("record", "{not json"), "not valid JSON"),
        (lambda f: f["kernels/good/@1"].attrs.__setitem__("extra", "1"), "exactly one text attribute"),
    ],
)
def test_structural_refusals(pack: Path, change, reason: str) -> None:
    edit(pack, change)
    with pytest.raises(UnsafeFileError, match=reason):
        GuardedFile(pack)


def test_external_raw_storage_is_refused(tmp_path: Path, pack: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 64)
    with h5py.File(pack, "r+") as f:
        f.create_dataset("kernels/leak/@1", shape=(4, 4), dtype="f4", external=[(str(secret), 0, 64)])
    with pytest.raises(UnsafeFileError, match="external raw storage"):
        GuardedFile(pack)


def test_virtual_datasets_are_refused(tmp_path: Path, pack: Path) -> None:
    layout = h5py.VirtualLayout(shape=(4, 4), dtype="f4")
    layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "data", shape=(4, 4))
    with h5py.File(pack, "r+") as f:
        f.create_virtual_dataset("kernels/leak/@1", layout)
    with pytest.raises(UnsafeFileError, match="a virtual dataset"):
        GuardedFile(pack)


def test_unknown_filters_are_refused_before_any_read(pack: Path) -> None:
    with h5py.File(pack, "r+") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((4, 4))
        dcpl.set_filter(32999, h5py.h5z.FLAG_OPTIONAL)
        space = h5py.h5s.create_simple((4, 4))
        f.create_group("kernels/plug")
        h5py.h5d.create(f.id, b"kernels/plug/@1", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
    with pytest.raises(UnsafeFileError, match="compression filter id 32999 is not allowed"):
        GuardedFile(pack)


def test_a_truncated_file_is_refused(pack: Path) -> None:
    data = pack.read_bytes()
    pack.write_bytes(data[: len(data) - 40])
    with pytest.raises(UnsafeFileError, match=f"the file is truncated: its superblock says {len(data)} bytes"):
        GuardedFile(pack)


def test_a_declared_size_larger_than_the_stored_bytes_is_refused_by_its_own_check(pack: Path) -> None:
    """A well-formed kernel (record and all) whose storage was never written: libhdf5 would
    happily return 1.6 GB of fill values. Only the declared-size check stands in the way."""
    def plant(f: h5py.File) -> None:
        ds = f.create_dataset("kernels/huge/@1", shape=(20_000, 20_000), dtype="f4")
        ds.attrs["record"] = json.dumps(record_for("huge", np.zeros((1, 1), np.float32)) | {"shape": [20_000, 20_000]})

    edit(pack, plant)
    with pytest.raises(UnsafeFileError, match=r"declares 1600000000 bytes but the file holds 0 for it"):
        GuardedFile(pack)


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_the_end_of_file_is_read_from_every_superblock_version(tmp_path: Path, libver: str) -> None:
    from registry.format.guard import end_of_file

    path = tmp_path / "f.h5"
    with h5py.File(path, "w", libver=libver) as f:
        f["x"] = np.arange(1000)
    data = path.read_bytes()
    assert data[8] == (0 if libver == "earliest" else 3)
    assert end_of_file(data[:128]) == len(data)


def test_a_superblock_cut_anywhere_is_refused_cleanly(pack: Path) -> None:
    # A version-1 superblock cut at 12 bytes raised IndexError (found by the fuzz test).
    from registry.format.guard import end_of_file

    head = pack.read_bytes()[:128]
    for version in range(5):
        for length in range(len(head) + 1):
            end_of_file(head[:8] + bytes([version]) + head[9:length])  # never raises
    pack.write_bytes(head[:8] + b"\x01" + head[9:12])
    with pytest.raises(UnsafeFileError, match="superblock is damaged"):
        GuardedFile(pack)


def test_data_after_the_end_of_the_hdf5_file_is_refused(pack: Path) -> None:
    """An HDF5+zip polyglot: h5py reads the HDF5 half, unzip the zip half."""
    import zipfile

    size = pack.stat().st_size
    with zipfile.ZipFile(pack, "a") as z:
        z.writestr("payload.txt", "the other half")
    with pytest.raises(UnsafeFileError, match=f"bytes follow the end of the HDF5 file \\(its superblock says {size}"):
        GuardedFile(pack)


def test_a_chunk_larger_than_its_dataset_is_refused_before_any_read(pack: Path) -> None:
    """Issue 9's chunk bomb: 16 bytes of data in one 32767x32767 chunk; reading them made
    libhdf5 allocate 4 GB. The check is structural: GuardedFile refuses at open."""
    from hostile import plant_chunk_bomb

    def bomb(f: h5py.File) -> None:
        ds = plant_chunk_bomb(f, "kernels/bomb/@1")
        ds.attrs["record"] = json.dumps(record_for("bomb", np.ones((2, 2), np.float32)))

    edit(pack, bomb)
    with pytest.raises(UnsafeFileError, match=r"chunk shape \(32767, 32767\) is larger than the dataset shape \(2, 2\)"):
        GuardedFile(pack)


def test_the_compression_ratio_is_checked_per_chunk(pack: Path) -> None:
    """One incompressible chunk and one of zeros: 2:1 over the dataset, about 1000:1 in the
    second chunk, which is what libhdf5 inflates in one go."""
    values = np.zeros((2, 65536), np.float32)
    values[0] = np.random.default_rng(0).standard_normal(65536)

    def plant(f: h5py.File) -> None:
        ds = f.create_dataset("kernels/mixed/@1", data=values, chunks=(1, 65536), compression="gzip")
        ds.attrs["record"] = json.dumps(record_for("mixed", values))

    edit(pack, plant)
    with pytest.raises(UnsafeFileError, match=r"chunk 1 expands \d+ stored bytes to 262144 \(a compression bomb"):
        GuardedFile(pack)


def test_chunked_kernels_within_the_limits_are_read(pack: Path) -> None:
    values = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)

    def plant(f: h5py.File) -> None:
        ds = f.create_dataset("kernels/chunked/@1", data=values, chunks=(16, 64), compression="gzip", shuffle=True)
        ds.attrs["record"] = json.dumps(record_for("chunked", values))

    edit(pack, plant)
    with GuardedFile(pack) as f:
        assert f.read(f.entries["chunked@1"]).tobytes() == values.tobytes()


def test_a_manifest_dataset_belongs_to_packs_only(tmp_path: Path) -> None:
    values = np.ones((2, 2), np.float32)
    path = tmp_path / "object.h5"
    write_container(path, "object", [(record_for("k", values), values)])
    edit(path, lambda f: f.create_dataset("manifest", data=np.frombuffer(b"{}", np.uint8)))
    with pytest.raises(UnsafeFileError, match="an unknown top-level dataset"):
        GuardedFile(path)


def test_a_shape_larger_than_the_file_is_refused(pack: Path) -> None:
    with h5py.File(pack, "r+") as f:
        f.create_dataset("kernels/bomb/@1", shape=(50_000, 50_000), dtype="f4")
    with pytest.raises(UnsafeFileError, match="declares 10000000000 bytes"):
        GuardedFile(pack)


def test_a_record_that_lies_about_the_shape_is_refused(pack: Path) -> None:
    def lie(f: h5py.File) -> None:
        record = json.loads(f["kernels/good/@1"].attrs["record"])
        f["kernels/good/@1"].attrs["record"] = json.dumps({**record, "shape": [2, 2]})

    edit(pack, lie)
    with pytest.raises(UnsafeFileError, match="the record says shape"):
        GuardedFile(pack)


def test_a_hash_mismatch_names_the_kernel(pack: Path) -> None:
    def forge(f: h5py.File) -> None:
        f["kernels/good/@1"][0, 0] = 99

    edit(pack, forge)
    with GuardedFile(pack) as f, pytest.raises(IntegrityError, match="the values of good@1 do not match"):
        f.read(f.entries["good@1"])


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04zipzipzip", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_non_hdf5_input_is_refused_before_hdf5_sees_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.h5"
    path.write_bytes(content)
    with pytest.raises(UnsafeFileError, match="empty|not HDF5"):
        GuardedFile(path)


def test_directories_fifos_and_symlinks_are_refused(tmp_path: Path, pack: Path) -> None:
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        GuardedFile(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        GuardedFile(fifo)
    link = tmp_path / "link.h5"
    link.symlink_to(pack)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        GuardedFile(link)


def test_the_registry_reads_its_objects_through_the_guard(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg", builtins=False)
    reg.add("k", [[1.0, 2.0]])
    obj = tmp_path / "reg" / "kernels" / "k" / "@1.h5"
    edit(obj, lambda f: f.__setitem__("kernels/x", h5py.ExternalLink("/etc/passwd", "/")))
    fresh = Registry(tmp_path / "reg", builtins=False)
    # A load reads only the values, at the offset the index recorded, and checks their sha256:
    # libhdf5 never parses the tampered structure on that path.
    np.testing.assert_array_equal(fresh.load("k").array, [[1.0, 2.0]])
    # verify() and fsck open the whole object through the guard, which names the link.
    problems = fresh.verify()
    assert problems and "an external link" in problems[0][1], problems
    assert any("an external link" in p for _, p in fresh.fsck().problems)


def test_a_record_whose_factors_are_another_kernel_is_refused_on_read(tmp_path: Path) -> None:
    """So a separable layer (built from the factors) never computes other than the hashed values."""
    values = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]).astype(np.float32)
    path = tmp_path / "pack.h5"
    write_container(path, "pack", [(record_for("sep", values), values)])
    lie = {**record_for("sep", values), "separable": {"column": [1.0, 2.0, 1.0], "row": [1.0, 0.0, -1.0]}}
    edit(path, lambda f: f["kernels/sep/@1"].attrs.__setitem__("record", json.dumps(lie)))
    with GuardedFile(path) as f, pytest.raises(IntegrityError, match="the record of 'sep@1' lies: outer"):
        f.read(f.entries["sep@1"])
    with pytest.raises(InvalidKernelError, match=r"outer\(column, row\) differs"):  # and no writer stores it
        write_container(tmp_path / "again.h5", "pack", [(lie, values)])
