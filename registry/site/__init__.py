"""The static catalogue of a registry: an index of every kernel name and a page per name,
written to a directory or an object-store prefix, with nothing loaded from outside the site.

Pages come from Jinja2 templates with autoescaping (every name, description, reference and tag
is text, never markup), pictures from the plot code (:mod:`registry._plot`). A rebuild writes
only the files whose bytes changed and draws only the pictures it lacks (see ``output.py``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import DeprecatedKernelWarning, InvalidKernelError
from .._lazy import require
from .._version import __version__
from ..format.names import escape
from .model import (
    DETAILED_VERSIONS,
    LISTED_VERSIONS,
    IndexRow,
    NameView,
    VersionView,
    index_row,
    page_path,
    team_facts,
)
from .output import open_output
from .pictures import STYLE, Painter, downloads

#: Size budget of a kernel page (its HTML; pictures and downloads are separate files). Versions
#: past the budget are listed without their pictures and records.
PAGE_BUDGET = 512 * 2**10
#: Size budget of the index: a fixed part and a share per kernel name (it lists every one). A
#: typical row takes about 0.6 KiB; the share holds the largest row the schema allows (64-character
#: tags, a 256-character author of quotes, each escaped) and the filter options it adds.
INDEX_BUDGET, INDEX_PER_NAME = 64 * 2**10, 8 * 2**10

_FILTERS = (("tag", "Tag"), ("origin", "Origin"), ("author", "Author"), ("label", "Label"))
_COLUMNS = (("name", "Name"), ("version", "Ver"), ("shape", "Shape"), ("dtype", "Dtype"), ("layout", "Layout"),
            ("origin", "Origin"), ("author", "Author"), ("date", "Date"))


@dataclass
class SiteReport:
    """What a build did: the names it holds, the files it wrote and removed."""

    where: str
    names: int = 0
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    files: int = 0


def build_site(reg: Any, out: str | os.PathLike[str], patterns: str | Sequence[str] = (), *,
               exclude: str | Sequence[str] = (), progress: Callable[[int, int], object] | None = None) -> SiteReport:
    """Write the catalogue of ``reg``'s kernels matching ``patterns`` (all when empty) to ``out``.

    Args:
        reg: the registry (local or remote) to describe.
        out: a directory (created; an existing one must be empty or a kreg site), or an
            ``s3://`` / ``gs://`` / ``az://`` prefix to publish to.
        patterns, exclude: fnmatch patterns of names, as for ``list_kernels``.
        progress: called with ``(done, total)`` after each kernel name.

    Returns:
        A :class:`SiteReport`.
    """
    env = environment()
    _outside_the_registry(reg, out)
    output = open_output(out)
    output.load_manifest()
    # A local registry is named by its folder alone: the site may be public, the home directory not.
    source = reg.url if "://" in reg.url else os.path.basename(reg.url.rstrip("/"))
    common = {"source": source, "kreg_version": __version__, "csp_script": "'none'"}
    chosen = [patterns] if isinstance(patterns, str) else list(patterns) or ["*"]
    infos = reg.list_kernels(chosen, exclude)
    if not infos:
        raise InvalidKernelError(f"No kernel matches {', '.join(map(repr, chosen))} in {reg.url}; nothing to "
                                 "publish. See 'kreg list'.")
    painter = Painter()
    rows: list[IndexRow] = []
    for n, info in enumerate(infos):
        with warnings.catch_warnings():  # drawn for the catalogue, not loaded for use: the page says it
            warnings.simplefilter("ignore", DeprecatedKernelWarning)
            view = _name_view(reg, info, output, painter)
        output.put(view.path, _kernel_page(env, view, common).encode("utf-8"))
        rows.append(index_row(view, n))
        if progress is not None:
            progress(n + 1, len(infos))
    output.put("assets/site.css", _template_bytes(env, "site.css"))
    output.put("index.html", _index_page(env, rows, common).encode("utf-8"))
    removed = output.finish()
    return SiteReport(output.where, len(rows), output.written, removed, len(output.new))


def _outside_the_registry(reg: Any, out: str | os.PathLike[str]) -> None:
    """A site inside the registry's own directory or prefix would be foreign files to ``kreg fsck``."""
    target, url = os.fspath(out).removeprefix("file://"), reg.url.removeprefix("file://")
    if "://" in target or "://" in url:
        inside = "://" in target and "://" in url and (target.rstrip("/") + "/").startswith(url.rstrip("/") + "/")
    else:
        inside = (os.path.realpath(target) + os.sep).startswith(os.path.realpath(url).rstrip(os.sep) + os.sep)
    if inside:
        raise InvalidKernelError(f"The site output {os.fspath(out)} is inside the registry {reg.url}; kreg fsck would "
                                 "find its files foreign. Write the site beside the registry, not in it.")


def environment() -> Any:
    """The templates: every value autoescaped, and ``visible`` shows control characters and
    bidirectional overrides as escapes (kreg's terminal sanitizer) instead of emitting them."""
    jinja2 = require("jinja2", feature="kreg site")
    env = jinja2.Environment(loader=jinja2.PackageLoader("registry.site", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["visible"] = lambda text: escape(text, quote=False)
    return env


def _name_view(reg: Any, info: Any, output: Any, painter: Painter) -> NameView:
    """The page data of one name; draws the pictures and writes the downloads it lacks."""
    versions = reg.versions(info.name)
    records = reg.records([f"{info.name}@{v}" for v in versions])
    facts = team_facts(reg, info.name, records)
    views = [VersionView(r, labels=sorted(k for k, v in facts.labels.items() if v == r["version"]),
                         deprecated=facts.deprecated.get(r["version"]))
             for r in sorted(records, key=lambda r: -r["version"])]
    view = NameView(info.name, page_path(info.name), views, facts, builtin=info.builtin)
    base = info.name.rsplit("/", 1)[-1]
    loaded: dict[int, Any] = {}

    def kernel(version: VersionView) -> Any:
        if version.version not in loaded:
            loaded[version.version] = reg.load(version.ref)
        return loaded[version.version]

    for i, version in enumerate(views):
        folder, here = f"k/{version.ref}/", f"{base}@{version.version}/"
        sha = version.record["sha256"]
        version.detailed = i < DETAILED_VERSIONS
        if output.has(folder + "kernel.json", sha) and output.has(folder + "pack.h5", sha):
            names = [n for n in ("kernel.npy", "kernel.json", "kernel.safetensors", "pack.h5")
                     if output.has(folder + n, sha)]
        else:
            names = []
            for _, name, data in downloads(reg, kernel(version)):
                output.put(folder + name, data, sha)
                names.append(name)
        version.downloads = [(n.rsplit(".", 1)[-1] if n != "pack.h5" else "pack", here + n) for n in names]
        if version.detailed:
            _pictures(version, folder, here, sha, output, painter, lambda v=version: kernel(v))
            if i + 1 < len(views):
                _difference(version, views[i + 1], folder, here, output, painter, kernel)
    return view


def _pictures(version: VersionView, folder: str, here: str, sha: str, output: Any, painter: Painter,
              kernel: Callable[[], Any]) -> None:
    source = f"{sha} {STYLE}"
    if not output.has(folder + "heat.png", source):
        output.put(folder + "heat.png", painter.heatmap(kernel()), source)
    if not output.has(folder + "dft.png", source):
        output.put(folder + "dft.png", painter.spectrum(kernel()), source)
    version.pictures = {"heat": here + "heat.png", "dft": here + "dft.png"}
    # The responses' titles are kept beside them, so a rebuild that draws nothing still has them.
    titles_key = folder + "responses.txt"
    known = output.old_notes.get(titles_key, "")
    if known.startswith(source + "\n") and all(output.has(folder + f"{key}.png", source)
                                                for key, _ in _title_pairs(known)):
        output.notes[titles_key] = known
        pairs = _title_pairs(known)
    else:
        pairs = []
        for key, title, data in painter.responses(kernel()):
            output.put(folder + f"{key}.png", data, source)
            pairs.append((key, title))
        output.notes[titles_key] = source + "\n" + "\n".join(f"{k}\t{t}" for k, t in pairs)
    version.responses = [(title, here + f"{key}.png") for key, title in pairs]


def _title_pairs(known: str) -> list[tuple[str, str]]:
    return [tuple(line.split("\t", 1)) for line in known.split("\n")[1:] if "\t" in line]  # type: ignore[misc]


def _difference(version: VersionView, previous: VersionView, folder: str, here: str, output: Any,
                painter: Painter, kernel: Callable[[VersionView], Any]) -> None:
    source = f"{previous.record['sha256']} {version.record['sha256']} {STYLE}"
    name, notes_key = f"diff-{previous.version}.png", folder + f"diff-{previous.version}.txt"
    known = output.old_notes.get(notes_key, "")
    kept = known.split("\n", 1)[1].rpartition("\t") if known.startswith(source + "\n") else ("", "", "")
    if kept[1] and (kept[2] != "picture" or output.has(folder + name, source)):
        note, has_picture = kept[0], kept[2] == "picture"
    else:
        data, note = painter.difference(kernel(previous), kernel(version))
        has_picture = data is not None
        if data is not None:
            output.put(folder + name, data, source)
    output.notes[notes_key] = f"{source}\n{note}\t{'picture' if has_picture else 'none'}"
    version.diff = here + name if has_picture else None
    version.diff_note = note


def _kernel_page(env: Any, view: NameView, common: dict[str, Any]) -> str:
    """The page, with as many versions' sections as the budget holds (the latest always)."""
    page = env.get_template("kernel.html")
    section = env.get_template("version.html")
    shell = page.render(view=view, sections=[], omitted=0, budget_kib=PAGE_BUDGET // 1024, root=view.root,
                        listed=LISTED_VERSIONS, **common)
    room = PAGE_BUDGET - len(shell.encode()) - 1024  # the note on omitted versions fits in the 1 KiB
    sections = []
    from markupsafe import Markup

    for version in (v for v in view.versions if v.detailed):
        text = section.render(v=version, raw=True)
        if len(text.encode()) > room and not sections:
            text = section.render(v=version, raw=False)
        if len(text.encode()) > room:
            version.detailed = False
            continue
        room -= len(text.encode())
        sections.append(Markup(text))
    omitted = sum(1 for v in view.versions if not v.detailed)
    return page.render(view=view, sections=sections, omitted=omitted, budget_kib=PAGE_BUDGET // 1024,
                       root=view.root, listed=LISTED_VERSIONS, **common)


def _index_page(env: Any, rows: list[IndexRow], common: dict[str, Any]) -> str:
    from markupsafe import Markup

    script = _template_bytes(env, "index.js").decode("utf-8")
    filters = [(key, title, sorted({value for row in rows for value in _values(row, key)}))
               for key, title in _FILTERS]
    shown = [_row_data(row) for row in rows]
    return env.get_template("index.html").render(rows=shown, filters=filters, columns=_COLUMNS,
                                                 script=Markup(script), root="",
                                                 **{**common, "csp_script": f"'{_csp_hash(script)}'"})


def _values(row: IndexRow, key: str) -> list[str]:
    if key in ("tag", "label"):
        return list(row.tags if key == "tag" else row.labels)
    value = row.origin if key == "origin" else row.author
    return [value] if value else []


def _row_data(row: IndexRow) -> dict[str, Any]:
    size = 1
    for d in row.shape.split("x"):
        size *= int(d) if d.isdigit() else 1
    return {**row.__dict__, "size": size}


def _template_bytes(env: Any, name: str) -> bytes:
    source, _, _ = env.loader.get_source(env, name)
    return source.encode("utf-8")


def _csp_hash(script: str) -> str:
    import base64

    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
