"""PyTorch module for kernels that are model inputs: ``registry.torch.kernel_conv`` called as ``m(x, k)``.

NCHW images; kernels ``(B, kh, kw)`` (planes), ``(B, kh, kw, in, out)`` (full, HWIO per sample)
or ``(B, kh*kw, H', W')`` (per pixel, channels first like the images). What it computes is
planned in :mod:`registry.adapters.dynamic`. Planes and full kernels are one grouped
``F.conv2d`` with the batch folded into the channels (``method="direct"``, what ``auto`` runs
eagerly and under ``torch.export``), or a sum over the taps (``method="taps"``, what ``auto``
runs while ``torch.onnx.export`` or ``torch.jit.trace`` records the module: a group count that
is the batch would be frozen into the graph); per-pixel kernels always the sum over the taps.
Imported by :mod:`registry.torch`, never by ``import registry``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._exceptions import InvalidKernelError
from .._lazy import require
from ..torch_fft import border_pad
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
        method: str = "auto",
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
            method=method,
        )
        if dtype is not None and dtype not in _DTYPES:
            raise InvalidKernelError(f"dtype must be one of {', '.join(_DTYPES)}. Received: dtype={dtype!r}.")
        self.dtype = None if dtype is None else _DTYPES[dtype]
        if probe_enabled(probe):
            self._probe()

    def _probe(self) -> None:
        """Each form this module may see, each way it may compute it (``auto`` switches to the taps
        when exported), on kreg's probe (the kernel size declared, else 3x3)."""
        p = self.plan
        forms = (
            [p.form]
            if p.form
            else [f for f in ("plane", "full", "pixel") if not (f == "full" and p.normalize)]
        )
        size = p.kernel_size or (3, 3)
        dtype = self.dtype or torch.float32
        for form in forms:
            for how in sorted({dynamic.formulation(p, form, size, exporting=e) for e in (False, True)}):

                def run(x: np.ndarray, k: np.ndarray, form: str = form, how: str = how) -> np.ndarray:
                    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dtype)
                    kt = torch.from_numpy(k.transpose(0, 3, 1, 2).copy() if form == "pixel" else k).to(dtype)
                    with torch.no_grad():
                        got = self._run(xt, kt, how)
                    return got.double().numpy().transpose(0, 2, 3, 1)

                dynamic.check_probe(
                    p,
                    run,
                    form,
                    size,
                    2,
                    3 if form == "full" else None,
                    what=f"KernelConv2d (method {how!r})",
                    itemsize=torch.finfo(dtype).bits // 8,
                )

    def forward(self, x: Any, k: Any) -> Any:
        return self._run(x, k, None)

    def _run(self, x: Any, k: Any, how: str | None) -> Any:
        """The output for ``x``, ``k``, computed as ``how`` says (``None``: as the plan decides)."""
        p = self.plan
        if not (isinstance(x, torch.Tensor) and isinstance(k, torch.Tensor)):
            raise InvalidKernelError(
                f"KernelConv2d is called as m(images, kernels) on tensors. Received: {type(x).__name__}, "
                f"{type(k).__name__}."
            )
        form, size = dynamic.check_inputs(
            p, tuple(x.shape), _static(k), str(k.dtype), channels_first=True, what="KernelConv2d"
        )
        recording = _exporting() or torch.compiler.is_exporting()
        how = how or dynamic.formulation(p, form, size, exporting=recording)
        dtype = self.dtype or (x.dtype if x.is_floating_point() else torch.float32)
        x, k = x.to(dtype), k.to(dtype)
        k = _prepare(p, form, k)
        span = p.span(size)
        if p.border is not None:
            mode, value = p.border
            # PyTorch's own pad only eagerly: recorded, its choice (the image larger than the pad)
            # would be frozen at the recorded size, and a smaller image fail in the exported model.
            x = border_pad(x, p.pads(size), mode, value, native=not recording)
        elif p.padding == "same":
            if recording and p.strides != (1, 1):
                raise InvalidKernelError(
                    "KernelConv2d with padding='same' and strides pads each image by an amount that depends on "
                    "its size, which an exported or traced graph would freeze at the recorded size. Give a "
                    f"border=... or strides=1 to export it. Received: strides={p.strides}."
                )
            (top, bottom), (left, right) = (
                same_pads(n, s, st) for n, s, st in zip(x.shape[2:], span, p.strides)
            )
            x = F.pad(x, [left, right, top, bottom])
        if how == "taps":
            return _taps(x, k, p, form, size)
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


def _static(k: Any) -> tuple[Any, ...]:
    """The kernels' shape. ``torch.onnx.export(dynamo=False)`` traces every size as a tensor: the
    kernel size is read as the number it is (an exported model has one kernel size), the batch
    left to run time."""
    if not torch.jit.is_tracing():
        return tuple(k.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return (None, *(int(d) for d in k.shape[1:]))


def _exporting() -> bool:
    """Whether the module is being recorded for export (ONNX, either exporter) or traced (jit.trace)."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def _taps(x: Any, k: Any, p: dynamic.DynamicPlan, form: str, size: tuple[int, int]) -> Any:
    """The sum over the taps of the shifted (strided) images times each tap's weight (half
    precision summed in float32, as a convolution does)."""
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        x, k = x.float(), k.float()
    out = None
    for tap, i, j, rows, cols in dynamic.windows(p, size):
        xs = x[:, :, rows, cols]
        if form == "plane":
            term = xs * k[:, i, j].reshape(-1, 1, 1, 1)
        elif form == "full":
            term = torch.einsum("bchw,bco->bohw", xs, k[:, i, j])
        else:
            term = xs * k[:, tap : tap + 1]
        out = term if out is None else out + term
    return out.to(dtype)


def kernel_conv(**options: Any) -> KernelConv2d:
    """An ``nn.Module`` convolving each NCHW image with a kernel given beside it: ``m(images, kernels)``.

    Options as :func:`registry.keras.kernel_conv` (per-pixel kernels here ``(B, kh*kw, H', W')``;
    ``method="auto"`` runs one grouped convolution, and the sum over the taps while
    ``torch.onnx.export`` or ``torch.jit.trace`` records the module), plus ``dtype``
    (``float16``, ``bfloat16``, ``float32``, ``float64``; default: the images').
    The probe check runs once, when the module is made, for each form it may see.

    Example:
        >>> m = registry.torch.kernel_conv(border="reflect101")     # doctest: +SKIP
        >>> y = m(images, kernels)          # (B, C, H, W), (B, 5, 5)  # doctest: +SKIP
    """
    return KernelConv2d(**options)
