"""Importing a pack into a registry: all or nothing, with the claims, versions and rollbacks checked.

The pack is read whole first, in a child process with a time limit (:func:`read_pack`: a
libhdf5 crash or hang on a hostile file is a clean error), each generator's claim checked
there; then the import is planned under the writers' lock, and every kernel lands in one
commit, or none does.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import _exceptions
from .._exceptions import IntegrityError, KregError, ReadOnlyError, UnsafeFileError
from ..format.content import same_content
from ..format.guard import check_plain_file
from ..format.names import check_name, escape
from ..format.pack import PARSE_TIMEOUT, Pack, parse_time, read_frames


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


def check_generator(path: Path, ref: str, record: dict[str, Any], values: np.ndarray) -> None:
    """A record that names a generator must be what that generator makes: a pack cannot
    pass off other values as, say, ``gaussian(sigma=2)``."""
    generator = record["provenance"].get("generator")
    if not generator:
        return
    from ..kernels.families import regenerate_problems

    problems = regenerate_problems(record, values)
    if problems:
        raise IntegrityError(
            f"{path}: {escape(ref)} claims the generator {escape(generator['family'])} "
            f"({escape(str(generator.get('parameters', {})), quote=False)[:200]}) but {'; '.join(p.rstrip('.') for p in problems)}. Refused."
        )



#: The child's program: the parent's import path (not the current directory), then the reader,
#: under a CPU-time limit of its own (``argv[3]`` seconds).
_CHILD = ("import sys, json; sys.path[:] = json.loads(sys.argv[2]); from registry.store.packreader import main; "
          "main(sys.argv[1], cpu_seconds=int(sys.argv[3]))")
#: CPU seconds the child may use beyond the parent's wall-clock limit before the kernel ends it.
CHILD_CPU_SLACK = 10


def read_pack(path: str | os.PathLike[str], *, timeout: float = PARSE_TIMEOUT) -> Pack:
    """Parse a pack in a child process (no HDF5 plugins, a time limit); see :func:`parse_pack`.

    The child is a fresh ``python -I`` running :mod:`registry.store.packreader`, not a
    ``multiprocessing`` spawn: that would re-import the caller's ``__main__`` (re-running a
    script without a ``__main__`` guard) and cannot start from a daemonic pool worker.
    """
    import subprocess
    import sys

    path = Path(path)
    check_plain_file(path)  # the guard's first step, here too: no process starts for a non-HDF5 file
    env = dict(os.environ, HDF5_PLUGIN_PRELOAD="::", HDF5_PLUGIN_PATH=tempfile.gettempdir() + "/kreg-no-plugins")
    search = [p for p in sys.path if p]  # "" is the current directory: never import from it
    package_root = str(Path(__file__).resolve().parents[2])
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
    bias (:func:`registry.format.content.same_content`), never the values' hash alone. Anything
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
            seen = parse_time(origin.get("created_at"))
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
                allow_downgrade: bool = False, progress: Callable[[Step, int, int], None] | None = None,
                ) -> ImportReport:
    """Import a pack all or nothing; see the module docs.

    Args:
        registry: the target :class:`registry.Registry`.
        path: the pack file.
        prefix: a namespace put before every name, e.g. ``"team/"``.
        dry_run: only plan.
        trusted_keys: hex ed25519 public keys; when given, the pack must be signed by one.
        allow_downgrade: import a signed pack even when a newer one from the same key and
            pack name was imported before (see :func:`check_rollback`).
        progress: called with each step, how many are done and how many there are, once the
            step is staged (nothing is committed until the last one is).

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
        for done, step in enumerate(report.steps, 1):
            if step.action == "skip":
                if progress is not None:
                    progress(step, done, len(report.steps))
                continue
            record, values = records[step.source]
            # Arrived in a pack: `--origin imported` finds it; generator/source still say how it was made.
            # A signed pack's signer vouches for how its kernels were made (learned, generated):
            # that stays; an unsigned one's claim is anyone's, and a built-in's is kreg's alone.
            claimed = record["provenance"].get("origin")
            kept = pack.signer is not None and claimed in ("learned", "generated", "handmade")
            provenance = dict(record["provenance"], pack=pack_origin, origin=claimed if kept else "imported")
            added = registry._add(
                step.target, values, layout=record["layout"], normalization=record.get("normalization"),
                separable=record.get("separable"), bias=record.get("bias"), tags=record.get("tags", ()),
                provenance=provenance, via_import=True, event={"source": f"pack {pack.name[:200]}"},
            )
            if added.ref != step.result:  # the store deduped differently: say so, import nothing
                raise IntegrityError(
                    f"{pack.path}: {escape(step.source)} was planned as {step.result} but the registry "
                    f"returned {added.ref} (its add() treats them as the same kernel); nothing was imported."
                )
            if progress is not None:
                progress(step, done, len(report.steps))
    return report
