"""Content pins: ``name@sha256:HEX`` loads the version with those values in any registry that
holds them, whatever its number there; a short, ambiguous or non-hex pin is one clear error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import registry
from registry.cli import cli


def raw_hash(array: np.ndarray) -> str:
    """FORMAT.md section 3, computed here: ``kreg-v1:DTYPE:SHAPE\\n`` then the little-endian values."""
    head = f"kreg-v1:{array.dtype.name}:{','.join(map(str, array.shape))}\n".encode()
    return hashlib.sha256(head + array.astype(array.dtype.newbyteorder("<")).tobytes()).hexdigest()


STEP = np.array([[1.0, -1.0]], "f4")
RAMP = np.array([[2.0, -2.0]], "f4")


def test_a_pin_loads_the_same_values_wherever_the_version_has_another_number(tmp_path: Path) -> None:
    here = registry.Registry(tmp_path / "here", builtins=False)
    here.add("team/edge", RAMP)
    kernel = here.add("team/edge", STEP)  # team/edge@2 here
    assert kernel.pin == f"team/edge@sha256:{raw_hash(STEP)[:12]}"
    pack = here.export(["team/edge@2"], tmp_path / "edge.h5")
    there = registry.Registry(tmp_path / "there", builtins=False)
    there.import_pack(pack)  # team/edge@1 there: an import numbers anew
    for reg, number in ((here, 2), (there, 1)):
        for pin in (kernel.pin, f"team/edge@sha256:{raw_hash(STEP)}", f"team/edge@sha256:{raw_hash(STEP)[:20].upper()}"):
            got = reg.load(pin)
            np.testing.assert_array_equal(got.array, STEP)
            assert got.version == number and got.sha256 == raw_hash(STEP)
    assert [k.ref for k in there.resolve([kernel.pin])] == ["team/edge@1"]


def test_a_built_in_has_a_pin_too(tmp_path: Path) -> None:
    reg = registry.Registry(tmp_path / "reg")
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "f4")  # OpenCV's 3x3 Sobel in x
    pin = f"sobel_x@sha256:{raw_hash(reg.load('sobel_x').array)[:12]}"
    np.testing.assert_array_equal(reg.load(pin).array, sobel)


@pytest.mark.parametrize("pin, error, words", [
    ("team/edge@sha256:375845d7bcf", registry.InvalidNameError, "at least 12"),
    ("team/edge@sha256:375845d7bcfz", registry.InvalidNameError, "hex"),
    ("team/edge@sha256:" + "0" * 65, registry.InvalidNameError, "at most 64"),
    ("team/edge@sha256:000000000000", registry.KernelNotFoundError, "starts with 000000000000"),
])
def test_a_bad_pin_is_one_clear_error(tmp_path: Path, pin: str, error: type, words: str) -> None:
    reg = registry.Registry(tmp_path / "reg", builtins=False)
    reg.add("team/edge", STEP)
    with pytest.raises(error, match=words):
        reg.load(pin)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "reg"), "show", pin])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith("Error: ")


def test_a_pin_that_matches_versions_that_differ_is_refused(tmp_path: Path) -> None:
    reg = registry.Registry(tmp_path / "reg", builtins=False)
    reg.add("team/w", np.ones((1, 1, 1, 2), "f4"), layout="HWIO")
    reg.add("team/w", np.ones((1, 1, 1, 2), "f4"), layout="HWIM")  # the same values: one hash, two kernels
    with pytest.raises(registry.InvalidNameError, match=r"team/w@1, team/w@2.*pin a version number"):
        reg.load(reg.load("team/w@1").pin)
    reg.add("team/r", STEP)
    reg.add("team/r", RAMP)
    reg.add("team/r", STEP)  # a revert: @3 is the same kernel as @1
    assert reg.load(f"team/r@sha256:{raw_hash(STEP)[:12]}").version == 3


def test_kreg_show_prints_the_pin(tmp_path: Path) -> None:
    registry.Registry(tmp_path / "reg", builtins=False).add("team/edge", STEP)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "reg"), "show", "team/edge"])
    pin = f"team/edge@sha256:{raw_hash(STEP)[:12]}"
    assert result.exit_code == 0 and f"pin                          {pin}" in result.output, result.output
    again = CliRunner().invoke(cli, ["--db", str(tmp_path / "reg"), "show", pin])
    assert again.exit_code == 0 and again.output.startswith("team/edge@1 ")


def test_kreg_show_prints_no_pin_for_a_kernel_generated_on_the_fly(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "reg"), "show", "gaussian", "-p", "sigma=1"])
    assert result.exit_code == 0 and "pin " not in result.output, result.output
