"""The soak: 8 processes x 50 mixed operations (adds, removes, pinned loads, listings) on a real
SeaweedFS and a real Azurite while two CPU-bound processes keep both cores busy, several rounds
in a row; nothing acknowledged is lost, nothing removed comes back, nothing unacknowledged
appears, versions are unique.

A long run: ``pytest --runslow tests/test_soak.py`` (``KREG_SOAK_ROUNDS``, default 5, rounds per
store). The quick race tests in ``test_remote_races.py`` run in every suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import registry
from registry.format.content import content_hash

#: One worker: 50 operations drawn from a seeded generator; prints one line per acknowledged change.
WORKER = """
import random, sys, numpy as np, registry
url, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
reg = registry.Registry(url, builtins=False)
rng = random.Random(worker)
mine = []
for i in range(count):
    roll = rng.random()
    if roll < 0.6 or not mine:
        k = reg.add(f"soak/{rng.randrange(6)}", np.full((3, 3), worker * 1000 + i, "f4"), description=f"w{worker}")
        mine.append(k.ref)
        print("add", k.ref, k.sha256, flush=True)
    elif roll < 0.75:
        ref = mine.pop(rng.randrange(len(mine)))
        reg.remove(ref)
        print("rm", ref, "-", flush=True)
    elif roll < 0.9:
        ref = rng.choice(mine)
        assert reg.load(ref).ref == ref
    else:
        reg.list_kernels("soak/*", all_versions=True)
"""

BURN = "while True: pass"


def _round(url: str, root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(registry.__file__).parent.parent)}
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(2)]
    try:
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(w), "50"], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root) for w in range(8)]
        added: dict[str, str] = {}
        removed: set[str] = set()
        for p in workers:
            out, err = p.communicate(timeout=900)
            assert p.returncode == 0, err[-3000:]
            for line in out.splitlines():
                verb, ref, sha = line.split()
                if verb == "add":
                    added[ref] = sha
                else:
                    removed.add(ref)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    reg = registry.Registry(url, builtins=False)
    listed = {i.ref: i.sha256 for i in reg.list_kernels("soak/*", all_versions=True)}
    kept = {ref: added[ref] for ref in added if ref not in removed}
    lost = sorted(set(kept) - set(listed))
    back = sorted(set(listed) & removed)
    unacked = sorted(set(listed) - set(added))
    assert (lost, back, unacked) == ([], [], []), "lost, removed but back, never acknowledged"
    assert kept == listed  # and each with the hash acknowledged
    for ref, sha in listed.items():
        assert content_hash(reg.load(ref).array) == sha
    assert not removed & set(listed)
    report = reg.fsck()
    assert all("orphan" in problem for _, problem in report.problems), report.problems
    for name in {ref.partition("@")[0] for ref in added}:  # every number issued once, none reused
        issued = sorted(int(ref.partition("@")[2]) for ref in added if ref.startswith(name + "@"))
        assert issued == list(range(1, len(issued) + 1)), name


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_soak_under_load(remote_url: str, tmp_path: Path) -> None:
    rounds = int(os.environ.get("KREG_SOAK_ROUNDS", "5"))
    for n in range(rounds):
        _round(f"{remote_url}/round{n}", tmp_path)
