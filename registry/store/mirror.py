"""Copying kernels between registries so that ``name@v`` means the same kernel in both.

A copy *mirrors*: every version keeps its number (it is put at exactly that number, never the
target's next one), a number the source removed is never issued by the target either (the
target's next number for the name is raised to the source's), records and provenance are
kept, and ``copied from SOURCE (name@v)`` is added to the references. Where the target already
issued a number for other content (a version with other values, layout or bias, or one it
removed), renumbering would break every pin, so that name is refused and nothing of it is
written; ``prefix`` places it under another namespace instead.

Each name is one commit: an interruption (Ctrl-C, ``kill -9``, a dropped connection) leaves
the names before it committed whole and the rest absent, and running the copy again copies only
what is missing (an object a killed run put but did not commit has the same bytes, and is
adopted). See ``schema/FORMAT.md``, "Copying between registries".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._exceptions import IntegrityError, InvalidNameError, KernelNotFoundError, KregError
from ..format.content import content_hash, same_content
from ..format.names import check_name, match, natural_key, parse_pin, parse_ref
from .backend import ObjectExists, ObjectMissing
from .writer import new_event, tombstone_key

#: Most references a copied record keeps (the note of this copy is the last).
MAX_REFERENCES = 64


@dataclass(frozen=True)
class Copied:
    """One line of a copy: a version copied or already there, or a name refused (``why`` says why)."""

    source: str
    target: str
    action: str  # "copy", "skip" (the target holds that content at that number) or "refuse"
    why: str = ""


class Refused(KregError):
    """A name the target cannot take with its numbers (raised inside its transaction: nothing is written)."""


def plan(source: Any, refs: Sequence[str], *, latest: bool = False) -> dict[str, list[int]]:
    """The versions to copy, by name: every version of each name (the newest alone with
    ``latest``) for bare names and globs (every name of the source when ``refs`` is empty),
    the one version of ``name@v``. Built-ins are in every registry and are never copied."""
    names = source._state.read(lambda view: view.names())
    chosen: dict[str, set[int]] = {}

    def every(name: str) -> None:
        versions = sorted(source._state.read(lambda view: view.versions(name)))
        chosen.setdefault(name, set()).update(versions[-1:] if latest else versions)

    for ref in refs or ["*"]:
        if any(ch in ref for ch in "*?["):
            for name in match(names, [ref]):
                every(name)
            continue
        parsed = parse_ref(ref) if parse_pin(ref) is None else None
        if parsed is not None and parsed.version is None:
            if parsed.name not in names:
                raise source._loader.not_found(parsed, source._state.view())
            every(parsed.name)
        else:
            kernel = source.load(ref)
            chosen.setdefault(kernel.name, set()).add(kernel.version)
    return {name: sorted(chosen[name]) for name in sorted(chosen, key=natural_key)}


def mirror(source: Any, target: Any, refs: Sequence[str] = (), *, latest: bool = False, prefix: str = "",
           progress: Callable[[Copied], object] | None = None,
           chosen: dict[str, list[int]] | None = None) -> list[Copied]:
    """Copy ``refs`` from ``source`` to ``target`` keeping every number (see the module docs).

    Args:
        source, target: registries.
        refs: names, ``name@v``, content pins ``name@sha256:...`` or globs; every name when empty.
        latest: only the newest version of each name.
        prefix: put before every name in the target (``"ns/"``).
        progress: called with each line as it is settled (a progress bar).
        chosen: the :func:`plan` of ``refs``, when the caller made it already.

    Returns:
        One :class:`Copied` per version copied or already there, and one per name refused.

    Raises:
        KernelNotFoundError: a ref the source does not hold (nothing was copied).
    """
    if prefix:
        if not prefix.endswith("/") or prefix == "/":
            raise InvalidNameError(f"A copy prefix is a namespace ending in '/', such as 'ns/'. Received: {prefix!r}.")
        check_name(prefix[:-1])
    done: list[Copied] = []
    for name, versions in (chosen if chosen is not None else plan(source, refs, latest=latest)).items():
        lines = copy_name(source, target, name, versions, prefix + name)
        for line in lines:
            if progress is not None:
                progress(line)
        done += lines
    return done


def copy_name(source: Any, target: Any, name: str, versions: list[int], as_name: str) -> list[Copied]:
    """One name of a copy, in one commit of the target: every line it settled, or one refusal."""
    try:
        check_name(as_name)
    except InvalidNameError as exc:  # the prefix made it too long or too deep
        return [_refusal(source, name, as_name, str(exc).rstrip("."))]
    kernels = []
    for version in versions:
        kernel = source.load(f"{name}@{version}")
        if content_hash(kernel.array) != kernel._record["sha256"]:  # re-hashed whatever load did
            return [_refusal(source, name, as_name, f"the source's {name}@{version} does not match its sha256")]
        kernels.append(kernel)
    issued = source._state.read(lambda view: view.next_version(name)) - 1
    lines: list[Copied] = []
    try:
        with target._writing(deferred=True) as txn:
            lines = _place(target, txn, kernels, as_name, source.url)
            txn.reserve(as_name, issued)
            _curate(txn, source, name, as_name, {kernel.version for kernel in kernels})
    except Refused as exc:
        return [_refusal(source, name, as_name, str(exc))]
    except IntegrityError as exc:
        return [_refusal(source, name, as_name, str(exc))]
    except ObjectExists as exc:  # a replay found a number of ours issued and removed meanwhile
        return [_refusal(source, name, as_name, f"{target.url}: {exc}")]
    return lines


def _place(target: Any, txn: Any, kernels: list[Any], as_name: str, source_url: str) -> list[Copied]:
    """Check every version against what the target issued, then put the new ones (inside ``txn``)."""
    held = txn.versions(as_name)
    issued = txn.edit.next_version(as_name) - 1
    lines, new = [], []
    for kernel in kernels:
        version = kernel.version
        wanted = {**kernel._record, "name": as_name}
        there = f"{as_name}@{version}"
        if version in held:
            if not same_content(txn.record(as_name, version), wanted):
                raise Refused(f"{target.url} already has {there} with other content")
            lines.append(Copied(kernel.ref, there, "skip"))
            continue
        if version <= issued and _tombstoned(target, as_name, version):
            raise Refused(f"{target.url} removed its {there} (that number stays unused there)")
        provenance = dict(wanted["provenance"])
        note = f"copied from {source_url} ({kernel.ref})"
        references = [r for r in provenance.get("references", ()) if r != note]
        provenance["references"] = [*references, note][-MAX_REFERENCES:]
        new.append(({**wanted, "provenance": provenance}, kernel.array))
        lines.append(Copied(kernel.ref, there, "copy"))
    for record, array in new:
        try:
            txn.place(record, np.asarray(array), {"source": source_url})  # a 'copy' event in its history
        except ObjectExists:
            raise Refused(f"{target.url} already holds an object at {as_name}@{record['version']} with other "
                          "content (an uncommitted write; 'kreg fsck' lists it)") from None
    return lines


def _curate(txn: Any, source: Any, name: str, as_name: str, versions: set[int]) -> None:
    """Keep the source's labels and deprecations of the ``versions`` copied (inside ``txn``, with
    their events). A label the target already has stays where the target's team put it, and a
    deprecation is never taken back: a copy adds what the target lacks, it does not overrule it."""
    held, retired, _ = source.annotations(name)
    labels = {label: v for label, v in held.items() if v in versions}
    reasons = {v: reason for v, reason in retired.items() if v in versions}
    if not labels and not reasons:
        return

    def keep(edit: Any) -> None:
        for label, version in sorted(labels.items()):
            if label not in edit.meta(as_name).get("labels", {}):
                edit.label(as_name, label, version)
                edit.event(as_name, new_event("label", f"{as_name}@{version}", label=label, source=source.url))
        for version, reason in sorted(reasons.items()):
            if str(version) not in edit.meta(as_name).get("deprecated", {}):
                edit.deprecate(as_name, version, reason)
                edit.event(as_name, new_event("deprecate", f"{as_name}@{version}", reason=reason, source=source.url))

    txn.apply(keep)
    txn.unreceipted.extend((as_name, v) for v in reasons)  # a pinned load goes by the index, which warns


def _tombstoned(target: Any, name: str, version: int) -> bool:
    """Whether the target left a tombstone where ``name@version`` was (it removed that version)."""
    try:
        target.backend.read(tombstone_key(name, version))
    except (ObjectMissing, KernelNotFoundError):
        return False
    return True


def _refusal(source: Any, name: str, as_name: str, why: str) -> Copied:
    return Copied(name, as_name, "refuse", f"{why}; nothing of {name} was copied (--prefix NS/ copies it "
                  "under another name)")
