"""How an emitted layer computes its correlation: directly, as two 1-D passes, or by FFT.

Every method gives the same numbers (the probe checks each); they differ in speed, by a wide
margin and differently per framework (a 31x31 Gaussian on 1024x1024 in TensorFlow: 494 ms
direct, 26 ms separable, 11 ms by FFT). :func:`choose_method` ranks them by a cost model;
no framework is imported here.
"""

from __future__ import annotations

from typing import Any

from .._exceptions import InvalidKernelError
from ..kernels.kernel import Kernel

#: How a layer computes its correlation: ``auto`` picks the cheapest of the other three.
METHODS = ("auto", "direct", "separable", "fft")
#: Nanoseconds per multiply-add of a direct and of a separable (1-D) convolution, per pixel of
#: a one-channel FFT correlation (image and kernel forward, the product, one inverse), and per
#: pixel and pass of a convolution whatever its taps, measured on a loaded 2-CPU machine for
#: 1024x1024 float32 images (benchmarks/bench_layers.py prints them). Only their ratios matter:
#: they rank the methods within each framework. XLA's CPU convolution pays ~120 ns a pixel
#: even for a 3x3 kernel (385 ms for a Sobel on 1024x1024x3, 111 ms by FFT).
COSTS = {
    "tensorflow": (0.5, 0.4, 9.4, 0.0),
    "jax": (0.4, 3.0, 17.0, 120.0),
    "torch": (1.2, 3.5, 64.0, 0.0),
}
#: Per framework, ``(taps, pixels)``: an eager direct plane (one ``HW`` kernel on every channel)
#: is the sum over its taps when the kernel has at most ``taps`` taps and each image plane at
#: least ``pixels`` (:func:`plane_formulation`). PyTorch's CPU convolution of one large plane is
#: slow whatever the kernel (1024x1024, one channel: 26 ms for 3x3, 33 ms for 7x7; the taps 2.2
#: and 9.1 ms; 512x512: 1.5 and 3.2 ms against 0.9 and 2.7); below that size, or above that many
#: taps, one depthwise convolution of every plane wins (16 x 3 x 128 x 128, 7x7: 0.74 ms against
#: 8.2 by the taps and 25 by folding the planes into the batch).
EAGER_PLANE_TAPS = {"torch": (49, 1 << 18)}
#: How many times cheaper than the direct convolution another method must be for ``auto`` to pick it.
MARGIN = 2.0
#: The image side the cost model assumes when the layer does not know its input's size.
TYPICAL_SIDE = 512


def fast_size(n: int) -> int:
    """The least ``2^a 3^b 5^c`` at least ``n``: an FFT of that length runs several times faster
    than one of a nearby length with a large prime factor (1054 = 2 x 17 x 31: 15.5 ms, 1080: 11 ms).

    Example:
        >>> fast_size(1054), fast_size(7)
        (1080, 8)

    Plain ints and loops only: ``torch.jit.script`` compiles it inside the FFT module.
    """
    best = 1
    while best < n:
        best *= 2
    five = 1
    while five < best:
        three = five
        while three < best:
            two = three
            while two < n:
                two *= 2
            best = min(best, two)
            three *= 3
        five *= 5
    return best


def choose_method(
    method: str,
    *,
    taps: tuple[int, int],
    pairs: int,
    channels: tuple[int, int],
    separable: bool,
    fft: bool,
    strides: tuple[int, int],
    framework: str | None,
    image_size: tuple[int, int] | None,
) -> str:
    """``method`` itself, or for ``auto`` the cheapest correct one by the cost model.

    Costs per output pixel (ns, :data:`COSTS`): direct, the taps times the channel pairs, over
    the strides; separable, the two 1-D passes; FFT, a forward transform per input channel, an
    inverse per output channel and one of the kernel per pair, on the padded image rounded up
    to a :func:`fast_size`, plus the products, whatever the strides (it computes every pixel).
    """
    if method != "auto":
        return method
    direct_ns, separable_ns, fft_ns, pass_ns = COSTS.get(framework or "tensorflow", COSTS["tensorflow"])
    h, w = image_size or (TYPICAL_SIDE, TYPICAL_SIDE)
    pixels = h * w
    step = strides[0] * strides[1]
    costs = {"direct": (direct_ns * taps[0] * taps[1] + pass_ns) * pairs * pixels / step}
    if separable:
        costs["separable"] = (separable_ns * (taps[0] + taps[1]) + 2 * pass_ns) * pairs * pixels / step
    if fft:
        area = fast_size(h + taps[0] - 1) * fast_size(w + taps[1] - 1)
        transforms = channels[0] + channels[1] + pairs
        costs["fft"] = fft_ns * area * (transforms + pairs / 4) / 3.25  # 3.25: the one-channel case
    cheapest = min(costs, key=costs.__getitem__)
    # One convolution holding the kernel is what users inspect, train and export: another method
    # must be predicted at least MARGIN times cheaper to replace it (for a 3x3 kernel, two 1-D
    # passes are not: they measured slower than the one 3x3 pass in TensorFlow).
    return cheapest if costs[cheapest] * MARGIN <= costs["direct"] else "direct"


def plane_formulation(framework: str, taps: int, pixels: int) -> str:
    """``taps`` or ``depthwise``: how ``framework`` computes an eager direct plane of ``taps`` taps
    on image planes of ``pixels`` pixels (:data:`EAGER_PLANE_TAPS`).

    Example:
        >>> plane_formulation("torch", 9, 1024 * 1024), plane_formulation("torch", 9, 128 * 128)
        ('taps', 'depthwise')
    """
    most, least = EAGER_PLANE_TAPS.get(framework, (0, 0))
    return "taps" if taps <= most and pixels >= least else "depthwise"


def check_method(
    kernel: Kernel,
    method: str,
    separable: bool,
    padding: str,
    border: Any,
    strides: tuple[int, int],
    dilation: tuple[int, int],
) -> str:
    """``method`` checked against the kernel and options; ``separable=True`` is ``method="separable"``."""
    if method not in METHODS:
        raise InvalidKernelError(f"method must be one of {', '.join(METHODS)}. Received: method={method!r}.")
    if separable:
        if method not in ("auto", "separable"):
            raise InvalidKernelError(
                f"separable=True is method='separable'; give one of them. Received: method={method!r}."
            )
        method = "separable"
    if method == "separable" and (kernel.layout != "HW" or kernel.separable is None):
        raise InvalidKernelError(
            f"{kernel.ref} has no separable factors (only rank-1 HW kernels do); "
            "use method='auto', 'direct' or 'fft'."
        )
    if method == "fft" and border is None and padding == "same" and strides != (1, 1):
        raise InvalidKernelError(
            "method='fft' with padding='same' takes strides=1 (the padding then depends on the image "
            f"size); use a border=, padding='valid' or method='direct'. Received: strides={strides}."
        )
    return method
