"""JAX adapter: jittable convolution functions and ``jax.Array`` weights from kernels, kernels from params.

Importing this module imports JAX; ``import registry`` never does. A layer here is a small
callable holding its weights (NHWC in, NHWC out, the same numbers as the Keras layer); Keras
users on the JAX backend use :mod:`registry.keras` instead. What a layer computes is decided
by :func:`registry.adapters.plan.plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._exceptions import InvalidKernelError
from ._lazy import require
from .adapters import learned
from .adapters import plan as planning
from .adapters.borders import BORDERS, NUMPY_PAD, parse_border
from .adapters.plan import Plan
from .kernels.kernel import Kernel

jax = require("jax", feature="The JAX adapter (registry.jax)")
jnp, lax = jax.numpy, jax.lax

__all__ = ["BORDERS", "Conv", "from_layer", "parse_border", "to_layer", "to_tensor"]


def _pad(x: Any, plan: Plan) -> Any:
    """The plan's border on an NHWC batch (indices from the NumPy rule: shapes are static in JAX)."""
    assert plan.border is not None and plan.pads is not None
    mode, value = plan.border
    if mode in ("zero", "constant"):
        return jnp.pad(x, ((0, 0), *plan.pads, (0, 0)), constant_values=value)
    # jnp.pad's own modes (NumPy's rules, folding as often as a small image needs): XLA fuses
    # them, where gathering rows by an index took several times longer.
    return jnp.pad(x, ((0, 0), *plan.pads, (0, 0)), mode=NUMPY_PAD[mode])


def _conv(
    x: Any, weight: Any, kind: str, strides: tuple[int, int], dilation: tuple[int, int], padding: str
) -> Any:
    n, height, width, c = x.shape
    if kind == "plane" and c > 1:  # channels folded into the batch: XLA's grouped convolution is slow
        planes = jnp.moveaxis(x, 3, 1).reshape(n * c, height, width, 1)
        y = _conv(planes, weight, kind, strides, dilation, padding)
        return jnp.moveaxis(y.reshape(n, c, *y.shape[1:3]), 1, 3)
    h, w, i, o = weight.shape
    if kind != "conv":  # depthwise: (H, W, C, M) -> the grouped (H, W, 1, C*M), output c*M + m
        weight = weight.reshape(h, w, 1, i * o) if kind == "depthwise" else weight
    groups = 1 if kind == "conv" else c
    return lax.conv_general_dilated(
        x,
        weight,
        strides,
        padding.upper(),
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def _fft(x: Any, weight: Any, plan: Plan, padding: str) -> Any:
    """The correlation by ``jnp.fft.rfft2`` (XLA's CPU convolution is slow: a 31x31 Gaussian on
    1024x1024 takes 365 ms direct, 20 ms by FFT): the image and the kernel at a fast length at
    least the padded image's, whose circular correlation is exact on every ``valid`` pixel kept."""
    (dh, dw), (sh, sw) = plan.dilation, plan.strides
    if (dh, dw) != (1, 1):  # the dilation written out as zeros
        h, w = weight.shape[:2]
        dense = jnp.zeros(((h - 1) * dh + 1, (w - 1) * dw + 1, *weight.shape[2:]), weight.dtype)
        weight = dense.at[::dh, ::dw].set(weight)
    kh, kw, c, m = weight.shape
    work = jnp.float64 if x.dtype == jnp.float64 else jnp.float32  # no half-precision FFT on CPU
    x = jnp.moveaxis(x.astype(work), 3, 1)
    if padding == "same":  # stride 1: the plan refuses fft with 'same' and strides
        x = jnp.pad(x, ((0, 0), (0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)))
    n, channels, hp, wp = x.shape
    size = (planning.fast_size(hp), planning.fast_size(wp))
    xf = jnp.fft.rfft2(x, s=size)
    kf = jnp.conj(jnp.fft.rfft2(jnp.transpose(weight.astype(work), (2, 3, 0, 1)), s=size))
    if plan.kind == "plane":
        yf = xf * kf[0, 0]
    elif plan.kind == "conv":
        yf = jnp.einsum("nchw,cohw->nohw", xf, kf)
    else:
        yf = (xf[:, :, None] * kf[None]).reshape(n, channels * m, *kf.shape[2:])
    y = jnp.fft.irfft2(yf, s=size)[:, :, : hp - kh + 1 : sh, : wp - kw + 1 : sw]
    return jnp.moveaxis(y, 1, 3).astype(weight.dtype)


@dataclass(frozen=True, eq=False)  # hashed by identity, as jax.jit needs
class Conv:
    """A kernel as a JAX function of an NHWC batch; ``jax.jit(layer)`` works. ``params`` holds the arrays."""

    plan: Plan
    params: dict[str, Any]

    def __call__(self, x: Any) -> Any:
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise InvalidKernelError(
                f"{self.plan.name} takes a batch of images (N, H, W, C). Received: shape={x.shape}. "
                f"For one grayscale image use x[None, :, :, None]."
            )
        p = self.plan
        if p.in_channels is not None and x.shape[3] != p.in_channels:
            raise InvalidKernelError(
                f"{p.name} was emitted for in_channels={p.in_channels} and received {x.shape[3]} channels. "
                f"Emit it with in_channels={x.shape[3]} "
                "(an HW plane with mode='depthwise' and no in_channels takes any)."
            )
        x = x.astype(self.params["kernel"].dtype)
        if p.border is not None:
            x = _pad(x, p)
        padding = "valid" if p.border is not None else p.padding
        kind = "plane" if p.kind == "plane" else p.kind
        if p.method == "fft":
            x = _fft(x, self.params["kernel"], p, padding)
        elif p.factors is not None:
            (sy, sx), (dy, dx) = p.strides, p.dilation
            x = _conv(x, self.params["column"], kind, (sy, 1), (dy, 1), padding)
            x = _conv(x, self.params["row"], kind, (1, sx), (1, dx), padding)
        else:
            x = _conv(x, self.params["kernel"], kind, p.strides, p.dilation, padding)
        return x + self.params["bias"] if "bias" in self.params else x


def to_layer(
    kernel: Kernel,
    *,
    in_channels: int | None = None,
    mode: str | None = None,
    padding: str = "valid",
    border: str | tuple[str, float] | None = None,
    anchor: int | tuple[int, int] | None = None,
    strides: int | tuple[int, int] = 1,
    dilation_rate: int | tuple[int, int] = 1,
    dtype: str | None = None,
    use_bias: bool | None = None,
    separable: bool = False,
    method: str = "auto",
    name: str | None = None,
    probe: bool | None = None,
) -> Conv:
    """A :class:`Conv` computing what :func:`registry.keras.to_layer` computes, checked on the probe.

    Options as for :func:`registry.keras.to_layer` (no ``trainable``: JAX arrays are values;
    train ``layer.params`` as you would any pytree). ``method="auto"`` picks ``fft`` from a
    small kernel size up: XLA's CPU convolution is slow.

    Example:
        >>> import registry, registry.jax as rj                                  # doctest: +SKIP
        >>> y = jax.jit(rj.to_layer(registry.load("sobel_x"), border="wrap"))(x)  # doctest: +SKIP
    """
    options = dict(
        in_channels=in_channels,
        mode=mode,
        padding=padding,
        border=border,
        anchor=anchor,
        strides=strides,
        dilation_rate=dilation_rate,
        use_bias=use_bias,
    )
    p = planning.plan(kernel, separable=separable, method=method, framework="jax", name=name,
                      **options)  # type: ignore[arg-type]
    dt = dtype or p.weight.dtype.name
    params: dict[str, Any] = {"kernel": jnp.asarray(p.weight, dtype=dt)}
    if p.factors is not None:
        first, second, _ = p.separable_weights()
        params["column"], params["row"] = jnp.asarray(first, dtype=dt), jnp.asarray(second, dtype=dt)
    if p.bias is not None:
        params["bias"] = jnp.asarray(p.bias, dtype=dt)
    layer = Conv(p, params)
    if planning.probe_enabled(probe):
        x = planning.probe_input(p)
        got = layer(jnp.asarray(x, dtype=dt))
        planning.check_probe(
            kernel,
            np.asarray(got.astype("float32")),
            x,
            options,
            what=f"the JAX layer {p.name}",
            itemsize=got.dtype.itemsize,
        )
    return layer


def to_tensor(
    kernel: Kernel,
    *,
    in_channels: int | None = None,
    mode: str | None = None,
    dtype: str = "float32",
    probe: bool | None = None,
) -> Any:
    """The ``HWIO`` weight for ``lax.conv_general_dilated``, checked on the probe.

    A full kernel, or an ``HW`` plane in ``sum``/``mean`` mode, is ``HWIO`` for
    ``feature_group_count=1``; an ``HWIM`` kernel, or a plane in ``depthwise`` mode with
    ``in_channels``, its grouped ``(H, W, 1, C*M)`` form for ``feature_group_count=C``; a plane
    alone is ``(H, W, 1, 1)``. The options are those of :func:`registry.keras.to_tensor`.

    Example:
        >>> import registry, registry.jax as rj                                  # doctest: +SKIP
        >>> rj.to_tensor(registry.load("sobel_x"), in_channels=3).shape           # doctest: +SKIP
        (3, 3, 1, 3)
    """
    options = dict(in_channels=in_channels, mode=mode)
    p = planning.plan(kernel, name="tensor", **options)  # type: ignore[arg-type]
    h, w, c, m = p.weight.shape
    weight = jnp.asarray(p.weight if p.kind == "conv" else p.weight.reshape(h, w, 1, c * m), dtype=dtype)
    if planning.probe_enabled(probe):
        x = planning.probe_input(p)
        xt = jnp.asarray(x, dtype=dtype)
        channels = x.shape[3]
        filt = jnp.tile(weight, (1, 1, 1, channels)) if p.kind == "plane" else weight
        got = lax.conv_general_dilated(xt, filt, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       feature_group_count=1 if p.kind == "conv" else channels)
        planning.check_probe(kernel, np.asarray(got.astype("float32")), x, {**options, "use_bias": False},
                             what=f"the JAX weight for {kernel.ref}", itemsize=got.dtype.itemsize)
    return weight


def from_layer(params: Mapping[str, Any], layer: str | None = None, *, groups: int = 1) -> Kernel:
    """A convolution's ``kernel`` (HWIO, as Flax stores it) and ``bias`` from a params tree.

    Args:
        params: a (nested) mapping such as Flax's ``{"params": {"Conv_0": {"kernel": ..., "bias": ...}}}``.
        layer: the path to the layer's mapping, ``/``-separated (``params/Conv_0``); optional
            when ``params`` is that mapping already.
        groups: the layer's ``feature_group_count`` (the input channels for depthwise).

    Returns:
        A version-0 kernel (not stored: add it yourself).
    """
    node: Any = params
    for part in (layer or "").split("/"):
        if part:
            if not isinstance(node, Mapping) or part not in node:
                keys = ", ".join(sorted(node)) if isinstance(node, Mapping) else type(node).__name__
                raise InvalidKernelError(f"No {part!r} in the params at {layer!r}. Keys there: {keys}.")
            node = node[part]
    if not isinstance(node, Mapping) or "kernel" not in node:
        raise InvalidKernelError(
            f"{layer or 'params'} holds no 'kernel'; name the convolution's mapping with layer=."
        )
    weight = np.asarray(node["kernel"])
    if weight.ndim != 4:
        raise InvalidKernelError(
            f"A 2-D convolution kernel is HWIO (rank 4). Received: shape={weight.shape}."
        )
    tensors = {"w.weight": weight.transpose(3, 2, 0, 1)}
    if "bias" in node:
        tensors["w.bias"] = np.asarray(node["bias"])
    info = {"framework": "jax", "framework_version": jax.__version__}
    kernel = learned.from_tensors(tensors, "w.weight", groups=groups, source=info)
    source = {**kernel._record["provenance"]["source"], "layer": layer or None}
    return learned.learned_kernel(
        kernel.array, kernel.layout, bias=kernel.bias, source=source, source_layout="HWIO"
    )
from .adapters.jax_dynamic import KernelConv, kernel_conv  # noqa: F401  kernels as inputs
