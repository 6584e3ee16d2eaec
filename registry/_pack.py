"""Kernel packs: many kernels in one HDF5 file, exported with a manifest, imported as hostile input.

Import is all or nothing: the whole pack is parsed, validated and hash-checked (in a child
process with a time limit, so a libhdf5 crash or hang on a hostile file is a clean error)
before the registry is touched, then every kernel lands in one commit.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import _exceptions
from ._container import load_document, write_container
from ._exceptions import IntegrityError, KregError, ReadOnlyError, UnsafeFileError
from ._guard import GuardedFile, Limits, check_plain_file
from ._names import Ref, check_name, escape

PACK_FORMAT = "kreg-pack"
PACK_VERSION = 1
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


@dataclass
class Step:
    """What import does with one kernel of a pack."""

    source: str  # ref inside the pack
    target: str  # name in the registry
    action: str  # "add" (new name), "version" (new version of a name), "skip" (identical content)
    result: str  # the ref it will have / already has


@dataclass
class ImportReport:
    """The plan (and, unless a dry run, what was done)."""

    pack: Pack
    steps: list[Step] = field(default_factory=list)
    dry_run: bool = False


def manifest_for(kernels: Sequence[tuple[dict[str, Any], np.ndarray]], *, name: str, author: str | None,
                 public_key: str | None = None) -> dict[str, Any]:
    """The manifest of a pack: what it holds, with a digest over the whole."""
    from . import __version__

    body = {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "name": name,
        "author": author,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "kreg_version": __version__,
        "public_key": public_key,
        "kernels": [
            {"ref": f"{r['name']}@{r['version']}", "sha256": r["sha256"], "record_sha256": _record_hash(r)}
            for r, _ in kernels
        ],
    }
    return {**body, "digest": _digest(body)}


def _record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(record)).hexdigest()


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in body.items() if k != "digest"})).hexdigest()


def write_pack(path: Path, kernels: Sequence[tuple[dict[str, Any], np.ndarray]], *, name: str,
               author: str | None = None, signing_key: bytes | None = None, overwrite: bool = False) -> Path:
    """Write ``kernels`` as a pack at ``path`` (atomically), signed when a key is given."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise _exceptions.InvalidKernelError(f"{path} exists; pass overwrite=True (kreg export --force) to replace it.")
    public_key, sign = None, None
    if signing_key is not None:
        from ._signing import signer

        public_key, sign = signer(signing_key)
    manifest = manifest_for(kernels, name=name, author=author, public_key=public_key)
    attrs: dict[str, Any] = {"manifest": _canonical(manifest).decode("ascii")}
    if sign is not None:
        attrs["signature"] = sign(attrs["manifest"].encode("ascii"))
    fd, tmp = tempfile.mkstemp(prefix=".kreg-pack-", suffix=".h5", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        write_container(tmp, "pack", kernels, attrs=attrs)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


# -- parsing (runs in the child) ------------------------------------------------------------


def parse_pack(path: str | os.PathLike[str], *, limits: Limits = Limits()) -> Pack:
    """Open, check and read a whole pack in this process. Prefer :func:`read_pack`.

    Raises:
        UnsafeFileError, IntegrityError, SchemaVersionError, InvalidKernelError: naming
            the reason and the kernel.
    """
    from ._spec import parse_record

    path = Path(path)
    with GuardedFile(path, kind="pack", limits=limits) as f:
        manifest_text = f.attrs.get("manifest")
        kernels = []
        for ref, entry in sorted(f.entries.items()):
            record = parse_record(entry.record, where=f"{path}: {escape(ref)}").model_dump(mode="json", exclude_none=True)
            values = f.read(entry)  # sha256 checked
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise UnsafeFileError(f"{path}: {escape(ref)} holds NaN or infinite values.")
            kernels.append((record, values))
        signature = f.attrs.get("signature")
    manifest = _check_manifest(path, manifest_text, kernels)
    signer = _check_signature(path, manifest, manifest_text, signature)
    return Pack(path, _file_hash(path), manifest, kernels, signer)


def _check_manifest(path: Path, text: Any, kernels: list[tuple[dict[str, Any], np.ndarray]]) -> dict[str, Any]:
    if not isinstance(text, str):
        raise UnsafeFileError(f"{path}: the pack has no manifest; kreg exports always carry one.")
    manifest = load_document(text, where=str(path), what="pack manifest", fmt=PACK_FORMAT, supported=PACK_VERSION)
    if manifest.get("digest") != _digest(manifest):
        raise IntegrityError(f"{path}: the manifest digest does not match its contents (altered or corrupt).")
    listed = {k.get("ref"): k for k in manifest.get("kernels", []) if isinstance(k, dict)}
    present = {f"{r['name']}@{r['version']}": r for r, _ in kernels}
    if set(listed) != set(present):
        extra, missing = sorted(set(present) - set(listed)), sorted(set(listed) - set(present))
        raise IntegrityError(f"{path}: the manifest and the kernels disagree (not listed: {extra[:3]}, missing: {missing[:3]}).")
    for ref, record in present.items():
        if listed[ref].get("sha256") != record["sha256"] or listed[ref].get("record_sha256") != _record_hash(record):
            raise IntegrityError(f"{path}: {escape(ref)} does not match its manifest entry (altered after export).")
    return manifest


def _check_signature(path: Path, manifest: dict[str, Any], text: str, signature: Any) -> str | None:
    public_key = manifest.get("public_key")
    if signature is None and public_key is None:
        return None
    if not isinstance(signature, str) or not isinstance(public_key, str):
        raise IntegrityError(f"{path}: the pack is half signed (a key without a signature, or the reverse).")
    from ._signing import verify

    if not verify(public_key, text.encode("ascii"), signature):
        raise IntegrityError(f"{path}: the signature does not verify: the pack was altered or forged. Refused.")
    return public_key


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- the child process ---------------------------------------------------------------------


def _child(path: str, conn: Any) -> None:
    """Parse in a fresh interpreter with HDF5 plugins disabled; send JSON + raw bytes back."""
    try:
        pack = parse_pack(path)
        header = {"sha256": pack.sha256, "manifest": pack.manifest, "signer": pack.signer,
                  "kernels": [[r, v.dtype.str, list(v.shape)] for r, v in pack.kernels]}
        conn.send_bytes(b"ok" + _canonical(header))
        for _, values in pack.kernels:
            conn.send_bytes(np.ascontiguousarray(values).tobytes())
    except KregError as exc:
        conn.send_bytes(b"er" + json.dumps([type(exc).__name__, str(exc)]).encode())
    except Exception as exc:  # a bug or a library error not yet mapped: still a clean refusal
        conn.send_bytes(b"er" + json.dumps(["UnsafeFileError", f"{path}: unreadable pack ({type(exc).__name__}: {exc})."]).encode())
    finally:
        conn.close()


def read_pack(path: str | os.PathLike[str], *, timeout: float = PARSE_TIMEOUT) -> Pack:
    """Parse a pack in a child process (no HDF5 plugins, a time limit); see :func:`parse_pack`."""
    path = Path(path)
    check_plain_file(path)  # the guard's first step, here too: no process starts for a non-HDF5 file
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    env = {"HDF5_PLUGIN_PRELOAD": "::", "HDF5_PLUGIN_PATH": tempfile.gettempdir() + "/kreg-no-plugins"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the spawned child reads them before libhdf5 starts
    try:
        process = ctx.Process(target=_child, args=(str(path), child), daemon=True)
        process.start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    child.close()
    try:
        if not parent.poll(timeout):
            raise UnsafeFileError(f"{path}: reading the pack took longer than {timeout:g} s; refused.")
        message = parent.recv_bytes()
        if message[:2] == b"er":
            kind, text = json.loads(message[2:])
            raise getattr(_exceptions, kind, UnsafeFileError)(text)
        header = json.loads(message[2:])
        kernels = []
        for record, dtype, shape in header["kernels"]:
            values = np.frombuffer(parent.recv_bytes(), dtype=np.dtype(dtype)).reshape(shape).copy()
            kernels.append((record, values))
    except EOFError:
        process.join(5)
        raise UnsafeFileError(
            f"{path}: the reader process died (exit code {process.exitcode}) on this file; refused."
        ) from None
    finally:
        parent.close()
        if process.is_alive():
            process.kill()
        process.join()
    return Pack(path, header["sha256"], header["manifest"], kernels, header["signer"])


# -- import ---------------------------------------------------------------------------------


def plan_import(registry: Any, pack: Pack, *, prefix: str = "") -> list[Step]:
    """What importing ``pack`` would do, kernel by kernel in name and version order.

    A kernel whose content any version of its target name already holds is skipped (so
    importing a pack twice changes nothing); other content becomes a new version.
    """
    known: dict[str, dict[str, int]] = {}  # target name -> sha256 -> version, the plan included
    next_version: dict[str, int] = {}
    steps = []
    for record, _ in sorted(pack.kernels, key=lambda rv: (rv[0]["name"], rv[0]["version"])):
        source = f"{record['name']}@{record['version']}"
        target = check_name(prefix + record["name"])
        if target not in known:
            builtin = registry._builtins is not None and target in registry._builtins
            versions = registry.versions(target)
            known[target] = {registry._record(Ref(target, v))["sha256"]: v for v in versions}
            next_version[target] = max([1, *(v + 1 for v in versions)]) if builtin else registry.next_version(target)
            if builtin and record["sha256"] not in known[target]:
                raise ReadOnlyError(
                    f"{pack.path}: {source} would replace the built-in {target!r}, which cannot be shadowed. "
                    "Import with a prefix, e.g. --prefix team/."
                )
        if record["sha256"] in known[target]:
            steps.append(Step(source, target, "skip", f"{target}@{known[target][record['sha256']]}"))
            continue
        version = next_version[target]
        steps.append(Step(source, target, "version" if known[target] else "add", f"{target}@{version}"))
        known[target][record["sha256"]] = version
        next_version[target] = version + 1
    return steps


def import_pack(registry: Any, path: str | os.PathLike[str], *, prefix: str = "", dry_run: bool = False,
                trusted_keys: Sequence[str] = (), timeout: float = PARSE_TIMEOUT) -> ImportReport:
    """Import a pack all or nothing; see the module docs.

    Args:
        registry: the target :class:`registry.Registry`.
        path: the pack file.
        prefix: a namespace put before every name, e.g. ``"team/"``.
        dry_run: only plan.
        trusted_keys: hex ed25519 public keys; when given, the pack must be signed by one.

    Raises:
        IntegrityError: a hash, the manifest or the signature does not check out.
        UnsafeFileError: the file breaks a structural rule (the message names it).
    """
    pack = read_pack(path, timeout=timeout)
    if trusted_keys and pack.signer not in set(trusted_keys):
        who = "unsigned" if pack.signer is None else f"signed by {pack.signer[:16]}..., not a trusted key"
        raise IntegrityError(f"{pack.path}: the pack is {who}; refused because --trust was given.")
    if dry_run:
        return ImportReport(pack, plan_import(registry, pack, prefix=prefix), dry_run=True)
    records = {f"{r['name']}@{r['version']}": (r, v) for r, v in pack.kernels}
    pack_origin = {"name": pack.name[:256], "sha256": pack.sha256}
    if pack.manifest.get("author"):
        pack_origin["author"] = str(pack.manifest["author"])[:256]
    with registry.batch():  # planned under the writers' lock, so the versions are exact
        report = ImportReport(pack, plan_import(registry, pack, prefix=prefix))
        for step in report.steps:
            if step.action == "skip":
                continue
            record, values = records[step.source]
            provenance = dict(record["provenance"], pack=pack_origin)
            if provenance["origin"] == "builtin":
                provenance["origin"] = "imported"
            registry.add(
                step.target, values, layout=record["layout"], normalization=record.get("normalization"),
                separable=record.get("separable"), bias=record.get("bias"), tags=record.get("tags", ()),
                provenance=provenance,
            )
    return report
