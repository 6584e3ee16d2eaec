"""JAX function for kernels that are model inputs: ``registry.jax.kernel_conv`` called as ``f(x, k)``.

NHWC images and the kernel layouts of :mod:`registry.adapters.dynamic`, which plans what it
computes. Planes and full kernels are a sum over the taps, which XLA fuses into one loop (on
CPU, up to 15x15, 5-17x faster than its grouped convolution), or one grouped
``lax.conv_general_dilated`` with the batch folded into the channels (larger kernels, other
devices, ``method="direct"``); per-pixel kernels always a sum over the taps. ``jax.jit(f)`` and
``jax.grad`` work. Imported by :mod:`registry.jax`, never by ``import registry``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._exceptions import InvalidKernelError
from .._lazy import require
from . import dynamic
from .borders import same_pads, source_index
from .plan import probe_enabled

jax = require("jax", feature="The JAX adapter (registry.jax)")
jnp, lax = jax.numpy, jax.lax


@dataclass(frozen=True, eq=False)  # hashed by identity, as jax.jit needs
class KernelConv:
    """``f(images, kernels)``: a convolution whose kernels are an input; see :func:`kernel_conv`."""

    plan: dynamic.DynamicPlan
    dtype: Any = None
    method: str | None = None  # set by the probe, to check each formulation

    def formulation(self, form: str, size: tuple[int, int]) -> str:
        plan = self.plan if self.method is None else replace(self.plan, method=self.method)
        return dynamic.formulation(plan, form, size, fuses_taps=jax.default_backend() == "cpu")

    def __call__(self, x: Any, k: Any) -> Any:
        p = self.plan
        x, k = jnp.asarray(x), jnp.asarray(k)
        form, size = dynamic.check_inputs(p, x.shape, k.shape, k.dtype.name, what="kernel_conv")
        dtype = self.dtype or (x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32)
        x, k = x.astype(dtype), k.astype(dtype)
        k = _prepare(p, form, k)
        span = p.span(size)
        if p.border is not None:
            x = _border(x, p, size)
        elif p.padding == "same":
            x = jnp.pad(
                x, ((0, 0), *(same_pads(n, s, st) for n, s, st in zip(x.shape[1:3], span, p.strides)), (0, 0))
            )
        if self.formulation(form, size) == "taps":
            return _taps(x, k, p, form, size)
        b, h, w, c = x.shape
        folded = x.transpose(1, 2, 0, 3).reshape(1, h, w, b * c)
        if form == "plane":
            weight = jnp.repeat(k.transpose(1, 2, 0)[..., None], c, axis=3).reshape(*size, 1, b * c)
            groups, out = b * c, c
        else:
            out = k.shape[4]
            weight = k.transpose(1, 2, 3, 0, 4).reshape(*size, c, b * out)
            groups = b
        y = lax.conv_general_dilated(
            folded,
            weight,
            p.strides,
            "VALID",
            rhs_dilation=p.dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
        return y.reshape(y.shape[1], y.shape[2], b, out).transpose(2, 0, 1, 3)


def _prepare(p: dynamic.DynamicPlan, form: str, k: Any) -> Any:
    if p.normalize is not None:
        axes = (1, 2) if form == "plane" else (3,)
        if p.normalize == "softmax":
            k = jnp.exp(k - k.max(axis=axes, keepdims=True))
        k = k / k.sum(axis=axes, keepdims=True)
    if p.flip:
        k = k[..., ::-1] if form == "pixel" else k[:, ::-1, ::-1]
    return k


def _border(x: Any, p: dynamic.DynamicPlan, size: tuple[int, int]) -> Any:
    assert p.border is not None
    mode, value = p.border
    pads = p.pads(size)
    assert pads is not None
    if mode in ("zero", "constant"):
        return jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=value)
    for axis, (before, after) in zip((1, 2), pads):  # shapes are static in JAX: the NumPy rule itself
        x = jnp.take(x, source_index(x.shape[axis], before, after, mode), axis=axis)
    return x


def _taps(x: Any, k: Any, p: dynamic.DynamicPlan, form: str, size: tuple[int, int]) -> Any:
    """The sum over the taps of the shifted (strided) images times each tap's weight (half
    precision summed in float32, as a convolution does)."""
    dtype = x.dtype
    if dtype in (jnp.float16, jnp.bfloat16):
        x, k = x.astype(jnp.float32), k.astype(jnp.float32)
    out = None
    for tap, i, j, rows, cols in dynamic.windows(p, size):
        xs = x[:, rows, cols]
        if form == "plane":
            term = xs * k[:, i, j][:, None, None, None]
        elif form == "full":
            term = jnp.einsum("bhwc,bco->bhwo", xs, k[:, i, j])
        else:
            term = xs * k[:, :, :, tap : tap + 1]
        out = term if out is None else out + term
    return out.astype(dtype)


_DTYPES = ("float16", "bfloat16", "float32", "float64")


def kernel_conv(*, dtype: str | None = None, probe: bool | None = None, **options: Any) -> KernelConv:
    """A jittable ``f(images, kernels)`` convolving each NHWC image with a kernel given beside it.

    Options as :func:`registry.keras.kernel_conv` (``method="auto"``: the sum over the taps on
    CPU up to 15x15, which XLA fuses, else one grouped convolution), plus ``dtype`` (default:
    the images'). The probe check runs once, when the function is made, for each form it may
    see and each way ``auto`` may compute it (the declared kernel size, else 3x3).

    Example:
        >>> f = jax.jit(registry.jax.kernel_conv(border="wrap"))   # doctest: +SKIP
        >>> y = f(images, kernels)       # (B, H, W, C), (B, 5, 5)  # doctest: +SKIP
    """
    if dtype is not None and dtype not in _DTYPES:
        raise InvalidKernelError(f"dtype must be one of {', '.join(_DTYPES)}. Received: dtype={dtype!r}.")
    f = KernelConv(dynamic.dynamic_plan(**options), None if dtype is None else jnp.dtype(dtype))
    p = f.plan
    if probe_enabled(probe):
        forms = (
            [p.form]
            if p.form
            else [m for m in ("plane", "full", "pixel") if not (m == "full" and p.normalize)]
        )
        size = p.kernel_size or (3, 3)
        for form in forms:
            for how in sorted({f.formulation(form, size), dynamic.formulation(p, form, size)}):
                probed = replace(f, method=how)
                dynamic.check_probe(
                    p,
                    lambda x, k, g=probed: np.asarray(g(x, k), np.float64),
                    form,
                    size,
                    2,
                    3 if form == "full" else None,
                    what=f"registry.jax.kernel_conv (method {how!r})",
                    itemsize=jnp.dtype(f.dtype or "float32").itemsize,
                )
    return f
