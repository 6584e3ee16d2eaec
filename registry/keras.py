"""Keras 3 adapter: exact layers from kernels and kernels from trained layers, on every backend.

The layers use ``keras.ops`` only, so the same model runs with ``KERAS_BACKEND`` set to
``tensorflow``, ``jax`` or ``torch``; TensorFlow is not needed. Importing this module
imports Keras (and its backend); ``import registry`` never does. What a layer computes is
decided by :func:`registry.adapters.plan.plan`; this module only builds it, then runs the probe
check (see :func:`to_layer`). Border modes are listed in :mod:`registry.adapters.borders`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._exceptions import InvalidKernelError
from ._lazy import require_keras
from .adapters import learned
from .adapters import plan as planning
from .adapters.borders import BORDERS, parse_border, same_pads
from .adapters.dynamic import FUSED_TAPS_MAX, tap_windows
from .adapters.keras_dynamic import KernelConv2D, kernel_conv, kernel_input
from .format.content import file_sha256
from .keras_fft import (
    FFTConv2D,
    channel_axis,
    check_images,
    check_span,
    check_taps_once,
    fuses_taps,
    pad_border,
    spatial_axes,
)
from .kernels.kernel import Kernel

keras = require_keras()

__all__ = ["BORDERS", "BorderPadding2D", "FFTConv2D", "KernelConv2D", "PlaneConv2D", "from_layer", "kernel_conv",
           "kernel_input", "parse_border", "to_layer", "to_tensor"]


# The class names carry "Kreg" and the registered names stay "kreg>BorderPadding2D" (files saved by
# earlier releases load): a .keras file opened where registry.keras was not imported fails with
# Keras' "Could not locate class 'KregBorderPadding2D'" followed by its module, registry.keras.
@keras.saving.register_keras_serializable(package="kreg", name="BorderPadding2D")
class KregBorderPadding2D(keras.layers.Layer):
    """Pads height and width with one of kreg's border modes (Keras only zero-pads).

    Args:
        padding: ``((top, bottom), (left, right))``.
        mode: one of :data:`BORDERS`.
        value: the fill for ``constant``.
        data_format: ``channels_last`` or ``channels_first``.
        channels: the channel count the next layer needs (``None``: any); checked here so a
            wrong input gets kreg's error naming ``in_channels``.
    """

    def __init__(
        self,
        padding: Sequence[Sequence[int]] = ((1, 1), (1, 1)),
        mode: str = "reflect101",
        value: float = 0.0,
        data_format: str = "channels_last",
        channels: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in BORDERS:
            raise InvalidKernelError(f"mode must be one of {', '.join(BORDERS)}. Received: mode={mode!r}.")
        self.padding = tuple(tuple(int(p) for p in pair) for pair in padding)
        self.mode, self.value, self.data_format = mode, float(value), data_format
        self.channels = None if channels is None else int(channels)

    def call(self, x: Any) -> Any:
        check_images(self, x, self.channels, self.data_format)
        return pad_border(x, self.padding, self.mode, self.value, axes=spatial_axes(self.data_format))

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        # Keras builds a Sequential from shapes alone: the check must happen here too.
        check_images(self, input_shape, self.channels, self.data_format)
        shape = list(input_shape)
        for axis, pair in zip(spatial_axes(self.data_format), self.padding):
            if shape[axis] is not None:
                shape[axis] += sum(pair)
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "padding": self.padding,
            "mode": self.mode,
            "value": self.value,
            "data_format": self.data_format,
            "channels": self.channels,
        }


@keras.saving.register_keras_serializable(package="kreg", name="PlaneConv2D")
class KregPlaneConv2D(keras.layers.Layer):
    """One ``HW`` plane applied to every channel of any input, channel by channel (depthwise).

    The weight is ``(H, W, 1, 1)`` whatever the input; the channel count is read from the
    input when the layer is called, so the same layer filters gray and RGB images alike.
    """

    def __init__(
        self,
        kernel_size: Sequence[int] = (3, 3),
        strides: Sequence[int] = (1, 1),
        padding: str = "valid",
        dilation_rate: Sequence[int] = (1, 1),
        data_format: str = "channels_last",
        use_bias: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_size = tuple(int(v) for v in kernel_size)
        self.strides = tuple(int(v) for v in strides)
        self.dilation_rate = tuple(int(v) for v in dilation_rate)
        self.padding, self.data_format, self.use_bias = padding, data_format, bool(use_bias)
        self.kernel = self.add_weight(shape=(*self.kernel_size, 1, 1), initializer="zeros", name="kernel")
        self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias") if self.use_bias else None
        self.built = True

    def call(self, x: Any) -> Any:
        check_images(self, x, None, self.data_format)
        channels = x.shape[channel_axis(self.data_format)]
        if channels is None:
            raise InvalidKernelError(
                f"Layer {self.name!r} needs the channel count of its input to be known. "
                f"Received: shape={x.shape}."
            )
        if self._sums_taps(x):  # under XLA: checked once against the convolution, then summed
            size = [span + 2 * s + 3 for span, s in zip(self._spans(), self.strides)]
            shape = (2, *size, channels) if self.data_format == "channels_last" else (2, channels, *size)
            check_taps_once(self, self._taps, self._convolve, shape)
            out = self._taps(x)
        else:
            out = self._convolve(x)
        return out + self.bias if self.bias is not None else out

    def _convolve(self, x: Any) -> Any:
        ops = keras.ops
        channels = x.shape[channel_axis(self.data_format)]
        options = dict(strides=self.strides, padding=self.padding, data_format=self.data_format,
                       dilation_rate=self.dilation_rate)
        if channels == 1 and (self.strides == (1, 1) or self.dilation_rate == (1, 1)):
            # a plain convolution runs faster than a depthwise one of one channel (TensorFlow's
            # refuses strides with dilation, which the depthwise one takes)
            return ops.conv(x, self.kernel, **options)
        return ops.depthwise_conv(x, ops.tile(self.kernel, (1, 1, channels, 1)), **options)

    def _spans(self) -> list[int]:
        """The dilated kernel's height and width."""
        return [(k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation_rate)]

    def _sums_taps(self, x: Any) -> bool:
        """Whether to compute as the sum over the taps: where XLA compiles it on a CPU
        (:func:`registry.keras_fft.fuses_taps`), for up to ``FUSED_TAPS_MAX`` taps,
        and for ``same`` with strides only on a known size (its pads depend on it)."""
        kh, kw = self.kernel_size
        if kh * kw > FUSED_TAPS_MAX or not fuses_taps(x):
            return False
        strided = self.padding == "same" and self.strides != (1, 1)
        return not strided or all(isinstance(x.shape[a], int) for a in spatial_axes(self.data_format))

    def _taps(self, x: Any) -> Any:
        """The sum over the taps of the shifted, strided image times each weight; half precision
        sums in float32, as a convolution does."""
        ops = keras.ops
        axes, spans = spatial_axes(self.data_format), self._spans()
        if self.padding == "same":  # Keras' zeros, anchored as its convolution anchors them
            widths = [(0, 0)] * 4
            for axis, span, s in zip(axes, spans, self.strides):
                widths[axis] = same_pads(x.shape[axis] if s > 1 else span, span, s)
            x = ops.pad(x, widths)
        check_span(self, [x.shape[axis] for axis in axes], spans)
        dtype = keras.backend.standardize_dtype(x.dtype)
        work = "float32" if dtype in ("float16", "bfloat16") else dtype
        x, weight = ops.cast(x, work), ops.cast(self.kernel, work)
        out = None
        for _, i, j, rows, cols in tap_windows(self.kernel_size, self.strides, self.dilation_rate):
            index: list[Any] = [slice(None)] * 4
            index[axes[0]], index[axes[1]] = rows, cols
            term = x[tuple(index)] * weight[i, j, 0, 0]
            out = term if out is None else out + term
        return ops.cast(out, dtype)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        check_images(self, input_shape, None, self.data_format)
        shape = list(input_shape)
        for axis, span, s in zip(spatial_axes(self.data_format), self._spans(), self.strides):
            if shape[axis] is not None:
                n = shape[axis]
                shape[axis] = -(-n // s) if self.padding == "same" else (n - span) // s + 1
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "data_format": self.data_format,
            "use_bias": self.use_bias,
        }


#: The public names of kreg's two Keras layers.
BorderPadding2D, PlaneConv2D = KregBorderPadding2D, KregPlaneConv2D


def _conv(
    kind: str, weight: np.ndarray, bias: np.ndarray | None, *, padding: str, options: dict[str, Any]
) -> Any:
    h, w, c, out = weight.shape
    common = dict(kernel_size=(h, w), padding=padding, use_bias=bias is not None, **options)
    shape = (None, None, None, c) if options["data_format"] == "channels_last" else (None, c, None, None)
    if kind == "plane":
        layer = PlaneConv2D(**common)
    elif kind == "conv" or c == out == 1:  # one channel: a plain convolution is the faster
        layer = keras.layers.Conv2D(filters=out, **common)
    else:
        layer = keras.layers.DepthwiseConv2D(depth_multiplier=out, **common)
    if kind != "plane":
        layer.build(shape)
    layer.set_weights([weight] + ([bias] if bias is not None else []))
    return layer


def _build(p: planning.Plan, *, data_format: str, dtype: str | None, trainable: bool) -> Any:
    options = dict(
        strides=p.strides, dilation_rate=p.dilation, data_format=data_format, dtype=dtype, trainable=trainable
    )
    padding = "valid" if p.border else p.padding
    if p.method == "fft":  # one layer: it pads its border itself, in the copy that rounds the size up
        # A frozen rank-one kernel as its factors (cheaper spectra); a trainable one keeps its 2-D
        # weight, which training may take anywhere (factors would keep it rank one).
        compute = (keras.dtype_policies.get(dtype) if dtype else keras.config.dtype_policy()).compute_dtype
        factors = None if trainable else p.fft_factors(compute)
        fft = FFTConv2D(p.dense_weight().shape, p.kind, p.strides, padding, data_format, p.bias is not None,
                        p.in_channels, factors is not None, p.border, p.pads or ((0, 0), (0, 0)), name=p.name,
                        **{k: options[k] for k in ("dtype", "trainable")})
        fft.set_weights([*(factors or [p.dense_weight()]), *([p.bias] if p.bias is not None else [])])
        return fft
    if p.factors is not None:
        first, second, kind = p.separable_weights()
        (sy, sx), (dy, dx) = p.strides, p.dilation
        col = {**options, "strides": (sy, 1), "dilation_rate": (dy, 1), "name": p.name + "_col"}
        row = {**options, "strides": (1, sx), "dilation_rate": (1, dx), "name": p.name + "_row"}
        convs = [
            _conv(kind, first, None, padding=padding, options=col),
            _conv(kind, second, p.bias, padding=padding, options=row),
        ]
    else:
        name = p.name if p.border is None else p.name + "_conv"
        convs = [_conv(p.kind, p.weight, p.bias, padding=padding, options={**options, "name": name})]
    if p.border is None and len(convs) == 1:
        return convs[0]
    if p.border is not None:
        mode, value = p.border
        convs.insert(
            0,
            BorderPadding2D(
                p.pads, mode, value, data_format, channels=p.in_channels, dtype=dtype, name=p.name + "_border"
            ),
        )
    return keras.Sequential(convs, name=p.name)


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
    data_format: str = "channels_last",
    dtype: str | None = None,
    trainable: bool = False,
    use_bias: bool | None = None,
    separable: bool = False,
    method: str = "auto",
    name: str | None = None,
    probe: bool | None = None,
) -> Any:
    """A ready Keras layer holding exactly the registered weights, checked on the probe.

    Args:
        kernel: the kernel.
        in_channels: channels of the input. An ``HW`` plane in ``depthwise`` mode without it
            takes any number of channels (a :class:`PlaneConv2D`); with it, a ``DepthwiseConv2D``.
        mode: for an ``HW`` plane: ``depthwise`` (each channel filtered on its own, the
            default), ``sum`` or ``mean`` of the channels (``in_channels`` defaults to 1).
            ``HWIO`` and ``HWIM`` kernels already say how channels combine: leave it unset.
        padding: Keras ``valid`` or ``same`` (zero padding, Keras' anchor).
        border: instead of ``padding``, keep the size with a border mode (see
            :mod:`registry.adapters.borders`); returns a ``Sequential`` of a :class:`BorderPadding2D`
            and a ``valid`` convolution (by FFT, one :class:`FFTConv2D`, which pads itself).
        anchor: with a border, the ``(row, column)`` of the kernel tap that lands on each output
            pixel (OpenCV's ``anchor``); default ``k // 2`` of the dilated size, as OpenCV. An
            even kernel from another library may need another: scikit-image's
            ``roberts_pos_diag`` is ``anchor=(0, 0), border="symmetric"``.
        strides, dilation_rate, data_format: as for ``Conv2D``.
        dtype: ``float16``, ``bfloat16``, ``float32``, a policy name such as
            ``mixed_float16``, or ``None`` for the active policy.
        trainable: whether training may change the weights (default False). A frozen rank-one
            kernel by FFT is held as its two factors; a trainable one as its 2-D weight.
        use_bias: add the recorded bias (default: when the record has one).
        method: how the layer computes: ``direct`` (one convolution), ``separable`` (a rank-1
            ``HW`` kernel as two 1-D convolutions), ``fft`` (an :class:`FFTConv2D`: image and
            kernel through a 2-D FFT; not exportable to ONNX), or ``auto`` (default) for the
            cheapest on the backend by kreg's cost model. Every method gives the same numbers.
        separable: ``True`` is ``method="separable"`` (kept for older code).
        name: layer name (default ``kreg_<name>_v<version>``, numbered from the second use).
        probe: run the layer once on kreg's probe and compare with a NumPy correlation of
            the registered values (default on; ``False`` or ``KREG_PROBE=0`` skips it).

    Returns:
        A ``Conv2D``, ``DepthwiseConv2D``, :class:`PlaneConv2D`, :class:`FFTConv2D` or
        ``Sequential``; weights set.

    Raises:
        InvalidKernelError: an option that does not fit the kernel.
        ProbeMismatchError: the layer does not compute what the kernel says.

    Example:
        >>> import registry, registry.keras as rk                          # doctest: +SKIP
        >>> rk.to_layer(registry.load("sobel_x"), border="reflect101")     # doctest: +SKIP
    """
    if data_format not in ("channels_last", "channels_first"):
        raise InvalidKernelError(
            f"data_format must be channels_last or channels_first. Received: {data_format!r}."
        )
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
    p = planning.plan(kernel, separable=separable, method=method, framework=keras.backend.backend(),
                      name=name, **options)  # type: ignore[arg-type]
    layer = _build(p, data_format=data_format, dtype=dtype, trainable=trainable)
    if planning.probe_enabled(probe):
        check_layer(kernel, layer, options, data_format=data_format)
    return layer


def check_layer(
    kernel: Kernel,
    layer: Any,
    options: dict[str, Any],
    *,
    data_format: str = "channels_last",
    channels: int | None = None,
) -> None:
    """The probe check of an emitted (or hand-made) layer; raises ``ProbeMismatchError``."""
    p = planning.plan(kernel, name="probe", **options)
    x = planning.probe_input(p, channels)
    first = data_format == "channels_first"
    got = x.transpose(0, 3, 1, 2) if first else x
    # A Sequential called once would pin its input shape to the probe's: run its layers instead.
    for part in layer.layers if isinstance(layer, keras.Sequential) else [layer]:
        got = part(got)
    planning.check_probe(kernel, keras.ops.convert_to_numpy(got), x, options,
                         what=f"Keras layer {layer.name!r}", channels_first=first)


def to_tensor(
    kernel: Kernel,
    *,
    in_channels: int | None = None,
    mode: str | None = None,
    dtype: str = "float32",
    probe: bool | None = None,
) -> Any:
    """The weight as a tensor of the active Keras backend, checked on the probe.

    ``keras.ops.conv`` takes the ``HWIO`` weight of a full kernel or of an ``HW`` plane in
    ``sum``/``mean`` mode; ``keras.ops.depthwise_conv`` the ``(H, W, C, M)`` weight of an
    ``HWIM`` kernel or of a plane with ``in_channels``; a plane alone is ``(H, W, 1, 1)``.
    """
    options = dict(in_channels=in_channels, mode=mode)
    p = planning.plan(kernel, name="tensor", **options)  # type: ignore[arg-type]
    ops = keras.ops
    weight = ops.convert_to_tensor(p.weight, dtype=dtype)
    if planning.probe_enabled(probe):
        x = planning.probe_input(p)
        xt = ops.convert_to_tensor(x, dtype=dtype)
        if p.kind == "conv":
            got = ops.conv(xt, weight)
        else:
            filt = ops.tile(weight, (1, 1, x.shape[3], 1)) if p.kind == "plane" else weight
            got = ops.depthwise_conv(xt, filt)
        planning.check_probe(kernel, ops.convert_to_numpy(got), x, {**options, "use_bias": False},
                             what=f"the Keras weight for {kernel.ref}")
    return weight


# -- from trained layers --------------------------------------------------------------------


def from_layer(source: Any, layer: str | None = None) -> Kernel:
    """A trained ``Conv2D`` / ``DepthwiseConv2D`` kernel as a :class:`Kernel` (not stored: add it yourself).

    Args:
        source: a Keras model or layer, or the path of a saved model (``.keras``);
            a path is loaded with ``safe_mode=True`` and its sha256 recorded.
        layer: the layer's name inside a model (optional when there is one conv layer).

    Returns:
        A version-0 kernel whose record says ``origin=learned``, the framework, model,
        layer, source layout and checkpoint hash, with the bias when the layer has one.
        A grouped ``Conv2D`` becomes the equivalent full ``HWIO`` kernel (zeros across groups).

    Example:
        >>> kernel = registry.keras.from_layer("model.keras", "conv1")     # doctest: +SKIP
        >>> registry.add_from_keras("model.keras", "conv1", name="team/c1")  # doctest: +SKIP
    """
    checkpoint = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidKernelError(f"No such model file: {path}.")
        checkpoint = file_sha256(path)
        try:
            source = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a bad file
            raise InvalidKernelError(
                f"{path} is not a loadable Keras model ({type(exc).__name__}: {exc})."
            ) from None
    model, target = _find_layer(source, layer)
    values = keras.ops.convert_to_numpy(target.kernel)
    if isinstance(target, keras.layers.DepthwiseConv2D):
        layout, groups = "HWIM", 1
    elif type(target) is keras.layers.Conv2D:
        layout, groups = "HWIO", int(getattr(target, "groups", 1))
    else:
        raise InvalidKernelError(
            f"Layer {target.name!r} is a {type(target).__name__}; kreg takes Conv2D and DepthwiseConv2D "
            f"kernels."
        )
    if groups != 1:  # one input per group: depthwise (HWIM); otherwise the full kernel, zeros across groups
        values, layout = learned.oihw_to_stored(values.transpose(3, 2, 0, 1), groups)
    bias = keras.ops.convert_to_numpy(target.bias).ravel() if getattr(target, "use_bias", False) else None
    source_info = {
        "framework": "keras",
        "framework_version": keras.__version__,
        "model": model.name if model is not None else None,
        "layer": target.name,
        "checkpoint_sha256": checkpoint,
    }
    source_layout = "HWIM" if isinstance(target, keras.layers.DepthwiseConv2D) else "HWIO"
    return learned.learned_kernel(values, layout, bias=bias, source=source_info, source_layout=source_layout)


def _find_layer(source: Any, layer: str | None) -> tuple[Any, Any]:
    if not isinstance(source, keras.Model):
        if layer is not None:
            raise InvalidKernelError(
                "layer= names a layer inside a model; pass the model, or the layer alone."
            )
        return None, source
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    convs = [each for each in _walk_layers(source) if isinstance(each, kinds)]
    names = ", ".join(each.name for each in convs)
    if layer is not None:
        for candidate in _walk_layers(source):
            if candidate.name == layer:
                return source, candidate
        raise InvalidKernelError(
            f"Model {source.name!r} has no layer {layer!r}. Convolution layers: {names or 'none'}."
        )
    if len(convs) != 1:
        raise InvalidKernelError(
            f"Model {source.name!r} has {len(convs)} convolution layers; name one with layer=... ({names})."
        )
    return source, convs[0]


def _walk_layers(model: Any) -> list[Any]:
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_walk_layers(layer))
    return found
