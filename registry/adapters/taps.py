"""The two ways the probe's reference correlates: by FFT, and by taps for a large kernel on a small probe.

An FFT correlates over the padded image, whose size grows with the kernel: a 511x511 kernel
on a 4x5 probe is a 514x515 transform per image and channel. By taps, each output pixel's
taps are first summed by the source pixel they read (a small probe has few: its pixels and
the fill), so the work and the memory scale with the kernel times the probe's side, never
with the kernel times the padded image.
"""

from __future__ import annotations

import numpy as np

from .borders import source_index


def reads(size: int, pads: tuple[int, int], how: str, out: int, stride: int, taps: int, step: int) -> np.ndarray:
    """For each output position and each tap along an axis, the input pixel it reads (``size``:
    the fill of a zero or constant border)."""
    i = np.arange(-pads[0], size + pads[1])
    if how in ("zero", "constant"):
        source = np.where((i >= 0) & (i < size), i, size)
    else:
        source = source_index(size, *pads, how)
    return source[np.arange(max(out, 0))[:, None] * stride + np.arange(taps) * step]


def one_hot(index: np.ndarray, size: int) -> np.ndarray:
    """``index`` (any shape) as float64 one-hot vectors of ``size`` along a new last axis."""
    return (index[..., None] == np.arange(size)).astype(np.float64)


def correlate_by_taps(values: np.ndarray, layout: str, x: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                      fill: float) -> np.ndarray:
    """The correlation of the NHWC batch ``x`` with ``values`` (``HW``, ``HWIO`` or ``HWIM``).

    Args:
        values: the kernel, float64, its taps along the first two axes.
        layout: ``HW`` (each channel alone), ``HWIO`` (channels mixed) or ``HWIM`` (each
            channel to M outputs, output channel ``c * M + m``).
        x: the batch, float64.
        rows: for each output row and each tap row, the input row it reads (``h``: the fill).
        cols: the same for columns (``w``: the fill).
        fill: the value read outside the image (zero or a constant border).
    """
    n, h, w, channels = x.shape
    if not len(rows) or not len(cols):  # a kernel wider than the padded image: no output pixel
        per_channel = {"HW": channels, "HWIO": values.shape[-1]}.get(layout, channels * values.shape[-1])
        return np.zeros((n, len(rows), len(cols), per_channel))
    held = np.full((n, h + 1, w + 1, channels), fill)
    held[:, :h, :w] = x
    taps = values.reshape(*values.shape[:2], -1)  # kh x kw x (channel pairs)
    by_col = one_hot(cols, w + 1)  # ow x kw x (w + 1)
    out_rows = []
    for row in one_hot(rows, h + 1):  # kh x (h + 1), one output row at a time
        weights = np.einsum("ip,ijm->pjm", row, taps, optimize=True)  # (h + 1) x kw x pairs
        weights = np.einsum("pjm,xjq->xpqm", weights, by_col, optimize=True)  # ow x (h + 1) x (w + 1) x pairs
        if layout == "HW":
            out_rows.append(np.einsum("npqc,xpq->nxc", held, weights[..., 0], optimize=True))
        elif layout == "HWIO":
            mixed = weights.reshape(*weights.shape[:3], channels, -1)
            out_rows.append(np.einsum("npqc,xpqco->nxo", held, mixed, optimize=True))
        else:
            each = weights.reshape(*weights.shape[:3], channels, -1)
            out_rows.append(np.einsum("npqc,xpqcm->nxcm", held, each, optimize=True).reshape(n, len(cols), -1))
    return np.stack(out_rows, axis=1)


def correlate_by_fft(values: np.ndarray, layout: str, x: np.ndarray, dilation: tuple[int, int],
                     strides: tuple[int, int]) -> np.ndarray:
    """The correlation of the padded NHWC batch ``x`` with ``values`` by FFT (float64): the same
    sums as a sliding window, in a fraction of the time for mid-sized kernels."""
    (dh, dw), (sh, sw) = dilation, strides
    kh, kw = (values.shape[0] - 1) * dh + 1, (values.shape[1] - 1) * dw + 1
    _, hp, wp, _ = x.shape
    dilated = np.zeros((kh, kw, *values.shape[2:]))
    dilated[::dh, ::dw] = values
    xf = np.fft.rfft2(x, axes=(1, 2))
    kf = np.conj(np.fft.rfft2(dilated, s=(hp, wp), axes=(0, 1)))
    if layout == "HW":
        yf = xf * kf[None, :, :, None]
    elif layout == "HWIO":
        yf = np.einsum("nyxc,yxco->nyxo", xf, kf)
    else:
        yf = np.einsum("nyxc,yxcm->nyxcm", xf, kf).reshape(*xf.shape[:3], -1)
    return np.fft.irfft2(yf, s=(hp, wp), axes=(1, 2))[:, : hp - kh + 1 : sh, : wp - kw + 1 : sw]


__all__ = ["correlate_by_fft", "correlate_by_taps", "reads", "source_index"]
