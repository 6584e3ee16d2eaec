"""``kreg fsck``: check a store against itself, and rebuild its index from the objects' own records.

The check compares every index row with its object (present, a regular file, a valid
container, the same record, values matching their sha256, values where the row says),
and lists orphans (objects no committed index names), leftovers of crashed writers, files
kreg never writes, and links or FIFOs planted anywhere. The repair, under the writers'
lock, rebuilds the index from every good object, keeps each name's next version above
every number an object, a tombstone or the old index ever held (so no number is issued
twice), and sets aside (never deletes) objects it cannot place under ``attic/``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._exceptions import KregError, RemoteError
from ..format.container import parse_json
from ..format.index import SEGMENT_KEY, Edit, Segment, View, canonical, object_key, record_of
from ..format.rows import column_widths
from .backend import Backend, ObjectMissing
from .writer import TOMBSTONE, tombstone_key

if TYPE_CHECKING:
    from ..kernels.builtins import BuiltinLayer

_OBJECT = re.compile(r"^kernels/(?P<name>.+)/@(?P<version>[1-9][0-9]{0,17})\.(?P<kind>h5|gone|json)$")
_KNOWN = re.compile(r"^(index\.json|kreg-registry\.json|\.lock|index\.h5|index/[0-9a-f]{32}\.json|tmp/.*|attic/.*)$")


@dataclass
class Report:
    """What fsck found (and, with ``repair``, did): ``(key, problem)`` pairs and counts."""

    url: str
    problems: list[tuple[str, str]] = field(default_factory=list)
    kernels: int = 0
    repaired: bool = False
    adopted: int = 0
    set_aside: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_object(backend: Backend, row: list[Any] | None, record: dict[str, Any]) -> tuple[list[str], np.ndarray | None]:
    """Problems of one committed version's object, and its values when they could be read."""
    from ..format.guard import GuardedFile

    name, version = record["name"], record["version"]
    key = object_key(name, version)
    try:
        data = backend.read(key)
    except ObjectMissing:
        return [f"its object {key} is missing"], None
    except KregError as exc:
        return [str(exc)], None
    try:
        with GuardedFile(data, kind="object", where=f"{backend.url}/{key}") as obj:
            entry = obj.entries.get(f"{name}@{version}")
            if entry is None:
                return [f"{key} does not hold {name}@{version}"], None
            problems = []
            if canonical(entry.record) != canonical(record):
                problems.append("the object's record differs from the index's record")
            if row is not None and len(row) > 9 and row[9] is not None and row[9] != entry.offset:
                problems.append(f"the index says the values start at byte {row[9]}, the object at {entry.offset}")
            values = obj.read(entry, verify=True)
            return problems, values
    except KregError as exc:
        return [str(exc)], None


def check(backend: Backend, cache: dict[str, Segment]) -> Report:
    """Read-only: every problem of the store, nothing changed."""
    report = Report(backend.url)
    listed: set[str] = set()
    try:
        data, _ = backend.read_root()
        if data is None:
            if backend.exists():
                report.problems.append(("index.json", "the index is missing; 'kreg fsck --repair' rebuilds it"))
            view = None
        else:
            view = View.parse(data, backend.read, cache, where=backend.url)
    except RemoteError:
        raise  # the store cannot be used (unreachable, no storage service): nothing can be checked
    except KregError as exc:
        report.problems.append(("index.json", str(exc)))
        view = None
    if view is not None:
        given = view.root.get("listing")
        for key in set(given if isinstance(given, dict) else ()) - set(view.heads):
            report.problems.append(("index.json", (f"the root gives listing facts out of bounds for {key!r} "
                                                   "(ignored); --repair rewrites the index")))
        for key, facts in view.heads.items():
            try:  # the listing a reader takes on the root's word is the segment's whole listing
                data = backend.read_range(key, 0, facts[0] + 1)
                head = Segment.parse_listing(key, data, where=backend.url).listing() if facts[0] else (
                    [] if data == b"{" else None)
                right = head == view.segment_by_key(key).block_listing() and facts[1:] == column_widths(head)
            except KregError:
                right = False
            if not right:
                report.problems.append(("index.json", (f"the root gives a wrong listing length or widths for {key}; "
                                                       "--repair rewrites the index")))
        for segment in _segments(view, report):
            if not segment.listing_matches_rows():
                report.problems.append((str(segment.key), ("the segment's listing block does not match its rows "
                                                           "('kreg list' would be wrong); --repair rewrites it")))
            for name, versions in segment.names.items():
                for version, (row, line) in versions.items():
                    listed.add(object_key(name, version))
                    report.kernels += 1
                    try:
                        record = record_of(line, where=backend.url, key=str(segment.key)) if line else {
                            "name": name, "version": version}
                    except KregError as exc:
                        report.problems.append((f"{name}@{version}", str(exc)))
                        continue
                    problems, _ = check_object(backend, row, record)
                    report.problems += [(f"{name}@{version}", p) for p in problems]
    for key, kind in _scan(backend):
        if kind != "file":
            what = "a symbolic link" if kind == "link" else "not a regular file (FIFO, device or socket)"
            report.problems.append((key, f"{what}; kreg never follows or opens it. Remove it by hand."))
            continue
        match = _OBJECT.match(key)
        if match and match["kind"] == "h5" and key not in listed and view is not None:
            report.problems.append((key, "an orphan object no committed index names (a crashed add); "
                                         "'kreg fsck --repair' sets it aside"))
        elif match and match["kind"] == "gone" and object_key(match["name"], int(match["version"])) in listed:
            report.problems.append((key, "a tombstone for a version the index still lists"))
        elif match and match["kind"] == "json" and view is not None:
            report.problems += [(key, p) for p in _check_receipt(backend, view, key, match, listed)]
        elif (view is not None and SEGMENT_KEY.fullmatch(key) and key not in view.segments.values()
              and key not in view.retired):
            report.problems.append((key, "an orphan segment no root names (a writer stopped before or after its "
                                         "commit); 'kreg fsck --repair' deletes it (the index is rebuilt anyway)"))
        elif not match and not _KNOWN.match(key):
            report.problems.append((key, "a file kreg does not write; move it out of the registry"))
        elif key.startswith("tmp/"):
            report.problems.append((key, "a leftover of a crashed writer; the next write sweeps it"))
    return report


def rebuild(backend: Backend, cache: dict[str, Segment]) -> Report:
    """Under the writers' lock: a new index from the objects' own records (see the module docs)."""
    from ..format.spec import parse_record

    report = Report(backend.url, repaired=True)
    old_next: dict[str, int] = {}
    old_keys: set[str] = set()
    old_view: View | None = None
    data, token = backend.read_root()
    try:
        if data is not None:
            old_view = View.parse(data, backend.read, cache, where=backend.url)
            for segment in old_view.all_segments():
                old_keys.add(segment.key or "")
                for name, n in segment.next.items():
                    old_next[name] = max(old_next.get(name, 1), n)
                for name, versions in segment.names.items():
                    old_next[name] = max([old_next.get(name, 1), *(v + 1 for v in versions)])
    except RemoteError:
        raise  # a rebuild needs the store itself
    except KregError as exc:
        report.problems.append(("index.json", f"unreadable, rebuilt from the objects: {exc}"))
        old_view = None
    listed = set()
    if old_view is not None:
        for segment in old_view.all_segments():
            for name, versions in segment.names.items():
                listed.update(object_key(name, v) for v in versions)

    edit = Edit(View.empty(backend.read, cache, where=backend.url))
    stamp = time.strftime("%Y%m%dt%H%M%S")
    placed: set[str] = set()
    receipts: list[str] = []
    for key, kind in _scan(backend):
        if kind == "file" and SEGMENT_KEY.fullmatch(key):
            old_keys.add(key)  # every segment there is: the new index replaces them all
        match = _OBJECT.match(key)
        if kind != "file" or not match:
            continue
        name, version = match["name"], int(match["version"])
        edit.reserve(name, version)
        if match["kind"] == "json":
            receipts.append(key)
        if match["kind"] != "h5":
            continue
        try:
            stored, offset = _read_object(backend, key, name, version)
            record = parse_record(stored, where=key).model_dump(mode="json", exclude_none=True)
            if canonical(record) != canonical(stored):
                raise KregError("its record is not in the current schema's canonical form")
        except (KregError, ValueError) as exc:
            report.problems.append((key, f"set aside: {exc}"))
            _set_aside(backend, key, stamp, report)
            continue
        if old_view is not None and key not in listed:
            report.problems.append((key, "an orphan object (never committed): set aside"))
            _set_aside(backend, key, stamp, report)
            continue
        edit.put(record, offset)
        placed.add(key)
        report.kernels += 1
        report.adopted += key not in listed
    for key in receipts:  # a receipt stays only beside a version the new index holds
        if re.sub(r"\.json$", ".h5", key) not in placed:
            report.problems.append((key, "a receipt for a version the index does not hold: set aside"))
            _set_aside(backend, key, stamp, report)
    for name, n in old_next.items():
        edit.reserve(name, n - 1)
    if old_view is not None:
        try:
            _carry_meta(old_view, edit, placed)
        except KregError as exc:  # a damaged segment: its labels and history cannot be read
            report.problems.append(("index.json", f"labels, deprecations and history not all kept: {exc}"))
    root, _ = edit.write(lambda key, data: backend.put(key, data))
    backend.commit(root, token)
    for key in old_keys - {""} | (set(old_view.retired) if old_view is not None else set()):
        try:
            backend.delete(key)
        except KregError:
            pass
    return report


def _carry_meta(old: View, edit: Edit, placed: set[str]) -> None:
    """Labels, deprecations and history of the old index into the rebuilt one: the history
    whole, labels and deprecations only of versions the new index holds."""
    for segment in old.all_segments():
        for name, facts in segment.meta.items():
            for event in facts.get("events", []):
                edit.event(name, event)
            for label, version in facts.get("labels", {}).items():
                if object_key(name, version) in placed:
                    edit.label(name, label, version)
            for version, reason in facts.get("deprecated", {}).items():
                if object_key(name, int(version)) in placed:
                    edit.deprecate(name, int(version), reason)


def verify_refs(backend: Backend, view: View, builtins: BuiltinLayer | None, refs: list[str],
                progress: Callable[[str], object] | None) -> list[tuple[str, str]]:
    """``Registry.verify``: each of ``refs`` (``name@v``) re-read from the store and checked
    against its record, its hash, the schema and, for a generated kernel, its generator."""
    from ..format.names import parse_ref
    from ..kernels.families import regenerate_problems
    from ..kernels.kernel import Kernel

    problems: list[tuple[str, str]] = []
    for ref in refs:
        if progress is not None:
            progress(ref)
        parsed = parse_ref(ref)
        try:
            if builtins is not None and parsed.name in builtins and not view.versions(parsed.name):
                kernel = builtins.load(parsed, verify=True, cached=False)
                record, array = kernel._record, kernel.array
            else:
                record = view.record(parsed.name, int(parsed.version or 0))
                record_problems, array = check_object(backend, view.row(parsed.name, parsed.version), record)
                problems.extend((ref, p) for p in record_problems)
                if array is None:
                    continue
                kernel = Kernel(record, array)
            kernel.spec  # noqa: B018 - validates the record against the schema
            problems.extend((ref, p) for p in regenerate_problems(record, array))
        except Exception as exc:  # noqa: BLE001 - every failure is reported; none stops the run
            problems.append((ref, str(exc)))
    return problems


def _check_receipt(backend: Backend, view: View, key: str, match: re.Match[str], listed: set[str]) -> list[str]:
    """What is wrong with a receipt: one for a version the index does not list, or one that
    does not say what the index says."""
    name, version = match["name"], int(match["version"])
    if object_key(name, version) not in listed:
        return [("a receipt for a version the index does not list (removed while it was written); "
                 "'kreg fsck --repair' sets it aside")]
    try:
        document = parse_json(backend.read(key))
        row = view.row(name, version)
        same = (canonical(document["record"]) == canonical(view.record(name, version))
                and row is not None and document["offset"] == (row[9] if len(row) > 9 else None))
    except (KregError, ValueError, TypeError, KeyError):
        same = False
    return [] if same else ["a receipt that does not say what the index says; delete it (loads fall back to the index)"]


def _read_object(backend: Backend, key: str, name: str, version: int) -> tuple[dict[str, Any], int | None]:
    """The record of a stored object and where its values start, after checking them."""
    from ..format.guard import GuardedFile

    with GuardedFile(backend.read(key), kind="object", where=f"{backend.url}/{key}") as obj:
        entry = obj.entries.get(f"{name}@{version}")
        if entry is None:
            raise KregError(f"{key} does not hold {name}@{version}")
        obj.read(entry, verify=True)
        return entry.record, entry.offset


def _set_aside(backend: Backend, key: str, stamp: str, report: Report) -> None:
    """Move an object kreg cannot place to ``attic/<time>/``, leaving a tombstone: its number stays taken."""
    target = f"attic/{stamp}/{key}"
    try:
        backend.put(target, backend.read(key))
    except KregError:
        pass
    match = _OBJECT.match(key)
    if match:
        try:
            backend.put(tombstone_key(match["name"], int(match["version"])), TOMBSTONE)
        except KregError:
            pass
    backend.delete(key)
    report.set_aside.append(target)


def _segments(view: View, report: Report) -> list[Segment]:
    out = []
    for prefix in sorted(view.segments):
        try:
            segment = view.segment(prefix)
            segment.block_listing(), segment.names  # parsed lazily: make damage show here, as a problem
            out.append(segment)
        except KregError as exc:
            report.problems.append((str(view.segments[prefix]), str(exc)))
    return out


def _scan(backend: Backend) -> list[tuple[str, str]]:
    scan = getattr(backend, "scan", None)
    if scan is not None:
        return list(scan(""))
    return [(key, "file") for key in backend.keys("")]
