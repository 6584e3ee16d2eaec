"""PyTorch module for kernels that are model inputs: ``registry.torch.kernel_conv`` called as ``m(x, k)``.

NCHW images; kernels ``(B, kh, kw)`` (planes), ``(B, kh, kw, in, out)`` (full, HWIO per sample)
or ``(B, kh*kw, H', W')`` (per pixel, channels first like the images). What it computes is
planned in :mod:`registry.adapters.dynamic`. Planes and full kernels are one grouped
``F.conv2d`` with the batch folded into the channels; per-pixel kernels a sum over the taps.
Imported by :mod:`registry.torch`, never by ``import registry``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._exceptions import InvalidKernelError
from .._lazy import require
from . import dynamic
from .borders import same_pads
from .plan import probe_enabled

torch = require("torch", feature="The PyTorch adapter (registry.torch)")
nn, F = torch.nn, torch.nn.functional

_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


class KernelConv2d(nn.Module):
    """A convolution whose kernels are an input: ``m(images, kernels)``; see :func:`kernel_conv`."""

    def __init__(
        self,
        *,
        form: str | None = None,
        kernel_size: int | Sequence[int] | None = None,
        padding: str = "valid",
        border: str | tuple[str, float] | None = None,
        strides: int | Sequence[int] = 1,
        dilation_rate: int | Sequence[int] = 1,
        normalize: str | None = None,
        operation: str = "correlation",
        dtype: str | None = None,
        probe: bool | None = None,
    ) -> None:
        super().__init__()
        self.plan = dynamic.dynamic_plan(
            form=form,
            kernel_size=kernel_size,
            padding=padding,
            border=border,
            strides=strides,
            dilation_rate=dilation_rate,
            normalize=normalize,
            operation=operation,
        )
        if dtype is not None and dtype not in _DTYPES:
            raise InvalidKernelError(f"dtype must be one of {', '.join(_DTYPES)}. Received: dtype={dtype!r}.")
        self.dtype = None if dtype is None else _DTYPES[dtype]
        if probe_enabled(probe):
            self._probe()

    def _probe(self) -> None:
        """Each form this module may see, on kreg's probe (the kernel size declared, else 3x3)."""
        p = self.plan
        forms = (
            [p.form]
            if p.form
            else [f for f in ("plane", "full", "pixel") if not (f == "full" and p.normalize)]
        )
        size = p.kernel_size or (3, 3)
        dtype = self.dtype or torch.float32
        for form in forms:

            def run(x: np.ndarray, k: np.ndarray, form: str = form) -> np.ndarray:
                xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dtype)
                kt = torch.from_numpy(k.transpose(0, 3, 1, 2).copy() if form == "pixel" else k).to(dtype)
                with torch.no_grad():
                    got = self.forward(xt, kt)
                return got.double().numpy().transpose(0, 2, 3, 1)

            dynamic.check_probe(
                p,
                run,
                form,
                size,
                2,
                3 if form == "full" else None,
                what="KernelConv2d",
                itemsize=torch.finfo(dtype).bits // 8,
            )

    def forward(self, x: Any, k: Any) -> Any:
        p = self.plan
        if not (isinstance(x, torch.Tensor) and isinstance(k, torch.Tensor)):
            raise InvalidKernelError(
                f"KernelConv2d is called as m(images, kernels) on tensors. Received: {type(x).__name__}, "
                f"{type(k).__name__}."
            )
        form, size = dynamic.check_inputs(
            p, tuple(x.shape), tuple(k.shape), str(k.dtype), channels_first=True, what="KernelConv2d"
        )
        dtype = self.dtype or (x.dtype if x.is_floating_point() else torch.float32)
        x, k = x.to(dtype), k.to(dtype)
        k = _prepare(p, form, k)
        span = p.span(size)
        if p.border is not None:
            x = _border(x, p, size)
        elif p.padding == "same":
            (top, bottom), (left, right) = (
                same_pads(n, s, st) for n, s, st in zip(x.shape[2:], span, p.strides)
            )
            x = F.pad(x, [left, right, top, bottom])
        if form == "pixel":
            return _pixel(x, k, p, size)
        b, c, h, w = x.shape
        if form == "plane":
            weight = k[:, None, None].expand(b, c, 1, size[0], size[1]).reshape(b * c, 1, size[0], size[1])
            y = F.conv2d(x.reshape(1, b * c, h, w), weight, None, p.strides, 0, p.dilation, b * c)
            return y.reshape(b, c, y.shape[2], y.shape[3])
        o = k.shape[4]
        weight = k.permute(0, 4, 3, 1, 2).reshape(b * o, c, size[0], size[1])
        y = F.conv2d(x.reshape(1, b * c, h, w), weight, None, p.strides, 0, p.dilation, b)
        return y.reshape(b, o, y.shape[2], y.shape[3])

    def extra_repr(self) -> str:
        return ", ".join(
            f"{key}={value!r}" for key, value in self.plan.options().items() if value is not None
        )


def _prepare(p: dynamic.DynamicPlan, form: str, k: Any) -> Any:
    if p.normalize is not None:
        dims = (1, 2) if form == "plane" else (1,)
        if p.normalize == "softmax":
            k = torch.exp(k - torch.amax(k, dim=dims, keepdim=True))
        k = k / k.sum(dim=dims, keepdim=True)
    if p.flip:
        k = k.flip(1) if form == "pixel" else k.flip(1, 2)
    return k


def _border(x: Any, p: dynamic.DynamicPlan, size: tuple[int, int]) -> Any:
    assert p.border is not None
    mode, value = p.border
    pads = p.pads(size)
    assert pads is not None
    (top, bottom), (left, right) = pads
    if mode in ("zero", "constant"):
        return F.pad(x, [left, right, top, bottom], value=value)
    device = x.device
    for axis, (before, after) in zip((2, 3), pads):
        index = dynamic.index_ops(
            x.shape[axis],
            before,
            after,
            mode,
            arange=lambda a, b: torch.arange(a, b, device=device),
            mod=torch.remainder,
            where=torch.where,
            clip=torch.clamp,
        )
        x = x.index_select(axis, index)
    return x


def _pixel(x: Any, k: Any, p: dynamic.DynamicPlan, size: tuple[int, int]) -> Any:
    (kh, kw), (sh, sw), (dh, dw) = size, p.strides, p.dilation
    span = p.span(size)
    out = None
    for i in range(kh):
        for j in range(kw):
            h0, w0 = i * dh, j * dw
            h1, w1 = x.shape[2] - (span[0] - 1 - h0), x.shape[3] - (span[1] - 1 - w0)
            term = x[:, :, h0:h1:sh, w0:w1:sw] * k[:, i * kw + j : i * kw + j + 1]
            out = term if out is None else out + term
    return out


def kernel_conv(**options: Any) -> KernelConv2d:
    """An ``nn.Module`` convolving each NCHW image with a kernel given beside it: ``m(images, kernels)``.

    Options as :func:`registry.keras.kernel_conv` (per-pixel kernels here ``(B, kh*kw, H', W')``),
    plus ``dtype`` (``float16``, ``bfloat16``, ``float32``, ``float64``; default: the images').
    The probe check runs once, when the module is made, for each form it may see.

    Example:
        >>> m = registry.torch.kernel_conv(border="reflect101")     # doctest: +SKIP
        >>> y = m(images, kernels)          # (B, C, H, W), (B, 5, 5)  # doctest: +SKIP
    """
    return KernelConv2d(**options)
