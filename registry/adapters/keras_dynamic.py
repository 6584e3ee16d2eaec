"""Keras layer for kernels that are model inputs: ``registry.keras.kernel_conv`` on ``[images, kernels]``.

What it computes is planned in :mod:`registry.adapters.dynamic`. Planes and full kernels are
folded, batch into channels, into one depthwise convolution (each sample's channels meet only
its own kernel), which is the static layer's own operation (``method="direct"``), or summed
over the taps (``method="taps"``: what TFLite and tf2onnx convert, and what ``auto`` runs on
the JAX backend, whose compiler fuses the sum); per-pixel kernels are always a sum over the
taps of shifted images times their weight map (no unfolded copy of the image). ``keras.ops``
only, so it runs on every Keras backend. Imported by :mod:`registry.keras`, never by
``import registry``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .._exceptions import InvalidKernelError
from .._lazy import require_keras
from ..keras_fft import fuses_taps, pad_border
from . import dynamic
from .borders import same_pads
from .plan import probe_enabled

keras = require_keras()
ops = keras.ops


def _eager() -> bool:
    """Whether a probe can run now (not while TensorFlow traces a graph)."""
    if keras.backend.backend() != "tensorflow":
        return True
    import tensorflow as tf  # the backend itself: already imported by Keras

    return bool(tf.executing_eagerly())


def _exporting() -> bool:
    """On the torch backend: whether torch is recording the model for ONNX or jit.trace."""
    if keras.backend.backend() != "torch":
        return False
    import torch  # the backend itself: already imported by Keras

    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def _dtype_name(tensor: Any) -> str:
    return keras.backend.standardize_dtype(getattr(tensor, "dtype", "float32"))


@keras.saving.register_keras_serializable(package="kreg", name="KernelConv2D")
class KregKernelConv2D(keras.layers.Layer):
    """A convolution whose kernels are an input: called on ``[images, kernels]`` (NHWC images).

    See :func:`kernel_conv` for the options. The probe check runs when the layer is built.
    """

    def __init__(
        self,
        form: str | None = None,
        kernel_size: int | Sequence[int] | None = None,
        padding: str = "valid",
        border: str | tuple[str, float] | None = None,
        strides: int | Sequence[int] = 1,
        dilation_rate: int | Sequence[int] = 1,
        normalize: str | None = None,
        operation: str = "correlation",
        method: str = "auto",
        probe: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        self.probe = probe

    def _check(self, images: Any, kernels: Any, dtype: str = "float32") -> tuple[str, tuple[int, int]]:
        shape = lambda t: tuple(t.shape) if hasattr(t, "shape") else tuple(t)  # noqa: E731
        return dynamic.check_inputs(
            self.plan, shape(images), shape(kernels), dtype, what=f"Layer {self.name!r}"
        )

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        # Checked before Keras' own call machinery, which would wrap kreg's one-line error in
        # several lines of its own.
        images, kernels = _pair(self, inputs)
        spec = getattr(kernels, "_kreg_kernel_spec", None)
        if spec is not None and self.plan.form is None and self.plan.kernel_size is None:
            # A kernel_input declares the form and size: the layer keeps them (in its config too),
            # so a kernels tensor of another size is refused when the model runs.
            self.plan = replace(self.plan, form=spec[0], kernel_size=spec[1])
        form, size = self._check(images, kernels, _dtype_name(kernels))
        if self.built and getattr(self, "_kreg_built_for", (form, size)) != (form, size):
            raise InvalidKernelError(
                f"Layer {self.name!r} was built for {self._kreg_built_for[0]} kernels of size "
                f"{self._kreg_built_for[1]}. Received: {form} kernels of shape {tuple(kernels.shape)}."
            )
        return super().__call__(inputs, *args, **kwargs)

    def build(self, input_shape: Any) -> None:
        images, kernels = _pair(self, input_shape)
        form, size = self._check(images, kernels)
        if images[3] is None:
            raise InvalidKernelError(
                f"Layer {self.name!r} needs the channel count of its images to be known. Received: shape={tuple(images)}."
            )
        self._kreg_built_for = (form, size)
        if probe_enabled(self.probe) and _eager():
            for how in self._formulations(form, size):

                def run(x: np.ndarray, k: np.ndarray, how: str = how) -> np.ndarray:
                    got = self._forward(
                        ops.convert_to_tensor(x, self.compute_dtype),
                        ops.convert_to_tensor(k, self.compute_dtype),
                        form,
                        size,
                        how,
                    )
                    return ops.convert_to_numpy(
                        ops.cast(got, "float32") if self.compute_dtype == "bfloat16" else got
                    )

                dynamic.check_probe(
                    self.plan,
                    run,
                    form,
                    size,
                    images[3],
                    kernels[4] if form == "full" else None,
                    what=f"Keras layer {self.name!r} (method {how!r})",
                    itemsize=np.dtype(self.compute_dtype.replace("bfloat16", "float16")).itemsize,
                )
        self.built = True

    def call(self, inputs: Any) -> Any:
        images, kernels = _pair(self, inputs)
        form, size = self._check(images, kernels, _dtype_name(kernels))
        if images.shape[3] is None:
            raise InvalidKernelError(
                f"Layer {self.name!r} needs the channel count of its images to be known."
            )
        return self._forward(images, ops.cast(kernels, images.dtype), form, size)

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        images, kernels = _pair(self, input_shape)
        form, size = self._check(images, kernels)
        h, w = self.plan.out_size(tuple(images)[1:3], size)
        return images[0], h, w, kernels[4] if form == "full" else images[3]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.plan.options(), "probe": self.probe}

    # -- the computation ------------------------------------------------------------------

    def _formulations(self, form: str, size: tuple[int, int]) -> list[str]:
        """Each way this layer may compute ``form`` kernels of ``size`` (the probe checks each)."""
        return sorted(
            {self._formulation(form, size, self.compute_dtype, e)
             for e in ((False, True) if keras.backend.backend() == "torch" else (False,))}
        )

    def _formulation(self, form: str, size: tuple[int, int], dtype: str, exporting: bool) -> str:
        how = dynamic.formulation(self.plan, form, size, fuses_taps=fuses_taps(), exporting=exporting)
        strides = self.plan.strides
        # TensorFlow's float64 depthwise kernel takes equal strides only
        tensorflow = keras.backend.backend() == "tensorflow"
        if how == "direct" and strides[0] != strides[1] and dtype == "float64" and tensorflow:
            return "taps"
        return how

    def _forward(self, x: Any, k: Any, form: str, size: tuple[int, int], how: str | None = None) -> Any:
        p = self.plan
        how = how or self._formulation(form, size, _dtype_name(x), _exporting())
        k = _prepare(p, form, k)
        padding = p.padding
        if p.border is not None:
            x, padding = _border(x, p, size), "valid"
        if how == "taps":
            return _taps(_pad_same(x, p, size) if padding == "same" else x, k, p, form, size)
        return _folded(x, k, p, form, size, padding)


def _pair(layer: Any, inputs: Any) -> tuple[Any, Any]:
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise InvalidKernelError(
            f"Layer {layer.name!r} is called on [images, kernels]. Received: {type(inputs).__name__} "
            f"{getattr(inputs, 'shape', '')}."
        )
    return inputs[0], inputs[1]


def _prepare(p: dynamic.DynamicPlan, form: str, k: Any) -> Any:
    if p.normalize is not None:
        axes = (1, 2) if form == "plane" else (3,)
        if p.normalize == "softmax":
            k = ops.exp(k - ops.max(k, axis=axes, keepdims=True))
        k = k / ops.sum(k, axis=axes, keepdims=True)
    if p.flip:
        k = ops.flip(k, axis=3) if form == "pixel" else ops.flip(ops.flip(k, axis=1), axis=2)
    return k


def _border(x: Any, p: dynamic.DynamicPlan, size: tuple[int, int]) -> Any:
    assert p.border is not None
    pads = p.pads(size)
    assert pads is not None
    return pad_border(x, pads, *p.border)


def _folded(x: Any, k: Any, p: dynamic.DynamicPlan, form: str, size: tuple[int, int], padding: str) -> Any:
    """Planes and full kernels: the batch folded into the channels of one depthwise convolution."""
    kh, kw = size
    shape = ops.shape(x)
    c = x.shape[3]
    folded = ops.reshape(ops.transpose(x, (1, 2, 0, 3)), (1, shape[1], shape[2], -1))
    if form == "plane":
        weight = ops.reshape(ops.repeat(ops.transpose(k, (1, 2, 0))[..., None], c, axis=3), (kh, kw, -1, 1))
    else:
        weight = ops.reshape(ops.transpose(k, (1, 2, 0, 3, 4)), (kh, kw, -1, k.shape[4]))
    y = ops.depthwise_conv(folded, weight, strides=p.strides, padding=padding, dilation_rate=p.dilation)
    out = ops.shape(y)
    if form == "plane":
        return ops.transpose(ops.reshape(y, (out[1], out[2], -1, c)), (2, 0, 1, 3))
    y = ops.sum(ops.reshape(y, (out[1], out[2], -1, c, k.shape[4])), axis=3)
    return ops.transpose(y, (2, 0, 1, 3))


def _pad_same(x: Any, p: dynamic.DynamicPlan, size: tuple[int, int]) -> Any:
    """Keras' ``same`` zeros around ``x``, for the sum over the taps (a convolution pads itself)."""
    span = p.span(size)
    if p.strides != (1, 1) and None in x.shape[1:3]:
        raise InvalidKernelError(
            "padding='same' with strides, summed over the taps, needs the image size known when the model is "
            "built; declare it, or use a border."
        )
    widths = [
        same_pads(n, s_, st) if n is not None else same_pads(s_, s_, 1)  # stride 1: the size does not matter
        for n, s_, st in zip(x.shape[1:3], span, p.strides)
    ]
    return ops.pad(x, [(0, 0), *widths, (0, 0)])


def _taps(x: Any, k: Any, p: dynamic.DynamicPlan, form: str, size: tuple[int, int]) -> Any:
    """The sum over the taps of a shifted, strided image times the tap's weight (per sample or per
    pixel): slices, products and sums, which every converter takes whatever the batch and size.
    Half precision sums in float32, as a convolution does."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in ("float16", "bfloat16"):
        x, k = ops.cast(x, "float32"), ops.cast(k, "float32")
    out = None
    for tap, i, j, rows, cols in dynamic.windows(p, size):
        xs = x[:, rows, cols, :]
        if form == "plane":
            term = xs * ops.reshape(k[:, i, j], (-1, 1, 1, 1))
        elif form == "full":
            term = ops.einsum("bhwc,bco->bhwo", xs, k[:, i, j])
        else:
            term = xs * k[:, :, :, tap : tap + 1]
        out = term if out is None else out + term
    return ops.cast(out, dtype)


def kernel_input(
    kernel: Any = None,
    *,
    shape: Sequence[int | None] | None = None,
    layout: str | None = None,
    kernel_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    dtype: str | None = None,
    name: str | None = None,
) -> Any:
    """A Keras ``Input`` for a batch of kernels, its shape, form and dtype from a kernel or a spec.

    Args:
        kernel: a :class:`Kernel` or a ref (``"sobel_x"``): ``HW`` gives planes ``(B, kh, kw)``,
            any other layout full kernels ``(B, kh, kw, in, out)``; the dtype is the kernel's
            (float32 for integers).
        shape: instead, the shape of one kernel: ``(kh, kw)``, ``(kh, kw, in, out)`` or, per pixel,
            ``(H, W, kh*kw)`` (``None`` for a size known only at run time).
        layout: ``plane``/``HW``, ``full``/``HWIO`` or ``pixel``: with ``kernel_size`` alone for
            per-pixel kernels on images of any size.
        kernel_size: ``(kh, kw)`` for ``layout="pixel"`` (or to check ``shape``).
        batch_size, dtype, name: as for ``keras.Input`` (dtype default float32).

    The ``kernel_conv`` layer called on it keeps the form and kernel size it declares, so a
    kernels tensor of another rank, size or layout is refused with kreg's error when the model runs.

    Example:
        >>> kernels = registry.keras.kernel_input("sobel_x")    # (None, 3, 3)  # doctest: +SKIP
    """
    from ..kernels.kernel import Kernel

    if isinstance(kernel, str):
        kernel = dynamic.load_ref(kernel)
    if kernel is not None:
        if not isinstance(kernel, Kernel):
            raise InvalidKernelError(
                f"kernel_input takes a Kernel, a ref or shape=... Received: {type(kernel).__name__}."
            )
        dims = tuple(kernel.shape) if kernel.layout == "HW" else kernel.as_layout("HWIO").shape
        dtype = dtype or (kernel.dtype.name if kernel.dtype.kind == "f" else "float32")
        form = "plane" if kernel.layout == "HW" else "full"
    else:
        aliases = {"HW": "plane", "HWIO": "full", None: None}
        form = aliases.get(layout, layout)
        size = None if kernel_size is None else dynamic.pair(kernel_size, "kernel_size")
        if shape is None and form == "pixel" and size is not None:
            shape = (None, None, size[0] * size[1])
        if shape is None or form not in (None, *dynamic.LAYOUTS):
            raise InvalidKernelError(
                "kernel_input takes a kernel, a ref, shape=(kh, kw) / (kh, kw, in, out) / (H, W, kh*kw), or "
                f"layout='pixel' with kernel_size. Received: shape={shape!r}, layout={layout!r}."
            )
        dims = tuple(shape)
        form = form or dynamic.RANKS.get(len(dims) + 1)
        if form is None or len(dims) + 1 != len(dynamic.LAYOUTS[form].split(",")):
            raise InvalidKernelError(
                f"kernel_input: a kernel of shape {dims} is none of (kh, kw), (kh, kw, in, out), (H, W, kh*kw)."
            )
    if form == "pixel":
        size = None if kernel_size is None else dynamic.pair(kernel_size, "kernel_size")
    else:
        size = (int(dims[0]), int(dims[1]))
    tensor = keras.Input(shape=dims, batch_size=batch_size, dtype=dtype or "float32", name=name)
    tensor._kreg_kernel_spec = (form, size)
    return tensor


def kernel_conv(**options: Any) -> KregKernelConv2D:
    """A Keras layer convolving each image with a kernel given beside it: ``layer([images, kernels])``.

    Args:
        form: ``plane`` (kernels ``(B, kh, kw)``, each on every channel of its image), ``full``
            (``(B, kh, kw, in, out)``, HWIO per sample) or ``pixel`` (``(B, H', W', kh*kw)``, one
            kernel per output pixel, taps row-major); default: read from the kernels' rank.
        kernel_size: ``(kh, kw)``, checked against the kernels (needed for a non-square per-pixel kernel).
        padding: ``valid`` or ``same`` (zeros, Keras' anchor).
        border: instead of padding, keep the size with a border mode (OpenCV's anchor): ``zero``,
            ``constant(v)``, ``reflect101``, ``symmetric``, ``replicate``, ``wrap``.
        strides, dilation_rate: as for ``Conv2D``.
        normalize: ``softmax`` or ``sum`` over each kernel's taps (planes and per-pixel), or ``None``.
        operation: ``correlation`` (as every Keras and kreg layer) or ``convolution`` (kernels flipped).
        method: how planes and full kernels are computed: ``direct`` (one depthwise convolution,
            the batch folded into its channels), ``taps`` (a sum over the taps: pass it to convert
            the model with TFLite or tf2onnx, which need a convolution's group count when they
            convert, and here it is the batch), or ``auto`` (default: ``taps`` on the JAX
            backend up to 15x15 and while torch exports, else ``direct``).
        dtype: the layer's dtype or policy; images and kernels are cast to its compute dtype.
        probe: run the layer when built on kreg's probe against a NumPy per-sample correlation
            (default on; ``False`` or ``KREG_PROBE=0`` skips it).
        name: the layer name.

    Example:
        >>> images = keras.Input((None, None, 3)); kernels = keras.Input((5, 5))   # doctest: +SKIP
        >>> y = registry.keras.kernel_conv(border="reflect101")([images, kernels])  # doctest: +SKIP
    """
    return KregKernelConv2D(**options)


#: The public name of the layer.
KernelConv2D = KregKernelConv2D
