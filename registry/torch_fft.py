"""The torch module that correlates by FFT, and what every kreg module shares: the input check, the
border pad, the sum over a plane's taps.

A large kernel costs a direct convolution its area per pixel; by FFT it costs a few
transforms of the image (a 31x31 Gaussian on 1024x1024: 1.1 s direct, 75 ms by FFT on a
loaded 2-CPU machine). Built by :func:`registry.torch.to_layer` with ``method="fft"`` (or
``auto`` when it is cheaper). Written for ``torch.jit.script``; ONNX has no export of
``torch.fft``, so exporting it raises kreg's error naming ``method="direct"``.
"""

from __future__ import annotations

from typing import Any, Optional

from ._exceptions import InvalidKernelError
from ._lazy import require
from .adapters.methods import fast_size

torch = require("torch", feature="The PyTorch adapter (registry.torch)")
nn, F = torch.nn, torch.nn.functional


def check_images(what: str, x: torch.Tensor, channels: Optional[int]) -> None:
    # Plain types only: this runs inside forward(), which torch.jit.script compiles.
    if x.dim() != 4:
        raise InvalidKernelError(
            f"{what} takes a batch of images (N, C, H, W). Received: shape={list(x.shape)}. "
            f"For one grayscale image use x[None, None]; for one image (C, H, W) x[None]."
        )
    if channels is not None and x.shape[1] != channels:
        raise InvalidKernelError(
            f"This layer was emitted for in_channels={channels} and received {x.shape[1]} channels. "
            f"Emit it with in_channels={x.shape[1]} "
            "(an HW plane with mode='depthwise' and no in_channels takes any)."
        )


@torch.jit.unused  # the ONNX exporters trace, never script: the check is left out of a script
def _refuse_onnx() -> None:
    if torch.onnx.is_in_onnx_export():
        raise InvalidKernelError(
            "ONNX has no FFT: this kreg module computes by torch.fft. Emit it with method='direct' "
            "(or 'separable') to export it."
        )


def source_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    """:func:`registry.adapters.borders.source_index` in torch operations, so that the index follows
    the input's size in a scripted or exported module (NumPy would freeze it at trace time)."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate":
        return torch.clamp(i, 0, n - 1)
    # Each period a tensor: torch.onnx's dynamo exporter cannot take a symbolic size as the
    # divisor of a remainder, and each dividend non-negative: exporters truncate below zero.
    if mode == "reflect101":
        period = torch.scalar_tensor(2 * n - 2 + 1 // n, dtype=torch.long, device=device)  # 1 when n == 1
        i = torch.remainder(i + before * period, period)
        return torch.where(i >= n, period - i, i)
    if mode == "symmetric":
        period = torch.scalar_tensor(2 * n, dtype=torch.long, device=device)
        i = torch.remainder(i + before * period, period)
        return torch.where(i >= n, period - 1 - i, i)
    period = torch.scalar_tensor(n, dtype=torch.long, device=device)
    return torch.remainder(i + before * period, period)  # wrap


def border_pad(
    x: torch.Tensor, padding: tuple[tuple[int, int], tuple[int, int]], mode: str, value: float, native: bool = True
) -> torch.Tensor:
    """``x`` (NCHW) with ``((top, bottom), (left, right))`` added in one of kreg's border modes;
    ``native=False`` gathers even where PyTorch's own pad applies (which, under ``torch.export``,
    would demand every exported size exceed the pad)."""
    (top, bottom), (left, right) = padding
    if mode == "zero" or mode == "constant":
        return F.pad(x, [left, right, top, bottom], value=value)
    # PyTorch's own reflect and replicate pads where they apply: an index_select along the
    # last axis is a gather, several times slower (4.5 ms of 10 for a 31x31 Gaussian by FFT
    # on 1024x1024); reflect needs every pad below its axis' size.
    if native and (
        mode == "replicate"
        or (mode == "reflect101" and max(top, bottom) < x.shape[2] and max(left, right) < x.shape[3])
    ):
        return F.pad(x, [left, right, top, bottom], mode="reflect" if mode == "reflect101" else "replicate")
    if top or bottom:
        x = x.index_select(2, source_index(x.shape[2], top, bottom, mode, x.device))
    if left or right:
        x = x.index_select(3, source_index(x.shape[3], left, right, mode, x.device))
    return x


def plane_taps(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    same: bool,
    padding: tuple[int, int],
) -> torch.Tensor:
    """The correlation of every plane of ``x`` (NCHW) with a ``(1, 1, kh, kw)`` weight as the sum
    over its taps of shifted, strided slices times each weight (no bias): for large planes and
    small kernels several times faster than PyTorch's CPU convolution (``PlaneConv2d``)."""
    kh, kw = weight.shape[2], weight.shape[3]
    (dh, dw), (sh, sw) = dilation, stride
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    # torch's own 'same': the odd pixel of an even span after; else the explicit pads on both sides
    before = [(s - 1) // 2 for s in span] if same else list(padding)
    after = [s - 1 - b for s, b in zip(span, before)] if same else before
    if any(before) or any(after):
        x = F.pad(x, [before[1], after[1], before[0], after[0]])
    ho, wo = (x.shape[2] - span[0]) // sh + 1, (x.shape[3] - span[1]) // sw + 1
    # Half precision sums in float32, as the convolution does: 49 rounded partial sums lost a
    # digit (1.2 against 0.2 for a 7x7 Laplacian in float16).
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    w = weight.to(work.dtype)
    y = None
    for i in range(kh):
        for j in range(kw):
            part = work[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
            term = part * w[0, 0, i, j]
            y = term if y is None else y + term
    assert y is not None
    return y.to(x.dtype)


class FFTConv2d(nn.Module):
    """A correlation of an NCHW batch computed by FFT: the numbers of ``nn.Conv2d``.

    The image and the kernel go through ``torch.fft.rfft2`` at a fast length at least the
    (padded) image's, are multiplied, and come back; the circular correlation is exact on every
    ``valid`` output pixel, the only ones kept. ``weight`` is ``(I, O, H, W)`` with any
    dilation written out as zeros; ``kind`` is ``plane`` (``(1, 1, H, W)`` on every channel),
    ``depthwise`` (output ``c * O + m``) or ``conv``.
    """

    def __init__(
        self,
        weight: Any,
        bias: Any | None,
        *,
        kind: str,
        stride: tuple[int, int],
        same: bool,
        channels: Optional[int],
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.kind, self.same, self.channels = kind, bool(same), channels
        self.stride = (int(stride[0]), int(stride[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            _refuse_onnx()
        check_images("FFTConv2d", x, self.channels)
        out_dtype = self.weight.dtype
        work = torch.float64 if out_dtype == torch.float64 else torch.float32  # no half-precision FFT on CPU
        kh, kw = self.weight.shape[2], self.weight.shape[3]
        x = x.to(work)
        if self.same:
            x = F.pad(x, [(kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2])
        n, c, hp, wp = x.shape
        size = [fast_size(hp), fast_size(wp)]
        xf = torch.fft.rfft2(x, s=size)
        kf = torch.fft.rfft2(self.weight.to(work), s=size).conj()
        if self.kind == "plane":
            yf = xf * kf[0, 0]
        elif self.kind == "conv":
            yf = torch.einsum("nchw,cohw->nohw", xf, kf)
        else:
            yf = (xf.unsqueeze(2) * kf.unsqueeze(0)).reshape(n, c * kf.shape[1], kf.shape[2], kf.shape[3])
        y = torch.fft.irfft2(yf, s=size)[:, :, : hp - kh + 1 : self.stride[0], : wp - kw + 1 : self.stride[1]]
        if self.bias is not None:
            y = y + self.bias.to(work).view(1, -1, 1, 1)
        return y.to(out_dtype)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, kernel={tuple(self.weight.shape)}, stride={self.stride}, same={self.same}"
        )
