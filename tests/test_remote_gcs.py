"""gs:// speaks GCS's preconditions: every create says ``x-goog-if-generation-match: 0`` and every
commit names the generation of the root it read (GCS conditions an update on the generation, not
the ETag; a client given only the ETag refuses to send the update at all).

Against a stand-in of GCS's XML API (``gcsfake.py``: no emulator on the package index speaks it
with preconditions), so these tests check what kreg sends and how it takes a 412; the races are
proven on SeaweedFS and Azurite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gcsfake import fake_gcs

import registry


@pytest.fixture
def gcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for key in ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(key, raising=False)
    with fake_gcs("kreg-gcs", tmp_path) as (state, env):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield state


def test_creates_are_create_only_and_commits_name_the_generation_they_read(gcs) -> None:
    reg = registry.Registry("gs://kreg-gcs/team", builtins=False)
    reg.add("a", [[1.0]])
    reg.add("a", [[2.0]])
    reg.add("b", np.eye(3))
    fresh = registry.Registry("gs://kreg-gcs/team", builtins=False)
    assert [i.ref for i in fresh.list_kernels(all_versions=True)] == ["a@1", "a@2", "b@1"]
    np.testing.assert_array_equal(fresh.load("a@1").array, [[1.0]])
    assert fresh.verify() == []

    roots = [condition for key, condition in gcs.conditions if key == "team/index.json"]
    others = {condition for key, condition in gcs.conditions if key != "team/index.json"}
    assert others == {"0"}  # objects, segments and receipts: create-only
    assert roots[0] == "0" and len(roots) == 4  # the empty root is created, then three commits
    generations = [int(c) for c in roots[1:]]
    assert all(g > 0 for g in generations) and generations == sorted(set(generations))


def test_a_commit_on_a_stale_root_is_refused_and_replayed(gcs) -> None:
    first = registry.Registry("gs://kreg-gcs/team", builtins=False)
    second = registry.Registry("gs://kreg-gcs/team", builtins=False)
    first.add("a", [[1.0]])
    second.add("a", [[2.0]])  # second has seen the root: first's copy is now stale
    first.add("a", [[3.0]])   # builds on its stale root optimistically: 412, re-read, replay
    reader = registry.Registry("gs://kreg-gcs/team", builtins=False)
    refs = {i.ref: float(reader.load(i.ref).array[0, 0]) for i in reader.list_kernels(all_versions=True)}
    assert refs == {"a@1": 1.0, "a@2": 2.0, "a@3": 3.0}
    stale = [c for key, c in gcs.conditions if key == "team/index.json"]
    assert len(stale) == len(set(stale)) + 1  # one generation was offered twice: the refused commit


def test_a_root_cached_with_its_etag_only_is_read_again_not_committed_on(gcs, tmp_path: Path) -> None:
    # A cache written before tokens carried the generation holds the bare ETag: a commit on it is
    # refused by the client, and a 304 on that ETag would keep it forever (every add failed).
    from registry.store.cache import DiskCache

    url = "gs://kreg-gcs/team"
    registry.Registry(url, builtins=False).add("a", [[1.0]])
    cache = DiskCache(tmp_path / "kreg-cache")
    body, token, _ = cache.get_root(url)
    etag, tab, generation = token.partition("\t")
    assert tab and int(generation) > 0
    for version, checked in ((2, 0.0), (3, None)):  # an old entry to re-validate, one confirmed just now
        cache.put_root(url, body, etag, checked=checked)
        assert registry.Registry(url, builtins=False).add("a", [[float(version)]]).ref == f"a@{version}"
    assert cache.get_root(url)[1].count("\t") == 1  # mended: the generation is back
    reader = registry.Registry(url, builtins=False)
    assert [i.ref for i in reader.list_kernels(all_versions=True)] == ["a@1", "a@2", "a@3"]
    np.testing.assert_array_equal(reader.load("a@3").array, [[3.0]])
