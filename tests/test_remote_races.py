"""Racing writers, kill -9 and a server restart, against a real S3 server (SeaweedFS), no lock anywhere."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from azserver import ACCOUNT_KEY

import registry
from registry.format.content import content_hash
from registry.store import object as object_store

#: A writer process: N adds over 4 names, printing "ref sha256" once each add is acknowledged.
WRITER = """
import sys, numpy as np, registry
url, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
reg = registry.Registry(url, builtins=False)
for i in range(count):
    values = np.full((3, 3), worker * 1000 + i, "f4")
    kernel = reg.add(f"race/{i % 4}", values, description=f"w{worker} i{i}")
    print(kernel.ref, kernel.sha256, flush=True)
"""


def _writers(url: str, n: int, count: int, root: Path) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(Path(registry.__file__).parent.parent)}
    return [subprocess.Popen([sys.executable, "-c", WRITER, url, str(w), str(count)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root) for w in range(n)]


def _acked(lines: str) -> dict[str, str]:
    """The acknowledged adds: whole lines only (a writer killed while printing leaves half of one;
    that add was committed, but its hash cannot be checked)."""
    return dict(line.split() for line in lines.split("\n")[:-1] if line.strip())


def _check_store(url: str, acked: dict[str, str]) -> dict[str, list[int]]:
    """Every acknowledged kernel present with its content; every listed one loads and verifies."""
    reg = registry.Registry(url, builtins=False, )
    listed = {i.ref: i.sha256 for i in reg.list_kernels(all_versions=True)}
    for ref, sha in acked.items():
        assert listed.get(ref) == sha, f"acknowledged {ref} is missing or changed"
    for ref, sha in listed.items():  # nothing half-visible: what is listed loads, with its hash
        assert content_hash(reg.load(ref).array) == sha
    versions: dict[str, list[int]] = defaultdict(list)
    for ref in listed:
        name, _, v = ref.partition("@")
        versions[name].append(int(v))
    report = reg.fsck()
    assert all("orphan" in problem for _, problem in report.problems), report.problems
    return versions


def test_8_processes_x_50_adds_lose_nothing(remote_url: str, tmp_path: Path) -> None:
    procs = _writers(remote_url, 8, 50, tmp_path)
    acked: dict[str, str] = {}
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        acked.update(_acked(out))
    assert len(acked) == 400
    versions = _check_store(remote_url, acked)
    assert sorted(versions) == [f"race/{i}" for i in range(4)]
    extra = [(i.ref, i.summary) for i in registry.Registry(remote_url, builtins=False).list_kernels(all_versions=True)
             if i.ref not in acked]
    assert not extra, f"committed but never acknowledged: {extra}"
    for name, vs in versions.items():
        adds = sum(ref.startswith(name + "@") for ref in acked)  # 13 or 12 per writer
        assert sorted(vs) == list(range(1, adds + 1)), name  # unique and gapless


def test_kill_9_mid_commit_leaves_every_acknowledged_kernel(remote_url: str, tmp_path: Path) -> None:
    rng = random.Random(10)
    acked: dict[str, str] = {}
    for _ in range(3):
        procs = _writers(remote_url, 6, 40, tmp_path)
        time.sleep(rng.uniform(1.5, 4.0))
        victims = rng.sample(procs, 3)
        for p in victims:
            time.sleep(rng.uniform(0, 0.3))
            p.send_signal(signal.SIGKILL)
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0 or p in victims, err[-2000:]
            acked.update(_acked(out))
    assert acked
    _check_store(remote_url, acked)
    # After the kills, writing goes on: numbers held by orphans are skipped, never reissued.
    reg = registry.Registry(remote_url, builtins=False)
    assert reg.add("race/0", np.full((3, 3), -1, "f4")).version == reg.next_version("race/0") - 1


@pytest.mark.parametrize("cloud", ["s3", "az"])
def test_server_restart_mid_adds_gives_clean_errors_and_loses_nothing(cloud: str, request: pytest.FixtureRequest,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    server, url = request.getfixturevalue(f"{cloud}_server"), request.getfixturevalue(f"{cloud}_url")
    secret = server.env().get("AWS_SECRET_ACCESS_KEY") or ACCOUNT_KEY
    reg = registry.Registry(url, builtins=False)
    reg.backend._retries = 1  # fail fast while the server is down (the default retries for ~10 s)
    reg.backend._limits = (1.0, 5.0)
    # A commit cut off reads the root back once, not for seconds (which rides out the restart).
    monkeypatch.setattr(object_store, "SETTLE_ATTEMPTS", 1)
    acked: dict[str, str] = {}
    errors: list[str] = []
    restarted = threading.Event()

    def restart() -> None:
        time.sleep(1.0)
        server.restart()
        restarted.set()

    thread = threading.Thread(target=restart)
    thread.start()
    i = 0
    deadline = time.monotonic() + 180
    while (not restarted.is_set() or len(acked) < 40) and time.monotonic() < deadline:
        values = np.full((2, 2), i, "f4")
        i += 1
        try:
            kernel = reg.add(f"restart/{i % 3}", values)
        except registry.KregError as exc:
            assert isinstance(exc, (registry.RemoteError, registry.StoreWriteError)), repr(exc)
            errors.append(str(exc))
            time.sleep(0.2)
            continue
        acked[kernel.ref] = kernel.sha256
    thread.join()
    assert restarted.is_set() and errors, "the server was never seen down"
    for message in errors:
        assert "\n" not in message and url in message
        assert "secret" not in message.lower() and secret not in message
    _check_store(url, acked)
