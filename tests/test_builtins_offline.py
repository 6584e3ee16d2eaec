"""Built-ins and families ship in the package: with the registry unreachable they still load, show,
list and bank (a registry's own kernels say the registry cannot be reached)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import registry
from registry.cli import cli

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "f4")  # OpenCV's 3x3 Sobel in x


@pytest.fixture
def unreachable(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    registry.Registry(s3_url).add("team/x", [[1.0, 2.0]])
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("KREG_DB", s3_url)
    registry._api._default.clear()
    return s3_url


def test_built_ins_and_families_load_and_bank_with_the_registry_unreachable(unreachable: str) -> None:
    reg = registry.Registry(unreachable)
    np.testing.assert_array_equal(reg.load("sobel_x").array, SOBEL_X)
    np.testing.assert_array_equal(reg.load("sobel_x@1").array, SOBEL_X)
    np.testing.assert_array_equal(registry.load("sobel_x").array, SOBEL_X)
    bank = registry.bank(["sobel_x", "sobel_y"])
    np.testing.assert_array_equal(bank.array[:, :, 0, 0], SOBEL_X)
    np.testing.assert_array_equal(bank.array[:, :, 0, 1], SOBEL_X.T)
    assert reg.bank(["sobel_x", "sobel_y"]).shape == (3, 3, 1, 2) and reg.versions("sobel_x") == [1]
    gauss = registry.load("gaussian", sigma=1.0, ksize=3)
    assert gauss.shape == (3, 3) and abs(float(gauss.array.sum()) - 1) < 1e-6
    with pytest.raises(registry.RemoteError, match="Cannot reach"):  # the registry's own kernels need it
        reg.load("team/x")


def test_show_and_list_built_ins_with_the_registry_unreachable(unreachable: str) -> None:
    show = CliRunner().invoke(cli, ["show", "sobel_x"])
    assert show.exit_code == 0 and show.output.startswith("sobel_x@1  3x3 float32 HW"), show.output
    listed = CliRunner().invoke(cli, ["list", "sobel*"])
    assert listed.exit_code == 0 and "sobel_x " in listed.stdout, listed.output
    assert "only the built-in kernels are listed" in listed.stderr and unreachable in listed.stderr
    user = CliRunner().invoke(cli, ["show", "team/x"])
    assert user.exit_code == 1 and "Cannot reach" in user.output
