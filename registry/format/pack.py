"""Kernel packs: many kernels in one HDF5 file, written with a manifest, read as hostile input.

A pack is read whole, validated and hash-checked in a child process with a time limit (so a
libhdf5 crash or hang on a hostile file is a clean error); what an import then does with it
(the claims it checks, the versions it plans, the rollback it refuses) is the store's:
:mod:`registry.store.packs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .. import _exceptions
from .._exceptions import IntegrityError, UnsafeFileError
from .._version import __version__
from .container import load_document, record_text, write_container
from .content import file_sha256
from .guard import GuardedFile
from .limits import LIMITS, Limits
from .names import escape

PACK_FORMAT = "kreg-pack"
#: The manifest version written: 2 keeps the manifest in a ``/manifest`` dataset (no 64 KiB
#: attribute cap) and hashes records over their stored bytes. Version 1 is still read.
PACK_VERSION = 2
#: Seconds the child process may spend parsing a pack before it is killed.
PARSE_TIMEOUT = 120.0


@dataclass
class Pack:
    """A parsed, fully checked pack: its manifest and every ``(record, values)`` pair."""

    path: Path
    sha256: str
    manifest: dict[str, Any]
    kernels: list[tuple[dict[str, Any], np.ndarray]]
    signer: str | None = None  # hex public key whose signature verified

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.stem))

    @property
    def created_at(self) -> datetime | None:
        """The manifest's time (covered by the signature when the pack is signed)."""
        return parse_time(self.manifest.get("created_at"))



def manifest_for(kernels: Sequence[tuple[dict[str, Any], np.ndarray]], *, name: str, author: str | None,
                 public_key: str | None = None) -> dict[str, Any]:
    """The manifest (version 2) of a pack: what it holds, each record hashed over its stored text."""
    return {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "name": name,
        "author": author,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "kreg_version": __version__,
        "public_key": public_key,
        "kernels": [
            {"ref": f"{r['name']}@{r['version']}", "sha256": r["sha256"],
             "record_sha256": _sha256(record_text(r).encode("utf-8"))}
            for r, _ in kernels
        ],
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


# Version 1 manifests (an attribute) hashed Python's re-serialization of each record and of
# the manifest itself; kept to read them, never written.
def _record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(record)).hexdigest()


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in body.items() if k != "digest"})).hexdigest()


def write_pack(path: Path, kernels: Sequence[tuple[dict[str, Any], np.ndarray]], *, name: str,
               author: str | None = None, signing_key: bytes | None = None, overwrite: bool = False) -> Path:
    """Write ``kernels`` as a pack at ``path`` (atomically), signed when a key is given.

    Raises:
        InvalidKernelError: a kernel breaks a limit of :mod:`registry.format.limits`, or ``path`` exists.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise _exceptions.InvalidKernelError(f"{path} exists; pass overwrite=True (kreg export --force) to replace it.")
    public_key, sign = None, None
    if signing_key is not None:
        from .signing import signer

        public_key, sign = signer(signing_key)
    manifest = _canonical(manifest_for(kernels, name=name, author=author, public_key=public_key))
    if len(manifest) > LIMITS.max_manifest_bytes:
        raise _exceptions.InvalidKernelError(
            f"The manifest of {len(kernels)} kernels is {len(manifest)} bytes; a pack holds at most "
            f"{LIMITS.max_manifest_bytes}. Split the kernels into several packs."
        )
    attrs: dict[str, Any] = {"digest": _sha256(manifest)}
    if sign is not None:
        attrs["signature"] = sign(manifest)
    fd, tmp = tempfile.mkstemp(prefix=".kreg-pack-", suffix=".h5", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        write_container(tmp, "pack", kernels, attrs=attrs, blobs={"manifest": manifest})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


# -- parsing (runs in the child) ------------------------------------------------------------


def parse_pack(path: str | os.PathLike[str], *, limits: Limits = LIMITS,
               check: Callable[[Path, str, dict[str, Any], np.ndarray], None] | None = None) -> Pack:
    """Open, check and read a whole pack in this process. Prefer
    :func:`registry.store.packs.read_pack`, which does it in a child process.

    Args:
        path: the pack.
        limits: caps on sizes and counts.
        check: called with ``(path, ref, record, values)`` for each kernel once its values are
            read and hash-checked: what the format cannot know (a generator's claim) is
            checked by the layer that can.

    Raises:
        UnsafeFileError, IntegrityError, SchemaVersionError, InvalidKernelError: naming
            the reason and the kernel.
    """
    from .spec import parse_record

    path = Path(path)
    with GuardedFile(path, kind="pack", limits=limits) as f:
        if "manifest" in f.attrs and "manifest" in f.blobs:
            raise UnsafeFileError(f"{path}: the pack has two manifests (an attribute and a dataset); refused.")
        manifest_text: Any = f.read_blob("manifest") if "manifest" in f.blobs else f.attrs.get("manifest")
        kernels, stored = [], {}
        for ref, entry in sorted(f.entries.items()):
            record = parse_record(entry.record, where=f"{path}: {escape(ref)}", stored=True).model_dump(
                mode="json", exclude_none=True)
            values = f.read(entry)  # sha256 and the record's claims checked
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise UnsafeFileError(f"{path}: {escape(ref)} holds NaN or infinite values.")
            if check is not None:
                check(path, ref, record, values)
            kernels.append((record, values))
            stored[ref] = entry.text
        signature, digest = f.attrs.get("signature"), f.attrs.get("digest")
    manifest = _check_manifest(path, manifest_text, digest, kernels, stored)
    signer = _check_signature(path, manifest, manifest_text, signature)
    return Pack(path, file_sha256(path), manifest, kernels, signer)



def _check_manifest(path: Path, text: Any, digest: Any, kernels: list[tuple[dict[str, Any], np.ndarray]],
                    stored: dict[str, str]) -> dict[str, Any]:
    if not isinstance(text, (str, bytes)):
        raise UnsafeFileError(f"{path}: the pack has no manifest; kreg exports always carry one.")
    manifest = load_document(text, where=str(path), what="pack manifest", fmt=PACK_FORMAT, supported=PACK_VERSION)
    legacy = manifest["version"] == 1
    if legacy != isinstance(text, str):
        raise UnsafeFileError(f"{path}: a version {manifest['version']} manifest in the wrong place; refused.")
    data = text.encode("utf-8") if isinstance(text, str) else text
    if legacy:
        if manifest.get("digest") != _digest(manifest):
            raise IntegrityError(f"{path}: the manifest digest does not match its contents (altered or corrupt).")
    elif digest != _sha256(data):
        raise IntegrityError(f"{path}: the manifest digest does not match its contents (altered or corrupt).")
    listed = {k.get("ref"): k for k in manifest.get("kernels", []) if isinstance(k, dict)}
    present = {f"{r['name']}@{r['version']}": r for r, _ in kernels}
    if set(listed) != set(present):
        extra, missing = sorted(set(present) - set(listed)), sorted(set(listed) - set(present))
        raise IntegrityError(
            f"{path}: the manifest and the kernels disagree (not listed: {escape(str(extra[:3]))}, "
            f"missing: {escape(str(missing[:3]))})."
        )
    for ref, record in present.items():
        record_hash = _record_hash(record) if legacy else _sha256(stored[ref].encode("utf-8"))
        if listed[ref].get("sha256") != record["sha256"] or listed[ref].get("record_sha256") != record_hash:
            raise IntegrityError(f"{path}: {escape(ref)} does not match its manifest entry (altered after export).")
    if not legacy and parse_time(manifest.get("created_at")) is None:
        raise UnsafeFileError(f"{path}: the manifest's created_at is not an ISO 8601 time with a time zone.")
    return manifest


def _check_signature(path: Path, manifest: dict[str, Any], text: str | bytes, signature: Any) -> str | None:
    public_key = manifest.get("public_key")
    if signature is None and public_key is None:
        return None
    if not isinstance(signature, str) or not isinstance(public_key, str):
        raise IntegrityError(f"{path}: the pack is half signed (a key without a signature, or the reverse).")
    from .signing import verify

    data = text.encode("ascii") if isinstance(text, str) else text
    if not verify(public_key, data, signature):
        raise IntegrityError(f"{path}: the signature does not verify: the pack was altered or forged. Refused.")
    return public_key


# -- frames: how the child process streams a parsed pack back -----------------------------


#: The frame length prefix: unsigned 64-bit, big-endian.
LENGTH = struct.Struct(">Q")


def write_frame(out: BinaryIO, data: bytes) -> None:
    """One length-prefixed frame."""
    out.write(LENGTH.pack(len(data)))
    out.write(data)


def read_frames(data: bytes) -> list[memoryview]:
    """Split a child's whole output into its frames (views, not copies); a truncated frame ends the list."""
    view = memoryview(data)
    frames, at = [], 0
    while at + LENGTH.size <= len(data):
        (size,) = LENGTH.unpack_from(data, at)
        at += LENGTH.size
        if at + size > len(data):
            break
        frames.append(view[at:at + size])
        at += size
    return frames
