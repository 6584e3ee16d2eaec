"""``kreg copy``: kernels from one registry to another (local or remote), hashes checked, source recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from .._exceptions import IntegrityError
from ..format.content import content_hash
from ._common import tell


@dataclass(frozen=True)
class Copied:
    """One kernel of a copy: its ref in the source, its ref in the target, and what was done."""

    source: str
    target: str
    action: str  # "copy" or "skip" (the target already holds that content under that name)


def copy_kernels(source: Any, target: Any, refs: tuple[str, ...] | list[str] = ()) -> list[Copied]:
    """Copy ``refs`` (refs or globs; the latest of every kernel when empty) from ``source`` to ``target``.

    Every kernel is re-hashed after it is read and refused (nothing copied) unless its values
    match the sha256 its record states. Content the target already holds under that name is
    skipped, so copying twice changes nothing; anything else becomes the target's next version
    of the name, with the full record kept and ``copied from SOURCE (name@v)`` added to its
    references. All of it lands in one commit, or none does.

    Raises:
        IntegrityError: a kernel's values do not match its recorded hash.
    """
    wanted = list(refs) or [info.ref for info in source.list_kernels() if not info.builtin]
    kernels = [k for k in source.resolve(wanted) if k.version > 0 and (
        source._builtins is None or k.name not in source._builtins)]
    for kernel in kernels:
        if content_hash(kernel.array) != kernel._record["sha256"]:
            raise IntegrityError(f"{source.url}: {kernel.ref} does not match its sha256; nothing was copied.")
    done = []
    with target.batch():
        for kernel in kernels:
            record = kernel._record
            taken = [f"{record['name']}@{v}" for v in target.versions(record["name"])]
            have = {r["sha256"]: r["version"] for r in target.records(taken)} if taken else {}
            if record["sha256"] in have:
                done.append(Copied(kernel.ref, f"{record['name']}@{have[record['sha256']]}", "skip"))
                continue
            note = f"copied from {source.url} ({kernel.ref})"
            provenance = dict(record["provenance"])
            provenance["references"] = [*provenance.get("references", ()), note][-64:]
            stored = target.add(record["name"], kernel.array, layout=record["layout"],
                                normalization=record.get("normalization"), separable=record.get("separable"),
                                bias=record.get("bias"), tags=record.get("tags", ()), provenance=provenance)
            done.append(Copied(kernel.ref, stored.ref, "copy"))
    return done


@click.command()
@click.argument("source")
@click.argument("target")
@click.argument("refs", nargs=-1)
def copy(source: str, target: str, refs: tuple[str, ...]) -> None:
    """Copy kernels (refs or globs; all when none) from registry SOURCE to TARGET, directories or URLs.

    Hashes are checked before anything is written; content TARGET already holds is skipped;
    each copy keeps its record and notes where it came from. Packs remain the unit for a
    file sent by hand (kreg export / import).

    \b
    Example:
      kreg copy ~/kreg s3://team-bucket/kernels 'edge/*'
      kreg copy s3://team-bucket/kernels ./offline-copy sobel_team@3
    """
    from ..store import Registry

    src = Registry(source.removeprefix("file://"))
    dst = Registry(target.removeprefix("file://"))
    done = copy_kernels(src, dst, refs)
    for step in done:
        click.echo(f"{'copy' if step.action == 'copy' else 'skip (identical)':<17} {step.source} -> {step.target}")
    tell(f"Copied {sum(s.action == 'copy' for s in done)} kernels from {src.url} to {dst.url}, "
          f"{sum(s.action == 'skip' for s in done)} already there.")


#: The commands this module adds to the ``kreg`` group.
COMMANDS = [copy]
