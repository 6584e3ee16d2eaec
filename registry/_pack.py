"""Kernel packs: many kernels in one HDF5 file, exported with a manifest, imported as hostile input.

Import is all or nothing: the whole pack is parsed, validated and hash-checked (in a child
process with a time limit, so a libhdf5 crash or hang on a hostile file is a clean error)
before the registry is touched, then every kernel lands in one commit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import _exceptions
from ._container import load_document, record_text, write_container
from ._content import same_content
from ._exceptions import IntegrityError, KregError, ReadOnlyError, UnsafeFileError
from ._guard import GuardedFile, check_plain_file
from ._limits import LIMITS, Limits
from ._names import Ref, check_name, escape

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
        return _parse_time(self.manifest.get("created_at"))


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
    """The manifest (version 2) of a pack: what it holds, each record hashed over its stored text."""
    from . import __version__

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


def _parse_time(value: Any) -> datetime | None:
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
        InvalidKernelError: a kernel breaks a limit of :mod:`registry._limits`, or ``path`` exists.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise _exceptions.InvalidKernelError(f"{path} exists; pass overwrite=True (kreg export --force) to replace it.")
    public_key, sign = None, None
    if signing_key is not None:
        from ._signing import signer

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


def parse_pack(path: str | os.PathLike[str], *, limits: Limits = LIMITS) -> Pack:
    """Open, check and read a whole pack in this process. Prefer :func:`read_pack`.

    Raises:
        UnsafeFileError, IntegrityError, SchemaVersionError, InvalidKernelError: naming
            the reason and the kernel.
    """
    from ._spec import parse_record

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
            _check_generator(path, ref, record, values)
            kernels.append((record, values))
            stored[ref] = entry.text
        signature, digest = f.attrs.get("signature"), f.attrs.get("digest")
    manifest = _check_manifest(path, manifest_text, digest, kernels, stored)
    signer = _check_signature(path, manifest, manifest_text, signature)
    return Pack(path, _file_hash(path), manifest, kernels, signer)


def _check_generator(path: Path, ref: str, record: dict[str, Any], values: np.ndarray) -> None:
    """A record that names a generator must be what that generator makes: a pack cannot
    pass off other values as, say, ``gaussian(sigma=2)``."""
    generator = record["provenance"].get("generator")
    if not generator:
        return
    from ._families import regenerate_problems

    problems = regenerate_problems(record, values)
    if problems:
        raise IntegrityError(
            f"{path}: {escape(ref)} claims the generator {escape(generator['family'])} "
            f"({escape(str(generator.get('parameters', {})), quote=False)[:200]}) but {'; '.join(p.rstrip('.') for p in problems)}. Refused."
        )


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
    if not legacy and _parse_time(manifest.get("created_at")) is None:
        raise UnsafeFileError(f"{path}: the manifest's created_at is not an ISO 8601 time with a time zone.")
    return manifest


def _check_signature(path: Path, manifest: dict[str, Any], text: str | bytes, signature: Any) -> str | None:
    public_key = manifest.get("public_key")
    if signature is None and public_key is None:
        return None
    if not isinstance(signature, str) or not isinstance(public_key, str):
        raise IntegrityError(f"{path}: the pack is half signed (a key without a signature, or the reverse).")
    from ._signing import verify

    data = text.encode("ascii") if isinstance(text, str) else text
    if not verify(public_key, data, signature):
        raise IntegrityError(f"{path}: the signature does not verify: the pack was altered or forged. Refused.")
    return public_key


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- the child process ---------------------------------------------------------------------


#: The child's program: the parent's import path (not the current directory), then the reader,
#: under a CPU-time limit of its own (``argv[3]`` seconds).
_CHILD = ("import sys, json; sys.path[:] = json.loads(sys.argv[2]); from registry._packreader import main; "
          "main(sys.argv[1], cpu_seconds=int(sys.argv[3]))")
#: CPU seconds the child may use beyond the parent's wall-clock limit before the kernel ends it.
CHILD_CPU_SLACK = 10


def read_pack(path: str | os.PathLike[str], *, timeout: float = PARSE_TIMEOUT) -> Pack:
    """Parse a pack in a child process (no HDF5 plugins, a time limit); see :func:`parse_pack`.

    The child is a fresh ``python -I`` running :mod:`registry._packreader`, not a
    ``multiprocessing`` spawn: that would re-import the caller's ``__main__`` (re-running a
    script without a ``__main__`` guard) and cannot start from a daemonic pool worker.
    """
    import subprocess
    import sys

    from ._packreader import read_frames

    path = Path(path)
    check_plain_file(path)  # the guard's first step, here too: no process starts for a non-HDF5 file
    env = dict(os.environ, HDF5_PLUGIN_PRELOAD="::", HDF5_PLUGIN_PATH=tempfile.gettempdir() + "/kreg-no-plugins")
    search = [p for p in sys.path if p]  # "" is the current directory: never import from it
    package_root = str(Path(__file__).resolve().parents[1])
    if package_root not in search:
        search.insert(0, package_root)
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-c", _CHILD, str(path), json.dumps(search),
             str(math.ceil(timeout) + CHILD_CPU_SLACK)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
    except OSError as exc:
        raise UnsafeFileError(f"{path}: cannot start the pack reader process ({exc}); nothing imported.") from None
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise UnsafeFileError(f"{path}: reading the pack took longer than {timeout:g} s; refused.") from None
    except BaseException:  # Ctrl-C, or any error here: the child must not go on without its reader
        child.kill()
        child.wait()
        raise
    frames = read_frames(out)
    if not frames:
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise UnsafeFileError(
            f"{path}: the reader process died (exit code {child.returncode}) on this file; refused. {last[0][:200]}".rstrip()
        )
    if frames[0][:2] == b"er":
        kind, text = json.loads(bytes(frames[0][2:]))
        error = getattr(_exceptions, kind, UnsafeFileError)
        raise (error if isinstance(error, type) and issubclass(error, KregError) else UnsafeFileError)(text)
    header = json.loads(bytes(frames[0][2:]))
    if len(frames) != 1 + len(header["kernels"]):
        raise UnsafeFileError(f"{path}: the reader process stopped part way (exit code {child.returncode}); refused.")
    kernels = []
    for (record, dtype, shape), raw in zip(header["kernels"], frames[1:]):
        kernels.append((record, np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()))
    return Pack(path, header["sha256"], header["manifest"], kernels, header["signer"])


# -- import ---------------------------------------------------------------------------------


def _held(registry: Any, name: str) -> dict[int, dict[str, Any]]:
    """The records the registry (or its built-in layer) holds under ``name``, by version."""
    versions = registry.versions(name)
    return dict(zip(versions, registry.records([f"{name}@{v}" for v in versions]))) if versions else {}


def _next_version(registry: Any, name: str, held: dict[int, dict[str, Any]]) -> int:
    if registry._builtins is not None and name in registry._builtins:
        return max([1, *[v + 1 for v in held]])
    # A removed version number is never reissued: the registry remembers the next one.
    return max([registry.next_version(name), *[v + 1 for v in held]])


def plan_import(registry: Any, pack: Pack, *, prefix: str = "") -> list[Step]:
    """What importing ``pack`` would do, kernel by kernel in name and version order.

    A kernel that some version of its target name already holds is skipped (so importing
    a pack twice changes nothing); "holds" means the same values, dtype, shape, layout and
    bias (:func:`registry._content.same_content`), never the values' hash alone. Anything
    else becomes a new version.
    """
    known: dict[str, list[tuple[dict[str, Any], int]]] = {}  # target -> (record, version), the plan included
    next_version: dict[str, int] = {}
    steps = []
    for record, _ in sorted(pack.kernels, key=lambda rv: (rv[0]["name"], rv[0]["version"])):
        source = f"{record['name']}@{record['version']}"
        target = check_name(prefix + record["name"])
        if target not in known:
            held = _held(registry, target)
            known[target] = [(r, v) for v, r in sorted(held.items())]
            next_version[target] = _next_version(registry, target, held)
            builtin = registry._builtins is not None and target in registry._builtins
            if builtin and not any(same_content(record, r) for r, _ in known[target]):
                raise ReadOnlyError(
                    f"{pack.path}: {source} would replace the built-in {target!r}, which cannot be shadowed. "
                    "Import with a prefix, e.g. --prefix team/."
                )
        same = [v for r, v in known[target] if same_content(record, r)]
        if same:
            steps.append(Step(source, target, "skip", f"{target}@{same[-1]}"))
            continue
        version = next_version[target]
        steps.append(Step(source, target, "version" if known[target] else "add", f"{target}@{version}"))
        known[target].append((record, version))
        next_version[target] = version + 1
    return steps


def check_rollback(registry: Any, pack: Pack, steps: Sequence[Step]) -> None:
    """Refuse a signed pack older than one already imported from the same key and pack name.

    Without this, re-importing last month's signed pack over this month's makes its
    (perhaps vulnerable) kernels the latest versions again. The time compared is the
    manifest's ``created_at``, which the signature covers; unsigned packs carry no
    trustworthy time and are not compared.

    Raises:
        IntegrityError: naming both times and ``--allow-downgrade``.
    """
    signed_at = pack.created_at
    if pack.signer is None or signed_at is None:
        return
    newest: tuple[datetime, str] | None = None
    for target in sorted({step.target for step in steps}):
        for version, record in _held(registry, target).items():
            origin = record.get("provenance", {}).get("pack") or {}
            seen = _parse_time(origin.get("created_at"))
            if origin.get("public_key") == pack.signer and origin.get("name") == pack.name[:256] and seen:
                if newest is None or seen > newest[0]:
                    newest = (seen, f"{target}@{version}")
    if newest is not None and newest[0] > signed_at:
        raise IntegrityError(
            f"{pack.path}: pack {escape(pack.name)} signed {signed_at.isoformat()} is older than the one "
            f"{newest[1]} came from ({newest[0].isoformat()}), signed by the same key: importing it would make "
            "older kernels the latest (a rollback). Pass --allow-downgrade if that is what you want."
        )


def import_pack(registry: Any, path: str | os.PathLike[str], *, prefix: str = "", dry_run: bool = False,
                trusted_keys: Sequence[str] = (), timeout: float = PARSE_TIMEOUT,
                allow_downgrade: bool = False) -> ImportReport:
    """Import a pack all or nothing; see the module docs.

    Args:
        registry: the target :class:`registry.Registry`.
        path: the pack file.
        prefix: a namespace put before every name, e.g. ``"team/"``.
        dry_run: only plan.
        trusted_keys: hex ed25519 public keys; when given, the pack must be signed by one.
        allow_downgrade: import a signed pack even when a newer one from the same key and
            pack name was imported before (see :func:`check_rollback`).

    Raises:
        IntegrityError: a hash, the manifest or the signature does not check out, or the
            pack is older than one already imported (a rollback).
        UnsafeFileError: the file breaks a structural rule (the message names it).
    """
    pack = read_pack(path, timeout=timeout)
    if trusted_keys and pack.signer not in set(trusted_keys):
        who = "unsigned" if pack.signer is None else f"signed by {pack.signer[:16]}..., not a trusted key"
        raise IntegrityError(f"{pack.path}: the pack is {who}; refused because --trust was given.")
    if dry_run:
        steps = plan_import(registry, pack, prefix=prefix)
        if not allow_downgrade:
            check_rollback(registry, pack, steps)
        return ImportReport(pack, steps, dry_run=True)
    records = {f"{r['name']}@{r['version']}": (r, v) for r, v in pack.kernels}
    pack_origin: dict[str, Any] = {"name": pack.name[:256], "sha256": pack.sha256}
    if pack.manifest.get("author"):
        pack_origin["author"] = str(pack.manifest["author"])[:256]
    if pack.signer is not None and pack.created_at is not None:
        pack_origin["public_key"] = pack.signer
        pack_origin["created_at"] = pack.created_at.astimezone(timezone.utc).isoformat()
    with registry.batch():  # planned under the writers' lock, so the versions are exact
        report = ImportReport(pack, plan_import(registry, pack, prefix=prefix))
        if not allow_downgrade:
            check_rollback(registry, pack, report.steps)
        for step in report.steps:
            if step.action == "skip":
                continue
            record, values = records[step.source]
            # Arrived in a pack: `--origin imported` finds it; generator/source still say how it was made.
            provenance = dict(record["provenance"], pack=pack_origin, origin="imported")
            added = registry._add(
                step.target, values, layout=record["layout"], normalization=record.get("normalization"),
                separable=record.get("separable"), bias=record.get("bias"), tags=record.get("tags", ()),
                provenance=provenance, via_import=True,
            )
            if added.ref != step.result:  # the store deduped differently: say so, import nothing
                raise IntegrityError(
                    f"{pack.path}: {escape(step.source)} was planned as {step.result} but the registry "
                    f"returned {added.ref} (its add() treats them as the same kernel); nothing was imported."
                )
    return report
