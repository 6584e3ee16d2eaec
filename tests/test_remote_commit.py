"""A commit whose answer is lost, against the real servers (SeaweedFS, Azurite).

The fault is injected at the client call: the root's PUT is really sent and then its answer
"lost" (a connection error raised after it returned), or the error is raised before anything is
sent; in two more variants another writer commits in between. The add must be acknowledged
exactly once, with nothing duplicated, nothing lost and the versions gapless, as the server's own
listing of the objects says.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import obstore
import obstore.exceptions as oe
import pytest

import registry
from registry.format import index as index_format

LOST = "Generic error: error sending request for url (http://127.0.0.1/index.json): connection closed before " \
       "message completed"


def _lose_root_put(monkeypatch: pytest.MonkeyPatch, *, send: bool, meanwhile: Callable[[], Any] | None = None,
                   times: int = 1) -> list[str]:
    """Make the next ``times`` PUTs of the root fail with a connection error, after sending it
    (``send``) or before; ``meanwhile`` runs first (another writer). Returns a log of the faults."""
    real = obstore.put
    log: list[str] = []

    def put(store: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        if path != "index.json" or len(log) >= times:
            return real(store, path, *args, **kwargs)
        log.append("sent" if send else "unsent")
        if meanwhile is not None and not send:
            meanwhile()
        if send:
            real(store, path, *args, **kwargs)
            if meanwhile is not None:
                meanwhile()
        raise oe.GenericError(LOST)

    monkeypatch.setattr(obstore, "put", put)
    return log


def _server_state(url: str, *, allowed: tuple[str, ...] = ()) -> tuple[dict[str, list[int]], list[str]]:
    """Versions by name as a fresh reader lists them, and the kernel objects the bucket holds;
    fsck finds no problem but those on the keys ``allowed``."""
    fresh = registry.Registry(url, builtins=False)
    versions: dict[str, list[int]] = {}
    for info in fresh.list_kernels(all_versions=True):
        versions.setdefault(info.name, []).append(info.version)
    store = fresh.backend.store
    objects = sorted(meta["path"] for page in obstore.list(store, prefix="kernels/") for meta in page
                     if meta["path"].endswith(".h5"))
    report = fresh.fsck()
    assert [key for key, _ in report.problems if key not in allowed] == [], report.problems
    return {name: sorted(vs) for name, vs in versions.items()}, objects


@pytest.mark.parametrize("send", [True, False], ids=["answer-lost-after-landing", "failed-before-sending"])
def test_a_commit_whose_answer_is_lost_is_acknowledged_exactly_once(remote_url: str, send: bool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    reg = registry.Registry(remote_url, builtins=False)
    reg.add("k", [[1.0]])
    with monkeypatch.context() as patch:
        log = _lose_root_put(patch, send=send)
        kernel = reg.add("k", [[2.0]])
    assert log == ["sent" if send else "unsent"]  # the fault did happen
    assert kernel.ref == "k@2"
    versions, objects = _server_state(remote_url)
    assert versions == {"k": [1, 2]}
    assert objects == ["kernels/k/@1.h5", "kernels/k/@2.h5"]
    assert registry.Registry(remote_url, builtins=False).load("k@2").array.tolist() == [[2.0]]


@pytest.mark.parametrize("send", [True, False], ids=["another-writer-built-on-ours", "another-writer-first"])
def test_a_lost_answer_with_another_writer_in_between(remote_url: str, send: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Sent: the other writer's root is built on ours (ours landed: success, no replay, which would
    # add k a second time). Not sent: the other writer's root is not ours (replay on top of it).
    reg = registry.Registry(remote_url, builtins=False)
    reg.add("k", [[1.0]])
    other = registry.Registry(remote_url, builtins=False)
    acked: list[str] = []
    with monkeypatch.context() as patch:
        log = _lose_root_put(patch, send=send, meanwhile=lambda: acked.append(other.add("o", np.ones((1, 1))).ref))
        acked.append(reg.add("k", [[2.0]]).ref)
    assert log == ["sent" if send else "unsent"] and sorted(acked) == ["k@2", "o@1"]
    versions, objects = _server_state(remote_url)
    assert versions == {"k": [1, 2], "o": [1]}
    assert objects == ["kernels/k/@1.h5", "kernels/k/@2.h5", "kernels/o/@1.h5"]


def test_a_lost_answer_under_a_root_sharing_our_unchanged_segments(remote_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Two segments (one name each). Ours changes one and keeps the other's key; the other writer,
    # first, changed that other one. Its root names our kept key (as a retired one) but not the
    # key only our commit created: ours did not land, and is replayed on top.
    monkeypatch.setattr(index_format, "MAX_ROWS", 1)
    names = ["a", "b", "c", "d", "e", "f", "g", "h"]
    mine = names[0]
    theirs = next(n for n in names if index_format.name_bits(n, 1) != index_format.name_bits(mine, 1))
    reg = registry.Registry(remote_url, builtins=False)
    reg.add(mine, [[1.0]])
    reg.add(theirs, [[1.0]])
    assert len(json.loads(reg.backend.read_root()[0])["segments"]) == 2
    other = registry.Registry(remote_url, builtins=False)
    acked: list[str] = []
    with monkeypatch.context() as patch:
        log = _lose_root_put(patch, send=False, meanwhile=lambda: acked.append(other.add(theirs, [[2.0]]).ref))
        acked.append(reg.add(mine, [[2.0]]).ref)
    assert log == ["unsent"] and sorted(acked) == sorted([f"{mine}@2", f"{theirs}@2"])
    versions, _ = _server_state(remote_url)
    assert versions == {mine: [1, 2], theirs: [1, 2]}


def test_a_root_that_cannot_be_read_back_leaves_the_outcome_unknown(s3_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Every PUT and every read of the root fails: the writer cannot know, says so, and keeps what
    # the root may name.
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("k", [[1.0]])
    _lose_root_put(monkeypatch, send=False, times=10**6)
    real_get = obstore.get

    def get(store: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        if path == "index.json":
            raise oe.GenericError(LOST)
        return real_get(store, path, *args, **kwargs)

    monkeypatch.setattr(obstore, "get", get)
    with pytest.raises(registry.RemoteError, match="may or may not have landed") as caught:
        reg.add("k", [[2.0]])
    assert caught.value.committed  # type: ignore[attr-defined]
    assert "\n" not in str(caught.value)


def test_a_landed_commit_removed_meanwhile_is_not_replayed_back(remote_url: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Ours landed, its answer was lost, and another writer removed the version at once: taking
    # that root for a conflict would replay the add and list a version whose object is deleted.
    reg = registry.Registry(remote_url, builtins=False)
    reg.add("k", [[1.0]])
    other = registry.Registry(remote_url, builtins=False)
    removed: list[str] = []

    def remove() -> None:
        assert "k@2" in [i.ref for i in other.list_kernels(all_versions=True)]  # it sees ours landed
        removed.extend(other.remove("k@2"))

    with monkeypatch.context() as patch:
        _lose_root_put(patch, send=True, meanwhile=remove)
        assert reg.add("k", [[2.0]]).ref == "k@2"
    assert removed == ["k@2"]
    # The receipt of k@2, put after its commit, outlived the removal: the known race that fsck
    # names and readers overrule (see test_remote_receipts.py).
    versions, objects = _server_state(remote_url, allowed=("kernels/k/@2.json",))
    assert versions == {"k": [1]} and objects == ["kernels/k/@1.h5"]


def _objects(url: str) -> list[str]:
    """The keys under kernels/ as the server lists them."""
    store = registry.Registry(url, builtins=False).backend.store
    return sorted(meta["path"] for page in obstore.list(store, prefix="kernels/") for meta in page)


def test_a_number_added_and_removed_meanwhile_is_not_issued_again(remote_url: str) -> None:
    # The writer builds on the root it holds (k@1, next 2) while another writer adds k@2 and
    # removes it, deleting its object: the writer's create-only put of @2 then succeeds, and
    # replaying it on the new root would list k@2 again, other values under an acknowledged,
    # removed ref.
    writer = registry.Registry(remote_url, builtins=False)
    writer.add("k", [[1.0]])
    other = registry.Registry(remote_url, builtins=False)
    assert other.add("k", [[2.0]]).ref == "k@2"
    assert other.remove("k@2") == ["k@2"]
    kernel = writer.add("k", [[3.0]])
    assert kernel.ref == "k@3" and kernel.version == 3
    fresh = registry.Registry(remote_url, builtins=False)
    assert [i.ref for i in fresh.list_kernels(all_versions=True)] == ["k@1", "k@3"]
    assert fresh.load("k@3").array.tolist() == [[3.0]]
    assert _objects(remote_url) == ["kernels/k/@1.h5", "kernels/k/@1.json", "kernels/k/@2.gone",
                                    "kernels/k/@3.h5", "kernels/k/@3.json"]
    assert fresh.fsck().problems == []


def test_a_number_skipped_for_our_object_stays_ours(remote_url: str) -> None:
    # Below the new root's next version but never issued: another writer found our object at @2
    # and took @3. Ours keeps @2 (no tombstone there), and nothing is moved.
    writer = registry.Registry(remote_url, builtins=False)
    writer.add("k", [[1.0]])
    other = registry.Registry(remote_url, builtins=False)
    with writer.batch():
        assert writer.add("k", [[2.0]]).ref == "k@2"
        assert other.add("k", [[3.0]]).ref == "k@3"  # @2 is taken by our object: the other takes @3
    fresh = registry.Registry(remote_url, builtins=False)
    assert [i.ref for i in fresh.list_kernels(all_versions=True)] == ["k@1", "k@2", "k@3"]
    assert fresh.load("k@2").array.tolist() == [[2.0]]
    assert fresh.fsck().problems == []


def test_a_removed_object_stays_until_its_tombstone_is_there(remote_url: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # The tombstone's put fails (best effort after the commit): the object is kept, an orphan
    # fsck names, so its number can never be created again.
    writer = registry.Registry(remote_url, builtins=False)
    writer.add("k", [[1.0]])
    other = registry.Registry(remote_url, builtins=False)
    other.add("k", [[2.0]])
    real = obstore.put

    def put(store: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith(".gone"):
            raise oe.GenericError(LOST)
        return real(store, path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(obstore, "put", put)
        assert other.remove("k@2") == ["k@2"]
    assert "kernels/k/@2.h5" in _objects(remote_url)
    assert writer.add("k", [[3.0]]).ref == "k@3"
    fresh = registry.Registry(remote_url, builtins=False)
    assert [i.ref for i in fresh.list_kernels(all_versions=True)] == ["k@1", "k@3"]
    assert [problem for _, problem in fresh.fsck().problems if "orphan" not in problem] == []


@pytest.mark.parametrize("send", [True, False], ids=["answer-lost-after-landing", "failed-before-sending"])
def test_an_object_put_whose_answer_is_lost_is_sent_again(remote_url: str, send: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The client does not resend a conditional PUT: a late answer under load failed the add.
    reg = registry.Registry(remote_url, builtins=False)
    reg.add("k", [[1.0]])
    real = obstore.put
    log: list[str] = []

    def put(store: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith(".h5") and not log:
            log.append(path)
            if send:
                real(store, path, *args, **kwargs)
            raise oe.GenericError(LOST)
        return real(store, path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(obstore, "put", put)
        assert reg.add("k", [[2.0]]).ref == "k@2"
    assert log == ["kernels/k/@2.h5"]
    versions, objects = _server_state(remote_url)
    assert versions == {"k": [1, 2]} and objects == ["kernels/k/@1.h5", "kernels/k/@2.h5"]


def test_a_receipt_delete_whose_answer_is_lost_is_sent_again(remote_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A removal deletes the version's receipt before its commit; a dropped connection there (the
    # client's own quick retries spent within one stall of a loaded server) failed the removal.
    reg = registry.Registry(remote_url, builtins=False)
    reg.add("k", [[1.0]])
    reg.add("k", [[2.0]])
    real = obstore.delete
    log: list[str] = []

    def delete(store: Any, paths: Any, *args: Any, **kwargs: Any) -> Any:
        if paths == "kernels/k/@2.json" and not log:
            log.append(paths)
            raise oe.GenericError(LOST)
        return real(store, paths, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(obstore, "delete", delete)
        assert reg.remove("k@2") == ["k@2"]
    assert log == ["kernels/k/@2.json"]
    versions, objects = _server_state(remote_url)
    assert versions == {"k": [1]} and objects == ["kernels/k/@1.h5"]
