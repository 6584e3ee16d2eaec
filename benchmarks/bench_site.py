"""The catalogue site at scale: a cold build of N kernel names, a rebuild with nothing changed,
and a rebuild after one add (which must rewrite only that name's files and the index).

Printed: seconds for each build, per name, the files written, the largest kernel page and the
index size against their budgets. Run: ``.venv/bin/python benchmarks/bench_site.py [-n 10000]``
(the default; ``-n 200`` takes about half a minute). A progress bar shows on a terminal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import registry
from registry.site import INDEX_BUDGET, INDEX_PER_NAME, PAGE_BUDGET, build_site

TAGS = ["edge", "blur", "learned", "texture", "denoise"]


def make_registry(path: Path, n: int) -> registry.Registry:
    reg = registry.Registry(path, builtins=False)
    rng = np.random.default_rng(0)
    with reg.batch():
        for i in range(n):
            side = (3, 5, 7)[i % 3]
            reg.add(f"team{i % 50}/k{i}", rng.standard_normal((side, side)).astype(np.float32),
                    description=f"kernel {i}: a {side}x{side} filter", tags=[TAGS[i % len(TAGS)]],
                    author=f"dev{i % 7}")
    return reg


def progress_bar(label: str):  # type: ignore[no-untyped-def]
    """A bar on a terminal; elsewhere a line every 500 names (wall and CPU seconds so far: the
    machine may be shared, and CPU time is what the build itself costs)."""
    if not sys.stderr.isatty():
        start, cpu = time.perf_counter(), time.process_time()

        def log(done: int, total: int) -> None:
            if done % 500 == 0 or done == total:
                print(f"  {label}: {done}/{total} names, {time.perf_counter() - start:.0f} s wall, "
                      f"{time.process_time() - cpu:.0f} s CPU", flush=True)

        return None, log
    import click

    bar = click.progressbar(length=1, label=label, file=sys.stderr)
    bar.__enter__()

    def update(done: int, total: int) -> None:
        bar.length = total
        bar.update(1)

    return bar, update


def timed(label: str, reg: registry.Registry, out: Path) -> tuple[float, float, object]:
    """Wall and CPU seconds of one build, and its report."""
    bar, update = progress_bar(label)
    t0, c0 = time.perf_counter(), time.process_time()
    report = build_site(reg, out, progress=update)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if bar is not None:
        bar.__exit__(None, None, None)
    return seconds, cpu, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="kernel names (default 10,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kreg-bench-site-") as folder:
        root = Path(folder)
        t0 = time.perf_counter()
        reg = make_registry(root / "reg", args.n)
        print(f"registry of {args.n} names made in {time.perf_counter() - t0:.1f} s")
        cold, cpu, report = timed("cold build", reg, root / "site")
        print(f"cold build:        {cold:8.1f} s wall, {cpu:.1f} s CPU ({1000 * cpu / args.n:.1f} ms CPU per name, "
              f"{len(report.written)} files written)")
        warm, cpu, report = timed("rebuild", reg, root / "site")
        print(f"rebuild, no change:{warm:8.1f} s wall, {cpu:.1f} s CPU ({len(report.written)} files written)")
        reg.add("team0/k0", np.ones((3, 3), np.float32), description="changed", author="dev0")
        again, cpu, report = timed("rebuild after one add", reg, root / "site")
        print(f"rebuild, one add:  {again:8.1f} s wall, {cpu:.1f} s CPU ({len(report.written)} files written: "
              f"{', '.join(sorted(report.written)[:6])}{' ...' if len(report.written) > 6 else ''})")
        pages = [p.stat().st_size for p in (root / "site/k").rglob("*.html")]
        index = (root / "site/index.html").stat().st_size
        print(f"largest kernel page {max(pages) / 1024:.1f} KiB (budget {PAGE_BUDGET // 1024} KiB); index "
              f"{index / 1024:.0f} KiB (budget {(INDEX_BUDGET + args.n * INDEX_PER_NAME) / 1024:.0f} KiB)")
        reg.close()


if __name__ == "__main__":
    main()
