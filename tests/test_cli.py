"""The kreg command line, driven through click's CliRunner with exact output and exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from registry.cli import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def kreg(tmp_path: Path):
    """Run ``kreg --db <tmp> ARGS``; returns the click Result."""
    db = tmp_path / "db"
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, ["--db", str(db), *args], input=input, catch_exceptions=False)

    run.db = db  # type: ignore[attr-defined]
    return run


def test_add_list_show_round_trip(kreg) -> None:
    result = kreg("add", "team/edge", "--values", "[[1, 0, -1], [2, 0, -2], [1, 0, -1]]", "-d", "Sobel x", "-t", "edge")
    assert (result.exit_code, result.stdout) == (0, "team/edge@1\n")
    result = kreg("list", "team/*")
    assert result.exit_code == 0
    assert result.stdout == (
        "NAME       VER  SHAPE  DTYPE    LAYOUT  ORIGIN    DESCRIPTION\n"
        "team/edge  1    3x3    float32  HW      handmade  Sobel x\n"
    )
    shown = kreg("show", "team/edge")
    assert shown.exit_code == 0
    assert shown.stdout.splitlines()[0] == "team/edge@1  3x3 float32 HW"
    assert "  provenance.description       Sobel x" in shown.stdout
    assert shown.stdout.rstrip().splitlines()[-3:] == [" 1  0 -1", " 2  0 -2", " 1  0 -1"]
    record = json.loads(kreg("show", "team/edge", "--json").stdout)
    assert record["name"] == "team/edge" and record["shape"] == [3, 3]


def test_list_filters_sorts_and_prints_json(kreg) -> None:
    for name in ("gauss_11", "gauss_3"):
        kreg("add", f"t/{name}", "--values", "[[1]]", "-t", "blur")
    names = [line.split()[0] for line in kreg("list", "t/*").stdout.splitlines()[1:]]
    assert names == ["t/gauss_3", "t/gauss_11"]
    assert kreg("list", "t/*", "--exclude", "*_3").stdout.splitlines()[1].startswith("t/gauss_11")
    records = json.loads(kreg("list", "t/*", "--json").stdout)
    assert [r["name"] for r in records] == ["t/gauss_3", "t/gauss_11"]
    builtin = kreg("list", "sobel_x*", "--origin", "builtin", "--exclude", "sobel_xx").stdout.splitlines()
    assert [line.split()[0] for line in builtin[1:]] == ["sobel_x", "sobel_x_unit", "sobel_xy"]
    empty = kreg("list", "nothing*")
    assert (empty.exit_code, empty.stdout, empty.stderr) == (0, "", "No kernels match.\n")


def test_show_large_kernels_prints_statistics(kreg, tmp_path: Path) -> None:
    np.save(tmp_path / "big.npy", np.ones((32, 32), np.float32))
    kreg("add", "big", "--from", str(tmp_path / "big.npy"))
    assert kreg("show", "big").stdout.splitlines()[-1] == (
        "values: 1024 (4096 bytes), min 1, max 1, mean 1, std 0, sum 1024"
    )


def test_unknown_name_suggests_and_exits_2(kreg) -> None:
    result = kreg("show", "sobel_q")
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: No kernel named 'sobel_q' in {kreg.db}. Did you mean 'sobel_y' or 'sobel_x' or 'sobel'? "
        "See 'kreg list'.\n"
    )
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "k", "--values", "[[1, 2], [3]"], "Error: --values is not valid JSON"),
        (["add", "k", "--values", "[[1, 2], [3]]"], "Error: Kernel values must be a numeric array or nested lists"),
        (["add", "k", "--values", "[[1]]", "--layout", "HWIO"], "Error: Layout HWIO needs values of rank 4"),
        (["add", "Bad", "--values", "[[1]]"], "Error: A kernel name is lowercase"),
        (["add", "k"], "Error: Give the values with exactly one of"),
        (["add", "k", "--from", "missing.npy"], "Error: No such file: missing.npy."),
        (["add", "k", "--from", "w.xyz"], "Error: Cannot read values from w.xyz: the suffix must be one of"),
        (["add", "k", "--family", "gaussian", "-p", "sigma"], "Error: --param takes KEY=VALUE"),
        (["add", "k", "--family", "gaussian", "-p", "size=3"], "Error: Family 'gaussian' has no parameter 'size'"),
        (["rm", "nope@1"], "Error: No kernel named 'nope'"),
        (["verify", "nope"], "Error: No kernel named 'nope'"),
        (["export", "sobel_x", "-o", "x.npy", "--format", "npy", "sobel_y"], "Error: --format npy writes one kernel"),
        (["schema", "--version", "7"], "Error: This kreg knows kernel-record schema version 1 only"),
        # 0 printed version 1's schema with exit 0 (it read as "no version given").
        (["schema", "--version", "0"], "Error: This kreg knows kernel-record schema version 1 only (the versions "
                                       "it can print: 1). Received: 0, which is no schema version"),
        (["schema", "--version", "-1"], "Error: This kreg knows kernel-record schema version 1 only"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(kreg, args: list[str], message: str) -> None:
    result = kreg(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1


def test_a_file_that_is_not_what_its_extension_says(kreg, tmp_path: Path) -> None:
    fake = tmp_path / "w.npy"
    fake.write_text("this is not numpy")
    result = kreg("add", "k", "--from", str(fake))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {fake} is not a readable .npy file (ValueError:")
    pack = tmp_path / "p.h5"
    pack.write_bytes(b"PK\x03\x04 a zip, not HDF5")
    result = kreg("import", str(pack))
    assert (result.exit_code, result.stderr) == (
        2, f"Error: {pack} is not HDF5 (no HDF5 signature at byte 0); a kreg file is an HDF5 container written by kreg.\n")


def test_add_from_files_of_every_kind(kreg, tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "a.npy", values)
    np.savez(tmp_path / "b.npz", conv=values, other=values * 2)
    (tmp_path / "c.json").write_text(json.dumps({"values": values.tolist()}))
    np.savetxt(tmp_path / "d.csv", values, delimiter=",")
    from safetensors.numpy import save_file

    save_file({"w": values}, str(tmp_path / "e.safetensors"))
    sources = ["a.npy", "b.npz:conv", "c.json", "d.csv", "e.safetensors:w"]
    for i, source in enumerate(sources):
        result = kreg("add", f"f/k{i}", "--from", str(tmp_path / source))
        assert result.exit_code == 0, result.stderr
    result = kreg("add", "f/x", "--from", str(tmp_path / "b.npz"))
    assert result.stderr.startswith(f"Error: {tmp_path / 'b.npz'} holds 2 arrays; name one as")
    from registry import Registry

    reg = Registry(kreg.db)
    for i in range(len(sources)):
        np.testing.assert_array_equal(reg.load(f"f/k{i}").array, values)


def test_add_family_convolution_and_options(kreg) -> None:
    assert kreg("add", "t/blur", "--family", "gaussian", "-p", "sigma=2", "-p", "ksize=9").stdout == "t/blur@1\n"
    record = json.loads(kreg("show", "t/blur", "--json").stdout)
    assert record["provenance"]["generator"] == {"family": "gaussian", "parameters": {"ksize": 9, "sigma": 2.0}}
    assert record["provenance"]["origin"] == "generated"
    kreg("add", "t/conv", "--values", "[[1, 2, 3]]", "--convolution", "--license", "MIT", "--reference", "paper",
         "--author", "me", "--dtype", "float64")
    record = json.loads(kreg("show", "t/conv", "--json").stdout)
    assert record["dtype"] == "float64" and record["provenance"]["source_operation"] == "convolution"
    assert (record["provenance"]["license"], record["provenance"]["references"]) == ("MIT", ["paper"])


def test_rm_one_version_and_all_with_confirmation(kreg) -> None:
    kreg("add", "k", "--values", "[[1]]")
    kreg("add", "k", "--values", "[[2]]")
    assert kreg("rm", "k@1").stdout == "removed k@1\n"
    kreg("add", "k", "--values", "[[3]]")
    refused = kreg("rm", "k", "--all", input="n\n")
    assert refused.exit_code == 0 and "Nothing removed." in refused.stderr  # the answer, not an error
    result = kreg("rm", "k", "--all", input="y\n")
    assert (result.exit_code, result.stdout) == (0, "removed k@2\nremoved k@3\n")
    kreg("add", "j", "--values", "[[1]]")
    assert kreg("rm", "j", "--all", "--yes").stdout == "removed j@1\n"


def test_verify_passes_then_reports_damage_with_exit_1(kreg) -> None:
    kreg("add", "k", "--values", "[[1, 2, 3, 4]]")
    ok = kreg("verify", "k")
    assert (ok.exit_code, ok.stderr) == (0, "All kernels verified.\n")
    obj = kreg.db / "kernels" / "k" / "@1.h5"
    import h5py

    with h5py.File(obj, "r") as f:
        offset = f["kernels/k/@1"].id.get_offset()
    data = bytearray(obj.read_bytes())
    data[offset] ^= 1
    obj.write_bytes(bytes(data))
    from registry._api import _default

    _default.clear()  # a new process would not have the verified values cached
    bad = kreg("verify")
    assert bad.exit_code == 1
    assert bad.stderr.splitlines()[0].startswith("k@1: ") and "do not match their sha256" in bad.stderr
    assert bad.stderr.splitlines()[-1] == "Error: 1 damaged kernel version(s)."


def test_diff(kreg) -> None:
    kreg("add", "a", "--values", "[[1, 2]]", "-d", "first")
    kreg("add", "b", "--values", "[[1, 3]]", "-d", "second")
    out = kreg("diff", "a", "b").stdout.splitlines()
    assert out[:2] == ["--- a@1", "+++ b@1"]
    assert "  provenance.description: first -> second" in out
    assert out[-1] == "values: differ; max abs diff 1, mean abs diff 0.5, max relative 0.5, 1 of 2 differ"
    assert kreg("diff", "a", "sobel_x").stdout.splitlines()[-1] == "values: shapes differ, (1, 2) vs (3, 3)"


def test_export_import_pack_between_registries(kreg, tmp_path: Path) -> None:
    kreg("add", "team/edge", "--values", "[[1, 0, -1]]")
    pack = tmp_path / "edges.h5"
    result = kreg("export", "sobel_x", "team/*", "-o", str(pack), "--author", "vision")
    assert (result.exit_code, result.stdout) == (0, f"{pack}\n")
    assert kreg("export", "sobel_x", "-o", str(pack)).stderr.startswith(f"Error: {pack} exists; pass --force")
    other = CliRunner()
    db2 = tmp_path / "db2"

    def run2(*args: str):
        return other.invoke(cli, ["--db", str(db2), *args], catch_exceptions=False)

    dry = run2("import", str(pack), "--dry-run", "--prefix", "v/")
    assert dry.stdout == "add               sobel_x@1 -> v/sobel_x@1\nadd               team/edge@1 -> v/team/edge@1\n"
    assert dry.stderr == (f"Notice: {pack} is unsigned; its origin is not verified.\n"
                          "Dry run: would do 2 added, 0 new versions, 0 skipped.\n")
    assert run2("list", "v/*").stdout == ""
    assert run2("import", str(pack), "--prefix", "v/").exit_code == 0
    again = run2("import", str(pack), "--prefix", "v/")
    assert again.stdout.splitlines() == ["skip (identical)  sobel_x@1 -> v/sobel_x@1",
                                         "skip (identical)  team/edge@1 -> v/team/edge@1"]
    record = json.loads(run2("show", "v/team/edge", "--json").stdout)
    assert record["provenance"]["pack"]["name"] == "edges" and record["provenance"]["pack"]["author"] == "vision"


def test_export_single_kernel_formats(kreg, tmp_path: Path) -> None:
    for fmt in ("npy", "safetensors", "json"):
        out = tmp_path / f"s.{fmt}"
        assert kreg("export", "sobel_x", "--format", fmt, "-o", str(out)).exit_code == 0
        back = kreg("add", f"back/{fmt}", "--from", str(out) + (":sobel_x" if fmt == "safetensors" else ""))
        assert back.exit_code == 0, back.stderr
        assert kreg("diff", "sobel_x", f"back/{fmt}").stdout.splitlines()[-1].startswith("values: identical")


def test_signed_packs(kreg, tmp_path: Path) -> None:
    key = tmp_path / "key"
    public = kreg("keygen", "-o", str(key)).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", public) and (tmp_path / "key.pub").read_text().strip() == public
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    pack = tmp_path / "signed.h5"
    assert kreg("export", "sobel_x", "-o", str(pack), "--sign", str(key)).exit_code == 0
    ok = kreg("import", str(pack), "--trust", str(tmp_path / "key.pub"), "--prefix", "s/")
    assert ok.exit_code == 0 and "Notice" not in ok.stderr
    other = tmp_path / "other"
    kreg("keygen", "-o", str(other))
    refused = kreg("import", str(pack), "--trust", str(tmp_path / "other.pub"), "--prefix", "t/")
    assert refused.exit_code == 1
    assert "not a trusted key; refused because --trust was given" in refused.stderr
    unsigned = tmp_path / "unsigned.h5"
    kreg("export", "sobel_y", "-o", str(unsigned))
    assert "the pack is unsigned; refused" in kreg("import", str(unsigned), "--trust", public).stderr


def test_plot_writes_a_png_of_the_expected_grid(kreg, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "edges.png"
    result = kreg("plot", "sobel_?", "scharr_x", "-o", str(out))
    assert (result.exit_code, result.stdout) == (0, f"{out}\n")
    from matplotlib.image import imread

    assert imread(out).shape[:2] == (200, 600)  # 3 kernels: one row of 3 cells of 200 px
    withimage = tmp_path / "bank.png"
    assert kreg("plot", "gabor_bank8", "sobel_x", "-o", str(withimage), "--image", "camera").exit_code == 0
    assert imread(withimage).shape[:2] == (800, 1600)  # 9 planes: 2 rows of 8, each with a response row
    bad = kreg("plot", "sobel_x", "-o", str(out), "--image", "no_such_sample")
    assert bad.exit_code == 2 and "scikit-image sample such as camera" in bad.stderr


def test_schema_and_info(kreg) -> None:
    schema = json.loads(kreg("schema").stdout)
    assert schema["title"] == "KernelRecord"
    info = kreg("info").stdout
    assert f"registry:        {kreg.db}" in info and "HDF5:" in info and "built-ins:" in info


def test_every_command_has_help_with_an_example_and_is_in_the_readme(kreg) -> None:
    readme = (ROOT / "README.md").read_text()
    for name, command in cli.commands.items():
        help_text = kreg(name, "--help").stdout
        assert command.get_short_help_str(), name
        assert "Example:" in help_text, f"kreg {name} --help has no example"
        assert f"kreg {name}" in readme, f"kreg {name} is not documented in README.md"


def test_python_dash_m_registry_and_quiet(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "registry", "--db", str(tmp_path / "r"), "-q", "list", "nothing*"],
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_kreg_list_and_show_do_not_import_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys; from registry.cli import cli\n"
        f"for args in (['list'], ['show', 'sobel_x'], ['verify', 'sobel_x'], ['export', 'sobel_x', '-o', {str(tmp_path / 'p.h5')!r}]):\n"
        f"    try: cli.main(['--db', {str(tmp_path / 'db')!r}, *args], standalone_mode=False)\n"
        "    except SystemExit as exc:\n"  # a command that fails must fail this test, not pass unseen
        "        if exc.code: raise\n"
        "print('LOADED', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "LOADED []", result.stderr
    assert (tmp_path / "p.h5").is_file(), "kreg export wrote nothing"
