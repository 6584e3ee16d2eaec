"""Store benchmarks: every figure is printed as a ratio against an anchor measured in the same run.

Anchors: safetensors ``load_file`` and ``np.load`` of the same array, and the bare import
floor ``python -c "import numpy, h5py, pydantic, click"``. Targets (shared/DESIGN.md):

- small kernel, fresh process: within 2x of safetensors; repeated loads at least as fast;
- 256 MB kernel: at least 0.9x the bandwidth of np.load;
- ``kreg list`` on 10,000 kernels: within 2x of the import floor;
- 1,000 adds in one batch within a few seconds; one add to a 10,000-kernel registry well under 1 s.

Run: ``make bench`` (add ``BENCH_ARGS=--full`` for the 100,000-kernel point).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import registry
from registry import Registry

PY = sys.executable


def fresh(code: str, runs: int) -> float:
    """Median wall time of ``python -c code`` in new processes."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([PY, "-c", code], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def best(fn: Callable[[], object], repeat: int, number: int = 1) -> float:
    """Best per-call time of ``fn`` over ``repeat`` rounds of ``number`` calls."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        out.append((time.perf_counter() - t0) / number)
    return min(out)


def row(label: str, value: str, ratio: float | None = None, target: str = "") -> None:
    ratio_text = f"{ratio:7.2f}x" if ratio is not None else " " * 8
    print(f"  {label:<52} {value:>14} {ratio_text}  {target}")


def bench_small(tmp: Path, runs: int) -> None:
    from safetensors.numpy import load_file, save_file

    print("\nsmall kernel (3x3 float32)")
    values = np.arange(9, dtype=np.float32).reshape(3, 3)
    st_path, npy_path, reg_path = tmp / "k.safetensors", tmp / "k.npy", tmp / "small-reg"
    save_file({"k": values}, str(st_path))
    np.save(npy_path, values)
    Registry(reg_path, builtins=False).add("k", values)
    anchor = fresh(f"from safetensors.numpy import load_file; load_file({str(st_path)!r})", runs)
    npy = fresh(f"import numpy; numpy.load({str(npy_path)!r})", runs)
    ours = fresh(f"import registry; registry.Registry({str(reg_path)!r}, builtins=False).load('k')", runs)
    row("fresh process: safetensors load_file (anchor)", f"{anchor * 1e3:.1f} ms", 1.0)
    row("fresh process: np.load", f"{npy * 1e3:.1f} ms", npy / anchor)
    row("fresh process: registry load", f"{ours * 1e3:.1f} ms", ours / anchor, "target <= 2.00x")
    reg = Registry(reg_path, builtins=False)
    reg.load("k")
    anchor_rep = best(lambda: load_file(str(st_path)), 5, 2000)
    ours_rep = best(lambda: reg.load("k"), 5, 2000)
    pinned_rep = best(lambda: reg.load("k@1"), 5, 2000)
    row("repeated: safetensors load_file (anchor)", f"{anchor_rep * 1e6:.1f} us", 1.0)
    row("repeated: registry load('k')", f"{ours_rep * 1e6:.1f} us", ours_rep / anchor_rep, "target <= 1.00x")
    row("repeated: registry load('k@1')", f"{pinned_rep * 1e6:.1f} us", pinned_rep / anchor_rep, "target <= 1.00x")


def bench_large(tmp: Path, megabytes: int) -> None:
    from safetensors.numpy import load_file, save_file

    print(f"\nlarge kernel ({megabytes} MB float32, page cache warm)")
    n = megabytes * 2**20 // 4
    values = np.random.default_rng(0).standard_normal(n, dtype=np.float32).reshape(-1, 1024)
    npy_path, st_path = tmp / "big.npy", tmp / "big.safetensors"
    np.save(npy_path, values)
    save_file({"k": values}, str(st_path))
    reg = Registry(tmp / "big-reg", builtins=False)
    reg.add("big", values)
    del values
    gb = megabytes * 2**20 / 1e9

    def bandwidth(fn: Callable[[], object]) -> float:
        return gb / best(fn, 5)

    anchor = bandwidth(lambda: np.load(npy_path))
    st = bandwidth(lambda: load_file(str(st_path)))
    fast = bandwidth(lambda: Registry(tmp / "big-reg", builtins=False).load("big", verify=False))
    checked = bandwidth(lambda: Registry(tmp / "big-reg", builtins=False).load("big"))
    row("np.load (anchor)", f"{anchor:.2f} GB/s", 1.0)
    row("safetensors load_file", f"{st:.2f} GB/s", st / anchor)
    row("registry load(verify=False)", f"{fast:.2f} GB/s", fast / anchor, "target >= 0.90x")
    row("registry load() (sha256 checked, the default)", f"{checked:.2f} GB/s", checked / anchor)


def populate(path: Path, count: int) -> float:
    """Add ``count`` small kernels in batches of 1,000; return the time of one full batch."""
    reg = Registry(path, builtins=False)
    rng = np.random.default_rng(count)
    first_batch = 0.0
    for start in range(0, count, 1000):
        t0 = time.perf_counter()
        with reg.batch():
            for i in range(start, min(count, start + 1000)):
                reg.add(f"bench/k{i}", rng.standard_normal((3, 3)).astype(np.float32),
                        description=f"benchmark kernel {i}", tags=["bench"])
        if start == 0:
            first_batch = time.perf_counter() - t0
    return first_batch


def bench_scaling(tmp: Path, sizes: list[int], runs: int) -> None:
    print("\ncost against registry size")
    floor = fresh("import numpy, h5py, pydantic, click", runs)
    row("import floor: numpy, h5py, pydantic, click (anchor)", f"{floor * 1e3:.1f} ms", 1.0)
    kreg = [PY, "-m", "registry", "--db"]
    for count in sizes:
        path = tmp / f"reg-{count}"
        t0 = time.perf_counter()
        batch = populate(path, count)
        build = time.perf_counter() - t0
        if count >= 1000:
            row(f"[{count}] add 1,000 in one batch", f"{batch:.2f} s", None, "target: a few seconds")
        row(f"[{count}] build the registry", f"{build:.2f} s")
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([*kreg, str(path), "list"], check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        listing = statistics.median(times)
        row(f"[{count}] kreg list (fresh process)", f"{listing * 1e3:.1f} ms", listing / floor,
            "target <= 2.00x" if count == 10_000 else "")
        reg = Registry(path, builtins=False)
        one = best(lambda: Registry(path, builtins=False).load(f"bench/k{count // 2}"), 5)
        row(f"[{count}] load one (new Registry: index + object)", f"{one * 1e3:.2f} ms")
        adds = []
        for i in range(5):
            t0 = time.perf_counter()
            reg.add(f"bench/extra{i}", np.full((3, 3), i, np.float32))
            adds.append(time.perf_counter() - t0)
        row(f"[{count}] one add", f"{statistics.median(adds) * 1e3:.1f} ms", None,
            "target well under 1 s" if count == 10_000 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also the 100,000-kernel registry")
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per timing (median)")
    parser.add_argument("--large-mb", type=int, default=256)
    args = parser.parse_args()
    sizes = [10, 1_000, 10_000] + ([100_000] if args.full else [])
    print(f"kreg {registry.__version__} benchmarks, python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory() as tmp:
        bench_small(Path(tmp), args.runs)
        bench_large(Path(tmp), args.large_mb)
        bench_scaling(Path(tmp), sizes, args.runs)


if __name__ == "__main__":
    main()
