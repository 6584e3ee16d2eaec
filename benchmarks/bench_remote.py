"""Remote-registry benchmark: HTTP requests and bytes per operation, counted, against local S3 and Azure servers.

SeaweedFS (``weed mini`` from the test extra) and Azurite (Azure Blob's emulator, which
``make test`` installs with npm) run on 127.0.0.1; every request the object
backend makes is counted (``ObjectBackend.stats``: one count per GET, PUT, DELETE and listing
page; bytes received and sent). Each operation is measured on a new ``Registry`` (a new
process would see the same), "cold" with the local cache off (a new machine), "warm" with
the cache filled by an earlier use. The same operations on a local directory are timed beside.

Targets (shared/DESIGN.md, issue 10): cold ``load("name@v")`` <= 2 requests, warm 0; cold
``load("name")`` <= 3; cold ``load("name@sha256:...")`` (a content pin) <= 3; one add <= 4 whatever the registry
size; list of 10,000 < 20 requests; ``load("name@label")`` <= 3 cold, 1 warm; the history (``kreg log``) of 10,000
events <= 20.

Run: ``python benchmarks/bench_remote.py`` (``--sizes 10 1000`` for a quicker run, ``--stores s3``
for SeaweedFS alone).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from azserver import CONTAINER, AzuriteServer  # noqa: E402
from s3server import BUCKET, SeaweedServer  # noqa: E402

import registry  # noqa: E402
from registry.store.cache import DiskCache  # noqa: E402
from registry.store.object import ObjectBackend  # noqa: E402


COLD_ADD = """
cold add: a machine that holds nothing must read the root (its ETag is the commit's condition)
and the name's segment (the versions taken, and the rows the new segment keeps), then write the
object, the new segment and the root (the commit), then the receipt that makes a cold pinned load
2 requests: 6. A machine that saw the root within 5 minutes skips the root read (the commit's
If-Match refuses a stale root), and the segment read when it holds that segment (segments never
change, so they are cached by key): 4, or 5 for a name in a segment it never read (the 4 MB add
under a new name at 10,000 kernels). Folding the segment write into the root would make the root
grow with the registry; dropping the receipt would make cold pinned loads 3 requests."""


def build(where: str, n: int) -> None:
    reg = registry.Registry(where, builtins=False)
    rng = np.random.default_rng(0)
    with reg.batch():
        for i in range(n):
            reg.add(f"team/k{i}", rng.normal(size=(3, 3)).astype("f4"))


def measure(where: str, action, *, cache: DiskCache | None | bool) -> tuple[dict[str, int], float]:  # type: ignore[no-untyped-def]
    """Requests, bytes and seconds of ``action`` on a new Registry (remote: counted per request)."""
    if "://" in where:
        backend = ObjectBackend(where, cache=cache)
        reg = registry.Registry(backend, builtins=False)
    else:
        reg = registry.Registry(where, builtins=False)
    start = time.perf_counter()
    action(reg)
    elapsed = time.perf_counter() - start
    stats = dict(getattr(reg.backend, "stats", {}))
    return stats, elapsed


def row(label: str, stats: dict[str, int], remote_s: float, local_s: float, target: str) -> str:
    requests = sum(stats.get(v, 0) for v in ("get", "put", "delete", "list"))
    return (f"  {label:<26} {requests:>4} req  {stats.get('bytes_in', 0):>9,} B in  {stats.get('bytes_out', 0):>7,} B out"
            f"   remote {remote_s * 1e3:8.1f} ms   local {local_s * 1e3:7.1f} ms   target {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--stores", nargs="+", choices=["s3", "az"], default=["s3", "az"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kreg-bench-remote-"))
    for store in args.stores:
        if store == "s3":
            server: SeaweedServer | AzuriteServer = SeaweedServer(work / "seaweedfs")
            base, title = f"s3://{BUCKET}", "S3 (SeaweedFS)"
        else:
            server, base, title = AzuriteServer(work / "azurite"), f"az://{CONTAINER}", "Azure Blob (Azurite)"
        server.start()
        os.environ.update(server.env())
        print(f"== {title}")
        try:
            bench(base, args.sizes, work / store)
        finally:
            server.stop()
    print(COLD_ADD)


def bench(base: str, sizes: list[int], work: Path) -> None:
    """Every operation at each size on a new registry under ``base``, beside a local directory."""
    for n in sizes:
        url = f"{base}/bench-{uuid.uuid4().hex[:8]}"
        local = str(work / f"local-{n}")
        t0 = time.perf_counter()
        build(url, n)
        build_s = time.perf_counter() - t0
        build(local, n)
        name, pinned = f"team/k{n // 2}", f"team/k{n // 2}@1"
        for where in (url, local):
            registry.Registry(where, builtins=False).label(pinned, "stable")
        warm = DiskCache(work / f"cache-{n}")
        print(f"{n:,} kernels (remote build in one batch: {build_s:.1f} s)")

        def run(label: str, action, cache, target: str) -> None:  # type: ignore[no-untyped-def]
            stats, remote_s = measure(url, action, cache=cache)
            _, local_s = measure(local, action, cache=None)
            print(row(label, stats, remote_s, local_s, target))

        run("cold load(name@v)", lambda r: r.load(pinned), False, "<= 2")
        measure(url, lambda r: r.load(pinned), cache=warm)  # fills the cache
        run("warm load(name@v)", lambda r: r.load(pinned), warm, "0")
        run("cold load(name)", lambda r: r.load(name), False, "<= 3")
        pin = registry.Registry(url, builtins=False).load(pinned).pin
        run("cold load(name@sha256:..)", lambda r: r.load(pin), False, "<= 3")
        run("cold load(name@label)", lambda r: r.load(f"{name}@stable"), False, "<= 3")
        measure(url, lambda r: r.load(f"{name}@stable"), cache=warm)  # root and segment cached
        run("warm load(name@label)", lambda r: r.load(f"{name}@stable"), warm, "1 (0 within KREG_FRESHNESS)")
        measure(url, lambda r: r.load(name), cache=warm)  # loaded once: root and segment cached
        run("warm load(name)", lambda r: r.load(name), warm, "1 (0 within KREG_FRESHNESS)")
        run("cold add (new machine)", lambda r: r.add(f"team/new{uuid.uuid4().hex[:6]}", [[1.0]]), False,
            "<= 4 (missed: see below)")
        measure(url, lambda r: r.load(name), cache=warm)  # this machine has seen the current root
        run("warm add (root seen lately)", lambda r: r.add(name, np.full((3, 3), time.time(), "f4")), warm, "<= 4")
        big = np.zeros((1024, 1024), "f4")
        run("warm add, 4 MB, new name", lambda r: r.add(f"team/big{uuid.uuid4().hex[:6]}", big), warm,
            "<= 4 (+1 if its segment is new here)")
        run("cold list", lambda r: r.list_kernels(), False, "< 20 at 10,000")
        run(f"cold history ({n + 4:,} events)", lambda r: r.history("*"), False, "<= 20 at 10,000")


if __name__ == "__main__":
    main()
