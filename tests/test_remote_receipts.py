"""Receipts and deferred deletes on a real S3 server (SeaweedFS): requests counted per operation.

A pinned load reads the version's receipt and its values (two requests); a receipt is never
there for a version that is not committed; replaced segments are deleted in bulk, later.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import registry
from registry._exceptions import IntegrityError, KernelNotFoundError
from registry.format import index
from registry.format.content import content_hash
from registry.store.object import ObjectBackend
from registry.store.writer import receipt_key


def requests(reg: registry.Registry) -> dict[str, int]:
    return {verb: reg.backend.stats[verb] for verb in ("get", "put", "delete", "list") if reg.backend.stats[verb]}


def cold(url: str) -> registry.Registry:
    """A registry as a new machine sees it: nothing cached."""
    return registry.Registry(ObjectBackend(url, cache=False), builtins=False)


def raw(url: str) -> ObjectBackend:
    return ObjectBackend(url, cache=False)


def test_a_cold_pinned_load_reads_the_receipt_and_the_values(s3_url: str) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("r/k", np.eye(3, dtype="f4"))
    reg.add("r/k", np.eye(3, dtype="f4") * 2)
    for version, factor in ((1, 1), (2, 2)):
        fresh = cold(s3_url)
        kernel = fresh.load(f"r/k@{version}")
        np.testing.assert_array_equal(kernel.array, np.eye(3) * factor)
        assert requests(fresh) == {"get": 2}
        assert raw(s3_url).read(f"kernels/r/k/@{version}.json")  # the receipt beside the object
    latest = cold(s3_url)
    np.testing.assert_array_equal(latest.load("r/k").array, np.eye(3) * 2)
    assert requests(latest) == {"get": 3}  # root, segment, values: the receipt is for pinned loads


def test_a_missing_receipt_costs_requests_not_the_kernel(s3_url: str) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("r/k", np.full((2, 2), 7, "f4"))
    raw(s3_url).delete(receipt_key("r/k", 1))  # a writer killed between its commit and its receipt
    fresh = cold(s3_url)
    np.testing.assert_array_equal(fresh.load("r/k@1").array, np.full((2, 2), 7))
    assert requests(fresh) == {"get": 4}  # the receipt (404), root, segment, values
    assert reg.fsck().problems == []


def test_removing_deletes_the_receipt_before_the_commit(s3_url: str) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("r/k", np.ones((2, 2), "f4"))
    reg.add("r/k", np.ones((2, 2), "f4") * 3)
    assert raw(s3_url).read(receipt_key("r/k", 1))
    reg.remove("r/k@1")
    with pytest.raises(Exception, match="does not exist"):
        raw(s3_url).read(receipt_key("r/k", 1))
    with pytest.raises(KernelNotFoundError):
        cold(s3_url).load("r/k@1")
    np.testing.assert_array_equal(cold(s3_url).load("r/k@2").array, np.ones((2, 2)) * 3)


def test_a_receipt_that_outlived_its_version_shows_nothing_and_fsck_sets_it_aside(s3_url: str) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("r/k", np.ones((2, 2), "f4"))
    receipt = raw(s3_url).read(receipt_key("r/k", 1))
    reg.remove("r/k@1")
    raw(s3_url).put(receipt_key("r/k", 1), receipt)  # the race: put by the adder after the removal
    with pytest.raises(KernelNotFoundError):
        cold(s3_url).load("r/k@1")
    problems = reg.fsck().problems
    assert [key for key, _ in problems] == [receipt_key("r/k", 1)] and "does not list" in problems[0][1]
    reg.fsck(repair=True)
    assert reg.fsck().problems == []
    with pytest.raises(KernelNotFoundError):
        cold(s3_url).load("r/k@1")


@pytest.mark.parametrize("lie", ["another version's record", "a wrong offset", "not json", "nested too deep",
                                 "a version that is not a number"])
def test_a_receipt_that_lies_is_overruled_by_the_index(s3_url: str, lie: str) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("r/k", np.full((2, 2), 1, "f4"))
    reg.add("r/k", np.full((3, 3), 2, "f4"))
    first, second = (json.loads(raw(s3_url).read(receipt_key("r/k", v))) for v in (1, 2))
    forged = {"another version's record": json.dumps(second).encode(),
              "a wrong offset": json.dumps({**first, "offset": first["offset"] + 4}).encode(),
              "not json": b"{", "nested too deep": b"[" * 200_000,
              "a version that is not a number": json.dumps({**first, "record": {**first["record"], "version": True}}
                                                           ).encode()}[lie]
    raw(s3_url).delete(receipt_key("r/k", 1))
    raw(s3_url).put(receipt_key("r/k", 1), forged)
    kernel = cold(s3_url).load("r/k@1")
    np.testing.assert_array_equal(kernel.array, np.full((2, 2), 1))
    assert kernel.ref == "r/k@1" and type(kernel.version) is int
    assert any(key == receipt_key("r/k", 1) for key, _ in reg.fsck().problems)


def test_a_warm_add_costs_four_requests_and_replaced_segments_go_in_bulk_later(
        s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("w/a", [[1.0]])
    reg.backend.stats.clear()
    reg.add("w/b", [[2.0]])
    assert requests(reg) == {"put": 4}  # object, segment, root, receipt: no read, no delete

    monkeypatch.setattr(index, "RETIRE_BATCH", 2)
    monkeypatch.setattr(index, "RETIRE_AFTER", 0.0)
    root = json.loads(raw(s3_url).read_root()[0] or b"{}")
    retired = set(root["retired"])
    assert len(retired) == 2 and all(raw(s3_url).read(key) for key in retired)  # kept for readers of old roots
    reg.backend.stats.clear()
    reg.add("w/c", [[3.0]])  # two retired and due: one bulk delete, before the commit drops them
    assert requests(reg) == {"put": 4, "delete": 1}
    root = json.loads(raw(s3_url).read_root()[0] or b"{}")
    assert not retired & set(root["retired"]) and len(root["retired"]) == 1  # the one this add replaced
    assert set(raw(s3_url).keys("index/")) == set(root["segments"].values()) | set(root["retired"])
    assert reg.fsck().problems == []
    assert [i.name for i in cold(s3_url).list_kernels()] == ["w/a", "w/b", "w/c"]


def test_verify_and_fsck_check_the_bucket_not_this_machines_cache(s3_url: str) -> None:
    reg = registry.Registry(s3_url, builtins=False)  # its cache holds what it wrote
    reg.add("v/k", np.arange(9, dtype="f4").reshape(3, 3))
    key = "kernels/v/k/@1.h5"
    data = bytearray(raw(s3_url).read(key))
    data[-4:] = b"\x00\x00\x80\x7f"  # the last value, in the bucket only
    raw(s3_url).delete(key)
    raw(s3_url).put(key, bytes(data))
    assert reg.verify() and "sha256" in reg.verify()[0][1]
    assert any(ref == "v/k@1" for ref, _ in reg.fsck().problems)


def test_a_forged_retired_list_never_deletes_a_kernel_or_a_live_segment(
        s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("f/a", [[1.0]])
    store = raw(s3_url)
    data, etag = store.read_root()
    root = json.loads(data or b"{}")
    live = next(iter(root["segments"].values()))
    root["retired"] = {"kernels/f/a/@1.h5": 0, live: 0, "index.json": 0}
    store.commit(json.dumps(root).encode(), etag)
    monkeypatch.setattr(index, "RETIRE_BATCH", 1)
    monkeypatch.setattr(index, "RETIRE_AFTER", 0.0)
    fresh = registry.Registry(s3_url, builtins=False)
    fresh.add("f/b", [[2.0]])
    fresh.add("f/c", [[3.0]])
    np.testing.assert_array_equal(cold(s3_url).load("f/a").array, [[1.0]])
    assert [i.name for i in cold(s3_url).list_kernels()] == ["f/a", "f/b", "f/c"]
    assert fresh.fsck().problems == []


def test_a_version_added_and_removed_in_one_batch_gets_no_receipt(s3_url: str) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    with reg.batch():
        reg.add("b/k", [[1.0]])
        reg.remove("b/k@1")
        reg.add("b/other", [[2.0]])
    assert list(raw(s3_url).keys("kernels/b/k/")) == ["kernels/b/k/@1.gone"]
    assert reg.fsck().problems == []


def test_a_failed_bulk_delete_keeps_the_segments_listed_for_the_next_writer(
        s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    for name in ("d/a", "d/b", "d/c"):
        reg.add(name, [[1.0]])
    before = set(json.loads(raw(s3_url).read_root()[0] or b"{}").get("retired", {}))
    assert len(before) == 3  # the first, empty segment and those of the first two adds
    monkeypatch.setattr(index, "RETIRE_BATCH", 2)
    monkeypatch.setattr(index, "RETIRE_AFTER", 0.0)  # both due now

    def refuse(keys: list[str]) -> None:
        raise OSError("the network went away")

    monkeypatch.setattr(reg.backend, "delete_many", refuse)
    reg.add("d/d", [[1.0]])
    root = json.loads(raw(s3_url).read_root()[0] or b"{}")
    assert before and before <= set(root["retired"])  # not dropped: not deleted
    assert reg.fsck().problems == []
    registry.Registry(s3_url, builtins=False).add("d/e", [[1.0]])  # a writer whose deletes work
    root = json.loads(raw(s3_url).read_root()[0] or b"{}")
    assert set(raw(s3_url).keys("index/")) == set(root["segments"].values()) | set(root.get("retired", {}))
    assert not before & set(raw(s3_url).keys("index/"))


def test_fsck_reports_an_orphan_segment_and_repair_deletes_it(s3_url: str) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("o/k", [[1.0]])
    stray = "index/" + "f" * 32 + ".json"
    raw(s3_url).put(stray, b'{"next":{},"rows":[]}\n')  # a writer killed before its commit
    problems = reg.fsck().problems
    assert [(key, "orphan segment" in p) for key, p in problems] == [(stray, True)]
    reg.fsck(repair=True)
    assert stray not in set(raw(s3_url).keys("index/")) and reg.fsck().problems == []
    np.testing.assert_array_equal(cold(s3_url).load("o/k").array, [[1.0]])


# -- what a party with write access to the bucket can and cannot make a reader accept ----------
# (schema/FORMAT.md, "What a party with write access to the bucket can and cannot do"). Each
# test plays that party with obstore directly: team/b@1's object and receipt replaced by
# team/a@1's, the receipt as copied or rewritten to name team/b@1.

A_VALUES, B_VALUES = np.arange(9, dtype="f4").reshape(3, 3), np.full((2, 2), 5, "f4")


def two_kernels(url: str) -> None:
    """team/a@1 and team/b@1, written by a writer whose cache is none of the readers'."""
    writer = cold(url)
    writer.add("team/a", A_VALUES)
    writer.add("team/b", B_VALUES)


def swap_b_for_a(url: str, *, rename: bool) -> None:
    """team/b@1's object and receipt replaced by team/a@1's; with ``rename`` the receipt's record
    names team/b@1 (a receipt is unsigned: anyone who can write it can write that)."""
    store = raw(url)
    document = json.loads(store.read(receipt_key("team/a", 1)))
    if rename:
        document["record"]["name"] = "team/b"
    for key, data in ((index.object_key("team/b", 1), store.read(index.object_key("team/a", 1))),
                      (receipt_key("team/b", 1), json.dumps(document).encode())):
        store.delete(key)
        store.put(key, data)


@pytest.mark.parametrize("rename", [False, True])
def test_where_this_machine_holds_the_index_a_swapped_receipt_never_serves_another_kernel(
        s3_url: str, rename: bool) -> None:
    two_kernels(s3_url)
    assert [i.ref for i in registry.Registry(s3_url, builtins=False).list_kernels()] == ["team/a@1", "team/b@1"]
    swap_b_for_a(s3_url, rename=rename)  # after this machine read the root listing team/b@1
    reader = registry.Registry(s3_url, builtins=False)  # a new process on this machine
    with pytest.raises(IntegrityError, match="team/b@1"):
        reader.load("team/b@1")
    np.testing.assert_array_equal(reader.load("team/a@1").array, A_VALUES)
    assert {key for key, _ in reader.fsck().problems} == {"team/b@1", receipt_key("team/b", 1)}


def test_a_receipt_copied_from_another_kernel_is_refused_even_by_a_new_machine(s3_url: str) -> None:
    two_kernels(s3_url)
    swap_b_for_a(s3_url, rename=False)
    with pytest.raises(IntegrityError, match="team/b@1"):  # the index decides: team/b@1's hash
        cold(s3_url).load("team/b@1")


def test_an_object_swapped_alone_is_refused_by_its_hash(s3_url: str) -> None:
    two_kernels(s3_url)
    store = raw(s3_url)
    key = index.object_key("team/b", 1)
    data = store.read(index.object_key("team/a", 1))
    store.delete(key)
    store.put(key, data)
    with pytest.raises(IntegrityError, match="team/b@1"):
        cold(s3_url).load("team/b@1")


def test_a_consistent_forgery_is_what_a_new_machine_cannot_tell(s3_url: str) -> None:
    """The other side of the line: a machine holding nothing of the registry takes a receipt
    rewritten to name team/b@1 with the object it describes. What it gets still holds together
    (its values hash to the record's sha256), and fsck, which reads the index, reports it."""
    two_kernels(s3_url)
    swap_b_for_a(s3_url, rename=True)
    kernel = cold(s3_url).load("team/b@1")
    np.testing.assert_array_equal(kernel.array, A_VALUES)
    assert kernel.ref == "team/b@1" and kernel.sha256 == content_hash(A_VALUES)
    assert receipt_key("team/b", 1) in {key for key, _ in registry.Registry(s3_url, builtins=False).fsck().problems}
