"""Store benchmarks: every figure is printed as a ratio against an anchor measured in the same run.

Anchors: safetensors ``load_file`` and ``np.load`` of the same array in fresh processes, and the
bare import floor ``python -c "import numpy, h5py, pydantic, click"``. Every "fresh process"
figure is a new ``python`` running what a user runs, in the configuration users get by default
(the built-in layer on, the registry from ``KREG_DB``). Targets (shared/DESIGN.md, issue 9):

- small kernel, fresh process: within 2x of safetensors (stretch: 1.2x of np.load);
  repeated loads of one version (cache hit) at least as fast as safetensors;
- 256 MB kernel: ``load(verify=False)`` at least 0.9x (stretch 0.95x) of np.load's bandwidth;
- ``kreg list`` (every row printed): within 2x of the floor at 10,000, 3x at 100,000;
- fresh-process load by name at 100,000 within 1.5x of the same at 10;
- one ``kreg add`` (fresh process) at 100,000 within 2x of the same at 10;
- 1,000 adds in one batch within a few seconds.

Run: ``make bench`` (``BENCH_ARGS=--full`` adds the 100,000-kernel point; building it takes minutes).
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


def fresh(argv: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median wall time of a command in new processes (its stdout read and dropped)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.PIPE, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def py(code: str) -> list[str]:
    return [PY, "-c", code]


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
    print(f"  {label:<60} {value:>12} {ratio_text}  {target}", flush=True)


def bench_small(tmp: Path, runs: int) -> None:
    from safetensors.numpy import load_file, save_file

    print("\nsmall kernel (3x3 float32)")
    values = np.arange(9, dtype=np.float32).reshape(3, 3)
    st_path, npy_path, reg_path = tmp / "k.safetensors", tmp / "k.npy", tmp / "small-reg"
    save_file({"k": values}, str(st_path))
    np.save(npy_path, values)
    Registry(reg_path).add("team/k", values)
    env = {"KREG_DB": str(reg_path)}
    anchor = fresh(py(f"from safetensors.numpy import load_file; load_file({str(st_path)!r})"), runs)
    npy = fresh(py(f"import numpy; numpy.load({str(npy_path)!r})"), runs)
    ours = fresh(py("import registry; registry.load('team/k')"), runs, env)
    pinned = fresh(py("import registry; registry.load('team/k@1')"), runs, env)
    no_builtins = fresh(py(f"import registry; registry.Registry({str(reg_path)!r}, builtins=False).load('team/k')"),
                        runs)
    row("fresh process: safetensors load_file (anchor)", f"{anchor * 1e3:.1f} ms", 1.0)
    row("fresh process: np.load", f"{npy * 1e3:.1f} ms", npy / anchor)
    row("fresh process: registry.load('team/k') (default config)", f"{ours * 1e3:.1f} ms", ours / anchor,
        "target <= 2.00x")
    row("  the same against np.load", "", ours / npy, "stretch <= 1.20x")
    row("fresh process: registry.load('team/k@1') (default config)", f"{pinned * 1e3:.1f} ms", pinned / anchor)
    row("fresh process: Registry(path, builtins=False).load", f"{no_builtins * 1e3:.1f} ms", no_builtins / anchor)
    reg = Registry(reg_path)
    reg.load("team/k")
    anchor_rep = best(lambda: load_file(str(st_path)), 5, 2000)
    hit = best(lambda: reg.load("team/k"), 5, 2000)
    reread = best(lambda: Registry(reg_path).load("team/k"), 5, 200)
    reread_nocache = best(lambda: reg.load("team/k", verify=True) if reg._memo.clear() is None else None, 5, 200)
    row("repeated: safetensors load_file (anchor)", f"{anchor_rep * 1e6:.1f} us", 1.0)
    row("repeated: load('team/k'), same Registry (memory cache hit)", f"{hit * 1e6:.1f} us", hit / anchor_rep,
        "target <= 1.00x")
    row("repeated: load, same Registry, values re-read from disk", f"{reread_nocache * 1e6:.1f} us",
        reread_nocache / anchor_rep)
    row("repeated: new Registry each time (root, segment, values)", f"{reread * 1e6:.1f} us", reread / anchor_rep)


def bench_large(tmp: Path, megabytes: int) -> None:
    from safetensors.numpy import load_file, save_file

    print(f"\nlarge kernel ({megabytes} MB float32, page cache warm, a new Registry per load)")
    n = megabytes * 2**20 // 4
    values = np.random.default_rng(0).standard_normal(n, dtype=np.float32).reshape(-1, 1024)
    npy_path, st_path = tmp / "big.npy", tmp / "big.safetensors"
    np.save(npy_path, values)
    save_file({"k": values}, str(st_path))
    Registry(tmp / "big-reg", builtins=False).add("big", values)
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
    row("registry load(verify=False)", f"{fast:.2f} GB/s", fast / anchor, "target >= 0.90x (stretch 0.95x)")
    row("registry load() (sha256 checked, the default)", f"{checked:.2f} GB/s", checked / anchor)


def populate(path: Path, count: int) -> float:
    """Add ``count`` small kernels in batches of 1,000; return the time of the first full batch."""
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
    print("\ncost against registry size (fresh processes, default config, median of runs)")
    floor = fresh(py("import numpy, h5py, pydantic, click"), runs)
    row("import floor: numpy, h5py, pydantic, click (anchor)", f"{floor * 1e3:.1f} ms", 1.0)
    base: dict[str, float] = {}
    for count in sizes:
        path = tmp / f"reg-{count}"
        t0 = time.perf_counter()
        batch = populate(path, count)
        build = time.perf_counter() - t0
        env = {"KREG_DB": str(path)}
        if count >= 1000:
            row(f"[{count}] add 1,000 in one batch (in process)", f"{batch:.2f} s", None, "target: a few seconds")
        row(f"[{count}] build the registry (batches of 1,000)", f"{build:.1f} s")
        listing = fresh([PY, "-m", "registry", "list"], runs, env)
        target = {10_000: "target <= 2.00x", 100_000: "target <= 3.00x"}.get(count, "")
        row(f"[{count}] kreg list, every row printed", f"{listing * 1e3:.1f} ms", listing / floor, target)
        load = fresh(py(f"import registry; registry.load('bench/k{count // 2}')"), runs, env)
        base.setdefault("load", load)
        row(f"[{count}] fresh process: registry.load(name), vs 10 kernels", f"{load * 1e3:.1f} ms",
            load / base["load"], "target <= 1.50x at 100,000")
        adds = []
        for i in range(runs):
            t0 = time.perf_counter()
            subprocess.run([PY, "-m", "registry", "add", f"bench/extra{i}", "--values", f"[[{i}.5]]"],
                           check=True, stdout=subprocess.PIPE, env={**os.environ, **env})
            adds.append(time.perf_counter() - t0)
        add = statistics.median(adds)
        base.setdefault("add", add)
        row(f"[{count}] fresh process: kreg add, vs 10 kernels", f"{add * 1e3:.1f} ms", add / base["add"],
            "target <= 2.00x at 100,000")
        reg = Registry(path)
        inproc = best(lambda: reg.add(f"bench/more{time.perf_counter_ns()}", [[1.0]]), 5)
        base.setdefault("inproc", inproc)
        row(f"[{count}] one add in process (fsyncs included), vs 10", f"{inproc * 1e3:.1f} ms",
            inproc / base["inproc"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also the 100,000-kernel registry")
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per timing (median)")
    parser.add_argument("--large-mb", type=int, default=256)
    parser.add_argument("--only", choices=["small", "large", "scaling"], help="run one part")
    args = parser.parse_args()
    sizes = [10, 1_000, 10_000] + ([100_000] if args.full else [])
    print(f"kreg {registry.__version__} benchmarks, python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "small"):
            bench_small(Path(tmp), args.runs)
        if args.only in (None, "large"):
            bench_large(Path(tmp), args.large_mb)
        if args.only in (None, "scaling"):
            bench_scaling(Path(tmp), sizes, args.runs)


if __name__ == "__main__":
    main()
