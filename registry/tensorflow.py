"""TensorFlow / Keras adapter: exact layers and tensors from kernels, kernels from trained layers.

Importing this module imports TensorFlow; ``import registry`` never does. Every function
takes a :class:`registry.Kernel` and never changes it.

Border modes, named once (each library's word for the same thing):

============  ====================  ============  ===========  ===============
kreg          OpenCV                TensorFlow    NumPy pad    scipy.ndimage
============  ====================  ============  ===========  ===============
zero          BORDER_CONSTANT (0)   CONSTANT      constant     constant
constant(v)   BORDER_CONSTANT (v)   CONSTANT      constant     constant
reflect101    BORDER_REFLECT_101    REFLECT       reflect      mirror
symmetric     BORDER_REFLECT        SYMMETRIC     symmetric    reflect
replicate     BORDER_REPLICATE      (none)        edge         nearest
wrap          BORDER_WRAP           (none)        wrap         wrap
============  ====================  ============  ===========  ===============

"reflect" means reflect101 in TensorFlow and NumPy but symmetric in scipy: kreg never
uses the bare word. With a border, a kernel is anchored where OpenCV anchors it
(``k // 2``), which for even sizes is one pixel later than Keras' ``same`` padding.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._exceptions import InvalidKernelError
from ._kernel import Kernel
from ._lazy import require

tf = require("tensorflow", feature="The TensorFlow adapter (registry.tensorflow)")
keras = require("keras", feature="The Keras adapter (registry.tensorflow)")

__all__ = ["BORDERS", "BorderPadding2D", "add_from_keras", "to_keras", "to_tf", "to_tf_depthwise"]

#: Border modes accepted by ``to_keras(border=...)``; ``constant`` takes a value: ``"constant(0.5)"``.
BORDERS = ("zero", "constant", "reflect101", "symmetric", "replicate", "wrap")
_CONSTANT = re.compile(r"^constant\(\s*([-+0-9.eE]+)\s*\)$")


@keras.saving.register_keras_serializable(package="kreg")
class BorderPadding2D(keras.layers.Layer):
    """Pads height and width with one of kreg's border modes (Keras only zero-pads).

    Args:
        padding: ``((top, bottom), (left, right))``.
        mode: one of :data:`BORDERS`.
        value: the fill for ``constant``.
        data_format: ``channels_last`` or ``channels_first``.
    """

    def __init__(
        self,
        padding: Sequence[Sequence[int]] = ((1, 1), (1, 1)),
        mode: str = "reflect101",
        value: float = 0.0,
        data_format: str = "channels_last",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in BORDERS:
            raise InvalidKernelError(f"mode must be one of {', '.join(BORDERS)}. Received: mode={mode!r}.")
        self.padding = tuple(tuple(int(p) for p in pair) for pair in padding)
        self.mode, self.value, self.data_format = mode, float(value), data_format

    def _axes(self) -> tuple[int, int]:
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def call(self, x: Any) -> Any:
        ops = keras.ops
        if self.mode in ("zero", "constant"):
            widths = [(0, 0)] * 4
            for axis, pair in zip(self._axes(), self.padding):
                widths[axis] = pair
            return ops.pad(x, widths, mode="constant", constant_values=self.value if self.mode == "constant" else 0.0)
        for axis, (before, after) in zip(self._axes(), self.padding):
            if before or after:
                x = ops.take(x, self._source_index(ops.shape(x)[axis], before, after), axis=axis)
        return x

    def _source_index(self, n: Any, before: int, after: int) -> Any:
        """For each padded position, the index of the input pixel it copies."""
        ops = keras.ops
        i = ops.arange(-before, n + after, dtype="int32")
        n = ops.cast(n, "int32")
        if self.mode == "reflect101":
            i = ops.abs(i)
            return (n - 1) - ops.abs((n - 1) - i)
        if self.mode == "symmetric":
            i = ops.where(i < 0, -i - 1, i)
            return ops.where(i >= n, 2 * n - 1 - i, i)
        if self.mode == "replicate":
            return ops.clip(i, 0, n - 1)
        return ops.mod(i, n)  # wrap

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        shape = list(input_shape)
        for axis, pair in zip(self._axes(), self.padding):
            if shape[axis] is not None:
                shape[axis] += sum(pair)
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding, "mode": self.mode, "value": self.value,
                "data_format": self.data_format}


def parse_border(border: str | tuple[str, float]) -> tuple[str, float]:
    """``"reflect101"`` -> ``("reflect101", 0.0)``; ``"constant(2)"`` or ``("constant", 2)`` -> ``("constant", 2.0)``."""
    if isinstance(border, tuple):
        mode, value = border
        return parse_border(mode)[0], float(value)
    match = _CONSTANT.match(border) if isinstance(border, str) else None
    if match:
        return "constant", float(match.group(1))
    if border not in BORDERS or border == "constant":
        raise InvalidKernelError(
            f"border must be one of zero, constant(v), reflect101, symmetric, replicate, wrap. "
            f"Received: border={border!r}."
        )
    return border, 0.0


def _layer_name(kernel: Kernel, name: str | None) -> str:
    if name:
        return name
    return "kreg_" + re.sub(r"[^A-Za-z0-9_]", "_", kernel.name) + (f"_v{kernel.version}" if kernel.version else "")


def _plan(kernel: Kernel, in_channels: int | None, mode: str) -> tuple[str, np.ndarray]:
    """("conv" | "depthwise", the 4-D weight) for a kernel applied to ``in_channels`` channels."""
    array = np.array(kernel.array, dtype=np.float32 if kernel.dtype.kind != "f" else kernel.dtype)
    if kernel.layout == "HW":
        channels = in_channels or 1
        if mode == "depthwise":
            return "depthwise", np.repeat(array[:, :, None, None], channels, axis=2)
        if mode in ("sum", "mean"):
            weight = np.repeat(array[:, :, None, None], channels, axis=2)
            return "conv", weight / channels if mode == "mean" else weight
        raise InvalidKernelError(f"mode must be depthwise, sum or mean. Received: mode={mode!r}.")
    if mode != "depthwise":
        raise InvalidKernelError(f"mode applies to HW kernels only; {kernel.ref} is {kernel.layout}.")
    if in_channels not in (None, array.shape[2]):
        raise InvalidKernelError(
            f"{kernel.ref} is {kernel.layout} with {array.shape[2]} input channels. Received: in_channels={in_channels}."
        )
    return ("conv" if kernel.layout == "HWIO" else "depthwise"), array


def _conv_layer(kind: str, weight: np.ndarray, bias: np.ndarray | None, *, padding: str,
                options: dict[str, Any]) -> Any:
    h, w, c, out = weight.shape
    common = dict(kernel_size=(h, w), padding=padding, use_bias=bias is not None, **options)
    if kind == "conv":
        layer = keras.layers.Conv2D(filters=out, **common)
    else:
        layer = keras.layers.DepthwiseConv2D(depth_multiplier=out, **common)
    layer.build((None, None, None, c) if options["data_format"] == "channels_last" else (None, c, None, None))
    layer.set_weights([weight] + ([bias] if bias is not None else []))
    return layer


def to_keras(
    kernel: Kernel,
    *,
    in_channels: int | None = None,
    mode: str = "depthwise",
    padding: str = "valid",
    border: str | tuple[str, float] | None = None,
    strides: int | tuple[int, int] = 1,
    dilation_rate: int | tuple[int, int] = 1,
    data_format: str = "channels_last",
    dtype: str | None = None,
    trainable: bool = False,
    use_bias: bool | None = None,
    separable: bool = False,
    name: str | None = None,
) -> Any:
    """A ready Keras layer holding exactly the registered weights.

    Args:
        kernel: the kernel.
        in_channels: channels of the input (an ``HW`` plane defaults to 1).
        mode: for an ``HW`` plane over several channels: ``depthwise`` (each channel
            filtered on its own, the default), ``sum`` or ``mean`` of the channels.
        padding: Keras ``valid`` or ``same`` (zero padding, Keras' anchor).
        border: instead of ``padding``, keep the size with a border mode (see the module
            docs); returns a ``Sequential`` of a padding layer and a ``valid`` convolution.
        strides, dilation_rate, data_format: as for ``Conv2D``.
        dtype: ``float16``, ``bfloat16``, ``float32``, a policy name such as
            ``mixed_float16``, or ``None`` for the active policy.
        trainable: whether training may change the weights (default False).
        use_bias: add the recorded bias (default: when the record has one).
        separable: emit a rank-1 ``HW`` kernel as two 1-D convolutions.
        name: layer name (default ``kreg_<name>_v<version>``).

    Returns:
        A ``Conv2D``, ``DepthwiseConv2D`` or ``Sequential``; weights set, trainable as asked.

    Example:
        >>> import registry, registry.tensorflow as rtf                        # doctest: +SKIP
        >>> rtf.to_keras(registry.load("sobel_x"), border="reflect101")        # doctest: +SKIP
    """
    if padding not in ("valid", "same"):
        raise InvalidKernelError(f"padding must be 'valid' or 'same'. Received: padding={padding!r}.")
    if border is not None and padding != "valid":
        raise InvalidKernelError("Give padding='same' or a border, not both: a border keeps the size itself.")
    if data_format not in ("channels_last", "channels_first"):
        raise InvalidKernelError(f"data_format must be channels_last or channels_first. Received: {data_format!r}.")
    kind, weight = _plan(kernel, in_channels, mode)
    bias = _bias(kernel, kind, weight, use_bias)
    layer_name = _layer_name(kernel, name)
    options = dict(strides=_pair(strides), dilation_rate=_pair(dilation_rate), data_format=data_format,
                   dtype=dtype, trainable=trainable)
    if separable:
        scale = 1.0 / weight.shape[2] if mode == "mean" else 1.0
        convs = _separable(kernel, kind, weight.shape[2], scale, bias, padding="valid" if border else padding,
                           options=options, name=layer_name)
    else:
        convs = [_conv_layer(kind, weight, bias, padding="valid" if border else padding,
                             options={**options, "name": layer_name if border is None else layer_name + "_conv"})]
    if border is None and len(convs) == 1:
        return convs[0]
    layers = list(convs)
    if border is not None:
        border_mode, value = parse_border(border)
        dh, dw = options["dilation_rate"]
        pads = tuple(_anchor_pads((size - 1) * d + 1) for size, d in zip(weight.shape[:2], (dh, dw)))
        layers.insert(0, BorderPadding2D(pads, border_mode, value, data_format, dtype=dtype, name=layer_name + "_border"))
    return keras.Sequential(layers, name=layer_name)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _anchor_pads(size: int) -> tuple[int, int]:
    """OpenCV's anchor: ``size // 2`` pixels before, the rest after."""
    return size // 2, size - 1 - size // 2


def _bias(kernel: Kernel, kind: str, weight: np.ndarray, use_bias: bool | None) -> np.ndarray | None:
    recorded = kernel._record.get("bias")
    if use_bias is False or (use_bias is None and recorded is None):
        return None
    if recorded is None:
        raise InvalidKernelError(f"{kernel.ref} has no recorded bias; pass use_bias=None or False.")
    outputs = weight.shape[3] if kind == "conv" else weight.shape[2] * weight.shape[3]
    if len(recorded) != outputs:
        raise InvalidKernelError(
            f"{kernel.ref} records {len(recorded)} bias values but this layer has {outputs} outputs."
        )
    return np.array(recorded, dtype=np.float32)


def _separable(kernel: Kernel, kind: str, channels: int, scale: float, bias: np.ndarray | None, *,
               padding: str, options: dict[str, Any], name: str) -> list[Any]:
    """A column convolution then a row convolution with the recorded rank-1 factors."""
    factors = kernel._record.get("separable")
    if kernel.layout != "HW" or factors is None:
        raise InvalidKernelError(
            f"{kernel.ref} has no separable factors (only rank-1 HW kernels do); use separable=False."
        )
    dtype = np.float64 if kernel.dtype == np.float64 else np.float32
    column = np.array(factors["column"], dtype=dtype) * scale
    row = np.array(factors["row"], dtype=dtype)
    # depthwise: both passes per channel; sum/mean: the first pass also sums the channels.
    first = np.repeat(column[:, None, None, None], channels, axis=2)
    second = np.repeat(row[None, :, None, None], channels if kind == "depthwise" else 1, axis=2)
    (sy, sx), (dy, dx) = options["strides"], options["dilation_rate"]
    col_opts = {**options, "strides": (sy, 1), "dilation_rate": (dy, 1), "name": name + "_col"}
    row_opts = {**options, "strides": (1, sx), "dilation_rate": (1, dx), "name": name + "_row"}
    return [_conv_layer(kind, first, None, padding=padding, options=col_opts),
            _conv_layer(kind, second, bias, padding=padding, options=row_opts)]


def to_tf(kernel: Kernel, *, dtype: str = "float32") -> Any:
    """The ``HWIO`` filter for ``tf.nn.conv2d`` (an ``HW`` plane becomes ``(H, W, 1, 1)``).

    Example:
        >>> import registry, registry.tensorflow as rtf                    # doctest: +SKIP
        >>> rtf.to_tf(registry.load("sobel_x")).shape                      # doctest: +SKIP
        TensorShape([3, 3, 1, 1])
    """
    return tf.constant(kernel.as_layout("HWIO"), dtype=dtype)


def to_tf_depthwise(kernel: Kernel, channels: int, *, dtype: str = "float32") -> Any:
    """The ``(H, W, channels, multiplier)`` filter for ``tf.nn.depthwise_conv2d``.

    An ``HW`` plane is repeated for each channel; an ``HWIM`` kernel must have ``channels``.
    """
    if kernel.layout == "HW":
        return tf.constant(np.repeat(kernel.array[:, :, None, None], channels, axis=2), dtype=dtype)
    if kernel.layout == "HWIM" and kernel.shape[2] == channels:
        return tf.constant(kernel.array, dtype=dtype)
    raise InvalidKernelError(
        f"A depthwise filter comes from an HW plane or an HWIM kernel with {channels} channels. "
        f"Received: {kernel.ref} {kernel.layout} {kernel.shape}."
    )


def add_from_keras(
    source: Any,
    layer: str | None = None,
    *,
    name: str,
    registry: Any = None,
    description: str = "",
    tags: Sequence[str] = (),
    license: str | None = None,
    author: str | None = None,
    references: Sequence[str] = (),
) -> Kernel:
    """Register a trained ``Conv2D`` / ``DepthwiseConv2D`` kernel with its provenance.

    Args:
        source: a Keras model or layer, or the path of a saved model (``.keras``);
            a path is loaded with ``safe_mode=True`` and its sha256 recorded.
        layer: the layer's name inside a model (optional when there is one conv layer).
        name: the kernel name to register under.
        registry: a :class:`registry.Registry` (default: the default registry).
        description, tags, license, author, references: as for ``Registry.add``.

    Returns:
        The stored kernel: ``origin=learned``, framework, version, model, layer, source
        layout and checkpoint hash recorded; the bias kept alongside when the layer has one.
    """
    checkpoint = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidKernelError(f"No such model file: {path}.")
        checkpoint = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            source = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a bad file
            raise InvalidKernelError(f"{path} is not a loadable Keras model ({type(exc).__name__}: {exc}).") from None
    model, target = _find_layer(source, layer)
    if isinstance(target, keras.layers.DepthwiseConv2D):
        layout = "HWIM"
    elif isinstance(target, keras.layers.Conv2D) and type(target) is keras.layers.Conv2D:
        layout = "HWIO"
        if getattr(target, "groups", 1) != 1:
            raise InvalidKernelError(f"Layer {target.name!r} is a grouped convolution, which kreg does not store.")
    else:
        raise InvalidKernelError(
            f"Layer {target.name!r} is a {type(target).__name__}; kreg takes Conv2D and DepthwiseConv2D kernels."
        )
    values = np.array(target.kernel.numpy())
    bias = np.array(target.bias.numpy()).ravel().tolist() if getattr(target, "use_bias", False) else None
    if registry is None:
        from ._api import default_registry

        registry = default_registry()
    source_info = {"framework": "keras", "framework_version": keras.__version__,
                   "model": model.name if model is not None else None, "layer": target.name,
                   "checkpoint_sha256": checkpoint}
    return registry.add(
        name, values, layout=layout, description=description, tags=tags, license=license, author=author,
        references=references, origin="learned", bias=bias,
        provenance={"source": {k: v for k, v in source_info.items() if v is not None}, "source_layout": layout},
    )


def _find_layer(source: Any, layer: str | None) -> tuple[Any, Any]:
    if not isinstance(source, keras.Model):
        if layer is not None:
            raise InvalidKernelError("layer= names a layer inside a model; pass the model, or the layer alone.")
        return None, source
    convs = [l for l in _walk_layers(source) if isinstance(l, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    if layer is not None:
        for candidate in _walk_layers(source):
            if candidate.name == layer:
                return source, candidate
        raise InvalidKernelError(
            f"Model {source.name!r} has no layer {layer!r}. Convolution layers: {', '.join(l.name for l in convs) or 'none'}."
        )
    if len(convs) != 1:
        raise InvalidKernelError(
            f"Model {source.name!r} has {len(convs)} convolution layers; name one with layer=... "
            f"({', '.join(l.name for l in convs)})."
        )
    return source, convs[0]


def _walk_layers(model: Any) -> list[Any]:
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_walk_layers(layer))
    return found
