"""One set of limits: whatever add, batch and export accept, load and import accept.

Before, add() accepted a 16-segment name and a record over 64 KiB that load, verify and
export then refused. Hypothesis drives the writers to and past every limit that a record
or a name can reach; whatever a writer accepts must read back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from registry import InvalidKernelError, InvalidNameError, Registry
from registry.format.limits import LIMITS
from registry.format.pack import parse_pack, write_pack
from registry.store.packs import import_pack

segment = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,15}", fullmatch=True)
names = st.lists(segment, min_size=1, max_size=LIMITS.max_name_segments + 3).map("/".join)
# Non-ASCII text grows six-fold in the stored JSON (\uXXXX): the record limit is reached fast.
wide = st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_categories=("Cc", "Cs", "Cf"))
texts = st.text(wide, max_size=8192)
references = st.lists(st.text(wide, max_size=2048), max_size=40)
bias_lengths = st.sampled_from([0, 1, 3, 500, 2000, 4000])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(name=names, description=texts, refs=references, outputs=bias_lengths, in_batch=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_what_a_writer_accepts_a_reader_accepts(name: str, description: str, refs: list[str], outputs: int,
                                                in_batch: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if outputs:
        values, layout = rng.standard_normal((1, 1, 1, outputs)).astype(np.float32), "HWIO"
        bias = rng.standard_normal(outputs).astype(np.float32).tolist()
    else:
        values, layout, bias = rng.standard_normal((3, 3)).astype(np.float32), "HW", None
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp) / "reg", builtins=False)
        try:
            if in_batch:
                with reg.batch():
                    added = reg.add(name, values, layout=layout, bias=bias, description=description, references=refs)
            else:
                added = reg.add(name, values, layout=layout, bias=bias, description=description, references=refs)
        except (InvalidKernelError, InvalidNameError) as exc:
            event("refused by the writer")
            assert "at most" in str(exc) or "must not" in str(exc), exc  # refused for a limit, said so
            if isinstance(exc, InvalidKernelError):  # a valid name: nothing of it was written
                assert reg.versions(name) == []
            return
        event("accepted by the writer")
        loaded = Registry(Path(tmp) / "reg", builtins=False).load(added.ref)  # the guarded reader, no cache
        assert loaded.sha256 == added.sha256 and loaded._record == added._record
        assert reg.verify([added.ref]) == []
        pack = write_pack(Path(tmp) / "p.h5", [(added._record, added.array)], name="limits", author="é" * 256)
        parse_pack(pack)
        fresh = Registry(Path(tmp) / "fresh", builtins=False)
        report = import_pack(fresh, pack)  # the child reader, and the record grown by provenance.pack
        assert [s.result for s in report.steps] == [f"{name}@1"]


def test_the_writer_limit_leaves_room_for_what_import_adds() -> None:
    """provenance.pack at its largest: a 256-character name and author, all escaped, a hash,
    a key and a time; the reserve must hold it."""
    import json

    from registry.format.container import record_text

    origin = {"pack": {"name": "\u2603" * 256, "author": "\u2603" * 256, "sha256": "a" * 64,
                       "public_key": "b" * 64, "created_at": "2026-11-25T00:00:00.000000+00:00"}}
    assert len(record_text(origin)) + len(',"pack":') < LIMITS.import_reserve
    assert json.loads(record_text(origin)) == origin


@pytest.mark.parametrize("segments", [LIMITS.max_name_segments, LIMITS.max_name_segments + 1])
def test_the_deepest_name_add_accepts_loads(tmp_path: Path, segments: int) -> None:
    reg = Registry(tmp_path / "reg", builtins=False)
    name = "/".join(["s"] * segments)
    if segments > LIMITS.max_name_segments:
        with pytest.raises(InvalidNameError, match=f"at most {LIMITS.max_name_segments} '/'-separated segments"):
            reg.add(name, [[1.0]])
        return
    reg.add(name, [[1.0]])
    assert Registry(tmp_path / "reg", builtins=False).load(name).ref == f"{name}@1"


def test_a_record_over_the_limit_is_refused_at_add_with_nothing_written(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg", builtins=False)
    with pytest.raises(InvalidKernelError, match=f"kreg stores records of at most {LIMITS.max_writer_record_bytes}"):
        reg.add("big", [[1.0]], references=["x" * 2048] * 32)
    assert reg.versions("big") == []
    assert not list((tmp_path / "reg").rglob("@*.h5"))


@pytest.mark.parametrize("extra", [0, 1])
def test_a_record_at_the_writer_limit_round_trips_and_one_byte_more_is_refused(tmp_path: Path, extra: int) -> None:
    """The boundary itself, which random search rarely lands on: a record of exactly the
    writer's limit exports, imports (growing by provenance.pack) and loads."""
    from datetime import datetime, timezone

    from registry.format.container import record_text

    reg = Registry(tmp_path / "reg", builtins=False)
    when = {"created_at": datetime(2026, 11, 25, 1, 2, 3, 456789, tzinfo=timezone.utc)}
    description = "\u2603" * 8192  # escaped six-fold in the stored JSON
    probe = reg.add("probe", [[1.0]], description=description, references=["r"], provenance=when)
    room = LIMITS.max_writer_record_bytes - len(record_text(probe._record)) + extra
    references = ["r" * 2000] * (room // 2003) + ["r" * (1 + room % 2003)]
    if extra:
        with pytest.raises(InvalidKernelError, match="kreg stores records of at most"):
            reg.add("probe", [[2.0]], description=description, references=references, provenance=when)
        return
    added = reg.add("probe", [[2.0]], description=description, references=references, provenance=when)
    assert len(record_text(added._record)) == LIMITS.max_writer_record_bytes
    pack = write_pack(tmp_path / "p.h5", [(added._record, added.array)], name="n" * 256, author="\u2603" * 256)
    fresh = Registry(tmp_path / "fresh", builtins=False)
    import_pack(fresh, pack)
    assert Registry(tmp_path / "fresh", builtins=False).load("probe@1").spec.provenance.description == description
