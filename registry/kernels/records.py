"""The one record builder: values and metadata in, a validated record and its stored array out.

The one identity test for dedupe is ``registry.format.content.same_content``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._exceptions import InvalidKernelError
from ..format.content import check_values, content_hash, refuse_masked, to_stored_layout
from .kernel import Kernel


def build_record(
    name: str,
    values: object,
    *,
    layout: str | None = None,
    dtype: str | None = None,
    convolution: bool = False,
    description: str = "",
    tags: Sequence[str] = (),
    license: str | None = None,
    author: str | None = None,
    references: Sequence[str] = (),
    origin: str | None = None,
    normalization: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    separable: Mapping[str, Sequence[float]] | None = None,
    bias: Sequence[float] | None = None,
    via_import: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """A validated record (version 1, the store assigns the real one) and the array to store.

    A :class:`Kernel` as ``values`` brings its layout, generator, normalization, factors,
    bias, tags and description along, and is recorded as the parent when it is stored.

    ``via_import`` is for pack import alone: it may record ``provenance.pack``.

    Raises:
        InvalidKernelError: values or metadata the schema refuses, naming the field, or a claim
            the writer may not make (``origin: builtin``, a ``pack`` entry, a generator that
            does not make these values).
    """
    inherited: dict[str, Any] = {}
    if isinstance(values, Kernel):
        source, values = values, values.array
        src, src_prov = source._record, source._record["provenance"]
        layout = layout or src["layout"]
        description = description or src_prov.get("description", "")
        normalization = normalization or src.get("normalization")
        separable = separable or src.get("separable")
        bias = bias if bias is not None else src.get("bias")
        tags = tags or tuple(src.get("tags", ()))
        references = references or tuple(src_prov.get("references", ()))
        license = license or src_prov.get("license")
        if src_prov.get("generator"):
            inherited["generator"] = src_prov["generator"]
            origin = origin or "generated"
        if src["version"] >= 1:
            inherited["parent"] = source.ref
    array = check_values(values, dtype=dtype)
    refuse_masked(bias, "The bias values")
    if layout is None:
        if array.ndim == 4:
            raise InvalidKernelError(
                "Values of rank 4 need an explicit layout: 'HWIO' (Keras), 'OIHW' "
                f"(PyTorch) or 'HWIM' (depthwise). Received: shape={array.shape}."
            )
        layout = "HW"
    array, stored_layout, source_layout = to_stored_layout(array, layout, convolution=convolution)
    from datetime import datetime, timezone

    prov: dict[str, Any] = {
        **inherited,
        "origin": origin or "handmade",
        "created_at": datetime.now(timezone.utc),
        "author": author,
        "description": description,
        "references": tuple(references),
        "license": license,
        "source_layout": source_layout,
        "source_operation": "convolution" if convolution else "correlation",
        **(provenance or {}),
    }
    record = validated(
        {
            "name": name,
            "version": 1,
            "shape": array.shape,
            "dtype": array.dtype.name,
            "layout": stored_layout,
            "normalization": normalization,
            "separable": separable,
            "bias": None if bias is None else [float(b) for b in bias],
            "tags": tuple(tags),
            "sha256": content_hash(array),
            "provenance": prov,
        }
    )
    from .claims import claim_problems

    problems = claim_problems(record, array, via_import=via_import)
    if problems:
        raise InvalidKernelError(f"The kernel record claims what is not so: {'; '.join(problems)}.")
    return record, array


def validated(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` checked by the schema and dumped as the stored JSON-able record."""
    from pydantic import ValidationError

    from ..format.spec import KernelRecord

    try:
        record = KernelRecord.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (received {e.get('input')!r:.60})"
            for e in exc.errors()[:3]
        )
        raise InvalidKernelError(f"The kernel record is not valid: {problems}.") from None
    return record.model_dump(mode="json", exclude_none=True)
