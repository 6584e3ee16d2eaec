"""gs:// speaks GCS's preconditions: every create says ``x-goog-if-generation-match: 0`` and every
commit names the generation of the root it read (GCS conditions an update on the generation, not
the ETag; a client given only the ETag refuses to send the update at all).

Against a stand-in of GCS's XML API (``gcsfake.py``: no emulator on the package index speaks it
with preconditions), so these tests check what kreg sends and how it takes a 412; the races are
proven on SeaweedFS and Azurite.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gcsfake import fake_gcs

import registry


@pytest.fixture
def gcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for key in [k for k in os.environ if k.startswith("GOOGLE_")]:  # the developer's own, e.g. a key
        monkeypatch.delenv(key)
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
    first = registry.Registry(url, builtins=False)
    first.add("a", [[1.0]])
    cache, space = DiskCache(tmp_path / "kreg-cache"), first.backend._space  # the URL and its server
    body, token, _ = cache.get_root(space)
    etag, tab, generation = token.partition("\t")
    assert tab and int(generation) > 0
    for version, checked in ((2, 0.0), (3, None)):  # an old entry to re-validate, one confirmed just now
        cache.put_root(space, body, etag, checked=checked)
        assert registry.Registry(url, builtins=False).add("a", [[float(version)]]).ref == f"a@{version}"
    assert cache.get_root(space)[1].count("\t") == 1  # mended: the generation is back
    reader = registry.Registry(url, builtins=False)
    assert [i.ref for i in reader.list_kernels(all_versions=True)] == ["a@1", "a@2", "a@3"]
    np.testing.assert_array_equal(reader.load("a@3").array, [[3.0]])


def test_a_registry_wiped_in_the_middle_of_a_change_is_never_acknowledged(gcs, monkeypatch: pytest.MonkeyPatch) -> None:
    # The wipe took the writer's own object too: the replay found an empty registry and committed
    # a root naming an object that was gone, and acknowledged the add.
    monkeypatch.setenv("KREG_CACHE_BYTES", "0")
    registry.Registry("gs://kreg-gcs/team", builtins=False).add("a", [[1.0]])
    writer = registry.Registry("gs://kreg-gcs/team", builtins=False)
    with pytest.raises(registry.StoreWriteError, match="disappeared while this change was being committed"):
        with writer.batch():
            writer.add("x", [[5.0]])
            with gcs.lock:
                gcs.objects.clear()
    assert registry.Registry("gs://kreg-gcs/team", builtins=False).list_kernels() == []


def test_the_cache_keeps_registries_of_the_same_url_on_two_servers_apart(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # One cache, keyed by URL alone, served one server's kernel for the other's pinned version.
    for key in [k for k in os.environ if k.startswith("GOOGLE_")]:
        monkeypatch.delenv(key)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with fake_gcs("kreg-gcs", tmp_path / "a") as (_, env_a), fake_gcs("kreg-gcs", tmp_path / "b") as (_, env_b):
        monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT", env_b["GOOGLE_SERVICE_ACCOUNT"])
        registry.Registry("gs://kreg-gcs/team", builtins=False).add("k", [[2.0]])
        monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT", env_a["GOOGLE_SERVICE_ACCOUNT"])
        registry.Registry("gs://kreg-gcs/team", builtins=False).add("k", [[1.0]])
        monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT", env_b["GOOGLE_SERVICE_ACCOUNT"])
        on_b = registry.Registry("gs://kreg-gcs/team", builtins=False)
        np.testing.assert_array_equal(on_b.load("k@1").array, [[2.0]])
        np.testing.assert_array_equal(on_b.load("k").array, [[2.0]])

