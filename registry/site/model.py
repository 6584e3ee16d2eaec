"""What the catalogue's pages show, as plain data read from a registry's records (no HTML here).

The templates render whatever these rows hold: labels, a deprecation and the events of a
name's history appear on the pages as soon as :func:`team_facts` returns them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..format.names import natural_key
from ..store.curation import event_details

#: Versions of one name whose pictures and records are drawn in full; older ones are listed
#: with their downloads (a name with hundreds of versions keeps its page under the budget).
DETAILED_VERSIONS = 12
#: Versions (and events of the history) listed on a kernel page, newest first; the rest are named
#: by count (a name with thousands of versions keeps its page under the budget).
LISTED_VERSIONS = 100
#: Characters of a description shown on the index, and of an author, origin or label; tags
#: and labels a row carries (the kernel page shows everything; these keep the index's size bounded).
INDEX_SUMMARY, INDEX_FIELD, INDEX_TAGS = 120, 64, 16


@dataclass
class Event:
    """One line of a name's history: when, who, what happened."""

    when: str
    who: str
    what: str


@dataclass
class TeamFacts:
    """What a team records about a name beyond its versions' own records."""

    labels: dict[str, int] = field(default_factory=dict)  # label -> version it points at
    deprecated: dict[int, str] = field(default_factory=dict)  # version -> why it was retired
    history: list[Event] = field(default_factory=list)


@dataclass
class VersionView:
    """One stored version as its section of the kernel page shows it."""

    record: dict[str, Any]
    labels: list[str] = field(default_factory=list)
    deprecated: str | None = None  # why, when this version is retired
    pictures: dict[str, str] = field(default_factory=dict)  # kind -> site path
    responses: list[tuple[str, str]] = field(default_factory=list)  # (title, site path)
    diff: str | None = None  # site path of the difference from the previous version
    diff_note: str = ""
    downloads: list[tuple[str, str]] = field(default_factory=list)  # (label, site path)
    detailed: bool = True

    @property
    def ref(self) -> str:
        return f"{self.record['name']}@{self.record['version']}"

    @property
    def version(self) -> int:
        return int(self.record["version"])

    @property
    def provenance(self) -> dict[str, Any]:
        return self.record.get("provenance") or {}

    @property
    def shape(self) -> str:
        return "x".join(str(d) for d in self.record.get("shape", []))

    @property
    def raw_json(self) -> str:
        # ensure_ascii: control characters and bidirectional overrides become \uXXXX text
        return json.dumps(self.record, indent=1, sort_keys=True, ensure_ascii=True)

    def fields(self) -> list[tuple[str, str]]:
        """The record as readable ``(field, value)`` rows, provenance flattened in."""
        rows = [("version", str(self.version)), ("shape", self.shape), ("dtype", self.record.get("dtype", "")),
                ("layout", self.record.get("layout", "")), ("operation", self.record.get("operation", "")),
                ("sha256", self.record.get("sha256", ""))]
        for key in ("normalization",):
            if self.record.get(key):
                rows.append((key, str(self.record[key])))
        if self.record.get("tags"):
            rows.append(("tags", ", ".join(map(str, self.record["tags"]))))
        if self.record.get("separable"):
            sep = self.record["separable"]
            rows.append(("separable", f"column {sep.get('column')} x row {sep.get('row')}"))
        if self.record.get("bias") is not None:
            rows.append(("bias", str(self.record["bias"])))
        for key, value in sorted(self.provenance.items()):
            if isinstance(value, list):
                value = "; ".join(map(str, value))
            elif isinstance(value, dict):
                value = json.dumps(value, sort_keys=True, ensure_ascii=True)
            rows.append((key, str(value)))
        return rows


@dataclass
class NameView:
    """A kernel name: its page, its versions (newest first) and what the team says of it."""

    name: str
    path: str  # the page, relative to the site root
    versions: list[VersionView]
    facts: TeamFacts
    builtin: bool = False

    @property
    def latest(self) -> VersionView:
        """The version ``load(name)`` gives: the newest not deprecated (the newest if all are)."""
        return next((v for v in self.versions if v.deprecated is None), self.versions[0])

    @property
    def retired(self) -> str | None:
        """Why the name is retired, when every version is deprecated (the newest one's reason)."""
        if all(v.deprecated is not None for v in self.versions):
            return self.versions[0].deprecated
        return None

    @property
    def root(self) -> str:
        """The relative way back to the site root from this page (it sits under ``k/``)."""
        return "../" * self.path.count("/")

    def snippets(self) -> list[tuple[str, str]]:
        """Copy-paste code for the latest version, pinned by number and checked by content (a
        content pin, ``name@sha256:...``, loads the same values in any registry holding them)."""
        ref, sha = self.latest.ref, self.latest.record.get("sha256", "")
        load = (f'k = registry.load("{ref}")  # or by content, in any registry that holds it:\n'
                f'# k = registry.load("{self.name}@sha256:{sha[:12]}")\nassert k.sha256 == "{sha}"')
        return [
            ("Keras", f"import registry\n{load}\nlayer = k.to_keras()"),
            ("PyTorch", f"import registry\n{load}\nmodule = k.to_torch()"),
            ("JAX", f"import registry, registry.jax\n{load}\nlayer = registry.jax.to_layer(k)"),
            ("CLI", f"kreg show {ref}\nkreg export {ref} -o kernel.npy"),
        ]


def page_path(name: str) -> str:
    """The page of a kernel name; names are ``[a-z0-9_.-]`` segments, so they are safe paths."""
    return f"k/{name}.html"


def team_facts(reg: Any, name: str, versions: list[dict[str, Any]]) -> TeamFacts:
    """Labels, deprecations and history of ``name`` as the registry records them. A version whose
    add has no event (a built-in, or one added before kreg kept a history) shows its record's
    creation, by its author."""
    labels, deprecated, events = reg.annotations(name)
    told = {e.get("ref") for e in events if e.get("op") in ("add", "copy")}
    history = [Event(str(r.get("provenance", {}).get("created_at", "")), str(r.get("provenance", {}).get("author") or ""),
                     f"added {name}@{r['version']}") for r in versions if f"{name}@{r['version']}" not in told]
    history += [Event(str(e.get("at", "")), str(e.get("by", "")),
                      f"{_VERBS.get(str(e.get('op')), e.get('op'))} {e.get('ref', '')} {event_details(e)}".rstrip())
                for e in events]
    history.sort(key=lambda event: event.when)  # ISO 8601 in UTC: the text sorts as the time
    return TeamFacts(labels=labels, deprecated=deprecated, history=history)


#: How the kernel page says each operation of the history.
_VERBS = {"add": "added", "remove": "removed", "label": "labelled", "unlabel": "unlabelled",
          "deprecate": "deprecated", "undeprecate": "undeprecated", "copy": "copied"}


@dataclass
class IndexRow:
    """One kernel name on the index page."""

    name: str
    href: str
    order: int  # position in natural order (kreg list's)
    version: int
    shape: str
    layout: str
    dtype: str
    origin: str
    author: str
    date: str
    tags: list[str]
    labels: list[str]
    deprecated: bool
    description: str


def index_row(view: NameView, order: int) -> IndexRow:
    """The index's row of a name: its fields cut to what a row holds (the page shows them whole)."""
    latest, prov = view.latest, view.latest.provenance
    return IndexRow(view.name, view.path, order, latest.version, latest.shape, latest.record.get("layout", ""),
                    latest.record.get("dtype", ""), _cut(prov.get("origin", ""), INDEX_FIELD),
                    _cut(prov.get("author") or "", INDEX_FIELD), str(prov.get("created_at", ""))[:10],
                    [str(t) for t in latest.record.get("tags", [])][:INDEX_TAGS],
                    [_cut(label, INDEX_FIELD) for label in sorted(view.facts.labels)][:INDEX_TAGS],
                    view.retired is not None, _cut(prov.get("description", ""), INDEX_SUMMARY))


def _cut(text: object, most: int) -> str:
    flat = " ".join(str(text).split())
    return flat[:most] + ("…" if len(flat) > most else "")


def natural_order(names: list[str]) -> list[str]:
    return sorted(names, key=natural_key)
