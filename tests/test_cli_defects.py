"""CLI and API defects a new user hit: each a one-line error, the right output, the right exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from registry import Registry
from registry.cli import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def kreg(tmp_path: Path):
    """Run ``kreg --db <tmp> ARGS`` in-process; returns the click Result."""
    db = tmp_path / "db"
    runner = CliRunner()

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None):
        return runner.invoke(cli, ["--db", str(db), *args], input=input, env=env, catch_exceptions=False)

    run.db = db  # type: ignore[attr-defined]
    return run


def one_error(result, code: int = 2) -> str:
    """The single ``Error:`` line of a failed command (no traceback), checked."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# -- list --json -----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("zzz*",), ("--tag", "nosuch"), ("--origin", "imported"),
                                  ("sobel_x", "-x", "sobel*")])
def test_list_json_with_no_match_is_an_empty_list(kreg, args) -> None:
    result = kreg("list", *args, "--json")
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


# -- export ----------------------------------------------------------------------------------


def test_export_format_comes_from_the_suffix_and_the_real_path_is_printed(kreg, tmp_path: Path) -> None:
    out = tmp_path / "rob.npy"
    result = kreg("export", "sobel_x", "-o", str(out))
    assert (result.exit_code, result.stdout) == (0, f"{out}\n")
    np.testing.assert_array_equal(np.load(out), Registry(kreg.db).load("sobel_x").array)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "db") == ["rob.npy"]


def test_export_refuses_a_format_that_contradicts_the_suffix(kreg, tmp_path: Path) -> None:
    line = one_error(kreg("export", "sobel_x", "--format", "npy", "-o", str(tmp_path / "s.h5")))
    assert line == f"Error: --format npy contradicts the suffix of {tmp_path / 's.h5'} (a pack file). " \
                   "Drop --format, or name the file with the suffix of npy."
    assert not list(tmp_path.glob("s.h5*"))


def test_export_to_stdout(kreg) -> None:
    result = kreg("export", "sobel_x", "--format", "json", "-o", "-")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["values"] == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] and document["record"]["name"] == "sobel_x"
    npy = kreg("export", "sobel_x", "--format", "npy", "-o", "-")
    import io

    np.testing.assert_array_equal(np.load(io.BytesIO(npy.stdout_bytes)), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    assert one_error(kreg("export", "sobel_x", "-o", "-")).startswith("Error: -o - writes to stdout")


def test_export_layout_oihw_matches_the_torch_weight(kreg, tmp_path: Path) -> None:
    out = tmp_path / "banks.npz"
    assert kreg("export", "sobel_x", "sobel_y", "-o", str(out), "--layout", "OIHW").exit_code == 0
    reg = Registry(kreg.db)
    with np.load(out) as archive:
        assert sorted(archive) == ["sobel_x", "sobel_y"]
        for name in archive:
            # OIHW of an HW plane: one output, one input channel, the plane itself.
            assert archive[name].shape == (1, 1, 3, 3)
            np.testing.assert_array_equal(archive[name][0, 0], reg.load(name).array)
    assert one_error(kreg("export", "sobel_x", "-o", str(tmp_path / "p.h5"), "--layout", "OIHW")).startswith(
        "Error: A pack keeps each kernel in its stored layout")


def _add_with_bias(db: Path) -> None:
    values = np.arange(2 * 2 * 1 * 3, dtype=np.float32).reshape(2, 2, 1, 3) - 5
    Registry(db).add("team/conv", values, layout="HWIO", bias=[0.5, -1.25, 2.0], description="learned",
                     tags=["edge"], license="MIT", author="me", normalization="none")


def test_json_export_round_trips_record_layout_dtype_and_bias_with_no_flags(kreg, tmp_path: Path) -> None:
    _add_with_bias(kreg.db)
    out = tmp_path / "conv.json"
    assert kreg("export", "team/conv", "-o", str(out), "--layout", "OIHW").exit_code == 0
    assert kreg("add", "back/conv", "--from", str(out)).stdout == "back/conv@1\n"
    reg = Registry(kreg.db)
    a, b = reg.load("team/conv"), reg.load("back/conv")
    assert (b.sha256, b.layout, b.dtype) == (a.sha256, "HWIO", np.float32)
    rec = b._record
    assert rec["bias"] == [0.5, -1.25, 2.0] and rec["tags"] == ["edge"] and rec["normalization"] == "none"
    assert (rec["provenance"]["description"], rec["provenance"]["license"], rec["provenance"]["author"]) == (
        "learned", "MIT", "me")
    assert rec["provenance"]["origin"] == "imported" and rec["provenance"]["source_layout"] == "OIHW"


@pytest.mark.parametrize("suffix", ["npz", "safetensors"])
def test_npz_and_safetensors_carry_the_bias(kreg, tmp_path: Path, suffix: str) -> None:
    _add_with_bias(kreg.db)
    out = tmp_path / f"conv.{suffix}"
    assert kreg("export", "team/conv", "sobel_x", "-o", str(out)).exit_code == 0
    assert kreg("add", "back/conv", "--from", f"{out}:team/conv", "--layout", "HWIO").exit_code == 0
    assert Registry(kreg.db).load("back/conv")._record["bias"] == [0.5, -1.25, 2.0]


def test_npy_never_drops_a_bias_silently(kreg, tmp_path: Path) -> None:
    _add_with_bias(kreg.db)
    line = one_error(kreg("export", "team/conv", "-o", str(tmp_path / "c.npy")))
    assert "has a bias of 3 values" in line and "--no-bias" in line
    assert kreg("export", "team/conv", "-o", str(tmp_path / "c.npy"), "--no-bias").exit_code == 0


# -- tracebacks that must be one Error line ----------------------------------------------------


def test_keygen_makes_the_folder_of_its_own_example(kreg, tmp_path: Path) -> None:
    key = tmp_path / "home" / ".kreg" / "key"
    assert kreg("keygen", "-o", str(key)).exit_code == 0
    assert oct(key.parent.stat().st_mode & 0o777) == "0o700" and oct(key.stat().st_mode & 0o777) == "0o600"


def test_export_into_a_missing_folder(kreg, tmp_path: Path) -> None:
    line = one_error(kreg("export", "sobel_x", "-o", str(tmp_path / "nodir" / "p.h5")))
    assert line == f"Error: The folder {tmp_path / 'nodir'} does not exist; create it first (mkdir -p {tmp_path / 'nodir'})."


def test_plot_image_that_is_not_an_image(kreg, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    line = one_error(kreg("plot", "sobel_x", "-o", str(tmp_path / "p.png"), "--image", str(notes)))
    assert line.startswith(f"Error: --image {notes} is not an image matplotlib can read")


def test_values_nested_40000_deep(kreg) -> None:
    line = one_error(kreg("add", "a", "--values", "[" * 40000 + "]" * 40000))
    assert line.startswith("Error: --values nests too deep")


def test_show_with_a_5000_digit_version(kreg) -> None:
    line = one_error(kreg("show", "sobel_x@" + "9" * 5000))
    assert line.startswith("Error: The version after '@' is a whole number from 1, at most 11 digits.")
    assert len(line) < 200


def test_import_proc_self_mem(kreg) -> None:
    if not Path("/proc/self/mem").exists():
        pytest.skip("no /proc")
    assert one_error(kreg("import", "/proc/self/mem")) == "Error: Cannot read /proc/self/mem: Input/output error."


@pytest.mark.parametrize("params, message", [
    (("-p", "ksize=999999999"), "ksize must be an odd whole number from 1 to 511"),
    (("-p", "sigma=1e9"), "sigma=1000000000.0 needs a kernel wider than 511"),
])
def test_family_parameters_are_capped(kreg, params, message) -> None:
    assert message in one_error(kreg("add", "g", "--family", "gaussian", *params))


def test_gabor_bank_orientations_are_capped(kreg) -> None:
    assert "orientations must be from 1 to 64" in one_error(
        kreg("show", "gabor_bank", "-p", "orientations=100000"))


def test_verify_of_a_forged_huge_generator_is_cheap(tmp_path: Path) -> None:
    # A stored 3x3 whose record claims ksize=999999999: verify reports it, it does not allocate exabytes.
    from registry.kernels import families as _families

    record = {"provenance": {"generator": {"family": "box", "parameters": {"ksize": 999999999}}}}
    problems = _families.regenerate_problems(record, np.ones((3, 3), np.float32))
    assert len(problems) == 1 and "ksize must be an odd whole number from 1 to 511" in problems[0]


@pytest.mark.parametrize("args, dtype", [(("--values", "[[1e40]]"), "float32"),
                                         (("--values", "[[1e5]]", "--dtype", "float16"), "float16")])
def test_values_too_large_for_the_dtype(kreg, args, dtype) -> None:
    result = kreg("add", "big", *args)
    line = one_error(result)
    assert f"do not fit in {dtype}" in line and "NaN" not in line
    assert "RuntimeWarning" not in result.output


def test_check_values_gives_no_runtime_warning() -> None:
    import warnings

    from registry.format.content import check_values
    from registry._exceptions import InvalidKernelError

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidKernelError, match="do not fit in float16"):
            check_values(np.array([[1e5]]), dtype="float16")


# -- messages that speak flags, hints that work ------------------------------------------------


def test_dtype_message_speaks_both_languages() -> None:
    from registry.format.content import check_values
    from registry._exceptions import InvalidKernelError

    with pytest.raises(InvalidKernelError) as err:
        check_values(np.zeros((2, 2), np.complex64))
    assert "dtype=" not in str(err.value) or "--dtype" in str(err.value)
    with pytest.raises(InvalidKernelError) as err:
        check_values(np.zeros((2, 2), np.uint16))
    assert "--dtype float32" in str(err.value)


def test_show_a_family_with_parameters(kreg) -> None:
    result = kreg("show", "gaussian", "-p", "ksize=3", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["provenance"]["generator"]["parameters"] == {"ksize": 3, "sigma": 0.0}
    line = one_error(kreg("show", "gaussian"))
    assert "'gaussian' is a family: give its parameters with -p KEY=VALUE (it takes ksize, sigma" in line
    assert one_error(kreg("show", "sobel_x", "-p", "a=1")).startswith("Error: -p sets the parameters of a family")


def test_diff_exits_1_when_the_kernels_differ(kreg) -> None:
    assert kreg("diff", "sobel_x", "sobel_y").exit_code == 1
    assert kreg("diff", "sobel_x", "sobel_x@1").exit_code == 0
    assert kreg("diff", "sobel_x", "sobel5_x").exit_code == 1  # shapes differ


def test_trust_hints(kreg, tmp_path: Path) -> None:
    key = tmp_path / "key"
    kreg("keygen", "-o", str(key))
    pack = tmp_path / "p.h5"
    kreg("export", "sobel_x", "-o", str(pack), "--sign", str(key))
    missing = one_error(kreg("import", str(pack), "--trust", str(tmp_path / "missing.pub")))
    assert "no such file" in missing and "KEY.pub" in missing
    private = one_error(kreg("import", str(pack), "--trust", str(key)))
    assert f"is a private key (its public key is {key}.pub): pass --trust {key}.pub" in private


def test_families_lists_parameters_and_defaults(kreg) -> None:
    from registry.kernels.families import FAMILIES

    result = kreg("families")
    assert result.exit_code == 0
    import re

    assert re.search(r"^gaussian +ksize=0 sigma=0.0$", result.stdout, re.M), result.stdout
    listed = json.loads(kreg("families", "--json").stdout)
    assert [f["name"] for f in listed] == sorted(FAMILIES)
    assert {f["name"]: f["parameters"] for f in listed}["sobel"] == {
        "ksize": 3, "dx": 1, "dy": 0, "unit": False, "scale": 1.0}


def test_no_color_is_honoured(kreg) -> None:
    from registry.cli import kernels as _cli

    assert _cli._coloured("1", 1.0) != "1"  # colour by default (click strips it when piped)
    os.environ["NO_COLOR"] = "1"
    try:
        assert _cli._coloured("1", 1.0) == "1"
    finally:
        del os.environ["NO_COLOR"]


def test_tab_completion_completes_kernel_names(tmp_path: Path) -> None:
    env = {**os.environ, "_KREG_COMPLETE": "bash_complete", "COMP_WORDS": "kreg show sobel_x", "COMP_CWORD": "2",
           "KREG_DB": str(tmp_path / "db"), "PYTHONPATH": str(ROOT)}
    code = "from registry.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    words = [line.split(",", 1)[1] for line in out.stdout.splitlines()]
    assert words == ["sobel_x", "sobel_x_unit", "sobel_xx", "sobel_xy"], out


# -- add --from ------------------------------------------------------------------------------


def test_add_from_a_keras_model_points_to_from_keras(kreg, tmp_path: Path) -> None:
    model = tmp_path / "model.keras"
    model.write_bytes(b"PK")
    line = one_error(kreg("add", "k", "--from", str(model)))
    assert f"--from-keras {model} --layer NAME" in line


@pytest.mark.parametrize("text", ["1 0 -1\n2 0 -2\n1 0 -1\n", "1\t0\t-1\n2  0  -2\n\n1, 0, -1\n",
                                  "# sobel\n1 0 -1\n2 0 -2\n1 0 -1\n"])
def test_whitespace_text_matrices(kreg, tmp_path: Path, text: str) -> None:
    path = tmp_path / "k.txt"
    path.write_text(text)
    assert kreg("add", "k", "--from", str(path)).exit_code == 0
    np.testing.assert_array_equal(Registry(kreg.db).load("k").array, [[1, 0, -1], [2, 0, -2], [1, 0, -1]])
    (tmp_path / "bad.txt").write_text("1 2\n3\n")
    assert "every row needs the same count" in one_error(kreg("add", "b", "--from", str(tmp_path / "bad.txt")))


def test_values_from_a_file_are_imported(kreg, tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((3, 3), np.float32))
    kreg("add", "team/a", "--from", str(tmp_path / "a.npy"))
    kreg("add", "team/b", "--values", "[[1]]")
    rows = json.loads(kreg("list", "team/*", "--origin", "imported", "--json").stdout)
    assert [r["name"] for r in rows] == ["team/a"]


def test_pack_import_marks_kernels_imported(kreg, tmp_path: Path) -> None:
    kreg("add", "team/a", "--values", "[[1, 2]]")
    pack = tmp_path / "p.h5"
    kreg("export", "team/a", "-o", str(pack))
    other = CliRunner().invoke(cli, ["--db", str(tmp_path / "db2"), "import", str(pack)], catch_exceptions=False)
    assert other.exit_code == 0
    rows = CliRunner().invoke(cli, ["--db", str(tmp_path / "db2"), "list", "--origin", "imported", "--json"])
    assert [r["name"] for r in json.loads(rows.stdout)] == ["team/a"]


# -- defects that lived in the store (fixed by store v2): pinned here through the CLI ------------

_ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def test_rm_of_an_unknown_name_says_so_in_flags(kreg) -> None:
    line = one_error(kreg("rm", "team/nope"))
    assert line.startswith("Error: No kernel named 'team/nope'"), line
    assert "all_versions" not in line and "0 versions" not in line


def test_registry_on_a_file_is_a_clear_error(tmp_path: Path) -> None:
    from registry import KregError

    afile = tmp_path / "afile"
    afile.write_text("notes\n")
    for action in (lambda r: r.list_kernels("team/*"), lambda r: r.add("team/a", [[1.0]])):
        with pytest.raises(KregError, match="not a (registry )?folder|is a file"):
            action(Registry(afile))
    assert afile.read_text() == "notes\n"


@pytest.fixture
def foreign_registry(tmp_path: Path):
    """``(run, db)``: a registry with team/a and a leftover in tmp/, and ``run(*args)`` running kreg
    as a user who cannot write it (root drops to nobody with setpriv; others lose write permission)."""
    import shutil
    import tempfile

    if _ROOT_USER:
        if not shutil.which("setpriv"):
            pytest.skip("root needs setpriv to act as another user")
        base = Path(tempfile.mkdtemp(prefix="kreg-foreign-", dir="/tmp"))
        os.chmod(base, 0o755)  # nobody must reach the registry (pytest's tmp_path is 0700)
    else:
        base = tmp_path
    db = base / "db"
    reg = Registry(db)
    reg.add("team/a", [[1.0]])
    reg.close()
    (db / "tmp").mkdir(exist_ok=True)
    (db / "tmp" / "leftover.h5").write_bytes(b"half written")
    before = {p: p.read_bytes() for p in db.rglob("*") if p.is_file()}
    modes = {}
    if not _ROOT_USER:
        for path in [db, *db.rglob("*")]:
            modes[path] = path.stat().st_mode
            os.chmod(path, modes[path] & ~0o222)

    def run(*args: str) -> subprocess.CompletedProcess:
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if _ROOT_USER else []
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(base)}
        return subprocess.run([*prefix, sys.executable, "-m", "registry", "--db", str(db), *args],
                              env=env, capture_output=True, text=True, timeout=120)

    yield run, db
    after = {p: p.read_bytes() for p in db.rglob("*") if p.is_file()}
    for path, mode in modes.items():
        os.chmod(path, mode)
    if _ROOT_USER:
        shutil.rmtree(base)
    assert after == before, "a reader or a refused writer changed the registry"


def test_registry_of_another_user_reads_and_refuses_writes_in_one_line(foreign_registry) -> None:
    run, db = foreign_registry
    listed = run("list", "team/*")
    assert listed.returncode == 0 and "team/a" in listed.stdout, listed.stderr
    assert run("show", "team/a").returncode == 0
    for args in (("add", "team/b", "--values", "[[1]]"), ("rm", "team/a@1")):
        refused = run(*args)
        lines = refused.stderr.splitlines()
        assert refused.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), refused.stderr
        assert "permission denied" in lines[0].lower()
