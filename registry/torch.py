"""PyTorch adapter: exact ``nn.Module`` layers and weight tensors from kernels, kernels from trained layers.

Importing this module imports torch; ``import registry`` never does. The layers take NCHW
batches and give what the Keras layer from :mod:`registry.keras` gives on the same NHWC
batch, border modes included (PyTorch has no symmetric padding; :class:`BorderPad2d` does
every mode by indexing). What a layer computes is decided by :func:`registry.adapters.plan.plan`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ._exceptions import InvalidKernelError
from ._lazy import require
from .adapters import learned
from .adapters import plan as planning
from .adapters.borders import BORDERS, parse_border
from .adapters.plan import Plan
from .kernels.kernel import Kernel
from .torch_fft import FFTConv2d, border_pad, check_images, plane_taps

torch = require("torch", feature="The PyTorch adapter (registry.torch)")
nn, F = torch.nn, torch.nn.functional

__all__ = [
    "BORDERS",
    "BorderPad2d",
    "FFTConv2d",
    "KregConv2d",
    "PlaneConv2d",
    "SamePad2d",
    "from_layer",
    "parse_border",
    "save_file",
    "to_layer",
    "to_tensor",
]

_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def _dtype(dtype: str | None, plan: Plan) -> Any:
    name = dtype or plan.weight.dtype.name
    if name not in _DTYPES:
        raise InvalidKernelError(f"dtype must be one of {', '.join(_DTYPES)}. Received: dtype={dtype!r}.")
    return _DTYPES[name]


class BorderPad2d(nn.Module):
    """Pads height and width of an NCHW batch with one of kreg's border modes (``symmetric`` too)."""

    def __init__(
        self,
        padding: tuple[tuple[int, int], tuple[int, int]],
        mode: str = "reflect101",
        value: float = 0.0,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in BORDERS:
            raise InvalidKernelError(f"mode must be one of {', '.join(BORDERS)}. Received: mode={mode!r}.")
        (top, bottom), (left, right) = padding
        self.padding = ((int(top), int(bottom)), (int(left), int(right)))
        self.mode, self.value = mode, float(value) if mode == "constant" else 0.0
        self.channels: Optional[int] = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images("BorderPad2d", x, self.channels)
        return border_pad(x, self.padding, self.mode, self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, mode={self.mode!r}" + (
            f", value={self.value}" if self.mode == "constant" else ""
        )


class SamePad2d(nn.Module):
    """TensorFlow's ``same`` zero padding for any stride.

    PyTorch's ``padding='same'`` takes stride 1 only, and copies the input for even sizes.
    """

    def __init__(self, kernel_size: tuple[int, int], strides: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.strides = (int(strides[0]), int(strides[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for axis in (3, 2):  # F.pad lists the last axis first
            n, k, s = x.shape[axis], self.kernel_size[axis - 2], self.strides[axis - 2]
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)


class KregConv2d(nn.Conv2d):
    """``nn.Conv2d`` that casts its input to its own dtype (as the Keras and JAX layers do) and
    names a wrong channel count in kreg's words."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images("KregConv2d", x, self.in_channels)
        return self._conv_forward(x.to(self.weight.dtype), self.weight, self.bias)


class PlaneConv2d(nn.Module):
    """One ``HW`` plane applied to every channel of any NCHW input.

    Scripted, traced or exported, the channels are folded into the batch and filtered by one
    single-channel convolution, so the weight keeps its ``(1, 1, H, W)`` shape whatever the
    input (an exported model takes any batch and channel count) and no per-channel copy of it is
    made. Eagerly it computes the same numbers faster: large planes with a small kernel as the
    sum over its taps, the rest as one depthwise convolution of every plane (the fold is
    several times slower on CPU; see :data:`registry.adapters.methods.EAGER_PLANE_TAPS`).
    """

    def __init__(
        self,
        weight: Any,
        bias: Any | None,
        *,
        stride: tuple[int, int],
        padding: Any,
        dilation: tuple[int, int],
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.stride = (int(stride[0]), int(stride[1]))
        self.dilation = (int(dilation[0]), int(dilation[1]))
        self.same = padding == "same"
        self.padding = (0, 0) if self.same else (int(padding), int(padding))
        self.formulation: Optional[str] = None  # "taps" or "depthwise" forces an eager path (the probe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images("PlaneConv2d", x, None)
        x = x.to(self.weight.dtype)
        if torch.jit.is_scripting():
            return self._folded(x)
        return self._eager(x)

    def _folded(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        planes = x.reshape(n * c, 1, h, w)
        if self.same:
            y = F.conv2d(planes, self.weight, self.bias, self.stride, "same", self.dilation)
        else:
            y = F.conv2d(planes, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return y.reshape(n, c, y.shape[2], y.shape[3])

    @torch.jit.unused
    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
            return self._folded(x)  # traced, exported or compiled: a graph that takes any batch
        n, c, h, w = x.shape
        kh, kw = self.weight.shape[2], self.weight.shape[3]
        span = ((kh - 1) * self.dilation[0] + 1, (kw - 1) * self.dilation[1] + 1)
        if not self.same and (h + 2 * self.padding[0] < span[0] or w + 2 * self.padding[1] < span[1]):
            raise InvalidKernelError(
                f"PlaneConv2d needs images at least as large as its kernel's span {span[0]}x{span[1]}: with "
                "padding='valid' a smaller one has no output pixel; emit the layer with a border=... or "
                f"padding='same'. Received: images of shape {tuple(x.shape)}."
            )
        if (self.formulation or planning.plane_formulation("torch", kh * kw, h * w)) == "depthwise":
            weight = self.weight.expand(n * c, 1, kh, kw)
            padding: Any = "same" if self.same else self.padding
            y = F.conv2d(x.reshape(1, n * c, h, w), weight, None, self.stride, padding, self.dilation, n * c)
            y = y.reshape(n, c, y.shape[2], y.shape[3])
        else:
            y = plane_taps(x, self.weight, self.stride, self.dilation, self.same, self.padding)
        return y if self.bias is None else y + self.bias


def _conv(
    kind: str,
    weight: np.ndarray,
    bias: np.ndarray | None,
    *,
    groups: int,
    padding: Any,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    dtype: Any,
) -> nn.Module:
    """A module for one convolution; ``weight`` is OIHW (``groups`` as PyTorch means it)."""
    w = torch.tensor(weight, dtype=dtype)
    b = torch.tensor(bias, dtype=dtype) if bias is not None else None
    if kind == "plane":
        return PlaneConv2d(w, b, stride=stride, padding=padding, dilation=dilation)
    out, per_group, h, width = weight.shape
    conv = KregConv2d(
        per_group * groups,
        out,
        (h, width),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=b is not None,
        dtype=dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(w)
        if b is not None:
            conv.bias.copy_(b)
    return conv


def _build(p: Plan, dtype: Any) -> nn.Module:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if p.border is not None:
        layers["border"] = BorderPad2d(p.pads, *p.border, channels=p.in_channels)  # type: ignore[arg-type]
    padding: Any = 0
    if p.method == "fft":  # pads 'same' itself (stride 1: the plan refuses fft with 'same' and strides)
        oihw = torch.tensor(p.dense_weight().transpose(2, 3, 0, 1).copy(), dtype=dtype)
        bias = torch.tensor(p.bias, dtype=dtype) if p.bias is not None else None
        same = p.border is None and p.padding == "same"
        layers["conv"] = FFTConv2d(
            oihw, bias, kind=p.kind, stride=p.strides, same=same, channels=p.in_channels
        )
    elif p.border is None and p.padding == "same":
        size = tuple((s - 1) * d + 1 for s, d in zip(p.weight.shape[:2], p.dilation))
        if p.strides == (1, 1) and all(n % 2 for n in size):  # torch's own 'same' copies the input otherwise
            padding = "same"
        else:
            layers["same"] = SamePad2d(size, p.strides)  # type: ignore[arg-type]
    if p.factors is not None:
        first, second, kind = p.separable_weights()
        (sy, sx), (dy, dx) = p.strides, p.dilation
        for key, weight, bias, stride, dilation in (
            ("col", first, None, (sy, 1), (dy, 1)),
            ("row", second, p.bias, (1, sx), (1, dx)),
        ):
            oihw, groups = planning.to_oihw(kind, weight)
            layers[key] = _conv(
                kind,
                oihw,
                bias,
                groups=groups,
                padding=padding,
                stride=stride,
                dilation=dilation,
                dtype=dtype,
            )
    elif p.method != "fft":
        oihw, groups = planning.to_oihw(p.kind, p.weight)
        layers["conv"] = _conv(
            p.kind,
            oihw,
            p.bias,
            groups=groups,
            padding=padding,
            stride=p.strides,
            dilation=p.dilation,
            dtype=dtype,
        )
    if len(layers) == 1:
        return next(iter(layers.values()))
    return nn.Sequential(layers)


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
    trainable: bool = False,
    use_bias: bool | None = None,
    separable: bool = False,
    method: str = "auto",
    name: str | None = None,
    probe: bool | None = None,
) -> Any:
    """A ready ``nn.Module`` holding exactly the registered weights, checked on the probe.

    The options are those of :func:`registry.keras.to_layer` (``data_format`` aside: PyTorch
    is NCHW); its output on an NCHW batch equals the Keras layer's on the same NHWC batch.
    ``method="fft"`` (which ``auto`` picks for large kernels) gives an :class:`FFTConv2d`,
    which scripts but does not export to ONNX (it raises; emit with ``method="direct"``).

    Returns:
        An ``nn.Conv2d`` (``groups`` = channels for depthwise), a :class:`PlaneConv2d` for an
        ``HW`` plane over any channels, or an ``nn.Sequential`` with the padding first. Its
        ``kreg_name`` attribute holds the layer name, ``kreg_ref`` the kernel's ref.

    Example:
        >>> import registry, registry.torch as rt                                    # doctest: +SKIP
        >>> rt.to_layer(registry.load("sobel_x"), border="symmetric")(x_nchw)         # doctest: +SKIP
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
    p = planning.plan(kernel, separable=separable, method=method, framework="torch", name=name,
                      **options)  # type: ignore[arg-type]
    module = _build(p, _dtype(dtype, p))
    module.requires_grad_(trainable)
    module.kreg_name, module.kreg_ref = p.name, kernel.ref
    if planning.probe_enabled(probe):
        check_module(kernel, module, options)
    return module


def check_module(
    kernel: Kernel, module: nn.Module, options: Mapping[str, Any], *, channels: int | None = None
) -> None:
    """The probe check of an emitted (or hand-made) module; raises ``ProbeMismatchError``."""
    p = planning.plan(kernel, name="probe", **options)
    x = planning.probe_input(p, channels)
    param = next(module.parameters())
    planes = [m for m in module.modules() if isinstance(m, PlaneConv2d)]
    # A plane computes by its taps only on large images, which the probe is not: each eager path in turn.
    for formulation in ("depthwise", "taps") if planes else (None,):
        for plane in planes:
            plane.formulation = formulation
        try:
            with torch.no_grad():
                got = module(torch.tensor(x.transpose(0, 3, 1, 2), dtype=param.dtype, device=param.device))
        finally:
            for plane in planes:
                plane.formulation = None
        planning.check_probe(
            kernel,
            got.double().cpu().numpy(),
            x,
            options,
            what=f"the torch module for {kernel.ref}" + (f" (planes by {formulation})" if formulation else ""),
            channels_first=True,
            itemsize=got.element_size(),
        )


def to_tensor(
    kernel: Kernel,
    *,
    in_channels: int | None = None,
    mode: str | None = None,
    dtype: str = "float32",
    probe: bool | None = None,
) -> Any:
    """The ``OIHW`` weight for ``F.conv2d`` (a fresh, writable tensor).

    Use ``groups=1`` for a full kernel or a plane in ``sum``/``mean`` mode, and
    ``groups=in_channels`` for an ``HWIM`` kernel or a plane in ``depthwise`` mode with
    ``in_channels``; a plane alone is ``(1, 1, H, W)``.

    Example:
        >>> import registry, registry.torch as rt                                       # doctest: +SKIP
        >>> rt.to_tensor(registry.load("sobel_x"), in_channels=3).shape                  # doctest: +SKIP
        torch.Size([3, 1, 3, 3])
    """
    options = dict(in_channels=in_channels, mode=mode)
    p = planning.plan(kernel, name="tensor", **options)  # type: ignore[arg-type]
    oihw, groups = planning.to_oihw(p.kind, p.weight)
    weight = torch.tensor(oihw, dtype=_dtype(dtype, p))
    if planning.probe_enabled(probe):
        x = planning.probe_input(p)
        xt = torch.tensor(x.transpose(0, 3, 1, 2), dtype=weight.dtype)
        c = x.shape[3]
        w = weight.expand(c, 1, *weight.shape[2:]) if p.kind == "plane" else weight
        with torch.no_grad():
            got = F.conv2d(xt, w, groups=c if p.kind == "plane" else groups)
        planning.check_probe(
            kernel,
            got.double().numpy(),
            x,
            {**options, "use_bias": False},
            what=f"the torch weight for {kernel.ref}",
            channels_first=True,
            itemsize=got.element_size(),
        )
    return weight


def save_file(kernel: Kernel, path: str | Path) -> None:
    """Write one kernel as PyTorch's ``weight`` (``OIHW``) and ``bias``, the record as metadata.

    ``nn.Conv2d(..., groups=int(metadata["kreg.groups"])).load_state_dict(safetensors.torch.load_file(path))``
    takes it as it is; ``from_layer(path, "weight")`` and ``kreg add --tensor weight`` read it back.
    Needs only safetensors and NumPy (this module imports torch, the writer does not).
    """
    from .adapters.files import write_safetensors

    write_safetensors(kernel, Path(path))


# -- from trained layers and checkpoints ----------------------------------------------------


def from_layer(source: Any, layer: str | None = None, *, groups: int | None = None) -> Kernel:
    """A trained ``nn.Conv2d`` kernel (and bias) as a :class:`Kernel` (not stored: add it yourself).

    Args:
        source: an ``nn.Module`` (a ``Conv2d``, or a model holding one), a ``state_dict``,
            or the path of a ``.safetensors`` checkpoint (its sha256 is recorded).
        layer: the submodule name (``features.0``) or weight key (``conv1.weight``); optional
            when ``source`` is a ``Conv2d`` or holds exactly one.
        groups: the layer's ``groups`` for a ``state_dict`` or checkpoint (a module knows it).

    Returns:
        A version-0 kernel: ``HWIO`` (grouped convolutions expanded), or ``HWIM`` for a
        depthwise layer; source layout ``OIHW``, framework and layer recorded.

    Example:
        >>> k = registry.torch.from_layer(model, "conv1")                 # doctest: +SKIP
        >>> registry.add("team/conv1", k)                                 # doctest: +SKIP
    """
    info: dict[str, Any] = {"framework": "pytorch", "framework_version": torch.__version__.split("+")[0]}
    if isinstance(source, (str, Path)):
        from .adapters.files import read_checkpoint

        if layer is None:
            raise InvalidKernelError(
                "A checkpoint holds many tensors: name the weight with layer='conv1.weight'."
            )
        tensors, sha256, metadata = read_checkpoint(Path(source), layer)
        info["checkpoint_sha256"] = sha256
        return learned.from_checkpoint(tensors, layer, metadata, groups=groups, source=info)
    if isinstance(source, nn.Module):
        target, where = _find_conv(source, layer)
        info["model"] = type(source).__name__
        tensors = {f"{where}.weight": target.weight.detach().cpu().numpy()}
        if target.bias is not None:
            tensors[f"{where}.bias"] = target.bias.detach().cpu().numpy()
        return learned.from_tensors(tensors, f"{where}.weight", groups=target.groups, source=info)
    if isinstance(source, Mapping):
        if layer is None:
            raise InvalidKernelError(
                "A state_dict holds many tensors: name the weight with layer='conv1.weight'."
            )
        base = layer.removesuffix(".weight")
        wanted = {layer, f"{base}.weight", f"{base}.bias"}
        # Only the weight and its bias are converted; the other keys are named in a not-found error.
        arrays = {
            k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
            if k in wanted
            else None
            for k, v in source.items()
        }
        return learned.from_tensors(arrays, layer, groups=groups or 1, source=info)
    raise InvalidKernelError(
        f"from_layer takes an nn.Module, a state_dict or a .safetensors path. "
        f"Received: {type(source).__name__}."
    )


def _find_conv(model: nn.Module, layer: str | None) -> tuple[nn.Module, str]:
    if isinstance(model, nn.Conv2d) and layer is None:
        return model, "conv"
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if layer is not None:
        key = layer.removesuffix(".weight")
        if key in convs:
            return convs[key], key
        raise InvalidKernelError(
            f"{type(model).__name__} has no Conv2d {key!r}. Conv2d layers: {', '.join(convs) or 'none'}."
        )
    if len(convs) != 1:
        raise InvalidKernelError(
            f"{type(model).__name__} has {len(convs)} Conv2d layers; name one with layer=... "
            f"({', '.join(convs)})."
        )
    return next(iter(convs.items()))[::-1]  # type: ignore[return-value]
from .adapters.torch_dynamic import KernelConv2d, kernel_conv  # noqa: F401  kernels as inputs
