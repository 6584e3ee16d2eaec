"""Built-ins applied as correlations equal the reference operators of OpenCV and scikit-image
on real images (the samples scikit-image ships), borders included."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import skimage.filters
from scipy import ndimage

import registry

# Gray and colour sample images, as float64 in [0, 1]: no download, they ship with scikit-image.
IMAGES = {
    "camera": skimage.data.camera() / 255.0,
    "coins": skimage.data.coins() / 255.0,
    "astronaut": skimage.data.astronaut() / 255.0,
    "coffee": skimage.data.coffee() / 255.0,
}
# OpenCV's default border (BORDER_REFLECT_101) is scipy's "mirror"; scikit-image
# filters use scipy's "reflect" (OpenCV's BORDER_REFLECT).
CV_BORDER = "mirror"


def correlate(image: np.ndarray, kernel: np.ndarray, mode: str = CV_BORDER, origin=0) -> np.ndarray:
    """Apply a kreg kernel the way TensorFlow does (a correlation), channel by channel."""
    kernel = np.asarray(kernel, np.float64)
    if image.ndim == 2:
        return ndimage.correlate(image, kernel, mode=mode, origin=origin)
    return np.stack([correlate(image[..., c], kernel, mode, origin) for c in range(image.shape[2])], axis=-1)


def assert_close(ours: np.ndarray, reference: np.ndarray) -> None:
    """max |difference| <= 1e-5 of the reference output's range, everywhere."""
    span = float(reference.max() - reference.min()) or 1.0
    worst = float(np.abs(ours - reference).max())
    assert worst <= 1e-5 * span, f"max abs difference {worst:.3g} over a range of {span:.3g}"


def k(name: str) -> np.ndarray:
    return registry.load(name).array


SOBEL = [("sobel_x", 1, 0, 3), ("sobel_y", 0, 1, 3), ("sobel5_x", 1, 0, 5), ("sobel5_y", 0, 1, 5),
         ("sobel7_x", 1, 0, 7), ("sobel7_y", 0, 1, 7), ("sobel_xx", 2, 0, 3), ("sobel_yy", 0, 2, 3),
         ("sobel_xy", 1, 1, 3), ("sobel5_xx", 2, 0, 5), ("sobel5_yy", 0, 2, 5)]


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize(("name", "dx", "dy", "ksize"), SOBEL)
def test_sobel_matches_cv2_sobel(image: str, name: str, dx: int, dy: int, ksize: int) -> None:
    img = IMAGES[image]
    assert_close(correlate(img, k(name)), cv2.Sobel(img, cv2.CV_64F, dx, dy, ksize=ksize))


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize(("name", "dx", "dy"), [("scharr_x", 1, 0), ("scharr_y", 0, 1)])
def test_scharr_matches_cv2_scharr(image: str, name: str, dx: int, dy: int) -> None:
    img = IMAGES[image]
    assert_close(correlate(img, k(name)), cv2.Scharr(img, cv2.CV_64F, dx, dy))


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize(("name", "dx", "dy", "scale"), [("sobel_x_unit", 1, 0, 1 / 8), ("sobel_y_unit", 0, 1, 1 / 8),
                                                         ("scharr_x_unit", 1, 0, 1 / 32), ("scharr_y_unit", 0, 1, 1 / 32)])
def test_unit_variants_are_the_opencv_scale_option(image: str, name: str, dx: int, dy: int, scale: float) -> None:
    img = IMAGES[image]
    op = cv2.Scharr if name.startswith("scharr") else cv2.Sobel
    assert_close(correlate(img, k(name)), op(img, cv2.CV_64F, dx, dy, scale=scale))


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize(("name", "ksize"), [("laplacian4", 1), ("laplacian3", 3), ("laplacian5", 5), ("laplacian7", 7)])
def test_laplacian_matches_cv2_laplacian(image: str, name: str, ksize: int) -> None:
    img = IMAGES[image]
    assert_close(correlate(img, k(name)), cv2.Laplacian(img, cv2.CV_64F, ksize=ksize))


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize(("name", "ksize", "sigma"), [("gaussian3", 3, 0), ("gaussian5", 5, 0), ("gaussian7", 7, 0),
                                                      ("gaussian9", 9, 0), ("gaussian_s1", 0, 1.0), ("gaussian_s2", 0, 2.0)])
def test_gaussian_matches_cv2_gaussianblur(image: str, name: str, ksize: int, sigma: float) -> None:
    img = IMAGES[image]
    assert_close(correlate(img, k(name)), cv2.GaussianBlur(img, (ksize, ksize), sigma))


@pytest.mark.parametrize(("ksize", "sigma"), [(3, 0), (5, 0), (7, 0), (9, 0), (11, 0), (15, 2.5), (31, 5.0), (0, 1.3)])
def test_gaussian_family_matches_get_gaussian_kernel(ksize: int, sigma: float) -> None:
    ours = registry.load("gaussian", ksize=ksize, sigma=sigma, dtype="float64").array
    size = ksize or ours.shape[0]
    g = cv2.getGaussianKernel(size, sigma)
    np.testing.assert_allclose(ours, g @ g.T, atol=1e-15)


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize(("name", "ksize"), [("box3", 3), ("box5", 5)])
def test_box_matches_cv2_blur(image: str, name: str, ksize: int) -> None:
    img = IMAGES[image]
    assert_close(correlate(img, k(name)), cv2.blur(img, (ksize, ksize)))


@pytest.mark.parametrize(
    "params",
    [dict(ksize=21, sigma=4.0, theta=0.0, lambd=10.0, gamma=0.5, psi=0.0),
     dict(ksize=31, sigma=5.0, theta=0.7, lambd=8.0, gamma=0.3, psi=1.2),
     dict(ksize=0, sigma=2.0, theta=0.3, lambd=4.0, gamma=0.5, psi=0.2)],
)
def test_gabor_family_matches_cv2_get_gabor_kernel(params: dict) -> None:
    ours = registry.load("gabor", dtype="float64", **params).array
    ref = cv2.getGaborKernel((params["ksize"],) * 2, params["sigma"], params["theta"], params["lambd"],
                             params["gamma"], params["psi"])
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-12)


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("name", ["gabor21_0", "gabor21_90", "sharpen", "emboss", "unsharp5", "identity3",
                                  "laplacian8", "prewitt_x", "prewitt_y", "binomial5", "log9", "dog9",
                                  "dgauss_x", "dgauss_y", "farid_x", "farid_y"])
def test_correlation_matches_cv2_filter2d(image: str, name: str) -> None:
    img = IMAGES[image]
    assert_close(correlate(img, k(name)), cv2.filter2D(img, cv2.CV_64F, k(name).astype(np.float64)))


def test_gabor_bank_planes_are_the_named_gabors() -> None:
    bank = k("gabor_bank8")
    assert bank.shape == (21, 21, 1, 8)
    np.testing.assert_array_equal(bank[:, :, 0, 0], k("gabor21_0"))
    np.testing.assert_allclose(bank[:, :, 0, 4], k("gabor21_90"), atol=1e-7)


@pytest.mark.parametrize("image", ["camera", "coins"])
@pytest.mark.parametrize(
    ("name", "reference"),
    [("sobel_h_skimage", skimage.filters.sobel_h), ("sobel_v_skimage", skimage.filters.sobel_v),
     ("scharr_h_skimage", skimage.filters.scharr_h), ("scharr_v_skimage", skimage.filters.scharr_v),
     ("prewitt_h_skimage", skimage.filters.prewitt_h), ("prewitt_v_skimage", skimage.filters.prewitt_v)],
)
def test_skimage_variants_match_skimage(image: str, name: str, reference) -> None:
    img = IMAGES[image]
    assert_close(correlate(img, k(name), mode="reflect"), reference(img))


@pytest.mark.parametrize("image", ["camera", "coins"])
def test_farid_matches_skimage_farid(image: str) -> None:
    img = IMAGES[image]
    assert_close(correlate(img, k("farid_y"), mode="reflect"), skimage.filters.farid_h(img))
    assert_close(correlate(img, k("farid_x"), mode="reflect"), skimage.filters.farid_v(img))


@pytest.mark.parametrize("image", ["camera", "coins"])
@pytest.mark.parametrize(("name", "reference"), [("roberts_pos", skimage.filters.roberts_pos_diag),
                                                 ("roberts_neg", skimage.filters.roberts_neg_diag)])
def test_roberts_matches_skimage_up_to_the_anchor(image: str, name: str, reference) -> None:
    """skimage convolves with the kernel (a flip: the opposite sign) and, the size being even,
    anchors one pixel later than scipy's correlate does (origin=-1): the documented caveat."""
    img = IMAGES[image]
    assert_close(correlate(img, k(name), mode="reflect", origin=-1), -reference(img))


@pytest.mark.parametrize("image", ["camera", "coins"])
def test_laplace_skimage_matches_skimage_laplace(image: str) -> None:
    img = IMAGES[image]
    assert_close(correlate(img, k("laplace_skimage"), mode="reflect"), skimage.filters.laplace(img, ksize=3))
    np.testing.assert_array_equal(k("laplace_skimage"), -k("laplacian4"))


@pytest.mark.parametrize("image", ["camera", "coins"])
@pytest.mark.parametrize(("name", "reference"), [("roberts_pos_skimage", skimage.filters.roberts_pos_diag),
                                                 ("roberts_neg_skimage", skimage.filters.roberts_neg_diag)])
def test_roberts_skimage_variants_match_skimage_with_the_top_left_anchor(image: str, name: str, reference) -> None:
    """origin=-1 is scipy's way to anchor a 2x2 kernel at its top-left pixel, as TensorFlow's 'same' does."""
    img = IMAGES[image]
    assert_close(correlate(img, k(name), mode="reflect", origin=-1), reference(img))
