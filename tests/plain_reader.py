"""A kreg pack reader written from schema/FORMAT.md alone: h5py, json, hashlib, PyNaCl, NumPy
and a JSON-Schema validator; no kreg import. ``tests/test_schema.py`` runs it in a fresh
interpreter on packs kreg wrote, to show that another implementation can verify every hash,
the digest and the signature.

Usage: python plain_reader.py PACK SCHEMA_JSON  ->  prints a JSON summary, exit 1 on a refusal.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import sys

import h5py
import jsonschema
import numpy as np

SIGNATURE = b"\x89HDF\r\n\x1a\n"
DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "uint8"}


class Refused(Exception):
    pass


def end_of_file(head: bytes) -> int:
    """FORMAT.md section 1: the superblock's base address + end-of-file address."""
    version = head[8]
    if version in (0, 1):
        size, start = head[13], (24 if version == 0 else 28)
    elif version in (2, 3):
        size, start = head[9], 12
    else:
        raise Refused(f"superblock version {version}")
    base = int.from_bytes(head[start:start + size], "little")
    return base + int.from_bytes(head[start + 2 * size:start + 3 * size], "little")


def content_hash(values: np.ndarray, dtype: str) -> str:
    """FORMAT.md section 3."""
    header = f"kreg-v1:{dtype}:{','.join(str(n) for n in values.shape)}\n".encode("ascii")
    data = np.ascontiguousarray(values, values.dtype.newbyteorder("<")).tobytes()
    return hashlib.sha256(header + data).hexdigest()


def rules_beyond_json_schema(record: dict, values: np.ndarray | None = None) -> None:
    """FORMAT.md section 2, "Rules JSON Schema cannot state"."""
    shape, layout = record["shape"], record["layout"]
    bias = record.get("bias")
    if bias is not None:
        outputs = {"HW": 1, "HWIO": shape[-1], "HWIM": shape[2] * shape[3]}[layout]
        if len(bias) != outputs:
            raise Refused(f"bias has {len(bias)} values for {outputs} outputs")
    factors = record.get("separable")
    if factors is not None:
        if (len(factors["column"]), len(factors["row"])) != tuple(shape):
            raise Refused("separable factors do not have the lengths of the shape")
        if values is not None:
            product = np.outer(np.array(factors["column"], float), np.array(factors["row"], float))
            exact = values.astype(float)
            scale = float(np.abs(exact).max())
            tolerance = 4 * float(np.finfo(values.dtype).eps) * scale if values.dtype.kind == "f" else 0.5
            if not float(np.abs(product - exact).max()) <= tolerance:
                raise Refused("outer(column, row) is not the values")


def strict_json(text: str | bytes) -> object:
    def refuse(token: str) -> None:
        raise Refused(f"{token} is not JSON")
    return json.loads(text, parse_constant=refuse)


def read_pack(path: str, schema: dict) -> dict:
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise Refused("not a regular file")
    with open(path, "rb") as fh:
        head = fh.read(128)
    if head[:8] != SIGNATURE:
        raise Refused("no HDF5 signature at byte 0")
    if end_of_file(head) != info.st_size:
        raise Refused("the file does not end where its superblock says")
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        if (attrs.get("kreg_format"), int(attrs.get("format_version", 0)), attrs.get("kind")) != ("kreg", 1, "pack"):
            raise Refused("not a kreg pack of container format 1")
        manifest_bytes = f["manifest"][()].tobytes()  # section 4: a 1-D uint8 dataset
        if hashlib.sha256(manifest_bytes).hexdigest() != attrs["digest"]:
            raise Refused("digest")
        manifest = strict_json(manifest_bytes)
        if (manifest["format"], manifest["version"]) != ("kreg-pack", 2):
            raise Refused("not a version 2 manifest")
        seen = []
        f["kernels"].visititems(lambda name, obj: seen.append(name) if isinstance(obj, h5py.Dataset) else None)
        if sorted(f"kernels/{'/@'.join(k['ref'].rsplit('@', 1))}" for k in manifest["kernels"]) != sorted(
                f"kernels/{name}" for name in seen):
            raise Refused("the manifest does not list exactly the kernels present")
        checked = []
        for entry in manifest["kernels"]:
            name, version = entry["ref"].rsplit("@", 1)
            ds = f[f"kernels/{name}/@{version}"]
            text = ds.attrs["record"]  # a variable-length UTF-8 string
            if hashlib.sha256(text.encode("utf-8")).hexdigest() != entry["record_sha256"]:
                raise Refused(f"record_sha256 of {entry['ref']}")
            record = strict_json(text)
            errors = [e.message for e in validator.iter_errors(record)]
            if errors:
                raise Refused(f"{entry['ref']}: {errors[0]}")
            if record["dtype"] not in DTYPES or list(ds.shape) != record["shape"]:
                raise Refused(f"{entry['ref']}: dataset and record disagree")
            # Values are contiguous and unfiltered: read them at their file offset, no HDF5 needed.
            dtype = np.dtype(record["dtype"]).newbyteorder("<")
            offset = ds.id.get_offset()
            with open(path, "rb") as fh:
                fh.seek(offset)
                raw = fh.read(math.prod(record["shape"]) * dtype.itemsize)
            values = np.frombuffer(raw, dtype).reshape(record["shape"])
            if not np.array_equal(values, ds[()], equal_nan=True):
                raise Refused(f"{entry['ref']}: the bytes at the offset are not the dataset")
            digest = content_hash(values, record["dtype"])
            if digest != record["sha256"] or digest != entry["sha256"]:
                raise Refused(f"{entry['ref']}: content hash")
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise Refused(f"{entry['ref']}: NaN or infinity")
            rules_beyond_json_schema(record, values)
            checked.append(entry["ref"])
        signature = attrs.get("signature")
    signer = None
    if signature is not None or manifest.get("public_key") is not None:
        from nacl.signing import VerifyKey

        VerifyKey(bytes.fromhex(manifest["public_key"])).verify(manifest_bytes, bytes.fromhex(signature))
        signer = manifest["public_key"]
    return {"kernels": checked, "signer": signer, "created_at": manifest["created_at"],
            "kreg_imported": any(m == "registry" or m.startswith("registry.") for m in sys.modules)}


def main() -> int:
    path, schema_path = sys.argv[1], sys.argv[2]
    with open(schema_path, encoding="utf-8") as fh:
        schema = json.load(fh)
    try:
        print(json.dumps(read_pack(path, schema)))
    except Exception as exc:  # every refusal, including a bad signature, is one line and exit 1
        print(json.dumps({"refused": f"{type(exc).__name__}: {exc}"}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
