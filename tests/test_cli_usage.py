"""Bad input on the command line: said early, in one line, with the fix and README's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import registry
from registry.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def kreg(db: Path, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--db", str(db), *args], input=input)


def test_a_missing_keras_model_is_named_before_any_framework_is_imported(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from registry.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['--db', {str(tmp_path / 'db')!r}, 'add', 't/c', '--from-keras',"
        f" {str(tmp_path / 'missing.keras')!r}, '--layer', 'conv1'])\n"
        "print(json.dumps([r.exit_code, r.output, sorted(m for m in ('tensorflow', 'keras', 'torch', 'jax')"
        " if m in sys.modules)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "KREG_CACHE_DIR": str(tmp_path)})
    exit_code, output, frameworks = json.loads(done.stdout.strip().splitlines()[-1])
    assert exit_code == 2 and output.startswith("Error: No such model file:") and "missing.keras" in output
    assert frameworks == []  # never imported: the file was checked first
    with pytest.raises(registry.InvalidKernelError, match="No such model file"):
        registry.add_from_keras(tmp_path / "missing.keras", "conv1", name="t/c")
