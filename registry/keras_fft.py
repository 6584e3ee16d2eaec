"""The Keras layer that correlates by FFT, and the input checks every kreg Keras layer shares.

A large kernel costs a direct convolution its area per pixel; by FFT it costs a few transforms
of the image whatever its size (a 31x31 Gaussian on 1024x1024 in TensorFlow: 494 ms direct,
11 ms by FFT). ``keras.ops`` has no 2-D real FFT, so the layer calls its backend's own
(``tf.signal.rfft2d``, ``jnp.fft.rfft2``, ``torch.fft.rfft2``) on the backend's tensors.
Built by :func:`registry.keras.to_layer` with ``method="fft"`` (or ``auto`` when it is cheaper).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._exceptions import InvalidKernelError
from ._lazy import require_keras
from .adapters.methods import fast_size

keras = require_keras()


def channel_axis(data_format: str) -> int:
    return -1 if data_format == "channels_last" else 1


def check_images(layer: Any, x: Any, channels: int | None, data_format: str) -> None:
    """kreg's own errors for an input (or input shape) the layer cannot take.

    Keras' own errors would not name the option to change.
    """
    shape = tuple(x.shape) if hasattr(x, "shape") else tuple(x)
    if len(shape) != 4:
        layout = "(N, H, W, C)" if data_format == "channels_last" else "(N, C, H, W)"
        raise InvalidKernelError(
            f"Layer {layer.name!r} takes a batch of images {layout}. Received: shape={shape}. "
            f"For one grayscale image use x[None, :, :, None]; for one colour image x[None]."
        )
    got = shape[channel_axis(data_format)]
    if channels is not None and got is not None and got != channels:
        raise InvalidKernelError(
            f"Layer {layer.name!r} was emitted for in_channels={channels} and received {got} channels. "
            f"Emit it with in_channels={got} "
            "(an HW plane with mode='depthwise' and no in_channels takes any)."
        )


def _native() -> tuple[Any, Any, Any, Any]:
    """``(rfft2, irfft2, einsum, conj)`` of the active Keras backend, on its own tensors."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return (
            lambda x, s: tf.signal.rfft2d(x, fft_length=s),
            lambda y, s: tf.signal.irfft2d(y, fft_length=s),
            tf.einsum,
            tf.math.conj,
        )
    if backend == "jax":
        import jax.numpy as jnp

        return (lambda x, s: jnp.fft.rfft2(x, s=s), lambda y, s: jnp.fft.irfft2(y, s=s), jnp.einsum, jnp.conj)
    if backend == "torch":
        import torch

        return (
            lambda x, s: torch.fft.rfft2(x, s=tuple(s)),
            lambda y, s: torch.fft.irfft2(y, s=tuple(s)),
            torch.einsum,
            torch.conj,
        )
    import numpy as np

    return (lambda x, s: np.fft.rfft2(x, s=s), lambda y, s: np.fft.irfft2(y, s=s), np.einsum, np.conj)


@keras.saving.register_keras_serializable(package="kreg", name="FFTConv2D")
class KregFFTConv2D(keras.layers.Layer):
    """A correlation computed by FFT: the same numbers as ``Conv2D`` / ``DepthwiseConv2D``.

    The (padded) image and the kernel go through a real 2-D FFT of a fast length at least the
    image's, are multiplied, and come back; a circular correlation of that length is exact on
    every ``valid`` output pixel, which is all it keeps. Strides take every ``s``-th pixel.

    Args:
        kernel_shape: ``(H, W, I, O)`` of the weight (dilation written out as zeros).
        kind: ``plane`` (``(H, W, 1, 1)`` on every channel), ``depthwise`` (``(H, W, C, M)``,
            output ``c * M + m``) or ``conv`` (``HWIO``).
        strides: output stride; padding: ``valid`` or ``same`` (stride 1 only).
        channels: the input channels the weight needs (``None`` for a plane: any).
    """

    def __init__(
        self,
        kernel_shape: Sequence[int] = (3, 3, 1, 1),
        kind: str = "plane",
        strides: Sequence[int] = (1, 1),
        padding: str = "valid",
        data_format: str = "channels_last",
        use_bias: bool = False,
        channels: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if kind not in ("plane", "depthwise", "conv") or padding not in ("valid", "same"):
            raise InvalidKernelError(
                f"kind must be plane, depthwise or conv and padding valid or same. "
                f"Received: kind={kind!r}, padding={padding!r}."
            )
        self.kernel_shape = tuple(int(v) for v in kernel_shape)
        self.kind, self.padding, self.data_format = kind, padding, data_format
        self.strides = tuple(int(v) for v in strides)
        self.use_bias, self.channels = bool(use_bias), None if channels is None else int(channels)
        outputs = (
            1 if kind == "plane" else self.kernel_shape[3] * (self.kernel_shape[2] if kind != "conv" else 1)
        )
        self.kernel = self.add_weight(shape=self.kernel_shape, initializer="zeros", name="kernel")
        self.bias = (
            self.add_weight(shape=(outputs,), initializer="zeros", name="bias") if self.use_bias else None
        )
        self.built = True

    def call(self, x: Any) -> Any:
        check_images(self, x, self.channels, self.data_format)
        ops = keras.ops
        rfft2, irfft2, einsum, conj = _native()
        kh, kw, _, m = self.kernel_shape
        out_dtype = x.dtype
        work = "float64" if "64" in str(out_dtype) else "float32"  # the FFTs take float32 and float64
        x = ops.cast(x, work)
        if self.data_format == "channels_last":
            x = ops.transpose(x, (0, 3, 1, 2))
        if self.padding == "same":
            x = ops.pad(x, ((0, 0), (0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)))
        static = x.shape[2:]
        dynamic = ops.shape(x)[2:]
        hp, wp = (s if s is not None else d for s, d in zip(static, dynamic))
        size = [fast_size(n) if isinstance(n, int) else n for n in (hp, wp)]
        xf = rfft2(x, size)
        kf = conj(rfft2(ops.transpose(ops.cast(self.kernel, work), (2, 3, 0, 1)), size))
        if self.kind == "plane":
            yf = xf * kf[0, 0]
        elif self.kind == "conv":
            yf = einsum("nchw,cohw->nohw", xf, kf)
        elif m == 1:
            yf = xf * kf[:, 0]
        else:
            yf = einsum("nchw,cmhw->ncmhw", xf, kf)
            shape = ops.shape(yf)
            yf = ops.reshape(yf, (-1, shape[1] * shape[2], shape[3], shape[4]))
        y = irfft2(yf, size)[:, :, : hp - kh + 1 : self.strides[0], : wp - kw + 1 : self.strides[1]]
        if self.data_format == "channels_last":
            y = ops.transpose(y, (0, 2, 3, 1))
        if self.bias is not None:
            bias = ops.cast(self.bias, work)
            y = y + (bias if self.data_format == "channels_last" else ops.reshape(bias, (-1, 1, 1)))
        return ops.cast(y, out_dtype)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        check_images(self, input_shape, self.channels, self.data_format)
        shape = list(input_shape)
        axes = (1, 2) if self.data_format == "channels_last" else (2, 3)
        for axis, k, s in zip(axes, self.kernel_shape[:2], self.strides):
            if shape[axis] is not None:
                shape[axis] = shape[axis] if self.padding == "same" else (shape[axis] - k) // s + 1
        c = channel_axis(self.data_format)
        if self.kind == "conv":
            shape[c] = self.kernel_shape[3]
        elif self.kind == "depthwise":
            shape[c] = self.kernel_shape[2] * self.kernel_shape[3]
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_shape": self.kernel_shape,
            "kind": self.kind,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "use_bias": self.use_bias,
            "channels": self.channels,
        }


#: The public name.
FFTConv2D = KregFFTConv2D
