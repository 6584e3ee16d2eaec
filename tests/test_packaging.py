"""The built wheel carries what kreg needs from outside the package: schema/ and kernels_db/."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
    )
    (built,) = out.glob("kreg-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_carries_schema_and_format_document(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for path in (ROOT / "schema").rglob("*"):
        if path.is_file():
            assert f"registry/_data/schema/{path.relative_to(ROOT / 'schema').as_posix()}" in names


def test_wheel_carries_the_builtin_database(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for path in (ROOT / "kernels_db").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert f"registry/_data/kernels_db/{path.relative_to(ROOT / 'kernels_db').as_posix()}" in names


def test_wheel_is_typed_and_has_the_console_script(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "registry/py.typed" in names
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "kreg = registry.cli:main" in wheel.read(entry_points).decode()
    assert not any(n.startswith(("tests/", "schema/", "kernels_db/")) for n in names)


def test_installed_wheel_finds_its_data(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    target = tmp_path / "site"
    wheel.extractall(target)
    code = (
        "import registry._paths as p; "
        "print(p.schema_dir().is_dir(), (p.schema_dir() / 'v1' / 'kernel-record.schema.json').is_file(), "
        "str(p.schema_dir()).startswith(%r))" % str(target)
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["True", "True", "True"]
