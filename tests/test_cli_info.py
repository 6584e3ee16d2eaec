"""Setting kreg up without make: the README's install lines, and `kreg info` saying what is in use."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import registry
from registry.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _extras() -> dict[str, list[str]]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_the_readme_installs_s3_keras_torch_and_plots_in_one_pip_line_with_cpu_torch() -> None:
    lines = [line for line in README.splitlines() if line.startswith("pip install 'kreg[")]
    wanted = {"s3", "keras", "torch", "plot"}
    one = [line for line in lines if wanted <= set(re.search(r"kreg\[([^\]]*)\]", line).group(1).split(","))]
    assert one, lines
    assert "download.pytorch.org/whl/cpu" in one[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in README  # the CPU pin, torch alone
    extras = _extras()
    assert wanted <= set(extras)
    assert any(req.startswith("safetensors") for req in extras["torch"])  # registry.torch.save_file needs it
    weed = [line for line in README.splitlines() if line.startswith("weed mini")]
    assert weed and all("-ip.bind=127.0.0.1" in line for line in weed)  # never listening beyond this machine


def _info(*args: str) -> dict[str, str]:
    result = CliRunner().invoke(cli, [*args, "info"])
    assert result.exit_code == 0, result.output
    return {key: value.strip() for key, _, value in (line.partition(":") for line in result.stdout.splitlines())}


def test_info_shows_endpoint_cache_and_framework_versions(s3_url: str, tmp_path: Path) -> None:
    reg = registry.Registry(s3_url)
    reg.add("team/x", [[1.0, 2.0, 3.0]])
    reg.load("team/x@1")
    shown = _info("--db", s3_url)
    assert shown["endpoint"] == os.environ["AWS_ENDPOINT_URL"]
    cache = Path(os.environ["KREG_CACHE_DIR"])
    used = sum(p.stat().st_size for p in (cache / "blobs").rglob("*") if p.is_file())
    assert used > 0 and shown["cache"].startswith(f"{cache} (")
    expected = f"{used} bytes" if used < 1024 else f"{used / 1024:.1f} KiB"
    assert shown["cache"] == f"{cache} ({expected} of 2.0 GiB)"
    for package in ("obstore", "keras", "torch"):
        try:
            assert shown[package] == md.version(package)
        except md.PackageNotFoundError:
            assert shown[package].startswith("not installed (pip install 'kreg[")
    local = _info("--db", str(tmp_path / "local"))
    assert local["endpoint"] == "none (a local directory)"


def test_info_imports_no_framework(tmp_path: Path) -> None:
    code = ("import sys, json\nfrom click.testing import CliRunner\nfrom registry.cli import cli\n"
            f"r = CliRunner().invoke(cli, ['--db', {str(tmp_path / 'db')!r}, 'info'])\n"
            "print(json.dumps([r.exit_code, sorted(m for m in ('keras', 'torch', 'tensorflow', 'jax', 'obstore')"
            " if m in sys.modules)]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0, []], done.stderr
