"""read_pack's child process never re-runs the caller's ``__main__`` and works inside a Pool worker."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from registry import Registry
from registry.format.pack import write_pack
from registry.store.packs import import_pack, read_pack

ROOT = Path(__file__).resolve().parents[1]


def _pack(tmp_path: Path) -> Path:
    reg = Registry(tmp_path / "src")
    kernel = reg.add("team/a", [[1.0, 2.0], [3.0, 4.0]])
    return write_pack(tmp_path / "p.h5", [(kernel._record, kernel.array)], name="p")


def test_a_script_without_a_main_guard_runs_once(tmp_path: Path) -> None:
    pack = _pack(tmp_path)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import registry
        from registry.store.packs import import_pack
        print("RUN", flush=True)
        report = import_pack(registry.Registry({str(tmp_path / 'dst')!r}), {str(pack)!r})
        print("STEPS", [step.action for step in report.steps], flush=True)
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["RUN", "STEPS ['add']"]


def _import_in_worker(args: tuple[str, str]) -> list[str]:
    pack, db = args
    return [step.action for step in import_pack(Registry(db), pack).steps]


def test_import_inside_a_pool_worker(tmp_path: Path) -> None:
    pack = _pack(tmp_path)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(_import_in_worker, [(str(pack), str(tmp_path / "dst"))]) == [["add"]]


def test_the_child_does_not_import_from_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    pack = _pack(tmp_path)
    # A planted `registry` package in the working directory must not be what the child runs.
    planted = tmp_path / "cwd" / "registry"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("raise SystemExit('planted package imported')\n")
    monkeypatch.chdir(planted.parent)
    parsed = read_pack(pack)
    np.testing.assert_array_equal(parsed.kernels[0][1], [[1.0, 2.0], [3.0, 4.0]])
