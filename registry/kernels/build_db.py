"""Build the built-in database (a kreg pack) from its reviewable source, ``kernels_db/kernels.toml``.

``make kernels`` (``python -m registry.kernels.build_db``) writes ``kernels_db/builtin.h5``, a pack
like any export (a ``/manifest`` and its ``digest``, so a reader following ``schema/FORMAT.md``
verifies it as one), and checks it with the pack reader; ``tests/test_builtins.py`` rebuilds in
memory and fails if the two disagree.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..format.container import write_container
from .families import get_family, record_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: Fields a ``[[kernel]]`` entry may carry.
ENTRY_FIELDS = {"name", "family", "params", "description", "references", "tags", "convention", "dtype",
                "normalization"}


def load_source(path: Path) -> dict[str, Any]:
    """Parse and sanity-check ``kernels.toml``."""
    with open(path, "rb") as fh:
        source = tomllib.load(fh)
    if source.get("format") != 1:
        raise ValueError(f"{path}: expected format = 1, got {source.get('format')!r}")
    names = [k["name"] for k in source["kernel"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate kernel names {duplicates}")
    for entry in source["kernel"]:
        extra = set(entry) - ENTRY_FIELDS
        if extra:
            raise ValueError(f"{path}: kernel {entry['name']!r} has unknown fields {sorted(extra)}")
    return source


def build(source_path: Path) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Every built-in as a validated ``(record, values)`` pair, in source order."""
    source = load_source(source_path)
    built = []
    for entry in source["kernel"]:
        family = get_family(entry["family"])
        params = family.resolve(entry.get("params", {}))
        values = family.generate(params, dtype=entry.get("dtype", "float32"))
        description = entry.get("description", family.description)
        if "convention" in entry:
            description += f" Convention: {entry['convention']}."  # one line: descriptions are shown in tables
        record = record_for(
            family, params, values, name=entry["name"], version=1, origin="builtin",
            created_at=source["created_at"], description=description,
            references=tuple(entry.get("references", ())), tags=tuple(entry.get("tags", ())),
            license=source["license"], author="kreg", normalization=entry.get("normalization"),
        )
        built.append((record, values))
    return built


#: The built-in pack's name, in its manifest and its ``pack_name`` attribute.
PACK_NAME = "kreg-builtins"


def manifest_bytes(built: list[tuple[dict[str, Any], np.ndarray]], created_at: str) -> bytes:
    """The pack manifest of the built-ins, as export writes one, but dated by the source
    (not the clock) so that the same source always builds the same bytes."""
    from ..format.pack import manifest_for

    manifest = manifest_for(built, name=PACK_NAME, author="kreg")
    manifest["created_at"] = created_at
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def main(source: str = "kernels_db/kernels.toml", out: str = "kernels_db/builtin.h5") -> None:
    from ..format.pack import parse_pack

    built = build(Path(source))
    created_at = load_source(Path(source))["created_at"]
    manifest = manifest_bytes(built, created_at)
    target = Path(out)
    tmp = target.with_suffix(".h5.tmp")
    tmp.unlink(missing_ok=True)
    write_container(tmp, "pack", built, blobs={"manifest": manifest},
                    attrs={"pack_name": PACK_NAME, "digest": hashlib.sha256(manifest).hexdigest()})
    parse_pack(tmp)  # every check an imported pack gets (manifest, digest, hashes, generators)
    tmp.replace(target)
    from .builtins import BuiltinLayer, write_listing

    write_listing(BuiltinLayer(target))
    print(f"wrote {len(built)} built-in kernels to {target} (and their listing beside it)")


if __name__ == "__main__":
    main(*sys.argv[1:])
