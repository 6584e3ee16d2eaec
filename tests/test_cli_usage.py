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


@pytest.mark.parametrize("args", [["add", "t/g", "--family", "gausian"], ["show", "gausian", "-p", "sigma=2"]])
def test_a_family_typo_gets_did_you_mean(tmp_path: Path, args: list[str]) -> None:
    result = kreg(tmp_path / "db", *args)
    assert result.exit_code == 2 and "'gausian'" in result.output and "Did you mean 'gaussian'?" in result.output


def test_a_sample_image_typo_gets_did_you_mean(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("skimage")
    result = kreg(tmp_path / "db", "plot", "sobel_x", "--image", "camra", "-o", str(tmp_path / "p.png"))
    assert result.exit_code == 2 and "Did you mean 'camera'?" in result.output
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("option", [["--db", "X"], ["-q"], ["--quiet"]])
def test_an_option_of_kreg_given_after_the_command_says_where_it_goes(tmp_path: Path, option: list[str]) -> None:
    result = CliRunner().invoke(cli, ["import", str(tmp_path / "pack.h5"), *option])
    assert result.exit_code == 2
    assert f"No such option '{option[0]}'. {option[0]} is an option of kreg itself: put it before the command" in (
        result.output)
    assert "'kreg --db ... import ...'" in CliRunner().invoke(cli, ["import", "p.h5", "--db", "X"]).output


@pytest.mark.parametrize("args", [["add", "sobel_x", "--values", "[[1]]"], ["add", "gaussian", "--values", "[[1]]"],
                                  ["rm", "sobel_x"], ["plot", "sobel_x", "-o", "/missing/folder/x.png"]])
def test_bad_input_exits_2_as_the_readme_says(tmp_path: Path, args: list[str]) -> None:
    result = kreg(tmp_path / "db", *args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    readme = (ROOT / "README.md").read_text()
    assert "2 bad usage or\nbad input" in readme


def test_answering_no_to_rm_all_is_not_an_error(tmp_path: Path) -> None:
    db = tmp_path / "db"
    for values in ("[[1]]", "[[2]]"):
        kreg(db, "add", "t/x", "--values", values)
    result = kreg(db, "rm", "t/x", "--all", input="n\n")
    assert result.exit_code == 0 and "Nothing removed." in result.stderr and "Error" not in result.output
    assert registry.Registry(db).versions("t/x") == [1, 2]
    result = kreg(db, "rm", "t/x", "--all", input="y\n")
    assert result.exit_code == 0 and result.stdout == "removed t/x@1\nremoved t/x@2\n"


@pytest.mark.parametrize("cap", [4, pytest.param(64, marks=pytest.mark.slow)])  # 64: kreg's own, a minute here
def test_plot_says_how_many_panels_it_drew_of_how_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        cap: int) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    import registry._plot

    monkeypatch.setattr(registry._plot, "MAX_UNITS", cap)
    db = tmp_path / "db"
    with registry.Registry(db) as reg:
        reg.add("t/wide", np.arange(cap + 6, dtype="f4").reshape(1, 1, 1, cap + 6), layout="HWIO")
    result = kreg(db, "plot", "t/wide", "sobel_x", "-o", str(tmp_path / "p.png"))
    assert result.exit_code == 0, result.output
    assert f"drew {cap} of {cap + 7} panels" in result.stderr and "2 kernels" in result.stderr
    columns = min(8, cap)
    with Image.open(tmp_path / "p.png") as png:  # columns x rows of 2-inch cells at 100 dpi: only `cap` panels
        assert png.size == (columns * 200, -(-cap // columns) * 200)
    result = kreg(db, "plot", "sobel_x", "sobel_y", "-o", str(tmp_path / "q.png"))
    assert "2 panels of 2 kernels" in result.stderr and "drew" not in result.stderr


def test_registry_bank_takes_kernel_objects_like_the_module_function(tmp_path: Path) -> None:
    reg = registry.Registry(tmp_path / "db")
    blur = reg.load("gaussian", ksize=3, sigma=0.0)
    bank = reg.bank(["sobel_x", blur, "sobel_y"])
    assert bank.shape == (3, 3, 1, 3)
    np.testing.assert_array_equal(bank.array[:, :, 0, 0], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])  # OpenCV's Sobel
    np.testing.assert_array_equal(bank.array[:, :, 0, 1] * 16, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    np.testing.assert_array_equal(bank.array[:, :, 0, 2], [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    assert reg.bank(blur).shape == (3, 3, 1, 1)
    with pytest.raises(registry.InvalidKernelError, match="bank\\(\\) takes refs, glob patterns or Kernel objects"):
        reg.bank(["sobel_x", 3])  # type: ignore[list-item]


def _pack(tmp_path: Path, count: int) -> Path:
    with registry.Registry(tmp_path / "src", builtins=False) as src:
        with src.batch():
            for i in range(count):
                src.add(f"p/k{i:02d}", [[float(i), 1.0]])
    out = tmp_path / "p.h5"
    assert kreg(tmp_path / "src", "export", "p/*", "-o", str(out)).exit_code == 0
    return out


def test_import_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    import os
    import pty

    pack = _pack(tmp_path, 25)
    main, child = pty.openpty()
    done = subprocess.Popen([sys.executable, "-m", "registry", "--db", str(tmp_path / "dst"), "import", str(pack)],
                            stdout=subprocess.DEVNULL, stderr=child, env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert done.wait(timeout=120) == 0
    text = seen.decode(errors="replace")
    assert "importing" in text and "100%" in text, text
    assert "Imported: 25 added" in text


def test_import_interrupted_before_its_commit_says_nothing_was_imported(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pack = _pack(tmp_path, 3)
    added = registry.Registry._add
    calls = []

    def interrupted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C half-way through the staging
        return added(self, *args, **kwargs)

    monkeypatch.setattr(registry.Registry, "_add", interrupted)
    result = kreg(tmp_path / "dst", "import", str(pack))
    assert result.exit_code == 130 and "Interrupted: nothing was imported" in result.output, result.output
    assert "Aborted" not in result.output
    assert registry.Registry(tmp_path / "dst", builtins=False).list_kernels() == []


def test_import_interrupted_after_its_commit_says_it_was_committed(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import registry.store.packs as packs

    pack = _pack(tmp_path, 3)
    original = packs.import_pack

    def then_interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        original(*args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C just after the commit

    monkeypatch.setattr(packs, "import_pack", then_interrupted)
    result = kreg(tmp_path / "dst", "import", str(pack))
    assert result.exit_code == 130 and "Interrupted after the import" in result.output and "committed" in result.output
    assert len(registry.Registry(tmp_path / "dst", builtins=False).list_kernels()) == 3
