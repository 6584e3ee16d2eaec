"""SIGKILL during `kreg import` of a 100-kernel pack: all of it or none of it, never unreadable."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from registry import Registry
from registry.format.pack import write_pack
from registry.store.packs import import_pack

KERNELS = 100


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("killpack")
    reg = Registry(tmp / "src")
    rng = np.random.default_rng(0)
    with reg.batch():
        kernels = [reg.add(f"k{i:03d}", rng.standard_normal((5, 5)).astype(np.float32)) for i in range(KERNELS)]
    return write_pack(tmp / "hundred.h5", [(k._record, k.array) for k in kernels], name="hundred")


def importer(path: str, pack: str, prefix: str) -> None:
    import_pack(Registry(path), pack, prefix=prefix)


def run_kills(tmp_path: Path, pack: Path, kills: int, seed: int) -> dict[str, int]:
    path = tmp_path / "reg"
    Registry(path).add("existing", [[1.0]])
    rnd = random.Random(seed)
    ctx = mp.get_context("fork")
    # Kill times span one whole import on this machine, so both outcomes and mid-write kills occur.
    t0 = time.monotonic()
    timing = ctx.Process(target=importer, args=(str(tmp_path / "timing"), str(pack), ""))
    timing.start()
    timing.join()
    duration = time.monotonic() - t0
    outcome = {"all": 0, "none": 0, "inside": 0}
    traces: set[str] = set()
    for trial in range(kills):
        prefix = f"t{trial}/"
        child = ctx.Process(target=importer, args=(str(path), str(pack), prefix))
        child.start()
        # The child spends ~0.3 s parsing (in its own child), then writes: kill across both.
        time.sleep(rnd.uniform(0.05, 1.2 * duration))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        for h5 in path.glob("kernels/**/*.h5"):
            with h5py.File(h5, "r"):
                pass
        reg = Registry(path)
        present = len(reg.list_kernels(f"{prefix}*"))
        assert present in (0, KERNELS), f"trial {trial}: {present} of {KERNELS} kernels visible"
        outcome["all" if present else "none"] += 1
        # A kill inside the import's transaction leaves objects no index names (or tmp files).
        problems = reg.fsck().problems
        assert all(key.startswith("tmp/") or "orphan" in p for key, p in problems), problems
        new = {key for key, _ in problems} - traces
        traces |= new
        outcome["inside"] += bool(new) and not present
    reg = Registry(path)
    reg.fsck(repair=True)
    assert reg.fsck().problems == []
    assert reg.verify() == []
    return outcome


def test_sigkill_during_import_is_all_or_nothing(tmp_path: Path, pack: Path) -> None:
    outcome = run_kills(tmp_path, pack, kills=25, seed=3)
    print(f"\nimport kills: {outcome}")
    assert outcome["all"] + outcome["none"] == 25
    assert outcome["inside"] >= 3, f"too few kills landed inside the import's writes: {outcome}"


@pytest.mark.slow
def test_sigkill_during_import_200_times(tmp_path: Path, pack: Path) -> None:
    outcome = run_kills(tmp_path, pack, kills=200, seed=4)
    print(f"\nimport kills: {outcome}")
