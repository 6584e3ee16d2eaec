"""Several writer processes at once: nothing lost, versions unique, writers wait."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import filelock
import numpy as np
import pytest

from registry import LockTimeoutError, Registry

WRITERS = 4
ADDS = 24


def add_many(path: str, worker: int, barrier) -> list[tuple[str, str]]:
    reg = Registry(path, builtins=False)
    barrier.wait()
    done = []
    for i in range(ADDS):
        name = "shared" if i % 2 else f"own/w{worker}"
        values = np.full((3, 3), worker * 1000 + i, np.float32)
        kernel = reg.add(name, values)
        done.append((kernel.ref, kernel.sha256))
    return done


def test_four_processes_adding_at_once_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # HDF5's own locking is switched off: kreg must not depend on it.
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")
    path = str(tmp_path / "reg")
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(WRITERS)
        with ctx.Pool(WRITERS) as pool:
            results = pool.starmap(add_many, [(path, w, barrier) for w in range(WRITERS)])
    refs = [ref for done in results for ref, _ in done]
    assert len(refs) == len(set(refs)) == WRITERS * ADDS, "a version was issued twice"
    reg = Registry(path, builtins=False)
    assert reg.versions("shared") == list(range(1, WRITERS * ADDS // 2 + 1))
    for done in results:
        for ref, sha in done:
            assert reg.load(ref).sha256 == sha
    assert reg.verify() == []


def hold_then_add(path: str, started) -> float:
    reg = Registry(path, builtins=False)
    started.set()
    t0 = time.monotonic()
    reg.add("waited", [[1.0]])
    return time.monotonic() - t0


def test_a_writer_waits_for_another_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "reg"
    Registry(path, builtins=False).add("first", [[0.0]])
    lock = filelock.FileLock(path / ".lock")
    ctx = mp.get_context("fork")
    with lock, ctx.Pool(1) as pool:
        started = ctx.Manager().Event()
        pending = pool.apply_async(hold_then_add, (str(path), started))
        started.wait(10)
        time.sleep(0.5)
        assert not pending.ready(), "the writer did not wait for the lock"
        lock.release()
        waited = pending.get(timeout=30)
    assert waited >= 0.4
    assert "waited" in Registry(path, builtins=False)


def test_lock_timeout_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "reg"
    Registry(path, builtins=False).add("first", [[0.0]])
    with filelock.FileLock(path / ".lock"):
        reg = Registry(path, builtins=False, lock_timeout=0.2)
        ctx = mp.get_context("fork")
        with ctx.Pool(1) as pool:
            with pytest.raises(LockTimeoutError, match=r"held the lock on .* for over 0.2 s"):
                pool.apply(reg.add, ("late", [[1.0]]))
