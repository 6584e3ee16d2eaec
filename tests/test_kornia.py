"""The kornia kernels the README says equal kreg built-ins do (kornia's filter2d correlates, as kreg does)."""

from __future__ import annotations

import numpy as np
import pytest

kornia = pytest.importorskip("kornia")
torch = pytest.importorskip("torch")

import registry  # noqa: E402
from kornia.filters import kernels as K  # noqa: E402

EQUAL = [
    ("laplacian8", lambda: K.get_laplacian_kernel2d(3)),
    ("sobel_x", lambda: K.get_sobel_kernel2d()[0]),
    ("sobel_y", lambda: K.get_sobel_kernel2d()[1]),
    ("box3", lambda: K.get_box_kernel2d((3, 3))[0]),
    ("binomial3", lambda: K.get_pascal_kernel_2d(3, norm=True)),
    ("binomial5", lambda: K.get_pascal_kernel_2d(5, norm=True)),
]


@pytest.mark.parametrize(("name", "make"), EQUAL, ids=[n for n, _ in EQUAL])
def test_kornia_kernel_equals_the_builtin(name: str, make) -> None:
    np.testing.assert_allclose(make().numpy(), registry.load(name).array, rtol=1e-6, atol=1e-7)


def test_kornia_gaussian_equals_the_gaussian_family_with_an_explicit_sigma() -> None:
    for ksize, sigma in [(5, 1.0), (9, 2.0), (7, 1.5)]:
        ours = registry.load("gaussian", ksize=ksize, sigma=sigma).array
        theirs = K.get_gaussian_kernel2d((ksize, ksize), (sigma, sigma))[0].numpy()
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-7)


def test_kornia_normalized_spatial_gradient_is_sobel_unit() -> None:
    # spatial_gradient(normalized=True) divides the Sobel kernel by the sum of its absolute values (8).
    image = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    grad = kornia.filters.spatial_gradient(image, mode="sobel", normalized=True)[0, 0]
    from scipy import ndimage

    img = image[0, 0].numpy().astype(np.float64)
    for axis, name in enumerate(["sobel_x_unit", "sobel_y_unit"]):
        ours = ndimage.correlate(img, registry.load(name).array.astype(np.float64), mode="nearest")
        np.testing.assert_allclose(grad[axis].numpy(), ours, atol=1e-6)
