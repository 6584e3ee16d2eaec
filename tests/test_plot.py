"""kreg plot: responses as the layer computes them, scales, colour maps and values that fit."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
cv2 = pytest.importorskip("cv2")

from registry import Registry  # noqa: E402
from registry.kernels.kernel import Kernel  # noqa: E402
from registry._plot import figure, layer_input, response, units  # noqa: E402


def _kernel(values: np.ndarray, layout: str, name: str = "k") -> Kernel:
    return Kernel({"name": name, "version": 1, "layout": layout, "sha256": "0" * 64}, values.astype(np.float32))


def _cv2(image: np.ndarray, plane: np.ndarray) -> np.ndarray:
    # OpenCV's filter2D is a correlation; BORDER_REFLECT_101 is the border kreg plot uses.
    return cv2.filter2D(image, cv2.CV_64F, plane.astype(np.float64), borderType=cv2.BORDER_REFLECT_101)


def test_hwio_response_sums_every_input_channel_like_the_layer() -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3, 3, 3, 2))
    image = rng.random((20, 24, 3))
    for j, unit in enumerate(units(_kernel(weights, "HWIO"))):
        expected = sum(_cv2(image[..., i], weights[:, :, i, j].astype(np.float32)) for i in range(3))
        np.testing.assert_allclose(response(unit, image), expected, atol=1e-9)


def test_depthwise_response_reads_one_channel_per_output() -> None:
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(3, 3, 2, 2))
    image = rng.random((16, 16, 2))
    got = [response(u, image) for u in units(_kernel(weights, "HWIM"))]
    expected = [_cv2(image[..., c], weights[:, :, c, m].astype(np.float32)) for c in range(2) for m in range(2)]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_grey_image_feeds_every_channel_and_rgb_feeds_three() -> None:
    grey = np.random.default_rng(2).random((8, 8))
    stacked, note = layer_input(grey, 3)
    assert stacked.shape == (8, 8, 3) and note == " (grey x3)"
    rgb = np.random.default_rng(3).random((8, 8, 3))
    assert layer_input(rgb, 3)[0] is rgb


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_response_is_named_and_smoothing_uses_a_sequential_map(tmp_path) -> None:
    pytest.importorskip("skimage")
    reg = Registry(tmp_path / "db")
    fig = figure(reg.resolve(["gaussian5", "sobel_x"]), image="camera")
    assert "gaussian5@1 on camera" in _titles(fig) and "sobel_x@1 on camera" in _titles(fig)
    maps = {ax.get_title(): ax.images[0].get_cmap().name for ax in fig.axes if ax.images and ax.get_title()}
    assert maps["gaussian5@1 on camera"] == "gray" and maps["sobel_x@1 on camera"] == "RdBu_r"
    limits = {ax.get_title(): ax.images[0].get_clim() for ax in fig.axes if ax.images and ax.get_title()}
    assert limits["gaussian5@1 on camera"][0] == 0


def test_every_plane_has_a_colour_bar_and_shared_scale_is_one_scale(tmp_path) -> None:
    reg = Registry(tmp_path / "db")
    kernels = reg.resolve(["sobel_x", "sobel_x_unit"])
    own = figure(kernels)
    shared = figure(kernels, shared_scale=True)
    def clims(fig):
        return [ax.images[0].get_clim() for ax in fig.axes if ax.images and ax.get_title()]
    assert clims(own) == [(-2.0, 2.0), (-0.25, 0.25)]
    assert clims(shared) == [(-2.0, 2.0), (-2.0, 2.0)]
    # A colour bar is an extra axes next to each plane.
    assert len(own.axes) == 2 * 2


def test_values_are_written_only_where_they_fit(tmp_path) -> None:
    reg = Registry(tmp_path / "db")
    fig = figure(reg.resolve(["sobel_x", "gaussian_31"]) if "gaussian_31" in reg else
                 [reg.load("sobel_x"), reg.load("gaussian", ksize=31, sigma=5.0)])
    texts = {ax.get_title(): len(ax.texts) for ax in fig.axes if ax.get_title()}
    assert texts["sobel_x@1"] == 9
    assert [n for title, n in texts.items() if title.startswith("gaussian")] == [0]
