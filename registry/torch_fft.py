"""The torch module that correlates by FFT, and the input check every kreg module shares.

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
