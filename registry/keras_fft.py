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
from .adapters.borders import index_ops, parse_border, source_index
from .adapters.methods import fast_size

keras = require_keras()


def channel_axis(data_format: str) -> int:
    return -1 if data_format == "channels_last" else 1


def spatial_axes(data_format: str) -> tuple[int, int]:
    """The height and width axes of a 4-D batch in ``data_format``."""
    return (1, 2) if data_format == "channels_last" else (2, 3)


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


#: Most taps in the two passes of a rank-one FFT layer that XLA compiles as two sums over its taps
#: (:meth:`KregFFTConv2D._sums_taps`); beyond, the FFT. Gaussians on 1024x1024 under TensorFlow's
#: ``jit_compile``, a loaded 2-CPU machine: 31 + 31 taps 3.7 ms against 10.9 by FFT, 47 + 47
#: 6.8 against 11.1, 63 + 63 even (12.0).
XLA_SEPARABLE_TAPS = 96


def check_taps_once(layer: Any, taps: Any, other: Any, shape: Sequence[int]) -> None:
    """The first time TensorFlow traces ``layer`` summing its taps (under ``jit_compile``), compare
    that formulation with the layer's other one, checked by the probe when it was emitted, on a
    fixed pseudo-random batch of ``shape``, eagerly; raise :class:`ProbeMismatchError` if they differ.

    Checked here rather than when the layer is emitted: eager TensorFlow pays ~0.1 ms an
    operation, and the probe's 5 ms budget would not take the taps' (a 31x31 Gaussian's 62).
    ``taps`` and ``other`` map a batch to the layer's output without its bias.
    """
    if getattr(layer, "_kreg_taps_checked", False) or keras.backend.backend() != "tensorflow":
        return
    import numpy as np
    import tensorflow as tf

    from ._exceptions import ProbeMismatchError
    from .adapters.plan import tolerance

    with tf.init_scope():  # out of the graph being traced: run now, on values
        values = np.random.default_rng(20240611).uniform(-1, 1, tuple(shape))
        x = tf.constant(values, dtype=layer.compute_dtype)
        summed = keras.ops.convert_to_numpy(taps(x)).astype(np.float64)
        expected = keras.ops.convert_to_numpy(other(x)).astype(np.float64)
    error = float(np.abs(summed - expected).max()) if summed.shape == expected.shape else float("inf")
    allowed = tolerance(np.dtype(layer.compute_dtype)) * max(1.0, float(np.abs(expected).max()))
    if not error <= allowed:
        raise ProbeMismatchError(
            f"Layer {layer.name!r} sums its taps under XLA and that sum does not compute what its "
            f"{'FFT' if isinstance(layer, KregFFTConv2D) else 'convolution'} does on a probe: "
            f"max |difference| {error:.3g} (allowed {allowed:.3g}), shapes {summed.shape} and {expected.shape}."
        )
    layer._kreg_taps_checked = True


def check_span(layer: Any, sizes: Sequence[Any], span: Sequence[int]) -> None:
    """kreg's error for a (padded) image smaller than the kernel's span, where the size is known:
    a convolution raises its own, a sum over the taps or an FFT would return garbage or nothing."""
    if any(isinstance(n, int) and n < k for n, k in zip(sizes, span)):
        raise InvalidKernelError(
            f"Layer {layer.name!r} needs images of at least the kernel's span {span[0]}x{span[1]} "
            f"(after its padding). Received: images of {sizes[0]}x{sizes[1]} there; "
            "use a border= or padding='same'."
        )


def fuses_taps(traced: Any = None) -> bool:
    """Whether what is being built is compiled by XLA on a CPU, which fuses a sum over the taps into
    one loop and runs convolutions slowly (a 3x3 depthwise convolution of 1024x1024x3 in
    TensorFlow's ``jit_compile``: 80 ms; the sum over its taps 3.5): Keras on JAX on a CPU, and
    TensorFlow tracing inside ``jit_compile`` with no GPU. On JAX, given ``traced``, it must be a
    tracer (``jax.jit``): run op by op, a sum over many taps is slower than one convolution (a
    15x15 plane on 512x512x3: 726 ms against 115) or the FFT."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax  # the backend itself: already imported by Keras

        compiled = traced is None or isinstance(traced, jax.core.Tracer)
        return bool(jax.default_backend() == "cpu") and compiled
    if backend != "tensorflow":
        return False
    import tensorflow as tf

    try:  # TensorFlow's own test of an XLA context (what its control flow asks); private, so guarded
        from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
    except ImportError:  # pragma: no cover - a TensorFlow without it: never assume XLA
        return False
    if tf.executing_eagerly() or not GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return False
    return not tf.config.list_logical_devices("GPU")


def pad_border(
    x: Any,
    pads: Sequence[Sequence[int]],
    mode: str,
    value: float = 0.0,
    *,
    axes: tuple[int, int] = (1, 2),
    slack: Sequence[int] = (0, 0),
) -> Any:
    """``x`` padded along ``axes`` by ``pads`` (``((top, bottom), (left, right))``) in a border mode,
    then by up to ``slack`` more after each axis, of any values (the FFT layer rounds its
    transform up to a fast length: filling it here saves the FFT's own zero-padding copy).

    A static size folded at most once is padded by copies of its edge rows and columns in
    TensorFlow (one concatenation per axis: 1.1 ms for a 1024x1024x3 image and a 3x3 kernel,
    where TensorFlow's own MirrorPad takes 1.6 and gathering rows 5.5) and by ``jnp.pad`` in
    JAX; otherwise (a size left open in an exported model, a border folding over a small image)
    by gathering with an index that follows the size.
    """
    ops = keras.ops

    def widths(extra: Sequence[int]) -> list[tuple[int, int]]:
        out = [(0, 0)] * 4
        for axis, (before, after), more in zip(axes, pads, extra):
            out[axis] = (before, after + more)
        return out

    if mode in ("zero", "constant"):
        fill = value if mode == "constant" else 0.0
        return ops.pad(x, widths(slack), mode="constant", constant_values=fill)
    sizes = [x.shape[axis] for axis in axes]
    if all(isinstance(n, int) for n in sizes):
        backend = keras.backend.backend()
        for extra in (slack, (0, 0)):
            # Each border folds at most once: copies of edge rows and columns serve.
            if all(max(b, a + e) <= n - (mode == "reflect101") for n, (b, a), e in zip(sizes, pads, extra)):
                if backend == "tensorflow":
                    for axis, (before, after), more in zip(axes, pads, extra):
                        x = _edges(x, axis, before, after + more, mode)
                    return x
                if backend == "jax" and mode in ("reflect101", "symmetric"):
                    return ops.pad(x, widths(extra), mode="reflect" if mode == "reflect101" else mode)
    for axis, (before, after), more in zip(axes, pads, slack):
        n = x.shape[axis]
        if not (before or after or more):
            continue
        if isinstance(n, int):  # a static size: the NumPy rule itself, a constant index
            index = source_index(n, before, after + more, mode).astype("int32")
        else:
            index = index_ops(
                ops.cast(ops.shape(x)[axis], "int32"), before, after + more, mode,
                arange=lambda a, b: ops.arange(a, b, dtype="int32"),
                mod=ops.mod, where=ops.where, clip=ops.clip,
            )
        x = ops.take(x, index, axis=axis)
    return x


def _edges(x: Any, axis: int, before: int, after: int, mode: str) -> Any:
    """``x`` padded along ``axis`` by the rows the border mode copies, for a border that folds at
    most once: one concatenation of two slices (flipped for the mirrors) and ``x``. The slices
    count from the nearer end, so a graph traced at one size serves another (a resized TFLite
    interpreter) as MirrorPad would."""
    ops = keras.ops

    def rows(start: int | None, stop: int | None) -> Any:
        index: list[Any] = [slice(None)] * 4
        index[axis] = slice(start, stop)
        return x[tuple(index)]

    if mode == "wrap":
        parts = [rows(-before, None), x, rows(0, after)]
    elif mode == "replicate":  # tiles, not repeats: a repeat's reshape would pin the traced size
        reps = [[1] * 4, [1] * 4]
        reps[0][axis], reps[1][axis] = before, after
        parts = [ops.tile(rows(0, 1), reps[0]), x, ops.tile(rows(-1, None), reps[1])]
    else:  # reflect101 skips the edge pixel, symmetric repeats it
        skip = int(mode == "reflect101")
        top, bottom = rows(skip, skip + before), rows(-skip - after, -skip or None)
        parts = [ops.flip(top, axis), x, ops.flip(bottom, axis)]
    kept = [part for part, width in zip(parts, (before, 1, after)) if width]
    return ops.concatenate(kept, axis=axis) if len(kept) > 1 else x


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

    A rank-one kernel (``factors=True``) is held as its two factors, ``column`` ``(H, 1, I, O)``
    and ``row`` ``(1, W, I, O)`` (their product is the kernel), and its spectrum is the product of
    their 1-D transforms: transforming the 2-D kernel on every call cost as much as the image's.

    Args:
        kernel_shape: ``(H, W, I, O)`` of the weight (dilation written out as zeros).
        kind: ``plane`` (``(H, W, 1, 1)`` on every channel), ``depthwise`` (``(H, W, C, M)``,
            output ``c * M + m``) or ``conv`` (``HWIO``).
        strides: output stride; padding: ``valid`` or ``same`` (stride 1 only).
        channels: the input channels the weight needs (``None`` for a plane: any).
        factors: hold ``column`` and ``row`` rather than ``kernel``.
        border: ``(mode, value)``: pad the image by ``pads`` in that border mode first (as a
            :class:`BorderPadding2D` would, in the same copy that rounds it up to the transform's length).
        pads: ``((top, bottom), (left, right))`` for ``border``.
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
        factors: bool = False,
        border: Sequence[Any] | None = None,
        pads: Sequence[Sequence[int]] = ((0, 0), (0, 0)),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if kind not in ("plane", "depthwise", "conv") or padding not in ("valid", "same"):
            raise InvalidKernelError(
                f"kind must be plane, depthwise or conv and padding valid or same. "
                f"Received: kind={kind!r}, padding={padding!r}."
            )
        if border is not None:  # a string, a (mode, value) pair, or the list a saved file holds
            border = parse_border(border if isinstance(border, str) else tuple(border))
        self.border = border
        self.pads = tuple(tuple(int(p) for p in pair) for pair in pads)
        if self.border is not None and padding != "valid":
            raise InvalidKernelError(
                "Give padding='same' or a border, not both: a border keeps the size itself."
            )
        self.kernel_shape = tuple(int(v) for v in kernel_shape)
        self.kind, self.padding, self.data_format = kind, padding, data_format
        self.strides = tuple(int(v) for v in strides)
        self.use_bias, self.channels = bool(use_bias), None if channels is None else int(channels)
        self.factors = bool(factors)
        outputs = (
            1 if kind == "plane" else self.kernel_shape[3] * (self.kernel_shape[2] if kind != "conv" else 1)
        )
        kh, kw, i, o = self.kernel_shape
        if self.factors:
            self.column = self.add_weight(shape=(kh, 1, i, o), initializer="zeros", name="column")
            self.row = self.add_weight(shape=(1, kw, i, o), initializer="zeros", name="row")
        else:
            self.kernel = self.add_weight(shape=self.kernel_shape, initializer="zeros", name="kernel")
        self.bias = (
            self.add_weight(shape=(outputs,), initializer="zeros", name="bias") if self.use_bias else None
        )
        self.built = True

    def call(self, x: Any) -> Any:
        check_images(self, x, self.channels, self.data_format)
        ops = keras.ops
        kh, kw = self.kernel_shape[:2]
        out_dtype = x.dtype
        work = "float64" if "64" in str(out_dtype) else "float32"  # the FFTs take float32 and float64
        x = ops.cast(x, work)
        one_channel = x.shape[channel_axis(self.data_format)] == 1
        if self.data_format == "channels_last":  # one channel moves by a reshape, without a copy
            x = ops.expand_dims(ops.squeeze(x, -1), 1) if one_channel else ops.transpose(x, (0, 3, 1, 2))
        mode, value = self.border or ("zero", 0.0)
        pads = self.pads if self.border else ((((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
                                              if self.padding == "same" else ((0, 0), (0, 0)))
        padded = [n + sum(p) if isinstance(n, int) else None for n, p in zip(x.shape[2:], pads)]
        check_span(self, padded, (kh, kw))
        if self._sums_taps(x):
            check_taps_once(self, lambda t: self._separable_taps(self._pad(t, pads, mode, value), work),
                            lambda t: self._fft(t, pads, mode, value, work), (2, 1, kh + 5, kw + 6))
            y = self._separable_taps(self._pad(x, pads, mode, value), work)
        else:
            y = self._fft(x, pads, mode, value, work)
        if self.data_format == "channels_last":
            y = ops.expand_dims(ops.squeeze(y, 1), -1) if y.shape[1] == 1 else ops.transpose(y, (0, 2, 3, 1))
        if self.bias is not None:
            bias = ops.cast(self.bias, work)
            y = y + (bias if self.data_format == "channels_last" else ops.reshape(bias, (-1, 1, 1)))
        return ops.cast(y, out_dtype)

    @staticmethod
    def _pad(x: Any, pads: Any, mode: str, value: float) -> Any:
        return pad_border(x, pads, mode, value, axes=(2, 3)) if any(map(sum, pads)) else x

    def _fft(self, x: Any, pads: Any, mode: str, value: float, work: str) -> Any:
        """The correlation of ``x`` (NCHW) by FFT, cropped to the valid pixels and strided."""
        ops = keras.ops
        rfft2, irfft2, einsum, conj = _native()
        kh, kw, _, m = self.kernel_shape
        # The padded size, and the fast transform length at least it (known when the image size is).
        padded = [n + sum(p) if isinstance(n, int) else None for n, p in zip(x.shape[2:], pads)]
        slack = [fast_size(n) - n if n is not None else 0 for n in padded]
        if any(map(sum, pads)) or any(slack):
            x = pad_border(x, pads, mode, value, axes=(2, 3), slack=slack)
        hp, wp = (n if n is not None else ops.shape(x)[axis] for n, axis in zip(padded, (2, 3)))
        size = [n + extra if isinstance(n, int) else n for n, extra in zip((hp, wp), slack)]
        xf = rfft2(x, size)
        kf = self._spectrum(rfft2, conj, work, size)
        if self.kind == "plane":
            yf = xf * kf  # (1, 1, h, w): every image and channel
        elif self.kind == "conv":
            yf = einsum("nchw,cohw->nohw", xf, kf)
        elif m == 1:
            yf = xf * kf[:, 0]
        else:
            yf = einsum("nchw,cmhw->ncmhw", xf, kf)
            shape = ops.shape(yf)
            yf = ops.reshape(yf, (-1, shape[1] * shape[2], shape[3], shape[4]))
        return irfft2(yf, size)[:, :, : hp - kh + 1 : self.strides[0], : wp - kw + 1 : self.strides[1]]

    def _sums_taps(self, x: Any) -> bool:
        """Whether to correlate as two 1-D sums over the taps rather than by FFT: a rank-one plane
        compiled by XLA on a CPU (:func:`fuses_taps`), which fuses each pass into one loop, of at
        most :data:`XLA_SEPARABLE_TAPS` taps in both passes (a 31x31 Gaussian on 1024x1024 under
        TensorFlow's ``jit_compile``: 2.0 ms, by FFT 4.4, on an idle machine)."""
        kh, kw = self.kernel_shape[:2]
        return self.factors and self.kind == "plane" and kh + kw <= XLA_SEPARABLE_TAPS and fuses_taps(x)

    def _separable_taps(self, x: Any, work: str) -> Any:
        """The correlation of the padded ``x`` (NCHW) as the column's pass then the row's, each a sum
        of shifted, strided slices times a weight."""
        ops = keras.ops
        kh, kw = self.kernel_shape[:2]
        column, row = ops.cast(self.column, work), ops.cast(self.row, work)
        y = None
        for i in range(kh):
            term = x[:, :, i : (i - (kh - 1)) or None : self.strides[0], :] * column[i, 0, 0, 0]
            y = term if y is None else y + term
        out = None
        for j in range(kw):
            term = y[:, :, :, j : (j - (kw - 1)) or None : self.strides[1]] * row[0, j, 0, 0]
            out = term if out is None else out + term
        return out

    def _spectrum(self, rfft2: Any, conj: Any, work: str, size: Sequence[Any]) -> Any:
        """The conjugate of the kernel's 2-D real FFT at ``size``, ``(I, O, size[0], size[1] // 2 + 1)``.

        For factors: the full transform of the column (a real FFT over a last axis of length 1
        is the complex FFT of the other) times the half one of the row, each conjugated first
        (a pass over the 1-D spectra, not the 2-D one).
        """
        ops = keras.ops

        def transform(weight: Any, length: Sequence[Any]) -> Any:
            return conj(rfft2(ops.transpose(ops.cast(weight, work), (2, 3, 0, 1)), length))

        if not self.factors:
            return transform(self.kernel, size)
        return transform(self.column, [size[0], 1]) * transform(self.row, [1, size[1]])

    def dense_kernel(self) -> Any:
        """The ``(H, W, I, O)`` kernel the layer correlates with (the product of its factors)."""
        return self.column * self.row if self.factors else self.kernel

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        check_images(self, input_shape, self.channels, self.data_format)
        shape = list(input_shape)
        axes = spatial_axes(self.data_format)
        for axis, k, s, pair in zip(axes, self.kernel_shape[:2], self.strides, self.pads):
            if shape[axis] is not None:
                n = shape[axis] + (sum(pair) if self.border else 0)
                shape[axis] = n if self.padding == "same" else (n - k) // s + 1
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
            "factors": self.factors,
            "border": self.border,
            "pads": self.pads,
        }


#: The public name.
FFTConv2D = KregFFTConv2D
