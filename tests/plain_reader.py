"""A kreg reader written from schema/FORMAT.md alone: h5py, json, hashlib, PyNaCl, NumPy and a
JSON-Schema validator; no kreg import, so that it stays an independent reference.

It reads packs (section 4), registry directories (section 5: root, segment, listing block, the
object's values at their offset) and the built-in database (a pack and its listing).
``tests/test_schema.py`` runs it in a fresh interpreter on packs kreg wrote, to show that
another implementation can verify every hash, the digest and the signature;
``tests/test_plain_readers.py`` compares what it reads with what kreg's API returns.

Usage: python plain_reader.py PACK|REGISTRY_DIR|--builtin KERNELS_DB_DIR SCHEMA_JSON
       ->  prints a JSON summary, exit 1 on a refusal.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import sys
from pathlib import Path

import h5py
import jsonschema
import numpy as np

SIGNATURE = b"\x89HDF\r\n\x1a\n"
DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "uint8"}
FILTERS = {1, 2, 3, 32000}  # gzip, shuffle, fletcher32, lzf (section 1)
SEGMENT_KEY = re.compile(r"index/[0-9a-f]{32}\.json")


class Refused(Exception):
    pass


def end_of_file(head: bytes) -> int:
    """FORMAT.md section 1: the superblock's base address + end-of-file address."""
    if len(head) < 14 or head[:8] != SIGNATURE:
        raise Refused("no HDF5 signature at byte 0")
    version = head[8]
    if version in (0, 1):
        size, start = head[13], (24 if version == 0 else 28)
    elif version in (2, 3):
        size, start = head[9], 12
    else:
        raise Refused(f"superblock version {version}")
    if size not in (2, 4, 8) or len(head) < start + 3 * size:
        raise Refused(f"superblock size of offsets {size}")
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
    """FORMAT.md section 1: RFC 8259 only; NaN, Infinity and numbers that overflow are refused."""
    def refuse(token: str) -> None:
        raise Refused(f"{token} is not JSON")

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise Refused(f"{number} is too large for a binary64")
        return value
    try:
        return json.loads(text, parse_constant=refuse, parse_float=finite)
    except ValueError as exc:
        raise Refused(f"not JSON: {exc}") from None


def plain_file(path: str | os.PathLike[str]) -> int:
    """FORMAT.md section 4 step 1: a regular file (no link followed) that starts with the HDF5
    signature and ends where its superblock says. Returns its size."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise Refused(f"{path}: not a regular file")
    with open(path, "rb") as fh:
        head = fh.read(128)
    if end_of_file(head) != info.st_size:
        raise Refused(f"{path}: the file does not end where its superblock says")
    return info.st_size


def read_at(path: str | os.PathLike[str], offset: int, dtype: np.dtype, shape: list[int], size: int) -> np.ndarray:
    """Values at their file offset, no HDF5 library: C order, in ``dtype``'s byte order."""
    count = math.prod(shape) * dtype.itemsize
    if offset < 0 or offset + count > size:
        raise Refused(f"{path}: values at {offset}+{count} lie outside the file's {size} bytes")
    with open(path, "rb") as fh:
        fh.seek(offset)
        raw = fh.read(count)
    return np.frombuffer(raw, dtype).reshape(shape)


def little_endian(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, values.dtype.newbyteorder("<"))


def check_values(where: str, values: np.ndarray, record: dict, *expected: str) -> None:
    """The content hash against the record's (and any other copy of it), and finite floats."""
    digest = content_hash(values, record["dtype"])
    if any(digest != e for e in (record["sha256"], *expected)):
        raise Refused(f"{where}: content hash")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise Refused(f"{where}: NaN or infinity")
    rules_beyond_json_schema(record, values)


def validated(where: str, text: str, validator: jsonschema.Validator) -> dict:
    record = strict_json(text)
    errors = [e.message for e in validator.iter_errors(record)]
    if errors:
        raise Refused(f"{where}: {errors[0]}")
    if record["dtype"] not in DTYPES:
        raise Refused(f"{where}: dtype {record['dtype']}")
    return record


def validator_for(schema: dict) -> jsonschema.Validator:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def dataset_values(path: str | os.PathLike[str], ds: h5py.Dataset, record: dict, size: int) -> np.ndarray:
    """A kernel dataset's values: read at its offset when contiguous and unfiltered, else through
    the HDF5 library after refusing any filter outside the four allowed (section 1)."""
    if list(ds.shape) != record["shape"] or ds.dtype.newbyteorder("=").name != record["dtype"]:
        raise Refused(f"{path}: {ds.name}: dataset and record disagree")
    dcpl = ds.id.get_create_plist()
    filters = {dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())}
    if filters - FILTERS:
        raise Refused(f"{path}: {ds.name}: filter {sorted(filters - FILTERS)}")
    order = ">" if ds.dtype.byteorder == ">" or (ds.dtype.byteorder == "=" and sys.byteorder == "big") else "<"
    offset = ds.id.get_offset() if dcpl.get_layout() == h5py.h5d.CONTIGUOUS and not filters else None
    if offset is None:
        return ds[()]
    values = read_at(path, offset, np.dtype(record["dtype"]).newbyteorder(order), record["shape"], size)
    if not np.array_equal(values, ds[()], equal_nan=True):
        raise Refused(f"{path}: {ds.name}: the bytes at the offset are not the dataset")
    return values


def open_pack(path: str | os.PathLike[str], schema: dict) -> dict:
    """Every check of FORMAT.md section 4; returns the manifest, its bytes, the signer and each
    kernel's stored record text, record and values (little-endian), by ref."""
    size = plain_file(path)
    validator = validator_for(schema)
    kernels = {}
    with h5py.File(path, "r", locking=False) as f:  # a reader takes no lock (FORMAT.md section 5)
        attrs = dict(f.attrs)
        if (attrs.get("kreg_format"), int(attrs.get("format_version", 0)), attrs.get("kind")) != ("kreg", 1, "pack"):
            raise Refused("not a kreg pack of container format 1")
        if "manifest" not in f or "digest" not in attrs:
            raise Refused("no /manifest or no digest: not a pack of manifest version 2")
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
        for entry in manifest["kernels"]:
            name, version = entry["ref"].rsplit("@", 1)
            ds = f[f"kernels/{name}/@{version}"]
            text = ds.attrs["record"]  # a variable-length UTF-8 string
            if hashlib.sha256(text.encode("utf-8")).hexdigest() != entry["record_sha256"]:
                raise Refused(f"record_sha256 of {entry['ref']}")
            record = validated(entry["ref"], text, validator)
            if f"{record['name']}@{record['version']}" != entry["ref"]:
                raise Refused(f"{entry['ref']}: the record names another kernel")
            values = little_endian(dataset_values(path, ds, record, size))
            check_values(entry["ref"], values, record, entry["sha256"])
            kernels[entry["ref"]] = {"text": text, "record": record, "values": values}
        signature = attrs.get("signature")
    signer = None
    if signature is not None or manifest.get("public_key") is not None:
        from nacl.signing import VerifyKey

        VerifyKey(bytes.fromhex(manifest["public_key"])).verify(manifest_bytes, bytes.fromhex(signature))
        signer = manifest["public_key"]
    return {"manifest": manifest, "manifest_bytes": manifest_bytes, "signer": signer, "kernels": kernels}


def read_pack(path: str, schema: dict) -> dict:
    pack = open_pack(path, schema)
    return {"kernels": list(pack["kernels"]), "signer": pack["signer"], "created_at": pack["manifest"]["created_at"],
            "kreg_imported": kreg_imported()}


def kreg_imported() -> bool:
    return any(m == "registry" or m.startswith("registry.") for m in sys.modules)


# -- registry directories (FORMAT.md section 5) ----------------------------------------------


def sort_key(name: str) -> str:
    """Each run of digits becomes "!", the character 0x30 + its length without leading zeros,
    then those digits (a run of zeros is the one digit 0)."""
    def number(match: re.Match) -> str:
        digits = match[0].lstrip("0") or "0"
        return f"!{chr(0x30 + len(digits))}{digits}"
    return re.sub(r"[0-9]+", number, name)


def row_for(record: dict) -> list:
    """A row's first nine fields as the record gives them."""
    provenance = record.get("provenance", {})
    summary = " ".join(provenance.get("description", "").split())[:120]
    return [record["name"], record["version"], record["shape"], record["dtype"], record["layout"],
            provenance.get("origin", ""), summary, record.get("tags", []), record["sha256"]]


def entry_for(row: list) -> str:
    """A listing entry: ten tab-separated fields; shape joined by "x", tags by ","."""
    name, version, shape, dtype, layout, origin, summary, tags, sha256 = row[:9]
    summary = summary.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate as \udXXX
    return "\t".join([sort_key(name), name, str(version), "x".join(str(n) for n in shape), dtype, layout, origin,
                      summary, ",".join(tags), sha256])


def name_bits(name: str, depth: int) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return "".join(format(byte, "08b") for byte in digest)[:depth]


def check_prefixes(prefixes: list[str]) -> None:
    """A complete prefix-free set of bit strings: no prefix starts another, and they cover every
    bit string (their 2^-length sum to 1)."""
    if not prefixes or any(set(p) - {"0", "1"} or len(p) > 24 for p in prefixes):
        raise Refused("segment prefixes are not bit strings of at most 24 bits")
    for a in prefixes:
        for b in prefixes:
            if a != b and b.startswith(a):
                raise Refused(f"segment prefix {a!r} starts {b!r}")
    if sum(2 ** (24 - len(p)) for p in prefixes) != 2 ** 24:
        raise Refused("segment prefixes do not cover every name")


def read_segment(data: bytes) -> tuple[list[str], dict, list[str]]:
    """A segment's listing block (entries), header and record lines."""
    text = data.decode("utf-8")  # strict: a segment is UTF-8
    if not text.endswith("\n"):
        raise Refused("a segment line does not end in a newline")
    lines = text[:-1].split("\n")
    at = next((i for i, line in enumerate(lines) if line.startswith("{")), None)
    if at is None:
        raise Refused("a segment without a header line")
    header = strict_json(lines[at])
    if not isinstance(header, dict) or not isinstance(header.get("rows"), list) or not isinstance(header.get("next"), dict):
        raise Refused("a segment header is not {next, rows}")
    records = lines[at + 1:]
    if len(records) != len(header["rows"]):
        raise Refused("a segment has not one record line per row")
    return lines[:at], header, records


def read_registry(path: str | os.PathLike[str], schema: dict) -> dict:
    """Every kernel version of a format-2 registry directory, checked as FORMAT.md section 5
    says; returns the root and each version's record line, record, row, values (little-endian)
    and where they were read, by ref."""
    top = Path(path)
    validator = validator_for(schema)
    marker = strict_json((top / "kreg-registry.json").read_bytes())
    if marker != {"format": "kreg-registry", "version": 2}:
        raise Refused(f"not a format-2 registry: {marker}")
    root_bytes = (top / "index.json").read_bytes()
    root = strict_json(root_bytes)
    if (root.get("format"), root.get("version")) != ("kreg-registry-index", 2) or not isinstance(
            root.get("generation"), str):
        raise Refused("not a version 2 root")
    segments = root["segments"]
    check_prefixes(list(segments))
    facts = root.get("listing", {})
    kernels = {}
    for prefix, key in segments.items():
        if not SEGMENT_KEY.fullmatch(key):
            raise Refused(f"segment key {key!r}")
        data = (top / key).read_bytes()
        block, header, lines = read_segment(data)
        latest = {}
        for row, line in zip(header["rows"], lines):
            name, version = row[0], row[1]
            ref = f"{name}@{version}"
            if name_bits(name, len(prefix)) != prefix:
                raise Refused(f"{ref} is in the segment of another prefix")
            following = header["next"].get(name)  # when present, above every version the name had
            if following is not None and not (type(following) is int and following > version):
                raise Refused(f"{ref}: next version {following!r} is not above it")
            record = validated(ref, line, validator)
            if row[:9] != row_for(record) or len(row) != 10:
                raise Refused(f"{ref}: the row is not what its record says")
            kernels[ref] = {"text": line, "record": record, "row": row, **read_object(top, record, row[9])}
            if name not in latest or version > latest[name][1]:
                latest[name] = row
        # a segment that starts with its header (the layout before listing blocks) has none
        if data[:1] != b"{" and block != sorted(entry_for(row) for row in latest.values()):
            raise Refused(f"{key}: the listing block is not what the rows say")
        if key in facts:
            widths = [max((len(entry.split("\t")[i]) for entry in block), default=0) for i in range(1, 7)]
            if facts[key] != [sum(len(e.encode("utf-8")) + 1 for e in block), *widths]:
                raise Refused(f"{key}: the root's listing facts are wrong")
    return {"root": root, "root_sha256": hashlib.sha256(root_bytes).hexdigest(), "kernels": kernels}


def read_object(top: Path, record: dict, offset: int | None) -> dict:
    """A version's values from ``kernels/NAME/@V.h5``: at the row's offset, with no HDF5 library;
    for a null offset, the object opened as a container. Either way the object's own record
    must be the segment's (the same text), and the values must hash to the record's sha256."""
    ref = f"{record['name']}@{record['version']}"
    path = top / "kernels" / record["name"] / f"@{record['version']}.h5"
    size = plain_file(path)
    dtype = np.dtype(record["dtype"]).newbyteorder("<")
    with h5py.File(path, "r", locking=False) as f:  # a reader takes no lock (FORMAT.md section 5)
        if (f.attrs.get("kreg_format"), f.attrs.get("kind")) != ("kreg", "object"):
            raise Refused(f"{path}: not a kreg object")
        ds = f[f"kernels/{record['name']}/@{record['version']}"]
        stored = strict_json(ds.attrs["record"])
        if stored != record:
            raise Refused(f"{ref}: the object's record is not the segment's")
        found = ds.id.get_offset()
        if offset is None:
            values = dataset_values(path, ds, record, size)
    if offset is not None:
        if type(offset) is not int:
            raise Refused(f"{ref}: offset {offset!r}")
        if offset != found:
            raise Refused(f"{ref}: the row's offset {offset} is not where the object's values start ({found})")
        values = read_at(path, offset, dtype, record["shape"], size)
    values = little_endian(values)
    check_values(ref, values, record)
    return {"values": values, "offset": offset}


# -- the built-in database: a pack and its listing (FORMAT.md section 5) ---------------------


def read_builtin(kernels_db: str | os.PathLike[str], schema: dict) -> dict:
    """``builtin.h5`` read as any pack, and ``builtin.listing.json`` beside it checked against
    it: its ``pack_sha256`` is the pack's, its entries are the pack's records' entries."""
    pack_path = Path(kernels_db) / "builtin.h5"
    pack = open_pack(pack_path, schema)
    listing = strict_json((Path(kernels_db) / "builtin.listing.json").read_bytes())
    if (listing["format"], listing["version"]) != ("kreg-builtin-listing", 1):
        raise Refused("not a version 1 built-in listing")
    if listing["pack_sha256"] != hashlib.sha256(pack_path.read_bytes()).hexdigest():
        raise Refused("the built-in listing is of another pack")
    if listing["entries"] != sorted(entry_for(row_for(k["record"])) for k in pack["kernels"].values()):
        raise Refused("the built-in listing is not what the pack's records say")
    return {**pack, "entries": listing["entries"]}


def main() -> int:
    path, schema_path = sys.argv[-2], sys.argv[-1]
    with open(schema_path, encoding="utf-8") as fh:
        schema = json.load(fh)
    try:
        if sys.argv[1] == "--builtin":
            read = read_builtin(path, schema)
        elif os.path.isdir(path):
            read = read_registry(path, schema)
        else:
            print(json.dumps(read_pack(path, schema)))
            return 0
        print(json.dumps({"kernels": sorted(read["kernels"]), "kreg_imported": kreg_imported(),
                          "values_sha256": {ref: hashlib.sha256(k["values"].tobytes()).hexdigest()
                                            for ref, k in sorted(read["kernels"].items())}}))
    except Exception as exc:  # every refusal, including a bad signature, is one line and exit 1
        print(json.dumps({"refused": f"{type(exc).__name__}: {exc}"}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
