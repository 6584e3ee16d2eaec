"""Border modes, named once, and the padding each layer needs, shared by every adapter (NumPy, and
the source index in any framework's operations for sizes known only at run time).

Border modes, named once (each library's word for the same thing):

============  ====================  ============  ===========  ===============  ==========
kreg          OpenCV                TensorFlow    NumPy pad    scipy.ndimage    PyTorch
============  ====================  ============  ===========  ===============  ==========
zero          BORDER_CONSTANT (0)   CONSTANT      constant     constant         constant
constant(v)   BORDER_CONSTANT (v)   CONSTANT      constant     constant         constant
reflect101    BORDER_REFLECT_101    REFLECT       reflect      mirror           reflect
symmetric     BORDER_REFLECT        SYMMETRIC     symmetric    reflect          (none)
replicate     BORDER_REPLICATE      (none)        edge         nearest          replicate
wrap          BORDER_WRAP           (none)        wrap         wrap             circular
============  ====================  ============  ===========  ===============  ==========

"reflect" means reflect101 in TensorFlow, NumPy and PyTorch but symmetric in scipy: kreg
never uses the bare word. With a border, a kernel is anchored where OpenCV anchors it
(``k // 2`` on the dilated size), which for even sizes is one pixel later than Keras'
``same`` padding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._exceptions import InvalidKernelError

#: Border modes; ``constant`` takes a value: ``"constant(0.5)"`` or ``("constant", 0.5)``.
BORDERS = ("zero", "constant", "reflect101", "symmetric", "replicate", "wrap")
#: ``np.pad`` mode for each border mode.
NUMPY_PAD = {
    "zero": "constant",
    "constant": "constant",
    "reflect101": "reflect",
    "symmetric": "symmetric",
    "replicate": "edge",
    "wrap": "wrap",
}
_CONSTANT = re.compile(r"^constant\(\s*([-+0-9.eE]+)\s*\)$")


def parse_border(border: str | tuple[str, float]) -> tuple[str, float]:
    """A border as ``(mode, fill)``: ``"constant(2)"`` or ``("constant", 2)`` -> ``("constant", 2.0)``.

    Example:
        >>> parse_border("constant(0.5)")
        ('constant', 0.5)
    """
    if isinstance(border, tuple):
        mode, value = border
        return parse_border(mode if mode != "constant" else "constant(0)")[0], float(value)
    match = _CONSTANT.match(border) if isinstance(border, str) else None
    if match:
        return "constant", float(match.group(1))
    if border not in BORDERS or border == "constant":
        raise InvalidKernelError(
            f"border must be one of zero, constant(v), reflect101, symmetric, replicate, wrap. "
            f"Received: border={border!r}."
        )
    return border, 0.0


def anchor_pads(size: int) -> tuple[int, int]:
    """OpenCV's anchor on a (dilated) kernel of ``size``: ``size // 2`` before, the rest after.

    Example:
        >>> anchor_pads(4)
        (2, 1)
    """
    return size // 2, size - 1 - size // 2


def same_pads(n: int, size: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``same`` padding of an axis of ``n`` pixels: the extra pixel goes after."""
    out = -(-n // stride)
    total = max((out - 1) * stride + size - n, 0)
    return total // 2, total - total // 2


def border_pads(
    shape: Sequence[int], dilation: tuple[int, int], anchor: int | Sequence[int] | None = None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, bottom), (left, right))``: the border a kernel of ``shape`` needs, placed so that
    the kernel tap at ``anchor`` (row, column; OpenCV's ``k // 2`` of the dilated size by
    default) lands on the output pixel.

    Example:
        >>> border_pads((2, 2), (1, 1)), border_pads((2, 2), (1, 1), anchor=0)
        (((1, 0), (1, 0)), ((0, 1), (0, 1)))
    """
    sizes = [(k - 1) * d + 1 for k, d in zip(shape, dilation)]
    if anchor is None:
        return anchor_pads(sizes[0]), anchor_pads(sizes[1])
    at = (anchor, anchor) if isinstance(anchor, (int, np.integer)) else tuple(anchor)
    if len(at) != 2 or not all(isinstance(a, (int, np.integer)) and 0 <= a < k for a, k in zip(at, shape)):
        raise InvalidKernelError(
            f"anchor is the (row, column) of the kernel tap placed on each output pixel: whole numbers "
            f"from 0 to {shape[0] - 1} and {shape[1] - 1} for this {shape[0]}x{shape[1]} kernel. "
            f"Received: anchor={anchor!r}."
        )
    before = [int(a) * d for a, d in zip(at, dilation)]
    return (before[0], sizes[0] - 1 - before[0]), (before[1], sizes[1] - 1 - before[1])


def source_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each padded position along an axis of ``n`` pixels, the input pixel it copies.

    Example:
        >>> source_index(3, 2, 2, "symmetric").tolist()
        [1, 0, 0, 1, 2, 2, 1]
    """
    i = np.arange(-before, n + after)
    if mode == "reflect101":
        period = max(2 * n - 2, 1)
        i = np.mod(i, period)
        return np.where(i >= n, period - i, i)
    if mode == "symmetric":
        i = np.mod(i, 2 * n)
        return np.where(i >= n, 2 * n - 1 - i, i)
    if mode == "replicate":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return np.mod(i, n)
    raise InvalidKernelError(f"{mode} is not an index border mode; zero and constant fill instead.")


def index_ops(
    n: Any,
    before: int,
    after: int,
    mode: str,
    *,
    arange: Callable[..., Any],
    mod: Callable[..., Any],
    where: Callable[..., Any],
    clip: Callable[..., Any],
) -> Any:
    """:func:`registry.adapters.borders.source_index` in a framework's operations, for sizes known only
    at run time (a NumPy index would freeze the size a model was traced with).

    Each modulus is taken of a non-negative number (shifted by whole periods): exporters such as
    tf2onnx turn a floor modulus into a truncating one, which differs below zero.
    """
    i = arange(-before, n + after)
    if mode == "reflect101":
        period = 2 * n - 2 + 1 // n  # 1 when n == 1: every position copies the one pixel
        i = mod(i + before * period, period)
        return where(i >= n, period - i, i)
    if mode == "symmetric":
        i = mod(i + before * 2 * n, 2 * n)
        return where(i >= n, 2 * n - 1 - i, i)
    if mode == "replicate":
        return clip(i, 0, n - 1)
    return mod(i + before * n, n)  # wrap
