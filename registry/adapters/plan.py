"""The framework-neutral adapter plan: what an emitted layer computes, decided once in NumPy.

Every framework module (:mod:`registry.keras`, :mod:`registry.tensorflow`,
:mod:`registry.torch`, :mod:`registry.jax`) asks :func:`plan` what to build and only
converts the answer; :func:`check_probe` then runs what it built on a small fixed probe and
compares it with :func:`reference`, a NumPy correlation of the *registered* values that
never looks at the plan. This module imports no framework. Border modes and the padding
they need are named once in :mod:`registry.adapters.borders`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._env import env_flag
from .._exceptions import InvalidKernelError, ProbeMismatchError
from ..kernels.kernel import Kernel
from .borders import NUMPY_PAD, border_pads, parse_border, same_pads
from .methods import METHODS, check_method, choose_method, fast_size, plane_formulation  # noqa: F401 - the adapters use them

#: What ``mode`` means for an ``HW`` plane over several channels.
MODES = ("depthwise", "sum", "mean")
#: Set ``KREG_PROBE=0`` to skip the probe check everywhere (``probe=False`` skips it per call).
PROBE_ENV = "KREG_PROBE"
#: Most values in one probe image: beyond it (a huge dilation) the check refuses rather than stall.
MAX_PROBE = 1 << 22
#: Most multiply-adds a padded probe asks of a framework (4 images x output pixels x taps per
#: pixel). A framework may unfold the windows it convolves into memory, so this bounds the
#: check's time and memory for a large kernel (see :func:`probe_input`).
MAX_PROBE_WORK = 1 << 24
_NAMES: dict[str, itertools.count] = {}


def pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    """``2`` -> ``(2, 2)``; checks both are positive integers."""
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in values):
        raise InvalidKernelError(
            f"{what} must be a positive int or a pair of them. Received: {what}={value!r}."
        )
    return int(values[0]), int(values[1])


def unique_name(kernel: Kernel, name: str | None) -> str:
    """The caller's name, else ``kreg_<name>_v<version>``, numbered from the second use on in a process."""
    if name:
        return name
    base = (
        "kreg_"
        + re.sub(r"[^A-Za-z0-9_]", "_", kernel.name)
        + (f"_v{kernel.version}" if kernel.version else "")
    )
    count = next(_NAMES.setdefault(base, itertools.count(1)))
    return base if count == 1 else f"{base}_{count}"


@dataclass(frozen=True)
class Plan:
    """What one emitted layer computes; each framework converts it to its own objects.

    Attributes:
        kind: ``conv`` (full convolution, ``weight`` is HWIO), ``depthwise`` (``weight`` is
            ``(H, W, C, M)``, output channel ``c * M + m``), or ``plane`` (an ``HW`` plane,
            ``weight`` ``(H, W, 1, 1)``, applied to every channel of any input).
        weight: the values in the dtype to emit (float32 unless the kernel is float64 / float16).
        bias: one value per output channel, or ``None``.
        in_channels: the channels the layer takes (``None`` for ``plane``: any).
        padding: ``valid`` or ``same`` (Keras' anchor); ``valid`` when a border is given.
        border: ``(mode, value)`` or ``None``.
        pads: ``((top, bottom), (left, right))`` for the border, OpenCV's anchor.
        strides, dilation: pairs.
        factors: ``(column, row)`` 1-D factors for separable emission, or ``None``.
        name: the layer name, unique in this process unless the caller chose it.
        method: ``direct``, ``separable`` (``factors`` set) or ``fft`` (see :func:`choose_method`).
        rank_one: ``(column, row)`` whose outer product is every ``HW`` plane of ``weight`` (the
            kernel's recorded factors, the mean's ``1 / C`` in the column), or ``None``: the FFT
            path transforms these (:meth:`fft_factors`).
    """

    ref: str
    kind: str
    weight: np.ndarray
    bias: np.ndarray | None
    in_channels: int | None
    padding: str
    border: tuple[str, float] | None
    pads: tuple[tuple[int, int], tuple[int, int]] | None
    strides: tuple[int, int]
    dilation: tuple[int, int]
    factors: tuple[np.ndarray, np.ndarray] | None
    name: str
    method: str = "direct"
    rank_one: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def groups(self) -> int:
        """PyTorch's ``groups``: 1 for a full convolution, the channel count for depthwise."""
        return 1 if self.kind == "conv" else self.weight.shape[2]

    @property
    def out_channels(self) -> int | None:
        if self.kind == "conv":
            return int(self.weight.shape[3])
        if self.kind == "depthwise":
            return int(self.weight.shape[2] * self.weight.shape[3])
        return None

    def separable_weights(self) -> tuple[np.ndarray, np.ndarray, str]:
        """The column and row passes as ``(column_weight, row_weight, kind)``, same kind as the plan.

        Depthwise: each channel filtered by both passes; sum/mean (``conv``): the column pass
        also adds the channels (the mean's ``1 / C`` is already in the column factor).
        """
        assert self.factors is not None
        column, row = self.factors
        channels = self.weight.shape[2]
        first = np.repeat(column[:, None, None, None], channels, axis=2)
        second = np.repeat(row[None, :, None, None], channels if self.kind != "conv" else 1, axis=2)
        return first, second, self.kind

    def fft_factors(self, dtype: Any = None) -> tuple[np.ndarray, np.ndarray] | None:
        """A rank-one weight as two factors whose product is :meth:`dense_weight`: ``(H, 1, I, O)``
        times ``(1, W, I, O)``, dilation written out as zeros; ``None`` for any other kernel, or
        factors off the weight by over a tenth of the probe's tolerance in ``dtype`` (float64's).
        The FFT path transforms these: a 2-D kernel's transform costs as much as the image's.

        Example:
            >>> k = Kernel({"name": "k", "version": 1, "layout": "HW",
            ...             "separable": {"column": [1, 2], "row": [3, 4]}}, np.array([[3, 4], [6, 8]], "f4"))
            >>> p = plan(k, in_channels=2, dilation_rate=2)
            >>> column, row = p.fft_factors()
            >>> column.shape, row.shape, bool((column * row == p.dense_weight()).all())
            ((3, 1, 2, 1), (1, 3, 2, 1), True)
        """
        if self.rank_one is None:
            return None
        dense = [np.zeros(((len(f) - 1) * d + 1, *self.weight.shape[2:]), self.weight.dtype)
                 for f, d in zip(self.rank_one, self.dilation)]
        for out, factor, step in zip(dense, self.rank_one, self.dilation):
            out[::step] = factor[:, None, None]
        column, row, weight = dense[0][:, None], dense[1][None], self.dense_weight()
        error = float(np.abs(column * row - weight).max(initial=0.0))  # float32's rounding, not float64's
        scale = max(1.0, float(np.abs(weight).max()))  # the tolerance of the dtype the layer computes in
        return (column, row) if error <= tolerance(np.dtype(dtype or weight.dtype)) / 10 * scale else None

    def dense_weight(self) -> np.ndarray:
        """The weight with its dilation written out as zeros: what the FFT path transforms."""
        (dh, dw), (h, w) = self.dilation, self.weight.shape[:2]
        dense = np.zeros(((h - 1) * dh + 1, (w - 1) * dw + 1, *self.weight.shape[2:]), self.weight.dtype)
        dense[::dh, ::dw] = self.weight
        return dense


def to_oihw(kind: str, weight: np.ndarray) -> tuple[np.ndarray, int]:
    """A plan's ``(H, W, C, O|M)`` weight as PyTorch's ``(OIHW, groups)``: a fresh, writable array.

    Example:
        >>> w, groups = to_oihw("depthwise", np.zeros((3, 3, 4, 2)))
        >>> w.shape, groups
        ((8, 1, 3, 3), 4)
    """
    h, w, c, m = weight.shape
    if kind == "conv":
        return np.ascontiguousarray(weight.transpose(3, 2, 0, 1)), 1
    return np.ascontiguousarray(weight.reshape(h, w, 1, c * m).transpose(3, 2, 0, 1)), (
        1 if kind == "plane" else c
    )


def require_kernel(kernel: Any, verb: str = "to_layer") -> Kernel:
    """``kernel`` if it is a :class:`Kernel`; else kreg's error naming what was received.

    Example:
        >>> require_kernel(np.ones((3, 3)))
        Traceback (most recent call last):
        ...
        registry._exceptions.InvalidKernelError: to_layer takes a registry Kernel, e.g. ...
    """
    if isinstance(kernel, Kernel):
        return kernel
    shape = getattr(kernel, "shape", None)
    received = type(kernel).__name__ + (f" of shape {tuple(shape)}" if shape is not None else "")
    raise InvalidKernelError(
        f"{verb} takes a registry Kernel, e.g. registry.load('sobel_x'). Received: {received}. "
        "For values of your own, registry.add(name, values) stores them and returns their Kernel."
    )


def emit_dtype(kernel: Kernel) -> np.dtype:
    """float32 unless the kernel is already a float (integers are emitted as float32)."""
    return kernel.dtype if kernel.dtype.kind == "f" else np.dtype(np.float32)


def plan(
    kernel: Kernel,
    *,
    in_channels: int | None = None,
    mode: str | None = None,
    padding: str = "valid",
    border: str | tuple[str, float] | None = None,
    anchor: int | Sequence[int] | None = None,
    strides: int | Sequence[int] = 1,
    dilation_rate: int | Sequence[int] = 1,
    use_bias: bool | None = None,
    separable: bool = False,
    method: str = "auto",
    framework: str | None = None,
    image_size: tuple[int, int] | None = None,
    name: str | None = None,
) -> Plan:
    """Decide what the layer for ``kernel`` computes; see :func:`registry.keras.to_layer` for the options.

    ``method`` (``auto``, ``direct``, ``separable``, ``fft``; ``separable=True`` is
    ``method="separable"``) says how: ``auto`` asks :func:`choose_method` with the costs of
    ``framework`` (``tensorflow``, ``torch`` or ``jax``) for an image of ``image_size`` (when
    known). Every method computes the same numbers.

    Raises:
        InvalidKernelError: an option that does not fit the kernel, named with what would.

    Example:
        >>> import numpy as np
        >>> k = Kernel({"name": "k", "version": 1, "layout": "HW"}, np.ones((3, 3), "f4"))
        >>> p = plan(k, in_channels=3, border="wrap", name="box")
        >>> p.kind, p.weight.shape, p.groups, p.pads
        ('depthwise', (3, 3, 3, 1), 3, ((1, 1), (1, 1)))
    """
    require_kernel(kernel)
    if padding not in ("valid", "same"):
        raise InvalidKernelError(f"padding must be 'valid' or 'same'. Received: padding={padding!r}.")
    if border is not None and padding != "valid":
        raise InvalidKernelError("Give padding='same' or a border, not both: a border keeps the size itself.")
    if in_channels is not None and (not isinstance(in_channels, (int, np.integer)) or in_channels < 1):
        raise InvalidKernelError(
            f"in_channels must be a positive int. Received: in_channels={in_channels!r}."
        )
    if mode is not None and mode not in MODES:
        raise InvalidKernelError(f"mode must be depthwise, sum or mean. Received: mode={mode!r}.")
    strides_, dilation = pair(strides, "strides"), pair(dilation_rate, "dilation_rate")
    dtype = emit_dtype(kernel)
    array = np.array(kernel.array, dtype=dtype)  # a writable copy: frameworks warn on read-only buffers
    if kernel.layout == "HW":
        mode = mode or "depthwise"
        if mode == "depthwise" and in_channels is None:
            kind, weight = "plane", array[:, :, None, None]
        else:
            channels = in_channels or 1
            weight = np.repeat(array[:, :, None, None], channels, axis=2)
            kind = "depthwise" if mode == "depthwise" else "conv"
            if mode == "mean":
                weight = weight / np.asarray(channels, dtype)
    else:
        natural = "depthwise" if kernel.layout == "HWIM" else None
        if mode is not None and mode != natural:
            raise InvalidKernelError(
                f"mode applies to HW planes; {kernel.ref} is {kernel.layout} {kernel.shape}, which already "
                f"says how its {kernel.shape[2]} input channels combine. Leave mode unset. "
                f"Received: mode={mode!r}."
            )
        if in_channels not in (None, array.shape[2]):
            raise InvalidKernelError(
                f"{kernel.ref} is {kernel.layout} with {array.shape[2]} input channels. "
                f"Received: in_channels={in_channels}."
            )
        kind, weight = ("conv" if kernel.layout == "HWIO" else "depthwise"), array
    bias = _bias(kernel, kind, weight, use_bias, dtype)
    method = check_method(kernel, method, separable, padding, border, strides_, dilation)
    recorded = kernel.separable if kernel.layout == "HW" else None
    channels_in = weight.shape[2] if kind != "plane" else 1
    pairs = 1 if kind == "plane" else weight.shape[2] * weight.shape[3]  # (input, output) channel pairs
    outputs = {"conv": weight.shape[3], "plane": 1}.get(kind, pairs)
    method = choose_method(
        method,
        taps=tuple((k - 1) * d + 1 for k, d in zip(weight.shape[:2], dilation)),
        pairs=pairs,
        channels=(channels_in, outputs),
        separable=recorded is not None and dilation == (1, 1),
        fft=dilation == (1, 1) and (padding == "valid" or strides_ == (1, 1)),
        strides=strides_,
        framework=framework,
        image_size=image_size,
    )
    rank_one = None
    if recorded is not None:
        scale = np.asarray(1.0 / weight.shape[2] if mode == "mean" else 1.0, dtype)
        rank_one = (recorded[0].astype(dtype) * scale, recorded[1].astype(dtype))
    factors = rank_one if method == "separable" else None
    pads = None
    border_ = None
    if border is not None:
        border_ = parse_border(border)
        pads = border_pads(kernel.shape[:2], dilation, anchor)
    elif anchor is not None:
        raise InvalidKernelError(
            "anchor places the kernel for a border mode; give border=... too (padding='same' keeps "
            f"Keras' own anchor). Received: anchor={anchor!r}, border=None."
        )
    return Plan(
        ref=kernel.ref,
        kind=kind,
        weight=np.ascontiguousarray(weight),
        bias=bias,
        in_channels=None if kind == "plane" else int(weight.shape[2]),
        padding=padding,
        border=border_,
        pads=pads,
        strides=strides_,
        dilation=dilation,
        factors=factors,  # type: ignore[arg-type]
        name=unique_name(kernel, name),
        method=method,
        rank_one=rank_one,
    )


def _bias(
    kernel: Kernel, kind: str, weight: np.ndarray, use_bias: bool | None, dtype: np.dtype
) -> np.ndarray | None:
    recorded = kernel.bias
    if use_bias is False or (use_bias is None and recorded is None):
        return None
    if recorded is None:
        raise InvalidKernelError(f"{kernel.ref} has no recorded bias; pass use_bias=None or False.")
    outputs = {"conv": weight.shape[3], "plane": 1}.get(kind, weight.shape[2] * weight.shape[3])
    if len(recorded) != outputs:
        raise InvalidKernelError(
            f"{kernel.ref} records {len(recorded)} bias values but this layer has {outputs} outputs."
        )
    return recorded.astype(dtype)


# -- the probe check ------------------------------------------------------------------------


def probe_enabled(probe: bool | None) -> bool:
    """``probe`` if given, else on unless the environment says ``KREG_PROBE=0``."""
    if probe is not None:
        return bool(probe)
    return env_flag(PROBE_ENV, True)


def probe_input(p: Plan, channels: int | None = None) -> np.ndarray:
    """Four NHWC float32 images: an impulse, a ramp along x, one along y, a fixed random patch
    (the impulse and the patch alone for a kernel too large for four).

    Each channel differs (scaled ramps, its own random values) so a channel mix-up shows.
    The size is the least that still puts every kernel tap on a real pixel: the dilated
    kernel and a stride or two for a ``valid`` layer, half of it when padding or a border
    keeps the size (the border then folds several times over a small probe, which checks it
    harder). A padded or bordered probe then shrinks until the framework's work on it (4
    images x output pixels x the multiply-adds of each) is at most :data:`MAX_PROBE_WORK`, down
    to 4 x 5: the taps near the anchor still meet real pixels (all of a small kernel, the
    centre of a large one, every tap through a folding border), so a transposed, flipped,
    shifted or regrouped layer still shows, and a 511 x 511 kernel is checked in well under a
    second instead of convolving a 258 x 259 probe through 261,121 taps.
    """
    c = channels or p.in_channels or 2
    sizes = [(k - 1) * d + 1 for k, d in zip(p.weight.shape[:2], p.dilation)]
    valid = p.border is None and p.padding == "valid"
    # Multiply-adds per output pixel: every tap of every channel pair the layer computes.
    per_pixel = p.weight.size if p.kind != "plane" else p.weight.shape[0] * p.weight.shape[1] * c

    def work(h: int, w: int) -> int:
        outs = [(n - k) // s + 1 if valid else -(-n // s) for n, k, s in zip((h, w), sizes, p.strides)]
        return 4 * max(outs[0], 0) * max(outs[1], 0) * per_pixel

    if valid:
        h, w = (k + s + 1 for k, s in zip(sizes, p.strides))
    else:
        h, w = (max(k // 2 + s + 2, 4) for k, s in zip(sizes, p.strides))
    w += 1  # never square, so that a transposition shows in the shape
    if not valid and work(h, w) > MAX_PROBE_WORK:
        shrink = (MAX_PROBE_WORK / work(h, w)) ** 0.5
        h, w = max(4, int(h * shrink)), max(5, int(w * shrink))
        w += w == h
        while work(h, w) > MAX_PROBE_WORK and h > 4:
            h, w = h - 1, max(w - 1, h)  # w stays above h: never square
    if h * w * c > MAX_PROBE:
        raise InvalidKernelError(
            f"The probe check of {p.ref} with dilation_rate={p.dilation} and strides={p.strides} needs a "
            f"{h}x{w}x{c} image, more than kreg probes ({MAX_PROBE} values). Expected a kernel span "
            f"that fits; "
            f"pass probe=False to emit it unchecked."
        )
    scale = np.arange(1, c + 1, dtype=np.float32)
    impulse = np.zeros((h, w, c), np.float32)
    impulse[h // 2, w // 2] = scale
    ramp_x = np.broadcast_to(np.linspace(-1, 1, w, dtype=np.float32)[None, :, None] * scale, (h, w, c))
    ramp_y = np.broadcast_to(np.linspace(-1, 1, h, dtype=np.float32)[:, None, None] * scale, (h, w, c))
    noise = np.random.default_rng(20240611).uniform(-1, 1, (h, w, c)).astype(np.float32)
    if work(h, w) > MAX_PROBE_WORK:  # still over at 4 x 5: the impulse and the noise catch every bug alone
        return np.stack([impulse, noise])
    return np.stack([impulse, ramp_x, ramp_y, noise])


def reference(
    kernel: Kernel,
    x: np.ndarray,
    *,
    mode: str | None = None,
    padding: str = "valid",
    border: str | tuple[str, float] | None = None,
    anchor: int | Sequence[int] | None = None,
    strides: int | Sequence[int] = 1,
    dilation_rate: int | Sequence[int] = 1,
    use_bias: bool | None = None,
) -> np.ndarray:
    """What the layer must output on the NHWC batch ``x``, from the registered values alone (float64).

    Example:
        >>> k = Kernel({"name": "k", "version": 1, "layout": "HW"}, np.array([[1.0, 2.0]]))
        >>> reference(k, np.arange(4.0).reshape(1, 1, 4, 1))[0, 0, :, 0].tolist()
        [2.0, 5.0, 8.0]
    """
    sh, sw = pair(strides, "strides")
    dh, dw = pair(dilation_rate, "dilation_rate")
    values = np.asarray(kernel.array, np.float64)
    kh, kw = (values.shape[0] - 1) * dh + 1, (values.shape[1] - 1) * dw + 1
    x = np.asarray(x, np.float64)
    if border is not None:
        how, fill = parse_border(border)
        widths = ((0, 0), *border_pads(values.shape[:2], (dh, dw), anchor), (0, 0))
        x = np.pad(x, widths, NUMPY_PAD[how], **({"constant_values": fill} if how == "constant" else {}))
    elif padding == "same":
        widths = ((0, 0), same_pads(x.shape[1], kh, sh), same_pads(x.shape[2], kw, sw), (0, 0))
        x = np.pad(x, widths)
    # Correlation by FFT (float64): the same sums as a sliding window, in a fraction of the
    # time for large kernels, which keeps the probe check within its budget.
    n, hp, wp, channels = x.shape
    dilated = np.zeros((kh, kw, *values.shape[2:]))
    dilated[::dh, ::dw] = values
    xf = np.fft.rfft2(x, axes=(1, 2))
    kf = np.conj(np.fft.rfft2(dilated, s=(hp, wp), axes=(0, 1)))
    if kernel.layout == "HW":
        yf = xf * kf[None, :, :, None]
    elif kernel.layout == "HWIO":
        yf = np.einsum("nyxc,yxco->nyxo", xf, kf)
    else:
        yf = np.einsum("nyxc,yxcm->nyxcm", xf, kf).reshape(*xf.shape[:3], -1)
    out = np.fft.irfft2(yf, s=(hp, wp), axes=(1, 2))[:, : hp - kh + 1 : sh, : wp - kw + 1 : sw]
    if kernel.layout == "HW" and (mode or "depthwise") != "depthwise":
        out = out.sum(axis=3, keepdims=True) / (channels if mode == "mean" else 1)
    bias = kernel.bias
    if bias is not None and use_bias is not False:
        out = out + bias.astype(np.float64)
    return out


def tolerance(dtype: Any) -> float:
    """Relative tolerance for an output of ``dtype``: loose for 16-bit floats, tight for 64."""
    itemsize = np.dtype(dtype).itemsize if not isinstance(dtype, int) else dtype
    return {2: 3e-2, 4: 1e-4}.get(itemsize, 1e-9)


def check_probe(
    kernel: Kernel,
    got: Any,
    x: np.ndarray,
    options: Mapping[str, Any],
    *,
    what: str,
    channels_first: bool = False,
    itemsize: int | None = None,
) -> None:
    """Raise :class:`ProbeMismatchError` unless ``got`` (the emitted thing's output on ``x``) matches.

    Args:
        kernel: the registered kernel.
        got: the framework's output on ``x`` (NHWC, or NCHW when ``channels_first``).
        x: the probe from :func:`probe_input` (NHWC).
        options: the ``mode``/``padding``/``border``/``strides``/``dilation_rate``/``use_bias`` used.
        what: the emitted object, for the message.
        channels_first: whether ``got`` is NCHW.
        itemsize: bytes per value of the computation (default: ``got``'s), which sets the tolerance.
    """
    keys = ("mode", "padding", "border", "anchor", "strides", "dilation_rate", "use_bias")
    expected = reference(kernel, x, **{k: options[k] for k in keys if options.get(k) is not None})
    dtype = itemsize or getattr(got, "dtype", np.float32)
    out = np.asarray(got).astype(np.float64)
    if channels_first:
        out = out.transpose(0, 2, 3, 1)
    scale = max(1.0, float(np.abs(expected).max()))
    if out.shape == expected.shape:
        error = float(np.abs(out - expected).max())
        if error <= tolerance(dtype) * scale:
            return
        detail = f"max |difference| {error:.3g} (allowed {tolerance(dtype) * scale:.3g})"
    else:
        detail = f"output shape {out.shape}, expected {expected.shape}"
    raise ProbeMismatchError(
        f"{what} does not compute what {kernel.ref} says on kreg's probe (impulse, ramps, random patch): "
        f"{detail}. Expected the registered values as a correlation with OpenCV's anchor; a transposed, "
        f"flipped, shifted or wrongly grouped kernel gives this. (probe=False skips the check.)"
    )
