"""Hypothesis: any allowed shape, dtype, layout and name survives add -> load bit-exactly."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from registry import Registry
from registry.format.content import DTYPES, content_hash

segment = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,12}", fullmatch=True).filter(lambda s: ".." not in s)
names = st.lists(segment, min_size=1, max_size=3).map("/".join).filter(lambda n: len(n) <= 128)
side = st.integers(1, 7)
# Descriptions may hold any printable text, tabs and newlines; control characters (terminal
# escape sequences) and bidirectional overrides are refused by the schema (test_schema.py).
text = st.text(st.characters(exclude_categories=("Cc", "Cs", "Cf")) | st.sampled_from("\t\n"), max_size=80)


@st.composite
def kernels(draw: st.DrawFn) -> tuple[np.ndarray, str]:
    layout = draw(st.sampled_from(["HW", "HWIO", "HWIM", "OIHW"]))
    shape = tuple(draw(side) for _ in range(2 if layout == "HW" else 4))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    elements = (
        st.floats(width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
        if dtype.kind == "f"
        else None
    )
    values = draw(arrays(dtype, shape, elements=elements))
    return values, layout


@settings(max_examples=150, deadline=None)
@given(name=names, kernel=kernels(), description=text, tags=st.lists(segment, max_size=3))
def test_add_then_load_is_bit_exact(name: str, kernel, description: str, tags) -> None:
    values, layout = kernel
    with tempfile.TemporaryDirectory() as tmp:
        check_round_trip(Path(tmp) / "reg", name, values, layout, description, tags)


def check_round_trip(path: Path, name: str, values: np.ndarray, layout: str, description: str, tags) -> None:
    reg = Registry(path, builtins=False)
    added = reg.add(name, values, layout=layout, description=description, tags=tags)
    fresh = Registry(path, builtins=False)  # no in-process cache
    loaded = fresh.load(added.ref)
    expected = values.transpose(2, 3, 1, 0) if layout == "OIHW" else values
    assert loaded.array.dtype == values.dtype
    assert loaded.array.tobytes() == np.ascontiguousarray(expected).tobytes()
    assert loaded.sha256 == content_hash(np.ascontiguousarray(expected))
    assert loaded.spec == added.spec
    assert loaded.spec.provenance.description == description
    assert list(loaded.spec.tags) == tags
    if layout == "OIHW":
        assert loaded.as_layout("OIHW").tobytes() == values.tobytes()
