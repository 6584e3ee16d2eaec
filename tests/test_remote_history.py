"""Labels, deprecations and history on a real S3 server (SeaweedFS): requests counted, racing writers.

Budgets (``benchmarks/bench_remote.py``): ``load("name@label")`` 3 requests cold, 1 warm; the
history of 10,000 events in at most 20; a warm add still 4. Racing processes mixing adds,
labels and deprecations lose nothing, and the history holds exactly one event per
acknowledged change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import registry
from registry.format import index
from registry.store.cache import DiskCache
from registry.store.object import ObjectBackend


def requests(reg: registry.Registry) -> int:
    return sum(reg.backend.stats[verb] for verb in ("get", "put", "delete", "list"))


def test_a_label_loads_in_three_requests_cold_and_one_warm(s3_url: str, tmp_path: Path) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("team/edge", np.eye(3, dtype="f4"))
    reg.add("team/edge", np.eye(3, dtype="f4") * 2)
    reg.label("team/edge@1", "stable")

    cold = registry.Registry(ObjectBackend(s3_url, cache=False), builtins=False)
    np.testing.assert_array_equal(cold.load("team/edge@stable").array, np.eye(3))
    assert requests(cold) == 3  # root, segment (which holds the label), values

    cache = DiskCache(tmp_path / "cache")
    registry.Registry(ObjectBackend(s3_url, cache=cache), builtins=False).load("team/edge@stable")
    warm = registry.Registry(ObjectBackend(s3_url, cache=cache), builtins=False)
    np.testing.assert_array_equal(warm.load("team/edge@stable").array, np.eye(3))
    assert requests(warm) == 1 and warm.backend.stats["bytes_in"] == 0  # the root's 304

    reg.label("team/edge@2", "stable")  # moved by another machine: the next load follows it
    moved = registry.Registry(ObjectBackend(s3_url, cache=cache), builtins=False)
    assert moved.load("team/edge@stable").ref == "team/edge@2"


def test_a_warm_label_costs_two_requests_and_a_warm_add_still_four(s3_url: str) -> None:
    reg = registry.Registry(s3_url, builtins=False)
    reg.add("w/a", [[1.0]])
    reg.backend.stats.clear()
    reg.label("w/a@1", "stable")
    assert {v: n for v, n in reg.backend.stats.items() if n and v in ("get", "put", "delete", "list")} == {"put": 2}
    reg.backend.stats.clear()
    reg.add("w/b", [[2.0]])
    assert {v: n for v, n in reg.backend.stats.items() if n and v in ("get", "put", "delete", "list")} == {"put": 4}


def test_a_history_of_10000_events_reads_in_at_most_20_requests(
        s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # 120 names spread over about as many segments as 10,000 kernels would make (8 to 12)
    monkeypatch.setattr(index, "MAX_ROWS", 32)
    reg = registry.Registry(s3_url, builtins=False)
    names = [f"h/k{i}" for i in range(120)]
    with reg.batch():
        for i, name in enumerate(names):
            reg.add(name, [[float(i)]])
            reg.add(name, [[float(i) + 0.5]])
        for i in range(10_000 - 2 * len(names)):
            name = names[i % len(names)]
            reg.label(f"{name}@{1 + (i // len(names)) % 2}", "stable")  # moves every time: one event each
    cold = registry.Registry(ObjectBackend(s3_url, cache=False), builtins=False)
    events = cold.history("*")
    spent = requests(cold)
    segments = len(cold._state.view().segments)
    assert len(events) == 10_000 and segments >= 6
    assert spent == 1 + segments <= 20  # the root, then each segment once
    assert Counter(e["op"] for e in events) == {"add": 240, "label": 9_760}


#: A racing process: adds, label moves and deprecations on a few shared names, printing each
#: change once it is acknowledged (the commit returned).
RACER = """
import json, sys, numpy as np, registry
url, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
reg = registry.Registry(url, builtins=False)
mine = []
for i in range(count):
    name = f"race/{i % 3}"
    kind = ("add", "add", "label", "deprecate")[i % 4] if mine else "add"
    if kind == "add":
        ref = reg.add(name, np.full((2, 2), worker * 1000 + i, "f4")).ref
        mine.append(ref)
        done = ["add", ref]
    elif kind == "label":
        ref = mine[(i // 4) % len(mine)]
        label = f"w{worker}"
        before = reg.label(ref, label)
        if before == ref:
            continue  # already there: no change, no event
        done = ["label", ref, label]
    else:
        ref = mine[-1]
        reason = f"w{worker} i{i}"
        ref = reg.deprecate(ref, reason)
        done = ["deprecate", ref, reason]
    print(json.dumps(done), flush=True)
"""


def _race(url: str, workers: int, count: int, tmp_path: Path) -> None:
    base = {**os.environ, "PYTHONPATH": str(Path(registry.__file__).parent.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, url, str(w), str(count)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                              env={**base, "KREG_AUTHOR": f"worker {w}", "KREG_CACHE_DIR": str(tmp_path / f"c{w}")})
             for w in range(workers)]
    acked = {}
    for w, proc in enumerate(procs):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        acked[w] = [json.loads(line) for line in out.splitlines()]
    reg = registry.Registry(url, builtins=False)
    events = reg.history("race/*")
    for w in range(workers):
        said = []
        for e in events:
            if e["by"] != f"worker {w}":
                continue
            said.append([e["op"], e["ref"], *([e["label"]] if e["op"] == "label" else []),
                         *([e["reason"]] if e["op"] == "deprecate" else [])])
        # one event per acknowledged change, none for a change that did not commit, in its order
        assert said == acked[w], f"worker {w}"
    listed = {i.ref for i in reg.list_kernels(all_versions=True)}
    assert {ref for w in acked for op, ref, *_ in acked[w] if op == "add"} == listed  # no add lost
    deprecated = {f"{name}@{v}" for name in ("race/0", "race/1", "race/2") for v in reg.deprecations(name)}
    assert deprecated == {ref for w in acked for op, ref, *_ in acked[w] if op == "deprecate"}
    for w in range(workers):  # each label is where its worker's last acknowledged move put it
        moves = [ref for op, ref, *rest in acked[w] if op == "label"]
        for name in {m.partition("@")[0] for m in moves}:
            last = [m for m in moves if m.startswith(name + "@")][-1]
            assert f"{name}@{reg.labels(name)[f'w{w}']}" == last
    assert reg.fsck().problems == []


def test_racing_adds_labels_and_deprecations_lose_nothing(s3_url: str, tmp_path: Path) -> None:
    _race(s3_url, workers=3, count=12, tmp_path=tmp_path)


@pytest.mark.slow
def test_racing_adds_labels_and_deprecations_lose_nothing_long(s3_url: str, tmp_path: Path) -> None:
    _race(s3_url, workers=8, count=50, tmp_path=tmp_path)


def test_a_label_that_loses_the_compare_and_swap_is_replayed_with_its_event_once(s3_url: str) -> None:
    """Writer A moves a label while writer B commits in between: A's commit meets a changed root
    (412), reads it again and replays its move and its event on top; B's change stays."""
    a = registry.Registry(s3_url, builtins=False)
    a.add("cas/k", [[1.0]])
    a.add("cas/k", [[2.0]])
    b = registry.Registry(ObjectBackend(s3_url, cache=False), builtins=False)
    with a.batch():
        a.label("cas/k@1", "stable")
        b.label("cas/k@2", "beta")  # commits first
        b.deprecate("cas/k@2", "racing")
    fresh = registry.Registry(ObjectBackend(s3_url, cache=False), builtins=False)
    assert fresh.labels("cas/k") == {"stable": 1, "beta": 2}
    assert fresh.deprecations("cas/k") == {2: "racing"}
    assert [(e["op"], e.get("label")) for e in fresh.history("cas/k")] == [
        ("add", None), ("add", None), ("label", "beta"), ("deprecate", None), ("label", "stable")]


def test_two_writers_removing_one_version_leave_one_event(s3_url: str) -> None:
    a = registry.Registry(s3_url, builtins=False)
    a.add("rm/k", [[1.0]])
    a.add("rm/k", [[2.0]])
    b = registry.Registry(ObjectBackend(s3_url, cache=False), builtins=False)
    with a.batch():
        a.remove("rm/k@1")
        b.remove("rm/k@1")  # commits first; A replays a removal that changes nothing
    events = registry.Registry(ObjectBackend(s3_url, cache=False), builtins=False).history("rm/k")
    assert [(e["op"], e["ref"]) for e in events] == [("add", "rm/k@1"), ("add", "rm/k@2"), ("remove", "rm/k@1")]
