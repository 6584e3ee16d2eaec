"""Builders of hostile packs: each takes a valid pack and returns a file kreg must refuse."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from registry import _exceptions as E
from registry.format.content import content_hash
from registry.format.pack import _canonical

Builder = Callable[[Path, Path], Path]  # (valid pack, scratch dir) -> hostile file
KINDS: dict[str, tuple[Builder, type[Exception], str]] = {}


def kind(error: type[Exception], reason: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        KINDS[fn.__name__] = (fn, error, reason)
        return fn
    return register


def edit(pack: Path, change: Callable[[h5py.File], None]) -> Path:
    with h5py.File(pack, "r+") as f:
        change(f)
    return pack


def first_dataset(f: h5py.File) -> h5py.Dataset:
    found: list[h5py.Dataset] = []
    f["kernels"].visititems(lambda n, o: found.append(o) if isinstance(o, h5py.Dataset) else None)
    return sorted(found, key=lambda d: d.name)[0]


def read_manifest(f: h5py.File) -> dict:
    return json.loads(f["manifest"][()].tobytes())


def write_manifest(f: h5py.File, manifest: dict, *, digest: bool = True) -> None:
    """Replace the /manifest dataset (and, unless told not to, the digest that covers it)."""
    data = _canonical(manifest)
    del f["manifest"]
    f.create_dataset("manifest", data=np.frombuffer(data, np.uint8))
    if digest:
        f.attrs["digest"] = hashlib.sha256(data).hexdigest()


def rewrite_manifest(f: h5py.File, change: Callable[[dict], None] | None = None) -> None:
    """Recompute the manifest after an edit, as a careful forger would."""
    manifest = read_manifest(f)
    entries = []
    found: list[h5py.Dataset] = []
    f["kernels"].visititems(lambda n, o: found.append(o) if isinstance(o, h5py.Dataset) else None)
    for ds in found:
        text = ds.attrs["record"]
        record = json.loads(text)
        entries.append({"ref": f"{record['name']}@{record['version']}", "sha256": record["sha256"],
                        "record_sha256": hashlib.sha256(text.encode()).hexdigest()})
    manifest["kernels"] = entries
    if change:
        change(manifest)
    write_manifest(f, manifest)


def set_record(ds: h5py.Dataset, **changes: object) -> None:
    record = json.loads(ds.attrs["record"])
    record.update(changes)
    ds.attrs["record"] = json.dumps(record)


def flip(path: Path, offset: int, mask: int = 0x01) -> Path:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))
    return path


# -- damaged bytes --------------------------------------------------------------------------

@kind(E.UnsafeFileError, "the file is truncated: its superblock says")
def truncated_half(pack: Path, tmp: Path) -> Path:
    pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    return pack


@kind(E.UnsafeFileError, "the file is truncated: its superblock says")
def truncated_tail(pack: Path, tmp: Path) -> Path:
    pack.write_bytes(pack.read_bytes()[:-64])
    return pack


@kind(E.UnsafeFileError, "is not a readable HDF5 file (Unable to synchronously open file (bad shared-header")
def superblock_bit_flip(pack: Path, tmp: Path) -> Path:
    return flip(pack, 12, 0xFF)


@kind(E.UnsafeFileError, "is not HDF5 (no HDF5 signature at byte 0)")
def zeroed_page(pack: Path, tmp: Path) -> Path:
    data = bytearray(pack.read_bytes())
    data[0:4096] = bytes(4096)
    pack.write_bytes(bytes(data))
    return pack


@kind(E.IntegrityError, "do not match their sha256")
def kernel_data_bit_flip(pack: Path, tmp: Path) -> Path:
    with h5py.File(pack, "r") as f:
        offset = first_dataset(f).id.get_offset()
    return flip(pack, offset + 3, 0x40)


# -- sizes ----------------------------------------------------------------------------------

@kind(E.UnsafeFileError, "declares 10000000000 bytes")
def shape_bomb(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.create_dataset("kernels/bomb/@1", shape=(50_000, 50_000), dtype="f4"))


@kind(E.UnsafeFileError, "a compression bomb")
def gzip_bomb(pack: Path, tmp: Path) -> Path:
    def bomb(f: h5py.File) -> None:
        ds = f.create_dataset("kernels/bomb/@1", shape=(4096, 4096), dtype="f4", chunks=(4096, 4096),
                              compression="gzip", compression_opts=9)
        ds[...] = 0.0
    return edit(pack, bomb)


@kind(E.UnsafeFileError, "chunk shape (32767, 32767) is larger than the dataset shape (2, 2)")
def gzip_chunk_bomb_of_a_small_dataset(pack: Path, tmp: Path) -> Path:
    """Issue 9: a 2x2 dataset whose one chunk is 32767x32767: reading 16 bytes makes libhdf5
    allocate 4 GB; the dataset-level ratio check (16 bytes from ~4 MB) let it through."""
    return edit(pack, lambda f: plant_chunk_bomb(f, "kernels/bomb/@1"))


def plant_chunk_bomb(f: h5py.File, where: str) -> h5py.Dataset:
    """A 2x2 gzip dataset whose one chunk is 32767x32767, written as raw compressed bytes:
    building it with ``ds[...] = 1`` would make the *test* allocate the 4 GB chunk."""
    import zlib

    ds = f.create_dataset(where, shape=(2, 2), maxshape=(None, None), dtype="f4", chunks=(32767, 32767),
                          compression="gzip")
    ds.id.write_direct_chunk((0, 0), zlib.compress(b"\0" * 65536, 9))
    return ds


@kind(E.UnsafeFileError, "bytes follow the end of the HDF5 file")
def hdf5_zip_polyglot(pack: Path, tmp: Path) -> Path:
    import io
    import zipfile

    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as z:
        z.writestr("run.py", "print('hello from the zip half')")
    with open(pack, "ab") as fh:
        fh.write(payload.getvalue())
    return pack


@kind(E.UnsafeFileError, "larger than 65536 bytes")
def huge_attribute(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: first_dataset(f).attrs.__setitem__("record", "x" * 1_000_000))


@kind(E.UnsafeFileError, "nesting deeper than 16 levels")
def deep_nesting(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.create_group("kernels/" + "/".join(f"g{i}" for i in range(40))))


# -- reading other files ----------------------------------------------------------------------

@kind(E.UnsafeFileError, "an external link")
def external_link_absolute(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.__setitem__("kernels/passwd", h5py.ExternalLink("/etc/passwd", "/")))


@kind(E.UnsafeFileError, "an external link")
def external_link_to_sibling(pack: Path, tmp: Path) -> Path:
    secret = pack.parent / "secret.h5"
    if not secret.exists():
        os.mkfifo(secret)  # opening it would block: a reader that follows the link hangs, visibly
    return edit(pack, lambda f: f.__setitem__("kernels/leak", h5py.ExternalLink("secret.h5", "/kernels")))


@kind(E.UnsafeFileError, "a soft link")
def soft_link(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.__setitem__("kernels/alias", h5py.SoftLink(first_dataset(f).name)))


@kind(E.UnsafeFileError, "external raw storage")
def external_storage(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.create_dataset("kernels/leak/@1", shape=(4,), dtype="u1",
                                                 external=[("/etc/passwd", 0, 4)]))


@kind(E.UnsafeFileError, "a virtual dataset")
def virtual_dataset(pack: Path, tmp: Path) -> Path:
    layout = h5py.VirtualLayout(shape=(4,), dtype="u1")
    layout[:] = h5py.VirtualSource("/etc/passwd", "data", shape=(4,))
    return edit(pack, lambda f: f.create_virtual_dataset("kernels/leak/@1", layout))


@kind(E.UnsafeFileError, "compression filter id 32999 is not allowed")
def plugin_filter(pack: Path, tmp: Path) -> Path:
    """A mandatory filter no one registered: libhdf5 would dlopen every library in its plugin path."""
    edit(pack, lambda f: f.create_dataset("kernels/plug/@1", data=np.ones((4, 4), np.float32), chunks=(4, 4),
                                          compression="lzf"))
    data = bytearray(pack.read_bytes())
    name = data.find(b"lzf\x00")  # filter pipeline message: id(2) name length(2) flags(2) count(2) name
    data[name - 8:name - 6] = (32999).to_bytes(2, "little")
    pack.write_bytes(bytes(data))
    return pack


# -- types --------------------------------------------------------------------------------------

@kind(E.UnsafeFileError, "not a plain number type")
def string_dtype(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.create_dataset("kernels/s/@1", data=np.array([b"abc"], dtype="S3")))


@kind(E.UnsafeFileError, "not a plain number type")
def object_dtype(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.create_dataset("kernels/o/@1", data=["a", "b"], dtype=h5py.string_dtype()))


@kind(E.UnsafeFileError, "not a plain number type")
def compound_dtype(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.create_dataset("kernels/c/@1", shape=(2,), dtype=np.dtype([("a", "f4"), ("b", "i4")])))


@kind(E.UnsafeFileError, "not a plain number type")
def reference_dtype(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.create_dataset("kernels/r/@1", data=[f["kernels"].ref], dtype=h5py.ref_dtype))


@kind(E.UnsafeFileError, "dtype int64 is not one of")
def int64_dtype(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.create_dataset("kernels/i/@1", data=np.ones((2, 2), np.int64)))


@kind(E.UnsafeFileError, "an object that is neither group nor dataset")
def named_datatype(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.__setitem__("kernels/t", np.dtype("f4")))


@kind(E.UnsafeFileError, "a committed (named or anonymous) datatype")
def anonymous_committed_datatype(pack: Path, tmp: Path) -> Path:
    """A named datatype whose link is then removed: the dataset keeps a committed type no walk sees."""
    def change(f: h5py.File) -> None:
        f["kernels/t"] = np.dtype("<f4")
        f.create_dataset("kernels/anon/@1", data=np.ones((2, 2), np.float32), dtype=f["kernels/t"])
        del f["kernels/t"]
    return edit(pack, change)


@kind(E.UnsafeFileError, "is not a standard type (a bit offset, a precision")
def integer_with_bit_offset(pack: Path, tmp: Path) -> Path:
    """An int32 whose 16 meaningful bits start at bit 8: not readable at its file offset."""
    def change(f: h5py.File) -> None:
        tid = h5py.h5t.STD_I32LE.copy()
        tid.set_precision(16)
        tid.set_offset(8)
        f.create_group("kernels/shifted")
        h5py.h5d.create(f.id, b"kernels/shifted/@1", tid, h5py.h5s.create_simple((2, 2)))
    return edit(pack, change)


@kind(E.UnsafeFileError, "must be a variable-length UTF-8 string")
def fixed_length_string_attribute(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.attrs.__setitem__("pack_name", np.bytes_(b"fixed")))


@kind(E.IntegrityError, "outer(column, row) differs from the values")
def separable_factors_that_lie(pack: Path, tmp: Path) -> Path:
    """Factors of the right lengths whose outer product is another kernel: a separable
    layer built from them would compute something other than the hash-checked values."""
    def change(f: h5py.File) -> None:
        ds = f["kernels/team/big/@1"]
        set_record(ds, separable={"column": [1.0] * 64, "row": [1.0] * 64})
        rewrite_manifest(f)
    return edit(pack, change)


@kind(E.IntegrityError, "claims the generator 'gaussian' ({'sigma': 9.0, 'ksize': 63}) but regenerated shape")
def forged_generator(pack: Path, tmp: Path) -> Path:
    def change(f: h5py.File) -> None:
        ds = f["kernels/team/big/@1"]
        record = json.loads(ds.attrs["record"])
        record["provenance"]["generator"] = {"family": "gaussian", "parameters": {"sigma": 9.0, "ksize": 63}}
        ds.attrs["record"] = json.dumps(record)
        rewrite_manifest(f)
    return edit(pack, change)


@kind(E.UnsafeFileError, "has a type kreg does not read")
def float_root_attribute(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.attrs.__setitem__("extra", 1.5))


@kind(E.UnsafeFileError, "NaN or infinite")
def non_finite_values(pack: Path, tmp: Path) -> Path:
    def poison(f: h5py.File) -> None:
        ds = first_dataset(f)
        values = ds[...]
        values.flat[0] = np.nan
        ds[...] = values
        set_record(ds, sha256=content_hash(values))
        rewrite_manifest(f)
    return edit(pack, poison)


# -- versions -------------------------------------------------------------------------------

@kind(E.SchemaVersionError, "schema version 2, but this kreg reads schema versions up to 1")
def future_schema_version(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: set_record(first_dataset(f), schema_version=2))


@kind(E.SchemaVersionError, "schema_version must be a whole number from 1")
def string_schema_version(pack: Path, tmp: Path) -> Path:
    def change(f: h5py.File) -> None:
        set_record(first_dataset(f), schema_version="1")
        rewrite_manifest(f)
    return edit(pack, change)


@kind(E.SchemaVersionError, "container format version 2")
def future_container_format(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.attrs.__setitem__("format_version", 2))


@kind(E.UnsafeFileError, "expected a kreg pack file")
def wrong_kind(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.attrs.__setitem__("kind", "index"))


# -- names ------------------------------------------------------------------------------------

@kind(E.UnsafeFileError, "a link name outside")
def dotdot_name(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.create_dataset("kernels/a..b/@1", data=np.ones(2, np.float32)))


@kind(E.UnsafeFileError, "a link name outside")
def control_character_name(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.create_dataset("kernels/a\x1b[31m/@1", data=np.ones(2, np.float32)))


@kind(E.UnsafeFileError, "sits elsewhere")
def absolute_name_in_record(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: set_record(first_dataset(f), name="/etc/passwd"))


# -- integrity ------------------------------------------------------------------------------

@kind(E.IntegrityError, "do not match their sha256")
def record_hash_mismatch(pack: Path, tmp: Path) -> Path:
    def change(f: h5py.File) -> None:
        set_record(first_dataset(f), sha256="0" * 64)
        rewrite_manifest(f)
    return edit(pack, change)


@kind(E.IntegrityError, "the manifest digest does not match")
def manifest_digest_mismatch(pack: Path, tmp: Path) -> Path:
    def change(f: h5py.File) -> None:
        manifest = read_manifest(f)
        manifest["author"] = "someone else"
        write_manifest(f, manifest, digest=False)
    return edit(pack, change)


@kind(E.IntegrityError, "the manifest and the kernels disagree")
def kernel_not_in_manifest(pack: Path, tmp: Path) -> Path:
    def add(f: h5py.File) -> None:
        values = np.ones((2, 2), np.float32)
        template = json.loads(first_dataset(f).attrs["record"])
        ds = f.create_dataset("kernels/extra/@1", data=values)
        for key in ("separable", "bias", "normalization"):
            template.pop(key, None)
        ds.attrs["record"] = json.dumps({**template, "name": "extra", "version": 1, "shape": [2, 2],
                                         "dtype": "float32", "layout": "HW", "sha256": content_hash(values)})
    return edit(pack, add)


@kind(E.IntegrityError, "does not match its manifest entry")
def record_altered_after_export(pack: Path, tmp: Path) -> Path:
    def change(f: h5py.File) -> None:
        ds = first_dataset(f)
        record = json.loads(ds.attrs["record"])
        record["provenance"]["description"] = "trust me"
        ds.attrs["record"] = json.dumps(record)
    return edit(pack, change)


@kind(E.UnsafeFileError, "has no manifest")
def missing_manifest(pack: Path, tmp: Path) -> Path:
    return edit(pack, lambda f: f.__delitem__("manifest"))


@kind(E.InvalidKernelError, "__reduce__")
def code_in_metadata(pack: Path, tmp: Path) -> Path:
    def change(f: h5py.File) -> None:
        set_record(first_dataset(f), __reduce__=["os.system", ["touch /tmp/kreg-pwned"]])
        rewrite_manifest(f)
    return edit(pack, change)


@kind(E.InvalidKernelError, "provenance.description: Value error, must not contain control characters")
def terminal_escapes_in_metadata(pack: Path, tmp: Path) -> Path:
    """An OSC window title, an OSC 52 clipboard write and a screen clear in the description."""
    def change(f: h5py.File) -> None:
        ds = first_dataset(f)
        record = json.loads(ds.attrs["record"])
        record["provenance"]["description"] = "ok\x1b]0;pwned\x07\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J"
        ds.attrs["record"] = json.dumps(record)
        rewrite_manifest(f)
    return edit(pack, change)


@kind(E.IntegrityError, "the signature does not verify")
def forged_signature(pack: Path, tmp: Path) -> Path:
    def change(f: h5py.File) -> None:
        rewrite_manifest(f, lambda m: m.__setitem__("public_key", "11" * 32))
        f.attrs["signature"] = "22" * 64
    return edit(pack, change)


# -- not HDF5 at all ----------------------------------------------------------------------------

@kind(E.UnsafeFileError, "is empty")
def empty_file(pack: Path, tmp: Path) -> Path:
    pack.write_bytes(b"")
    return pack


@kind(E.UnsafeFileError, "not HDF5")
def zip_file(pack: Path, tmp: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(pack, "w") as z:
        z.writestr("kernels.json", "{}")
    return pack


@kind(E.UnsafeFileError, "not HDF5")
def safetensors_file(pack: Path, tmp: Path) -> Path:
    from safetensors.numpy import save_file

    save_file({"k": np.ones((3, 3), np.float32)}, str(pack))
    return pack


@kind(E.UnsafeFileError, "not a regular file")
def directory(pack: Path, tmp: Path) -> Path:
    target = tmp / "a-directory.h5"
    target.mkdir()
    return target


@kind(E.UnsafeFileError, "not a regular file")
def fifo(pack: Path, tmp: Path) -> Path:
    target = tmp / "a-fifo.h5"
    os.mkfifo(target)
    return target


@kind(E.UnsafeFileError, "symbolic link")
def symlink_to_the_registry(pack: Path, tmp: Path) -> Path:
    target = tmp / "link.h5"
    target.symlink_to(tmp / "reg" / "index.h5")
    return target
