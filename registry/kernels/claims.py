"""Provenance claims a record makes that kreg can check, and which writer may make them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Origins only kreg itself assigns: the built-in database is built from kernels_db/, never added.
RESERVED_ORIGINS = frozenset({"builtin"})


def claim_problems(record: Mapping[str, Any], values: np.ndarray, *, via_import: bool = False) -> list[str]:
    """Why ``record`` claims something about its origin that is not so; empty when it does not.

    - ``origin: builtin`` belongs to the built-in database (import turns it into ``imported``);
    - ``provenance.pack`` is written by import only, naming the pack the kernel came in;
    - a ``generator`` must regenerate the values (so ``gaussian(sigma=2)`` means those values).

    ``Registry.add`` calls it with ``via_import=False``; ``import_pack`` with ``True``.

    Example:
        >>> claim_problems({"provenance": {"origin": "builtin"}}, np.zeros((1, 1), "f4"))
        ["origin 'builtin' is reserved for kreg's built-in database; use 'handmade', 'learned' or 'generated'"]
    """
    provenance = record.get("provenance") or {}
    problems = []
    if provenance.get("origin") in RESERVED_ORIGINS:
        problems.append(
            f"origin {provenance['origin']!r} is reserved for kreg's built-in database; "
            "use 'handmade', 'learned' or 'generated'"
        )
    if provenance.get("pack") is not None and not via_import:
        problems.append("provenance.pack is recorded by kreg import only (it names the pack a kernel came in)")
    if provenance.get("generator"):
        from .families import regenerate_problems  # the library layer, only when a generator is claimed

        family = provenance["generator"].get("family")
        problems += [f"the generator {family!r} does not make these values: {p.rstrip('.')}"
                     for p in regenerate_problems(record, values)]
    return problems
