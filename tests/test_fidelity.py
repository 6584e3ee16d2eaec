"""Every built-in equals an independent reference: OpenCV's or scikit-image's operator on real
images, or the formula evaluated here from the parameters its description documents.

The table ``REFERENCES`` has one row per built-in and the test is parametrized over the
shipped database, so a new built-in without a row fails, and so does any drift of a
built-in's values (a changed parameter in ``kernels.toml`` rebuilt into ``builtin.h5``).
kreg's own filters never serve as the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import skimage.data
import skimage.filters
from scipy import ndimage
from scipy.special import comb

import registry
from registry.kernels.builtins import BuiltinLayer
from registry._paths import builtin_db_path

# Gray and colour sample images, as float64 in [0, 1]: no download, they ship with scikit-image.
IMAGES = {
    "camera": skimage.data.camera() / 255.0,
    "coins": skimage.data.coins() / 255.0,
    "astronaut": skimage.data.astronaut() / 255.0,
    "coffee": skimage.data.coffee() / 255.0,
}
GRAY = ("camera", "coins")  # scikit-image's edge filters take 2-D images
# OpenCV's default border (BORDER_REFLECT_101) is scipy's "mirror"; scikit-image
# filters use scipy's "reflect" (OpenCV's BORDER_REFLECT).
CV, SK = "mirror", "reflect"

Image = np.ndarray
Op = Callable[[Image], np.ndarray]


@dataclass(frozen=True)
class Ref:
    """How one built-in is checked.

    Attributes:
        source: what the reference is, for failure messages.
        op: the reference operator on an image (compared with kreg's kernel applied as a
            correlation with ``mode`` and ``origin``), or None.
        kernel: the reference values themselves (compared entry by entry), or None.
        documented: texts the built-in's description must contain: the parameters the
            formula reference was built from are the documented ones.
        gray: the reference takes 2-D images only.
    """

    source: str
    op: Op | None = None
    kernel: Callable[[], np.ndarray] | None = None
    mode: str = CV
    origin: int = 0
    documented: tuple[str, ...] = ()
    gray: bool = False


def sobel(dx: int, dy: int, ksize: int, scale: float = 1.0) -> Ref:
    def derivs() -> np.ndarray:
        kx, ky = cv2.getDerivKernels(dx, dy, ksize, normalize=False, ktype=cv2.CV_64F)
        return np.outer(ky, kx) * scale

    return Ref(f"cv2.Sobel(dx={dx}, dy={dy}, ksize={ksize}, scale={scale:g}) and cv2.getDerivKernels",
               op=lambda img: cv2.Sobel(img, cv2.CV_64F, dx, dy, ksize=ksize, scale=scale), kernel=derivs)


def scharr(dx: int, dy: int, scale: float = 1.0) -> Ref:
    def derivs() -> np.ndarray:
        kx, ky = cv2.getDerivKernels(dx, dy, cv2.FILTER_SCHARR, normalize=False, ktype=cv2.CV_64F)
        return np.outer(ky, kx) * scale

    return Ref(f"cv2.Scharr(dx={dx}, dy={dy}, scale={scale:g}) and cv2.getDerivKernels(FILTER_SCHARR)",
               op=lambda img: cv2.Scharr(img, cv2.CV_64F, dx, dy, scale=scale), kernel=derivs)


def skimage_op(fn: Op, factor: float = 1.0) -> Ref:
    return Ref(f"{factor:g} * skimage.filters.{fn.__name__}", op=lambda img: factor * fn(img), mode=SK, gray=True)


def gaussian_blur(ksize: int, sigma: float) -> Ref:
    return Ref(f"cv2.GaussianBlur(ksize={ksize}, sigma={sigma:g})",
               op=lambda img: cv2.GaussianBlur(img, (ksize, ksize), sigma))


def gabor(ksize: int, sigma: float, theta: float, lambd: float, gamma: float, psi: float) -> np.ndarray:
    return cv2.getGaborKernel((ksize, ksize), sigma, theta, lambd, gamma, psi, ktype=cv2.CV_64F)


def delta(size: int) -> np.ndarray:
    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1.0
    return impulse


def log_reference(ksize: int, sigma: float) -> np.ndarray:
    """scipy's Laplacian of a sampled Gaussian on a ksize grid, then the documented normalization
    of the `log` family: shifted to sum to 0, scaled so (x^2 + y^2) / 2 gives its Laplacian, 2."""
    radius = ksize // 2
    values = ndimage.gaussian_laplace(delta(ksize), sigma, mode="constant", truncate=(radius + 0.25) / sigma)
    values -= values.mean()
    x = np.arange(ksize) - radius
    xx, yy = np.meshgrid(x, x)
    return values * 2 / np.sum(values * (xx * xx + yy * yy) / 2)


def dgauss_reference(ksize: int, sigma: float, axis: int) -> np.ndarray:
    """scipy's first derivative of a sampled Gaussian, scaled as documented: a unit ramp along the
    derivative's axis gives 1 (which also fixes the sign: rising to the right / down is positive)."""
    radius = ksize // 2
    order = (0, 1) if axis == 1 else (1, 0)
    values = ndimage.gaussian_filter(delta(ksize), sigma, order=order, mode="constant",
                                     truncate=(radius + 0.25) / sigma)
    ramp = np.arange(ksize) - radius
    ramp2d = ramp[None, :] if axis == 1 else ramp[:, None]
    return values / np.sum(values * ramp2d)


def binomial_reference(ksize: int) -> np.ndarray:
    row = comb(ksize - 1, np.arange(ksize))
    return np.outer(row, row) / row.sum() ** 2


def box_sum(img: Image) -> np.ndarray:
    return cv2.boxFilter(img, cv2.CV_64F, (3, 3), normalize=False)


F = skimage.filters
REFERENCES: dict[str, Ref] = {
    # -- first derivatives: OpenCV's operators and derivative kernels
    "sobel_x": sobel(1, 0, 3), "sobel_y": sobel(0, 1, 3),
    "sobel_x_unit": sobel(1, 0, 3, 1 / 8), "sobel_y_unit": sobel(0, 1, 3, 1 / 8),
    "sobel5_x": sobel(1, 0, 5), "sobel5_y": sobel(0, 1, 5),
    "sobel7_x": sobel(1, 0, 7), "sobel7_y": sobel(0, 1, 7),
    "sobel_xx": sobel(2, 0, 3), "sobel_yy": sobel(0, 2, 3), "sobel_xy": sobel(1, 1, 3),
    "sobel5_xx": sobel(2, 0, 5), "sobel5_yy": sobel(0, 2, 5),
    "scharr_x": scharr(1, 0), "scharr_y": scharr(0, 1),
    "scharr_x_unit": scharr(1, 0, 1 / 32), "scharr_y_unit": scharr(0, 1, 1 / 32),
    # scikit-image's prewitt_v / prewitt_h are the x / y Prewitt derivatives divided by 3.
    "prewitt_x": skimage_op(F.prewitt_v, 3.0), "prewitt_y": skimage_op(F.prewitt_h, 3.0),
    "farid_x": skimage_op(F.farid_v), "farid_y": skimage_op(F.farid_h),
    "sobel_h_skimage": skimage_op(F.sobel_h), "sobel_v_skimage": skimage_op(F.sobel_v),
    "scharr_h_skimage": skimage_op(F.scharr_h), "scharr_v_skimage": skimage_op(F.scharr_v),
    "prewitt_h_skimage": skimage_op(F.prewitt_h), "prewitt_v_skimage": skimage_op(F.prewitt_v),
    # skimage convolves with the 2x2 kernel (a flip: the opposite sign) and, the size being even,
    # anchors one pixel later than scipy's correlate does (origin=-1): the documented caveat.
    "roberts_pos": Ref("-skimage.filters.roberts_pos_diag", op=lambda img: -F.roberts_pos_diag(img), mode=SK,
                       origin=-1, gray=True),
    "roberts_neg": Ref("-skimage.filters.roberts_neg_diag", op=lambda img: -F.roberts_neg_diag(img), mode=SK,
                       origin=-1, gray=True),
    # The same with scikit-image's sign: origin=-1 anchors the 2x2 kernel at its top-left pixel,
    # as TensorFlow's 'same' padding does.
    "roberts_pos_skimage": Ref("skimage.filters.roberts_pos_diag", op=F.roberts_pos_diag, mode=SK, origin=-1,
                               gray=True),
    "roberts_neg_skimage": Ref("skimage.filters.roberts_neg_diag", op=F.roberts_neg_diag, mode=SK, origin=-1,
                               gray=True),
    "dgauss_x": Ref("scipy.ndimage.gaussian_filter(order=1) along x, unit ramp gives 1",
                    kernel=lambda: dgauss_reference(7, 1.0, axis=1), documented=("sigma 1", "7x7", "unit ramp")),
    "dgauss_y": Ref("scipy.ndimage.gaussian_filter(order=1) along y, unit ramp gives 1",
                    kernel=lambda: dgauss_reference(7, 1.0, axis=0), documented=("sigma 1", "7x7", "unit ramp")),
    # -- second derivatives
    "laplacian4": Ref("cv2.Laplacian(ksize=1)", op=lambda img: cv2.Laplacian(img, cv2.CV_64F, ksize=1)),
    "laplacian3": Ref("cv2.Laplacian(ksize=3)", op=lambda img: cv2.Laplacian(img, cv2.CV_64F, ksize=3)),
    "laplacian5": Ref("cv2.Laplacian(ksize=5)", op=lambda img: cv2.Laplacian(img, cv2.CV_64F, ksize=5)),
    "laplacian7": Ref("cv2.Laplacian(ksize=7)", op=lambda img: cv2.Laplacian(img, cv2.CV_64F, ksize=7)),
    "laplace_skimage": skimage_op(F.laplace),
    # The 8-neighbour stencil: the 3x3 neighbourhood sum minus 9 times the centre.
    "laplacian8": Ref("cv2.boxFilter(3x3, unnormalized) - 9 * image", op=lambda img: box_sum(img) - 9 * img),
    "log9": Ref("scipy.ndimage.gaussian_laplace(sigma=1.4) on 9x9, sum 0, (x^2+y^2)/2 gives 2",
                kernel=lambda: log_reference(9, 1.4), documented=("9x9", "sigma 1.4")),
    "dog9": Ref("cv2.GaussianBlur((9, 9), 1.0) - cv2.GaussianBlur((9, 9), 1.6)",
                op=lambda img: cv2.GaussianBlur(img, (9, 9), 1.0) - cv2.GaussianBlur(img, (9, 9), 1.6),
                documented=("9x9", "sigma 1.0", "sigma 1.6")),
    # -- smoothing
    "gaussian3": gaussian_blur(3, 0), "gaussian5": gaussian_blur(5, 0), "gaussian7": gaussian_blur(7, 0),
    "gaussian9": gaussian_blur(9, 0), "gaussian_s1": gaussian_blur(9, 1.0), "gaussian_s2": gaussian_blur(17, 2.0),
    "box3": Ref("cv2.blur((3, 3))", op=lambda img: cv2.blur(img, (3, 3))),
    "box5": Ref("cv2.blur((5, 5))", op=lambda img: cv2.blur(img, (5, 5))),
    "binomial3": Ref("outer product of scipy.special.comb(2, k) / 16", kernel=lambda: binomial_reference(3),
                     documented=("3x3", "/ 16")),
    "binomial5": Ref("outer product of scipy.special.comb(4, k) / 256", kernel=lambda: binomial_reference(5),
                     documented=("5x5", "/ 256")),
    # -- others
    "identity3": Ref("the image itself", op=lambda img: img),
    "sharpen": Ref("image - cv2.Laplacian(ksize=1)", op=lambda img: img - cv2.Laplacian(img, cv2.CV_64F, ksize=1)),
    # Light from the top left: the image plus its Prewitt derivative along the down-right diagonal.
    "emboss": Ref("image + 3 * (skimage prewitt_v + prewitt_h)",
                  op=lambda img: img + 3 * (F.prewitt_v(img) + F.prewitt_h(img)), mode=SK, gray=True),
    "unsharp5": Ref("2 * image - cv2.GaussianBlur((5, 5), 0)",
                    op=lambda img: 2 * img - cv2.GaussianBlur(img, (5, 5), 0), documented=("5x5", "amount 1")),
    "gabor21_0": Ref("cv2.getGaborKernel((21, 21), 4, 0, 10, 0.5, 0)",
                     kernel=lambda: gabor(21, 4.0, 0.0, 10.0, 0.5, 0.0)),
    "gabor21_90": Ref("cv2.getGaborKernel((21, 21), 4, pi/2, 10, 0.5, 0)",
                      kernel=lambda: gabor(21, 4.0, math.pi / 2, 10.0, 0.5, 0.0),
                      documented=("21x21", "theta pi/2", "even phase")),
    "gabor_bank8": Ref("cv2.getGaborKernel((21, 21), 4, i pi/8, 10, 0.5, 0), i = 0..7, as HWIO",
                       kernel=lambda: np.stack([gabor(21, 4.0, math.pi * i / 8, 10.0, 0.5, 0.0)
                                                for i in range(8)], axis=-1)[:, :, None, :],
                       documented=("Eight even Gabor", "pi/8")),
}


def _shipped_names() -> list[str]:
    layer = BuiltinLayer(builtin_db_path())
    try:
        return sorted(layer.records)
    finally:
        layer.close()


NAMES = _shipped_names()


@pytest.fixture(scope="module")
def builtins(tmp_path_factory: pytest.TempPathFactory) -> registry.Registry:
    return registry.Registry(tmp_path_factory.mktemp("fidelity"), builtins=builtin_db_path())


def correlate(image: np.ndarray, kernel: np.ndarray, mode: str = CV, origin: int = 0) -> np.ndarray:
    """Apply a kreg kernel the way TensorFlow does (a correlation), channel by channel."""
    kernel = np.asarray(kernel, np.float64)
    if image.ndim == 2:
        return ndimage.correlate(image, kernel, mode=mode, origin=origin)
    return np.stack([correlate(image[..., c], kernel, mode, origin) for c in range(image.shape[2])], axis=-1)


def assert_close(ours: np.ndarray, reference: np.ndarray, what: str) -> None:
    """max |difference| <= 1e-5 of the reference output's range, everywhere (float32 storage)."""
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != reference {reference.shape}"
    span = float(reference.max() - reference.min()) or 1.0
    worst = float(np.abs(ours - reference).max())
    assert worst <= 1e-5 * span, f"{what}: max abs difference {worst:.3g} over a range of {span:.3g}"


def test_the_database_is_not_empty() -> None:
    assert len(NAMES) >= 50, "builtin.h5 is missing or nearly empty: run 'make kernels'"


@pytest.mark.parametrize("name", NAMES)
def test_every_builtin_has_a_reference(name: str) -> None:
    assert name in REFERENCES, (
        f"built-in {name!r} has no independent reference: add a row to REFERENCES in tests/test_fidelity.py "
        "(an OpenCV / scikit-image operator, or the formula from its documented parameters)"
    )


def test_every_reference_row_is_a_builtin() -> None:
    stale = sorted(set(REFERENCES) - set(NAMES))
    assert not stale, f"REFERENCES rows for kernels that are not built-ins: {stale}"


@pytest.mark.parametrize("name", NAMES)
def test_builtin_values_equal_the_reference(builtins: registry.Registry, name: str) -> None:
    ref = REFERENCES.get(name)
    if ref is None:
        pytest.fail(f"built-in {name!r} has no row in REFERENCES")
    kernel = builtins.load(name)
    ours = kernel.array.astype(np.float64)
    description = kernel.spec.provenance.description or ""
    for text in ref.documented:
        assert text in description, f"{name}: the reference assumes {text!r}, the description says {description!r}"
    assert ref.op is not None or ref.kernel is not None
    if ref.kernel is not None:
        expected = ref.kernel()
        assert ours.shape == expected.shape, f"{name}: shape {ours.shape} != {ref.source} {expected.shape}"
        # float32 storage: 1e-6 of the largest weight.
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6 * np.abs(expected).max(),
                                   err_msg=f"{name} differs from {ref.source}")
    if ref.op is not None:
        for image in GRAY if ref.gray else IMAGES:
            img = IMAGES[image]
            assert_close(correlate(img, ours, ref.mode, ref.origin), ref.op(img), f"{name} vs {ref.source} on {image}")


# -- families with parameters: generated kernels against OpenCV ---------------------------------


@pytest.mark.parametrize(("ksize", "sigma"), [(3, 0), (5, 0), (7, 0), (9, 0), (11, 0), (15, 2.5), (31, 5.0), (0, 1.3)])
def test_gaussian_family_matches_get_gaussian_kernel(ksize: int, sigma: float) -> None:
    ours = registry.load("gaussian", ksize=ksize, sigma=sigma, dtype="float64").array
    size = ksize or ours.shape[0]
    g = cv2.getGaussianKernel(size, sigma)
    np.testing.assert_allclose(ours, g @ g.T, atol=1e-15)


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


@pytest.mark.parametrize(("dx", "dy", "ksize"), [(1, 0, 1), (0, 1, 1), (2, 0, 1), (1, 0, 3), (2, 0, 5), (1, 1, 7),
                                                 (0, 2, 7)])
def test_sobel_family_matches_get_deriv_kernels(dx: int, dy: int, ksize: int) -> None:
    ours = registry.load("sobel", dx=dx, dy=dy, ksize=ksize, dtype="float64").array
    kx, ky = cv2.getDerivKernels(dx, dy, ksize, normalize=False, ktype=cv2.CV_64F)
    np.testing.assert_array_equal(ours, np.outer(ky, kx))


@pytest.mark.parametrize(("ksize", "sigma"), [(0, 1.0), (11, 1.7), (0, 2.5)])
def test_log_family_matches_scipy_gaussian_laplace(ksize: int, sigma: float) -> None:
    ours = registry.load("log", ksize=ksize, sigma=sigma, dtype="float64").array
    expected = log_reference(ours.shape[0], sigma)
    np.testing.assert_allclose(ours, expected, atol=1e-9 * np.abs(expected).max())
