"""What the catalogue's pages show, as plain data read from a registry's records (no HTML here).

The templates render whatever these rows hold: labels, a deprecation and the events of a
name's history appear on the pages as soon as :func:`team_facts` returns them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..format.names import natural_key

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
    deprecated: str | None = None  # the reason, when the name is deprecated
    history: list[Event] = field(default_factory=list)


@dataclass
class VersionView:
    """One stored version as its section of the kernel page shows it."""

    record: dict[str, Any]
    labels: list[str] = field(default_factory=list)
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
        return self.versions[0]

    @property
    def root(self) -> str:
        """The relative way back to the site root from this page (it sits under ``k/``)."""
        return "../" * self.path.count("/")

    def snippets(self) -> list[tuple[str, str]]:
        """Copy-paste code for the latest version, pinned by number and checked by content."""
        ref, sha = self.latest.ref, self.latest.record.get("sha256", "")
        load = f'k = registry.load("{ref}")\nassert k.sha256 == "{sha}"  # the content pin'
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
    """Labels, deprecation and history of ``name``: what the registry records, else what the
    versions' own records say (each version's creation, by its author)."""
    history = [Event(str(r.get("provenance", {}).get("created_at", "")), str(r.get("provenance", {}).get("author") or ""),
                     f"added {name}@{r['version']}") for r in sorted(versions, key=lambda r: r["version"])]
    return TeamFacts(history=history)


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
                    view.facts.deprecated is not None, _cut(prov.get("description", ""), INDEX_SUMMARY))


def _cut(text: object, most: int) -> str:
    flat = " ".join(str(text).split())
    return flat[:most] + ("…" if len(flat) > most else "")


def natural_order(names: list[str]) -> list[str]:
    return sorted(names, key=natural_key)
