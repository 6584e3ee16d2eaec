"""TensorFlow adapter: ``tf.Tensor`` filters for ``tf.nn``, and the Keras layers on the TensorFlow backend.

Importing this module imports TensorFlow; ``import registry`` never does. Every function
takes a :class:`registry.Kernel` and never changes it. The layers themselves live in
:mod:`registry.keras` (they run on every Keras backend); they are re-exported here so
``registry.tensorflow.to_keras`` keeps working. Border modes: see :mod:`registry.adapters.plan`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._exceptions import InvalidKernelError
from ._lazy import require
from .adapters import plan as planning
from .adapters.borders import BORDERS, parse_border
from .kernels.kernel import Kernel

tf = require("tensorflow", feature="The TensorFlow adapter (registry.tensorflow)")

from .keras import BorderPadding2D, PlaneConv2D, from_layer, to_layer  # noqa: E402

__all__ = [
    "BORDERS",
    "BorderPadding2D",
    "PlaneConv2D",
    "from_layer",
    "parse_border",
    "to_keras",
    "to_layer",
    "to_tensor",
    "to_tf",
    "to_tf_depthwise",
]

#: The old name of :func:`to_layer`.
to_keras = to_layer


def to_tensor(
    kernel: Kernel,
    *,
    in_channels: int | None = None,
    mode: str | None = None,
    dtype: str = "float32",
    probe: bool | None = None,
) -> Any:
    """The filter for ``tf.nn``: ``HWIO`` for ``tf.nn.conv2d``, or ``(H, W, C, M)`` for depthwise.

    A full (``HWIO``) kernel, or an ``HW`` plane in ``sum``/``mean`` mode, gives the
    ``tf.nn.conv2d`` filter; an ``HWIM`` kernel, or a plane in ``depthwise`` mode with
    ``in_channels``, the ``tf.nn.depthwise_conv2d`` one; a plane alone ``(H, W, 1, 1)``.
    The filter is run once on the probe (``probe=False`` skips it).

    Example:
        >>> import registry, registry.tensorflow as rtf                           # doctest: +SKIP
        >>> rtf.to_tensor(registry.load("sobel_x"), in_channels=3).shape            # doctest: +SKIP
        TensorShape([3, 3, 3, 1])
    """
    options = dict(in_channels=in_channels, mode=mode)
    p = planning.plan(kernel, name="tensor", **options)  # type: ignore[arg-type]
    weight = tf.constant(p.weight, dtype=dtype)
    if planning.probe_enabled(probe):
        x = planning.probe_input(p)
        xt = tf.constant(x, dtype=dtype)
        if p.kind == "conv":
            got = tf.nn.conv2d(xt, weight, 1, "VALID")
        else:
            channels = x.shape[3]
            filt = tf.tile(weight, (1, 1, channels, 1)) if p.kind == "plane" else weight
            got = tf.nn.depthwise_conv2d(xt, filt, [1, 1, 1, 1], "VALID")
        planning.check_probe(
            kernel, got.numpy(), x, {**options, "use_bias": False}, what=f"the tf.nn filter for {kernel.ref}"
        )
    return weight


def to_tf(kernel: Kernel, *, dtype: str = "float32") -> Any:
    """The ``HWIO`` filter for ``tf.nn.conv2d`` (an ``HW`` plane becomes ``(H, W, 1, 1)``).

    Example:
        >>> import registry, registry.tensorflow as rtf                    # doctest: +SKIP
        >>> rtf.to_tf(registry.load("sobel_x")).shape                      # doctest: +SKIP
        TensorShape([3, 3, 1, 1])
    """
    return tf.constant(np.array(kernel.as_layout("HWIO")), dtype=dtype)


def to_tf_depthwise(kernel: Kernel, channels: int, *, dtype: str = "float32") -> Any:
    """The ``(H, W, channels, multiplier)`` filter for ``tf.nn.depthwise_conv2d``.

    An ``HW`` plane is repeated for each channel; an ``HWIM`` kernel must have ``channels``.
    """
    if kernel.layout == "HW" or (kernel.layout == "HWIM" and kernel.shape[2] == channels):
        return to_tensor(
            kernel, in_channels=channels, mode="depthwise" if kernel.layout == "HW" else None, dtype=dtype
        )
    raise InvalidKernelError(
        f"A depthwise filter comes from an HW plane or an HWIM kernel with {channels} channels. "
        f"Received: {kernel.ref} {kernel.layout} {kernel.shape}."
    )
