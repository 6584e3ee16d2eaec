"""Kernel factories: the formulas behind the built-in families, computed in float64.

Every factory returns a correlation kernel (what TensorFlow and ``cv2.filter2D``
compute), rows first: ``k[y, x]``. Derivative kernels follow OpenCV's sign
convention: a brightness ramp rising to the right (or down) gives a positive response.

Example:
    >>> get_sobel_kernel2d(ksize=3, dx=1, dy=0)
    array([[-1.,  0.,  1.],
           [-2.,  0.,  2.],
           [-1.,  0.,  1.]])
"""

from __future__ import annotations

import math

import numpy as np

from .._exceptions import InvalidKernelError

# OpenCV's fixed tables for getGaussianKernel(ksize, sigma <= 0), ksize 1..9 (imgproc/smooth).
_SMALL_GAUSSIAN = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
    9: [4 / 256, 13 / 256, 30 / 256, 51 / 256, 60 / 256, 51 / 256, 30 / 256, 13 / 256, 4 / 256],
}
# Farid & Simoncelli (2004), Table 1, with the extra digits scikit-image uses.
FARID_SMOOTH = np.array([0.0376593171958126, 0.249153396177344, 0.426374573253687,
                         0.249153396177344, 0.0376593171958126])
FARID_EDGE = np.array([-0.109603762960254, -0.276690988455557, 0.0, 0.276690988455557, 0.109603762960254])


#: Largest kernel side a family makes: a parameter must never cost gigabytes (511x511 float64 is 2 MB).
MAX_KSIZE = 511


def _odd(name: str, value: int, *, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or not minimum <= value <= MAX_KSIZE or value % 2 == 0:
        raise InvalidKernelError(
            f"{name} must be an odd whole number from {minimum} to {MAX_KSIZE}. Received: {name}={value!r}."
        )
    return int(value)


def _order(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or not 0 <= value <= 2:
        raise InvalidKernelError(f"{name} must be 0, 1 or 2. Received: {name}={value!r}.")
    return int(value)


def binomial_1d(length: int) -> np.ndarray:
    """Row ``length - 1`` of Pascal's triangle: ``[1, 2, 1]`` for 3.

    Example:
        >>> binomial_1d(5)
        array([1., 4., 6., 4., 1.])
    """
    row = np.ones(1)
    for _ in range(length - 1):
        row = np.convolve(row, [1.0, 1.0])
    return row


def deriv_1d(ksize: int, order: int) -> np.ndarray:
    """OpenCV's ``getDerivKernels`` factor: binomial smoothing differenced ``order`` times.

    ``ksize=1`` with ``order > 0`` gives the 3-tap difference, as OpenCV does.

    Example:
        >>> deriv_1d(5, 1)
        array([-1., -2.,  0.,  2.,  1.])
    """
    if ksize == 1 and order > 0:
        ksize = 3
    row = binomial_1d(ksize - order)
    for _ in range(order):
        row = np.convolve(row, [-1.0, 1.0])
    return row


def _unit_scale(factor: np.ndarray, order: int) -> float:
    """The response of ``factor`` (as a correlation) to ``x**order / order!``: dividing by it
    makes the kernel return the derivative itself on a polynomial of that order."""
    x = np.arange(factor.size) - (factor.size - 1) / 2
    return float(np.sum(factor * x**order) / math.factorial(order))


def get_sobel_kernel2d(
    *, ksize: int = 3, dx: int = 1, dy: int = 0, unit: bool = False, scale: float = 1.0
) -> np.ndarray:
    """Sobel derivative as ``cv2.Sobel(src, ddepth, dx, dy, ksize)`` computes it.

    Args:
        ksize: 1, 3, 5 or 7 (``1`` means a 3x1 or 1x3 kernel with no smoothing).
        dx, dy: derivative orders (0, 1 or 2) along x (columns) and y (rows).
        unit: divide by the response to a unit polynomial, so a ramp of slope 1 gives 1
            (for ksize 3 and a first derivative that is the 1/8 normalization).
        scale: a last factor (scikit-image's 1/4 is ``unit=True, scale=2``).

    Example:
        >>> get_sobel_kernel2d(ksize=3, dx=0, dy=1, unit=True) * 8
        array([[-1., -2., -1.],
               [ 0.,  0.,  0.],
               [ 1.,  2.,  1.]])
    """
    ksize = _odd("ksize", ksize)
    dx, dy = _order("dx", dx), _order("dy", dy)
    if ksize > 7:
        raise InvalidKernelError(f"OpenCV's Sobel takes ksize 1, 3, 5 or 7. Received: ksize={ksize}.")
    if dx + dy == 0:
        raise InvalidKernelError("A Sobel kernel needs dx or dy > 0. Received: dx=0, dy=0.")
    kx = deriv_1d(ksize if dx or ksize > 1 else 1, dx)
    ky = deriv_1d(ksize if dy or ksize > 1 else 1, dy)
    if unit:
        kx, ky = kx / _unit_scale(kx, dx), ky / _unit_scale(ky, dy)
    return np.outer(ky, kx) * scale


def get_scharr_kernel2d(*, dx: int = 1, dy: int = 0, unit: bool = False, scale: float = 1.0) -> np.ndarray:
    """Scharr's 3x3 derivative, as ``cv2.Scharr`` (weights 3, 10, 3).

    Example:
        >>> get_scharr_kernel2d(dx=1, dy=0)
        array([[ -3.,   0.,   3.],
               [-10.,   0.,  10.],
               [ -3.,   0.,   3.]])
    """
    if (dx, dy) not in ((1, 0), (0, 1)):
        raise InvalidKernelError(f"Scharr is a first derivative: (dx, dy) is (1, 0) or (0, 1). Received: ({dx}, {dy}).")
    return _smoothed_difference(np.array([3.0, 10.0, 3.0]), dx, unit) * scale


def get_prewitt_kernel2d(*, dx: int = 1, dy: int = 0, unit: bool = False, scale: float = 1.0) -> np.ndarray:
    """Prewitt's 3x3 derivative (box smoothing across the difference).

    Example:
        >>> get_prewitt_kernel2d(dx=0, dy=1)
        array([[-1., -1., -1.],
               [ 0.,  0.,  0.],
               [ 1.,  1.,  1.]])
    """
    if (dx, dy) not in ((1, 0), (0, 1)):
        raise InvalidKernelError(f"Prewitt is a first derivative: (dx, dy) is (1, 0) or (0, 1). Received: ({dx}, {dy}).")
    return _smoothed_difference(np.ones(3), dx, unit) * scale


def get_farid_kernel2d(*, dx: int = 1, dy: int = 0) -> np.ndarray:
    """Farid & Simoncelli's 5x5 first derivative (optimally rotation-invariant).

    Example:
        >>> np.round(get_farid_kernel2d(dx=1, dy=0)[2], 4)
        array([-0.0467, -0.118 ,  0.    ,  0.118 ,  0.0467])
    """
    if (dx, dy) not in ((1, 0), (0, 1)):
        raise InvalidKernelError(f"Farid is a first derivative: (dx, dy) is (1, 0) or (0, 1). Received: ({dx}, {dy}).")
    kernel = np.outer(FARID_SMOOTH, FARID_EDGE)
    return kernel if dx else kernel.T


def _smoothed_difference(smooth: np.ndarray, dx: int, unit: bool) -> np.ndarray:
    edge = np.array([-1.0, 0.0, 1.0])
    if unit:
        smooth, edge = smooth / smooth.sum(), edge / 2
    kernel = np.outer(smooth, edge)
    return kernel if dx else kernel.T


def get_laplacian_kernel2d(*, ksize: int = 1, neighbours: int = 4, scale: float = 1.0) -> np.ndarray:
    """The Laplacian as ``cv2.Laplacian(src, ddepth, ksize=ksize)``, or the 8-neighbour stencil.

    Args:
        ksize: 1 gives the 4-neighbour stencil; 3, 5, 7 give OpenCV's Sobel-based sums.
        neighbours: 8 for the 3x3 stencil with diagonals (``ksize`` must then be 1).
        scale: multiplies the weights (``-1`` gives scikit-image's ``laplace``).

    Example:
        >>> get_laplacian_kernel2d(ksize=3)
        array([[ 2.,  0.,  2.],
               [ 0., -8.,  0.],
               [ 2.,  0.,  2.]])
    """
    ksize = _odd("ksize", ksize)
    if neighbours == 8:
        if ksize != 1:
            raise InvalidKernelError("The 8-neighbour Laplacian is 3x3: use ksize=1 with neighbours=8.")
        kernel = np.ones((3, 3))
        kernel[1, 1] = -8.0
        return kernel * scale + 0.0  # + 0.0: no -0.0 entries (they hash differently)
    if neighbours != 4:
        raise InvalidKernelError(f"neighbours is 4 or 8. Received: neighbours={neighbours!r}.")
    if ksize == 1:
        return np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]) * scale + 0.0
    return (get_sobel_kernel2d(ksize=ksize, dx=2, dy=0) + get_sobel_kernel2d(ksize=ksize, dx=0, dy=2)) * scale + 0.0


def gaussian_1d(ksize: int, sigma: float) -> np.ndarray:
    """``cv2.getGaussianKernel(ksize, sigma)``, including OpenCV's fixed tables for sigma <= 0.

    With ``sigma <= 0`` it is derived from the size: ``0.3 * ((ksize - 1) / 2 - 1) + 0.8``.

    Example:
        >>> gaussian_1d(5, 0)
        array([0.0625, 0.25  , 0.375 , 0.25  , 0.0625])
    """
    ksize = _odd("ksize", ksize)
    if sigma <= 0 and ksize in _SMALL_GAUSSIAN:
        return np.array(_SMALL_GAUSSIAN[ksize])
    if sigma <= 0:
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def gaussian_ksize(sigma: float) -> int:
    """OpenCV's size for a Gaussian given only sigma, for float images: ``round(8 sigma + 1) | 1``.

    Example:
        >>> gaussian_ksize(2.0)
        17
    """
    if sigma <= 0:
        raise InvalidKernelError(f"Give ksize or a sigma > 0. Received: sigma={sigma!r}.")
    if sigma * 8 + 1 > MAX_KSIZE:
        raise InvalidKernelError(
            f"sigma={sigma!r} needs a kernel wider than {MAX_KSIZE}; sigma is at most {(MAX_KSIZE - 1) / 8:g} "
            "(or give a smaller ksize)."
        )
    return int(round(sigma * 4 * 2 + 1)) | 1


def get_gaussian_kernel2d(*, ksize: int = 0, sigma: float = 0.0) -> np.ndarray:
    """A Gaussian as ``cv2.GaussianBlur(src, (ksize, ksize), sigma)`` applies it (sums to 1).

    ``ksize=0`` takes the size from sigma, ``sigma=0`` the sigma from the size.

    Example:
        >>> get_gaussian_kernel2d(ksize=3) * 16
        array([[1., 2., 1.],
               [2., 4., 2.],
               [1., 2., 1.]])
    """
    if ksize == 0:
        ksize = gaussian_ksize(sigma)
    g = gaussian_1d(ksize, sigma)
    return np.outer(g, g)


def get_gaussian_derivative_kernel2d(*, ksize: int = 0, sigma: float = 1.0, dx: int = 1, dy: int = 0) -> np.ndarray:
    """Derivative of a Gaussian, scaled so a polynomial of that order gives its derivative.

    Example:
        >>> k = get_gaussian_derivative_kernel2d(ksize=7, sigma=1.0, dx=1)
        >>> round(float((k * np.arange(-3, 4)).sum()), 12)   # a unit ramp gives 1
        1.0
    """
    if ksize == 0:
        ksize = gaussian_ksize(sigma)
    ksize = _odd("ksize", ksize, minimum=3)
    dx, dy = _order("dx", dx), _order("dy", dy)
    x = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    g /= g.sum()
    factors = {0: g, 1: x * g / sigma**2, 2: (x * x / sigma**4 - 1 / sigma**2) * g}
    fx, fy = factors[dx], factors[dy]
    fx, fy = fx / _unit_scale(fx, dx), fy / _unit_scale(fy, dy)
    return np.outer(fy, fx)


def get_log_kernel2d(*, ksize: int = 0, sigma: float = 1.4) -> np.ndarray:
    """Laplacian of Gaussian, shifted to sum to 0 and scaled so ``(x**2 + y**2) / 2`` gives 2.

    Example:
        >>> k = get_log_kernel2d(ksize=9, sigma=1.4)
        >>> abs(float(k.sum())) < 1e-12, bool(k[4, 4] < 0)
        (True, True)
    """
    if ksize == 0:
        ksize = gaussian_ksize(sigma)
    ksize = _odd("ksize", ksize, minimum=3)
    x = np.arange(ksize) - (ksize - 1) / 2
    xx, yy = np.meshgrid(x, x)
    r2 = (xx * xx + yy * yy) / (2 * sigma * sigma)
    kernel = -(1 - r2) * np.exp(-r2)
    kernel -= kernel.mean()
    return kernel * 2 / np.sum(kernel * (xx * xx + yy * yy) / 2)


def get_dog_kernel2d(*, ksize: int = 0, sigma1: float = 1.0, sigma2: float = 1.6) -> np.ndarray:
    """Difference of Gaussians ``G(sigma1) - G(sigma2)`` on one grid (Marr & Hildreth's 1.6 ratio).

    Example:
        >>> abs(float(get_dog_kernel2d(ksize=9).sum())) < 1e-12
        True
    """
    if ksize == 0:
        ksize = gaussian_ksize(max(sigma1, sigma2))
    return get_gaussian_kernel2d(ksize=ksize, sigma=sigma1) - get_gaussian_kernel2d(ksize=ksize, sigma=sigma2)


def get_box_kernel2d(*, ksize: int = 3, normalize: bool = True) -> np.ndarray:
    """A box (mean) filter, as ``cv2.blur`` / ``cv2.boxFilter``.

    Example:
        >>> get_box_kernel2d(ksize=3, normalize=False)
        array([[1., 1., 1.],
               [1., 1., 1.],
               [1., 1., 1.]])
    """
    ksize = _odd("ksize", ksize)
    kernel = np.ones((ksize, ksize))
    return kernel / kernel.size if normalize else kernel


def get_binomial_kernel2d(*, ksize: int = 3) -> np.ndarray:
    """Outer product of normalized binomial rows (a cheap Gaussian; sums to 1).

    Example:
        >>> get_binomial_kernel2d(ksize=3) * 16
        array([[1., 2., 1.],
               [2., 4., 2.],
               [1., 2., 1.]])
    """
    row = binomial_1d(_odd("ksize", ksize))
    row /= row.sum()
    return np.outer(row, row)


def get_identity_kernel2d(*, ksize: int = 3) -> np.ndarray:
    """One at the centre: the output equals the input.

    Example:
        >>> get_identity_kernel2d(ksize=3)[1]
        array([0., 1., 0.])
    """
    ksize = _odd("ksize", ksize)
    kernel = np.zeros((ksize, ksize))
    kernel[ksize // 2, ksize // 2] = 1.0
    return kernel


def get_unsharp_kernel2d(*, ksize: int = 5, sigma: float = 0.0, amount: float = 1.0) -> np.ndarray:
    """Unsharp masking in one kernel: ``identity + amount * (identity - gaussian)``.

    Example:
        >>> round(float(get_unsharp_kernel2d(ksize=5, amount=1.0).sum()), 12)
        1.0
    """
    identity = get_identity_kernel2d(ksize=ksize)
    return identity + amount * (identity - get_gaussian_kernel2d(ksize=ksize, sigma=sigma))


def get_gabor_kernel2d(
    *, ksize: int = 0, sigma: float = 4.0, theta: float = 0.0, lambd: float = 10.0,
    gamma: float = 0.5, psi: float = math.pi / 2,
) -> np.ndarray:
    """A Gabor filter exactly as ``cv2.getGaborKernel((ksize, ksize), sigma, theta, lambd, gamma, psi)``.

    ``ksize=0`` lets OpenCV's rule pick the size from sigma (3 standard deviations), which
    may give a non-square kernel.

    Example:
        >>> get_gabor_kernel2d(ksize=5, sigma=1.0, theta=0.3, lambd=4.0, gamma=0.5, psi=0.2).shape
        (5, 5)
    """
    sigma_x, sigma_y = sigma, sigma / gamma
    c, s = math.cos(theta), math.sin(theta)
    if ksize > 0:
        xmax = ymax = ksize // 2
    else:
        xmax = round(max(abs(3 * sigma_x * c), abs(3 * sigma_y * s)))
        ymax = round(max(abs(3 * sigma_x * s), abs(3 * sigma_y * c)))
    if 2 * max(xmax, ymax) + 1 > MAX_KSIZE:  # ksize > 0 is even-sized by OpenCV's rule: check the result
        raise InvalidKernelError(
            f"This Gabor kernel would be {2 * ymax + 1}x{2 * xmax + 1}; at most {MAX_KSIZE} a side. "
            f"Give a smaller ksize, or a smaller sigma / larger gamma. Received: ksize={ksize}, sigma={sigma}, "
            f"gamma={gamma}."
        )
    y, x = np.mgrid[ymax:-ymax - 1:-1, xmax:-xmax - 1:-1].astype(np.float64)
    xr, yr = x * c + y * s, -x * s + y * c
    exponent = -0.5 / sigma_x**2 * xr * xr - 0.5 / sigma_y**2 * yr * yr
    return np.exp(exponent) * np.cos(2 * math.pi / lambd * xr + psi)


def get_sharpen_kernel2d() -> np.ndarray:
    """The classic 3x3 sharpen stencil: identity minus the 4-neighbour Laplacian.

    Example:
        >>> get_sharpen_kernel2d()
        array([[ 0., -1.,  0.],
               [-1.,  5., -1.],
               [ 0., -1.,  0.]])
    """
    return get_identity_kernel2d(ksize=3) - get_laplacian_kernel2d(ksize=1)


def get_emboss_kernel2d() -> np.ndarray:
    """Emboss with the light from the top left.

    Example:
        >>> get_emboss_kernel2d()
        array([[-2., -1.,  0.],
               [-1.,  1.,  1.],
               [ 0.,  1.,  2.]])
    """
    return np.array([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])


def get_roberts_kernel2d(*, negative: bool = False, scale: float = 1.0) -> np.ndarray:
    """Roberts cross as a correlation: ``f(y, x) - f(y+1, x+1)`` (or the other diagonal).

    A 2x2 kernel has no centre: TensorFlow's ``same`` padding anchors it at the top-left
    pixel, OpenCV's ``filter2D`` at the bottom-right one, so outputs differ by one pixel.
    ``scale=-1`` gives scikit-image's ``roberts_pos_diag`` / ``roberts_neg_diag``, which
    compute ``f(y+1, x+1) - f(y, x)`` anchored at the top-left pixel.

    Example:
        >>> get_roberts_kernel2d()
        array([[ 1.,  0.],
               [ 0., -1.]])
    """
    return (np.array([[0.0, 1.0], [-1.0, 0.0]]) if negative else np.array([[1.0, 0.0], [0.0, -1.0]])) * scale + 0.0
