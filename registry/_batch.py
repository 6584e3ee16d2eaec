"""Kernels as a batch: registered kernels stacked to feed ``kernel_conv``, and a model's predicted
kernels stored back, all in one commit, each with where it came from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._api import default_registry, load
from ._exceptions import InvalidKernelError
from .adapters import dynamic
from .kernels.kernel import Kernel

dynamic.LOADERS.append(load)


def stack(kernels: str | Kernel | Sequence[str | Kernel], *, dtype: str = "float32") -> np.ndarray:
    """Registered kernels as one batch for ``kernel_conv``: ``(B, kh, kw)`` planes, else ``(B, kh, kw, in, out)``.

    Args:
        kernels: refs, glob patterns (resolved in the default registry, natural order) and
            :class:`Kernel` objects, mixed freely; one batch entry each, in the order given.
        dtype: the array's dtype.

    Raises:
        InvalidKernelError: an item that is neither a ref nor a Kernel, or kernels of different
            shapes or layouts (named).

    Example:
        >>> import registry
        >>> registry.stack(["sobel_x", "sobel_y", registry.load("gaussian", ksize=3, sigma=0.0)]).shape
        (3, 3, 3)
    """
    items = [kernels] if isinstance(kernels, (str, Kernel)) else list(kernels)
    chosen: list[Kernel] = []
    for item in items:
        if isinstance(item, Kernel):
            chosen.append(item)
        elif isinstance(item, str):
            chosen += default_registry().resolve([item])
        else:
            raise InvalidKernelError(
                f"stack() takes refs, glob patterns or Kernel objects. Received: {type(item).__name__} "
                f"({item!r:.60})."
            )
    if not chosen:
        raise InvalidKernelError("stack() needs at least one kernel. Received: an empty list.")
    planes = all(k.layout == "HW" for k in chosen)
    arrays = [np.asarray(k.array) if planes else k.as_layout("HWIO") for k in chosen]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        listed = ", ".join(f"{k.ref} {k.layout} {a.shape}" for k, a in zip(chosen, arrays))
        raise InvalidKernelError(
            f"stack() needs kernels of one shape (all HW planes, or full kernels of one HWIO shape). "
            f"Received: {listed}."
        )
    return np.stack(arrays).astype(dtype)
