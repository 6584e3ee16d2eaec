"""Writers and readers in several processes at once: nothing lost, versions unique, writers
wait for each other and really interleave, readers never see an error."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import fcntl
import os
import random
import threading
from contextlib import contextmanager
import numpy as np
import pytest

from registry import KernelNotFoundError, LockTimeoutError, Registry

WRITERS = 4
ADDS = 24


@contextmanager
def held_lock(path: Path):  # type: ignore[no-untyped-def]
    """Hold the registry's writers' lock (a flock on .lock) from the test process."""
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


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
    # They contended for real: the order of commits switches between writers more often than
    # writers running one after another could make it (WRITERS - 1 switches); twice that, so a
    # busy machine that lets one writer run ahead for a while still passes (one CI run saw 7).
    order = [int(ref.split("@")[1]) for ref in refs if ref.startswith("shared@")]
    by_version = {int(r.split("@")[1]): w for w, done in enumerate(results) for r, _ in done if r.startswith("shared@")}
    switches = sum(by_version[v] != by_version[v + 1] for v in range(1, len(order)))
    assert switches >= 2 * (WRITERS - 1), f"writers ran one after another ({switches} switches): no real contention"


def hold_then_add(path: str, started) -> float:
    reg = Registry(path, builtins=False)
    started.set()
    t0 = time.monotonic()
    reg.add("waited", [[1.0]])
    return time.monotonic() - t0


def test_a_writer_waits_for_another_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "reg"
    Registry(path, builtins=False).add("first", [[0.0]])
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        with held_lock(path):
            started = ctx.Manager().Event()
            pending = pool.apply_async(hold_then_add, (str(path), started))
            started.wait(10)
            time.sleep(0.5)
            assert not pending.ready(), "the writer did not wait for the lock"
        waited = pending.get(timeout=30)
    assert waited >= 0.4
    assert "waited" in Registry(path, builtins=False)


def test_lock_timeout_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "reg"
    Registry(path, builtins=False).add("first", [[0.0]])
    with held_lock(path):
        reg = Registry(path, builtins=False, lock_timeout=0.2)
        ctx = mp.get_context("fork")
        with ctx.Pool(1) as pool:
            with pytest.raises(LockTimeoutError, match=r"held the lock on .* for over 0.2 s"):
                pool.apply(reg.add, ("late", [[1.0]]))


NAMES = [f"busy/n{i}" for i in range(4)]


def busy_writer(path: str, worker: int, adds: int, removes: bool, barrier) -> list[tuple[str, str]]:
    reg = Registry(path, builtins=False)
    barrier.wait()
    done = []
    for i in range(adds):
        kernel = reg.add(NAMES[(worker + i) % len(NAMES)], np.full((4, 4), worker * 10_000 + i, np.float32))
        done.append((kernel.ref, kernel.sha256))
        if removes and i % 3 == 2:
            reg.remove(done[-2][0])
    return done


def busy_readers(path: str, threads: int, stop, barrier) -> tuple[int, int, list[str]]:
    """Threads that load latest and pinned versions and list, until told to stop."""
    loads, errors = [0], []
    lock = threading.Lock()

    def loop(seed: int) -> None:
        rnd = random.Random(seed)
        reg = Registry(path, builtins=False)
        seen: list[str] = []
        while not stop.is_set():
            try:
                if seen and rnd.random() < 0.4:
                    ref = rnd.choice(seen)
                    try:
                        reg.load(ref)
                    except KernelNotFoundError:
                        if ref in {i.ref for i in reg.list_kernels("busy/*", all_versions=True)}:
                            raise  # it is listed, so it must load
                else:
                    kernel = reg.load(rnd.choice(NAMES))
                    seen.append(kernel.ref)
                if rnd.random() < 0.05:
                    reg.list_kernels("busy/*")
                with lock:
                    loads[0] += 1
                time.sleep(0.0005)  # two cores: leave the writers some CPU
            except KernelNotFoundError as exc:
                if "No kernel named" in str(exc):  # nothing added yet under that name
                    continue
                with lock:
                    errors.append(repr(exc))
            except Exception as exc:  # noqa: BLE001 - every error counts
                with lock:
                    errors.append(repr(exc))

    barrier.wait()
    workers = [threading.Thread(target=loop, args=(seed,)) for seed in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return loads[0], len(errors), errors[:5]


@pytest.mark.parametrize("removes", [False, True], ids=["adds", "adds-and-removes"])
def test_readers_looping_while_writers_add_and_remove_see_no_error(tmp_path: Path, removes: bool) -> None:
    writers, adds, reader_procs, threads = 8, 50, 4, 4  # 16 readers
    path = str(tmp_path / "reg")
    Registry(path, builtins=False).add("seed", [[0.0]])
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(writers + reader_procs)
        stop = manager.Event()
        with ctx.Pool(writers + reader_procs) as pool:
            readers = [pool.apply_async(busy_readers, (path, threads, stop, barrier)) for _ in range(reader_procs)]
            results = pool.starmap(busy_writer, [(path, w, adds, removes, barrier) for w in range(writers)])
            stop.set()
            reads = [r.get(timeout=120) for r in readers]
    refs = [ref for done in results for ref, _ in done]
    assert len(refs) == len(set(refs)) == writers * adds, "a version was issued twice"
    loads = sum(r[0] for r in reads)
    errors = [e for r in reads for e in r[2]]
    assert sum(r[1] for r in reads) == 0, errors
    assert loads > 100, "the readers hardly ran"
    reg = Registry(path, builtins=False)
    present = {i.ref for i in reg.list_kernels("busy/*", all_versions=True)}
    removed = {done[i - 1][0] for done in results for i in range(2, len(done), 3)} if removes else set()
    assert present == set(refs) - removed
    for name in NAMES:
        versions = reg.versions(name)
        assert reg.next_version(name) == max(int(r.split("@")[1]) for r in refs if r.startswith(name + "@")) + 1
        assert versions == sorted(versions)
    assert reg.fsck().problems == [] and reg.verify() == []
    print(f"\n{writers}x{adds} adds, {loads} loads by {reader_procs * threads} readers, 0 errors")
