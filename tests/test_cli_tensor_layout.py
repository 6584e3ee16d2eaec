"""A checkpoint tensor read in the wrong layout is caught: by its bias when it has one (refused,
naming the layout that fits), by its shape when it has none (a warning, stored as given)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from registry import InvalidKernelError
from registry._exceptions import LayoutWarning
from registry.adapters.learned import from_tensors
from registry.cli import cli

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def checkpoint(tmp_path: Path, shape: tuple[int, ...], bias: int | None) -> Path:
    rng = np.random.default_rng(0)
    tensors = {"conv1.weight": rng.standard_normal(shape).astype("f4")}
    if bias is not None:
        tensors["conv1.bias"] = rng.standard_normal(bias).astype("f4")
    path = tmp_path / "ckpt.safetensors"
    safetensors_numpy.save_file(tensors, str(path))
    return path


def kreg(tmp_path: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--db", str(tmp_path / "db"), *args])


def test_an_oihw_tensor_with_its_bias_given_as_hwio_is_refused_naming_oihw(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, (16, 3, 3, 3), bias=16)
    result = kreg(tmp_path, "add", "t/c", "--from", str(path), "--tensor", "conv1.weight", "--layout", "HWIO")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "has 16 values" in lines[0] and "this looks like OIHW" in lines[0] and "--layout OIHW" in lines[0]
    assert "received" not in lines[0].lower()  # no schema dump
    assert not (tmp_path / "db" / "index.json").exists()
    result = kreg(tmp_path, "add", "t/c", "--from", str(path), "--tensor", "conv1.weight")  # OIHW, the default
    assert result.exit_code == 0 and result.stderr == "", result.output


def test_without_a_bias_a_shape_that_reads_as_another_layout_is_warned_and_stored_as_given(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, (16, 3, 3, 3), bias=None)
    result = kreg(tmp_path, "add", "t/c", "--from", str(path), "--tensor", "conv1.weight", "--layout", "HWIO")
    assert result.exit_code == 0, result.output
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("Warning: ")
    assert "16x3 kernel in HWIO but as a 3x3 one in OIHW: this looks like OIHW" in warning[0]
    shown = kreg(tmp_path, "show", "t/c@1", "--json").stdout
    assert '"layout": "HWIO"' in shown and '"shape": [\n    16,\n    3,\n    3,\n    3\n  ]' in shown


@pytest.mark.parametrize(("shape", "layout", "looks"), [
    ((16, 3, 3, 3), "HWIO", "OIHW"),    # a 16x3 kernel as given, 3x3 as OIHW
    ((3, 3, 16, 16), "OIHW", "HWIO"),   # a 16x16 kernel with 3 channels as given, 3x3 with 16 as HWIO
    ((5, 1, 3, 3), "HWIO", "OIHW"),
    ((64, 64, 3, 3), "OIHW", None),     # PyTorch's usual conv: no word
    ((3, 3, 64, 64), "HWIO", None),     # Keras' usual conv
    ((1, 7, 64, 64), "HWIO", None),     # an Inception 1x7: oblong, but the other reading is 64x64
    ((3, 3, 3, 3), "OIHW", None),       # both readings 3x3: nothing to tell them apart
])
def test_which_shapes_are_called_another_layout(shape: tuple[int, ...], layout: str, looks: str | None) -> None:
    tensors = {"c.weight": np.ones(shape, "f4")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from_tensors(tensors, "c", layout=layout)
    said = [str(w.message) for w in caught if issubclass(w.category, LayoutWarning)]
    assert said == ([] if looks is None else [said[0]])
    if looks is not None:
        assert f"this looks like {looks}" in said[0]


def test_a_bias_that_fits_no_layout_is_refused_plainly() -> None:
    tensors = {"c.weight": np.ones((16, 3, 3, 3), "f4"), "c.bias": np.zeros(5, "f4")}
    with pytest.raises(InvalidKernelError, match=r"has 5 values, but as OIHW .* has 16 outputs\. Check the layout"):
        from_tensors(tensors, "c")
    depthwise = {"c.weight": np.ones((6, 1, 3, 3), "f4"), "c.bias": np.zeros(6, "f4")}
    assert from_tensors(depthwise, "c", groups=3).layout == "HWIM"  # 3 channels x 2: six outputs, as its bias
