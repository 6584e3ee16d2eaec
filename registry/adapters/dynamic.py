"""Kernels as model inputs, planned once: what ``kernel_conv`` computes on ``[images, kernels]``.

Three forms, told apart by the rank of the kernels tensor:

=========  ===========================  ==================================================
form       kernels                      what each output pixel is
=========  ===========================  ==================================================
plane      ``(B, kh, kw)``              its sample's plane on every channel (kornia's
                                        ``filter2d``)
full       ``(B, kh, kw, in, out)``     its sample's HWIO kernel
pixel      ``(B, H', W', kh*kw)``       its own kernel (kernel prediction networks), one
                                        per *output* pixel, optionally normalised
=========  ===========================  ==================================================

(In PyTorch, images are NCHW and per-pixel kernels ``(B, kh*kw, H', W')``.) The options are
those of the static layers: ``padding``, ``border`` (OpenCV's anchor, see
:mod:`registry.adapters.borders`), ``strides``, ``dilation_rate``, plus ``operation``
(``correlation``, as every kreg layer and ``scipy.ndimage.correlate``, or ``convolution``: the
kernels flipped on both axes first), ``normalize`` (``softmax`` or ``sum`` over each kernel's
taps, planes and per-pixel kernels) and ``method``: how planes and full kernels are computed,
``direct`` (the batch folded into the groups of one convolution, the framework's own kernel) or
``taps`` (a sum over the taps of shifted images times their weights: slices, products and
sums only, so ONNX, TFLite and XLA take it whatever the batch; per-pixel kernels are always
this), chosen by :func:`formulation` for ``auto``. Every framework module asks :func:`dynamic_plan` what to
build, :func:`check_inputs` what it was given, and checks what it built with :func:`check_probe`
against :func:`reference`, a NumPy loop over the taps in float64 that never looks at the layer.
This module imports no framework.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._exceptions import InvalidKernelError, ProbeMismatchError
from .borders import NUMPY_PAD, border_pads, parse_border, same_pads
from .plan import pair, tolerance

#: How ``kernel_input("sobel_x")`` loads a ref: set to ``registry.load`` by the package's top level
#: (``registry._batch``), since the adapters never import the store themselves.
LOADERS: list[Callable[[str], Any]] = []

#: The three forms, by the rank of the kernels tensor.
RANKS = {3: "plane", 5: "full", 4: "pixel"}
LAYOUTS = {"plane": "(B, kh, kw)", "full": "(B, kh, kw, in, out)", "pixel": "(B, H, W, kh*kw)"}
NORMALIZE = ("softmax", "sum")
OPERATIONS = ("correlation", "convolution")
METHODS = ("auto", "direct", "taps")

#: Up to this many taps, ``auto`` sums over the taps where the compiler fuses the sum into one
#: loop (XLA on CPU): ``benchmarks/bench_dynamic.py`` measured 7x7 planes on 16 x 128 x 128 x 3
#: at 2.7 ms summed against 45.6 ms for XLA's grouped convolution, 15x15 at 23 ms against 110 ms,
#: but 31x31 at 156 ms against 128 ms (and 3 s to compile).
FUSED_TAPS_MAX = 225


@dataclass(frozen=True)
class DynamicPlan:
    """What a ``kernel_conv`` layer computes, before it has seen its inputs.

    Attributes:
        form: ``plane``, ``full``, ``pixel``, or ``None`` (read from the kernels' rank).
        kernel_size: ``(kh, kw)`` if declared (required to split a non-square per-pixel tap count).
        padding: ``valid`` or ``same`` (Keras' anchor); ``valid`` when a border is given.
        border: ``(mode, value)`` or ``None``.
        strides, dilation: pairs.
        normalize: ``softmax``, ``sum`` or ``None``.
        flip: ``True`` for ``operation="convolution"``.
        method: ``auto``, ``direct`` or ``taps`` (planes and full kernels; see :func:`formulation`).
    """

    form: str | None
    kernel_size: tuple[int, int] | None
    padding: str
    border: tuple[str, float] | None
    strides: tuple[int, int]
    dilation: tuple[int, int]
    normalize: str | None
    flip: bool
    method: str = "auto"

    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this plan (a layer's config)."""
        border = (
            None
            if self.border is None
            else f"constant({self.border[1]!r})"
            if self.border[0] == "constant"
            else self.border[0]
        )
        return {
            "form": self.form,
            "kernel_size": self.kernel_size,
            "padding": self.padding,
            "border": border,
            "strides": self.strides,
            "dilation_rate": self.dilation,
            "normalize": self.normalize,
            "operation": "convolution" if self.flip else "correlation",
            "method": self.method,
        }

    def pads(self, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """The border a kernel of ``size`` needs (OpenCV's anchor), or ``None`` without a border."""
        return None if self.border is None else border_pads(size, self.dilation)

    def span(self, size: tuple[int, int]) -> tuple[int, int]:
        return (size[0] - 1) * self.dilation[0] + 1, (size[1] - 1) * self.dilation[1] + 1

    def out_size(self, hw: Sequence[int | None], size: tuple[int, int]) -> tuple[int | None, int | None]:
        """Output height and width for an input of ``hw`` (``None`` where unknown)."""
        out: list[int | None] = []
        for n, k, s in zip(hw, self.span(size), self.strides):
            if n is None:
                out.append(None)
            elif self.border is not None:
                out.append((n - 1) // s + 1)
            elif self.padding == "same":
                out.append(-(-n // s))
            else:
                out.append(max((n - k) // s + 1, 0))
        return out[0], out[1]


def dynamic_plan(
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
) -> DynamicPlan:
    """Check the options of ``kernel_conv`` and decide what it computes.

    Raises:
        InvalidKernelError: an option out of range, named with what would do.

    Example:
        >>> dynamic_plan(border="wrap", strides=2).pads((3, 3))
        ((1, 1), (1, 1))
    """
    if form is not None and form not in LAYOUTS:
        raise InvalidKernelError(
            f"form must be plane, full or pixel (or None: read from the kernels' rank). Received: form={form!r}."
        )
    if padding not in ("valid", "same"):
        raise InvalidKernelError(f"padding must be 'valid' or 'same'. Received: padding={padding!r}.")
    if border is not None and padding != "valid":
        raise InvalidKernelError("Give padding='same' or a border, not both: a border keeps the size itself.")
    if normalize not in (None, *NORMALIZE):
        raise InvalidKernelError(
            f"normalize must be 'softmax', 'sum' or None. Received: normalize={normalize!r}."
        )
    if normalize is not None and form == "full":
        raise InvalidKernelError(
            "normalize applies to planes and per-pixel kernels, not to full (B, kh, kw, in, out) kernels."
        )
    if operation not in OPERATIONS:
        raise InvalidKernelError(
            f"operation must be 'correlation' or 'convolution'. Received: operation={operation!r}."
        )
    if method not in METHODS:
        raise InvalidKernelError(
            f"method must be 'auto', 'direct' (one convolution) or 'taps' (a sum over the taps, which ONNX and "
            f"TFLite take). Received: method={method!r}."
        )
    return DynamicPlan(
        method=method,
        form=form,
        kernel_size=None if kernel_size is None else pair(kernel_size, "kernel_size"),
        padding=padding,
        border=None if border is None else parse_border(border),
        strides=pair(strides, "strides"),
        dilation=pair(dilation_rate, "dilation_rate"),
        normalize=normalize,
        flip=operation == "convolution",
    )


def formulation(
    p: DynamicPlan, form: str, size: tuple[int, int], *, fuses_taps: bool = False, exporting: bool = False
) -> str:
    """``direct`` or ``taps``: how a layer computes ``form`` kernels of ``size``.

    Per-pixel kernels are always a sum over the taps. Otherwise ``method`` decides, and for
    ``auto``: the taps while a model is exported (ONNX's ``Conv`` and TFLite's depthwise kernel
    need their group count when converted, and here it is the batch), or where the framework
    fuses the sum (``fuses_taps``) for up to :data:`FUSED_TAPS_MAX` taps; else one convolution.

    Example:
        >>> formulation(dynamic_plan(), "plane", (7, 7)), formulation(dynamic_plan(), "plane", (7, 7), exporting=True)
        ('direct', 'taps')
    """
    if form == "pixel":
        return "taps"
    if p.method != "auto":
        return p.method
    if exporting or (fuses_taps and size[0] * size[1] <= FUSED_TAPS_MAX):
        return "taps"
    return "direct"


def windows(p: DynamicPlan, size: tuple[int, int]) -> list[tuple[int, int, int, slice, slice]]:
    """``(tap, i, j, rows, cols)`` for each tap: the slices of an image already padded (valid
    convolution) that its weight multiplies, strided, their ends counted from the far edge so
    they hold whatever the image size (a model traced with one size serves any).

    Example:
        >>> windows(dynamic_plan(), (1, 2))
        [(0, 0, 0, slice(0, None, 1), slice(0, -1, 1)), (1, 0, 1, slice(0, None, 1), slice(1, None, 1))]
    """
    return tap_windows(size, p.strides, p.dilation)


def tap_windows(
    size: tuple[int, int], strides: tuple[int, int], dilation: tuple[int, int]
) -> list[tuple[int, int, int, slice, slice]]:
    """:func:`windows` of a ``size`` kernel with these strides and dilation (static layers too)."""
    (kh, kw), (sh, sw), (dh, dw) = size, strides, dilation
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    return [
        (
            i * kw + j,
            i,
            j,
            slice(i * dh, (i * dh - (span[0] - 1)) or None, sh),
            slice(j * dw, (j * dw - (span[1] - 1)) or None, sw),
        )
        for i in range(kh)
        for j in range(kw)
    ]


def _dims(shape: Any) -> tuple[int | None, ...]:
    # Anything but a plain integer (None, a symbolic size while a model is traced or exported)
    # is unknown here and left unchecked: reading it as an int would pin the traced size.
    return tuple(int(d) if isinstance(d, (int, np.integer)) else None for d in shape)


def check_inputs(
    p: DynamicPlan,
    images: Sequence[int | None],
    kernels: Sequence[int | None],
    kernels_dtype: Any = "float32",
    *,
    channels_first: bool = False,
    what: str = "kernel_conv",
) -> tuple[str, tuple[int, int]]:
    """``(form, (kh, kw))`` for these input shapes, or kreg's error naming what was received and expected.

    Shapes may hold ``None`` (unknown until run time); what is unknown is not checked.

    Example:
        >>> check_inputs(dynamic_plan(), (2, 32, 32, 3), (2, 5, 5))
        ('plane', (5, 5))
    """
    images, kernels = _dims(images), _dims(kernels)
    image_layout = "(B, C, H, W)" if channels_first else "(B, H, W, C)"
    if len(images) != 4:
        raise InvalidKernelError(f"{what} takes images {image_layout}. Received: images of shape {images}.")
    form = p.form or RANKS.get(len(kernels))
    expected = LAYOUTS[form] if form else " or ".join(LAYOUTS.values())
    if channels_first and form == "pixel":
        expected = "(B, kh*kw, H, W)"
    if form is None or len(kernels) != len(expected.split(",")):
        raise InvalidKernelError(
            f"{what} takes kernels {expected}. Received: kernels of shape {kernels} (rank {len(kernels)})."
        )
    dtype = str(getattr(kernels_dtype, "name", None) or kernels_dtype).replace("torch.", "")
    if not dtype.startswith(("float", "bfloat")):
        raise InvalidKernelError(
            f"{what} takes floating-point kernels. Received: kernels of dtype {dtype}. Cast them, e.g. to float32."
        )
    if form == "full" and p.normalize is not None:
        raise InvalidKernelError(
            f"normalize applies to planes and per-pixel kernels. Received: full kernels {kernels} with "
            f"normalize={p.normalize!r}."
        )
    batch = images[0], kernels[0]
    if None not in batch and batch[0] != batch[1]:
        raise InvalidKernelError(
            f"{what} needs one kernel per image: expected kernels of shape ({batch[0]}, ...). "
            f"Received: kernels batch {batch[1]}, images batch {batch[0]}."
        )
    channels = images[1] if channels_first else images[3]
    hw = images[2:] if channels_first else images[1:3]
    if form == "pixel":
        taps = kernels[1] if channels_first else kernels[3]
        size = p.kernel_size or _square(taps, kernels, what)
        if taps is not None and taps != size[0] * size[1]:
            raise InvalidKernelError(
                f"{what} was declared with kernel_size={size}: {size[0] * size[1]} taps per pixel. "
                f"Received: kernels of shape {kernels} ({taps} taps)."
            )
        _check_fits(p, hw, size, images, what)
        want = p.out_size(hw, size)
        got = kernels[2:] if channels_first else kernels[1:3]
        for g, w in zip(got, want):
            if None not in (g, w) and g != w:
                raise InvalidKernelError(
                    f"{what} needs one kernel per output pixel: expected a {want[0]}x{want[1]} map for images "
                    f"{images}. Received: kernels of shape {kernels}."
                )
        return form, size
    size = (kernels[1], kernels[2])
    if p.kernel_size is not None and None not in size and size != p.kernel_size:
        raise InvalidKernelError(
            f"{what} was declared with kernel_size={p.kernel_size}. Received: kernels of shape {kernels}."
        )
    if None in size:
        if p.kernel_size is None:
            raise InvalidKernelError(
                f"{what} needs the kernel size: declare kernel_size=... Received: kernels of shape {kernels}."
            )
        size = p.kernel_size
    if form == "full" and None not in (channels, kernels[3]) and channels != kernels[3]:
        raise InvalidKernelError(
            f"{what}: full kernels {kernels} take {kernels[3]} input channels. Received: images with {channels} "
            f"channels {images}."
        )
    size = (int(size[0]), int(size[1]))
    _check_fits(p, hw, size, images, what)
    return form, size


def _check_fits(
    p: DynamicPlan, hw: Sequence[int | None], size: tuple[int, int], images: tuple[int | None, ...], what: str
) -> None:
    """Without a border or ``same`` padding, an image smaller than the kernel's span has no output pixel."""
    if p.border is not None or p.padding == "same":
        return
    span = p.span(size)
    if any(n is not None and n < k for n, k in zip(hw, span)):
        raise InvalidKernelError(
            f"{what} needs images at least as large as the kernels' span {span[0]}x{span[1]} (kernel {size[0]}x"
            f"{size[1]}, dilation {p.dilation[0]}x{p.dilation[1]}): with padding='valid' a smaller one has no output "
            f"pixel; give a border=... or padding='same'. Received: images of shape {images}."
        )


def _square(taps: int | None, kernels: tuple[int | None, ...], what: str) -> tuple[int, int]:
    root = math.isqrt(taps) if taps else 0
    if not taps or root * root != taps:
        raise InvalidKernelError(
            f"{what} cannot split {taps} taps per pixel into a square kernel: declare kernel_size=(kh, kw). "
            f"Received: kernels of shape {kernels}."
        )
    return root, root


# -- the NumPy side: normalising, the reference, the probe ----------------------------------


def prepare(p: DynamicPlan, form: str, k: np.ndarray, taps_axis: int = -1) -> np.ndarray:
    """``k`` normalised and flipped as the plan says (float64), in the form's own layout (NHWC side)."""
    k = np.asarray(k, np.float64)
    if p.normalize is not None:
        axes = (1, 2) if form == "plane" else (taps_axis,)
        if p.normalize == "softmax":
            k = np.exp(k - k.max(axis=axes, keepdims=True))
        k = k / k.sum(axis=axes, keepdims=True)
    if p.flip:
        if form == "pixel":
            k = k[..., ::-1]  # row-major taps: reversing them flips both axes
        else:
            k = k[:, ::-1, ::-1]
    return k


def reference(p: DynamicPlan, x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """What the layer must output on NHWC images ``x`` and kernels ``k`` (NHWC-side layouts), float64.

    A loop over the kernel taps, each adding a shifted (and strided) image times its weight.

    Example:
        >>> x = np.arange(5.0).reshape(1, 1, 5, 1)
        >>> reference(dynamic_plan(), x, np.array([[[1.0, 0.0, -1.0]]]))[0, 0, :, 0].tolist()
        [-2.0, -2.0, -2.0]
    """
    x = np.asarray(x, np.float64)
    form, size = check_inputs(p, x.shape, k.shape, np.asarray(k).dtype, what="reference")
    k = prepare(p, form, k)
    (kh, kw), (sh, sw), (dh, dw) = size, p.strides, p.dilation
    span = p.span(size)
    if p.border is not None:
        how, fill = p.border
        widths = ((0, 0), *border_pads(size, p.dilation), (0, 0))
        x = np.pad(x, widths, NUMPY_PAD[how], **({"constant_values": fill} if how == "constant" else {}))
    elif p.padding == "same":
        x = np.pad(
            x, ((0, 0), same_pads(x.shape[1], span[0], sh), same_pads(x.shape[2], span[1], sw), (0, 0))
        )
    ho, wo = (x.shape[1] - span[0]) // sh + 1, (x.shape[2] - span[1]) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            xs = x[:, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
            if form == "plane":
                term = xs * k[:, i, j][:, None, None, None]
            elif form == "full":
                term = np.einsum("bhwc,bco->bhwo", xs, k[:, i, j])
            else:
                term = xs * k[:, :, :, i * kw + j][..., None]
            out = term if out is None else out + term
    assert out is not None
    return out


def probe_inputs(
    p: DynamicPlan, form: str, size: tuple[int, int], channels: int | None, outputs: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Two NHWC probe images (an impulse, a fixed random patch) and a different random kernel for each.

    Non-square, with distinct per-channel values, so that a transposition, a channel mix-up or
    a kernel applied to the wrong sample shows.
    """
    c = channels or 2
    span = p.span(size)
    h, w = (k + s + 2 for k, s in zip(span, p.strides))
    w += 1
    if h * w * c > 1 << 22:
        raise InvalidKernelError(
            f"The probe check with kernel_size={size}, dilation_rate={p.dilation} needs a {h}x{w}x{c} image, "
            f"more than kreg probes. Pass probe=False to build it unchecked."
        )
    rng = np.random.default_rng(20240611)
    x = rng.uniform(-1, 1, (2, h, w, c)).astype(np.float32)
    x[0] = 0
    x[0, h // 2, w // 2] = np.arange(1, c + 1)
    if form == "plane":
        k = rng.uniform(-1, 1, (2, *size))
    elif form == "full":
        k = rng.uniform(-1, 1, (2, *size, c, outputs or 3))
    else:
        ho, wo = p.out_size((h, w), size)
        k = rng.uniform(-1, 1, (2, ho, wo, size[0] * size[1]))
    return x, k.astype(np.float32)


def check_probe(
    p: DynamicPlan,
    run: Callable[[np.ndarray, np.ndarray], Any],
    form: str,
    size: tuple[int, int],
    channels: int | None,
    outputs: int | None = None,
    *,
    what: str,
    itemsize: int = 4,
) -> None:
    """Run ``run(x, k)`` (NHWC-side NumPy in, NHWC-side NumPy out) on the probe; raise unless it matches."""
    x, k = probe_inputs(replace(p, form=form, kernel_size=size), form, size, channels, outputs)
    expected = reference(replace(p, form=form, kernel_size=size), x, k)
    got = np.asarray(run(x, k), np.float64)
    scale = max(1.0, float(np.abs(expected).max()))
    if got.shape == expected.shape:
        error = float(np.abs(got - expected).max())
        if error <= tolerance(itemsize) * scale:
            return
        detail = f"max |difference| {error:.3g} (allowed {tolerance(itemsize) * scale:.3g})"
    else:
        detail = f"output shape {got.shape}, expected {expected.shape}"
    raise ProbeMismatchError(
        f"{what} does not compute a per-sample {form} correlation on kreg's probe (impulse, random patch, a "
        f"different kernel per sample): {detail}. Expected a NumPy loop over the taps with OpenCV's anchor; a "
        f"transposed, flipped, shifted or mis-batched kernel gives this. (probe=False skips the check.)"
    )


def load_ref(ref: str) -> Any:
    """The :class:`Kernel` for ``ref`` from the default registry (through the loader the top level set)."""
    if not LOADERS:
        raise InvalidKernelError(f"No registry to load {ref!r} from: pass registry.load({ref!r}) instead.")
    return LOADERS[-1](ref)
