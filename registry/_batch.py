"""Kernels as a batch: registered kernels stacked to feed ``kernel_conv``, and a model's predicted
kernels stored back, all in one commit, each with where it came from."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._api import default_registry, load
from ._exceptions import InvalidKernelError
from .adapters import dynamic
from .kernels.kernel import Kernel
from .store import Registry

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


def _numpy(value: Any) -> np.ndarray:
    """A framework tensor (torch, TensorFlow, JAX, Keras) or array-like as a NumPy array."""
    if hasattr(value, "detach"):  # torch: leave the graph and the device first
        value = value.detach().cpu()
    return np.asarray(value)


def _digest(arrays: Sequence[np.ndarray]) -> str:
    """sha256 over each array's dtype, shape and bytes, in order: equal weights, equal digest."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def weights_sha256(model: Any) -> str:
    """The sha256 of a model's weights: a Keras model (``get_weights``), a torch module
    (``state_dict``) or a pytree of arrays (JAX / Flax params, keys sorted)."""
    if hasattr(model, "get_weights"):
        return _digest([np.asarray(w) for w in model.get_weights()])
    if hasattr(model, "state_dict"):
        return _digest([_numpy(t) for t in model.state_dict().values()])

    def leaves(tree: Any) -> list[np.ndarray]:
        if isinstance(tree, Mapping):
            return [leaf for key in sorted(tree, key=str) for leaf in leaves(tree[key])]
        if isinstance(tree, (list, tuple)):
            return [leaf for item in tree for leaf in leaves(item)]
        return [_numpy(tree)]

    found = leaves(model)
    if not found or any(a.dtype.kind not in "biufc" for a in found):
        raise InvalidKernelError(
            f"model must be a Keras model, a torch module or a pytree of arrays (its weights are hashed). "
            f"Received: {type(model).__name__}."
        )
    return _digest(found)


def add_predicted(
    name: str,
    kernels: Any,
    *,
    model: Any,
    inputs: Any,
    registry: Registry | None = None,
    description: str = "",
    tags: Sequence[str] = (),
    license: str | None = None,
    author: str | None = None,
) -> list[Kernel]:
    """Store a batch of kernels a model predicted, ``name/0``, ``name/1``, ... in one commit.

    Each records ``origin=learned`` and where it came from: the framework, the model's name and
    the sha256 of its weights (``source.checkpoint_sha256``), and the sha256 of the input batch
    with the index of the sample it was predicted for (a reference
    ``kreg:input-sha256=<hex>;index=<i>``, also said in the description). All land together or,
    on an error or a crash, none does.

    Args:
        name: the kernels' common name; kernel ``i`` is ``f"{name}/{i}"`` (zero-padded).
        kernels: ``(B, kh, kw)`` planes or ``(B, kh, kw, in, out)`` full kernels (a NumPy array
            or a framework tensor).
        model: the model that predicted them (Keras model, torch module, or a params pytree).
        inputs: the input batch they were predicted from (its first axis is the sample index).
        registry: where to store (default: the default registry).
        description, tags, license, author: recorded on every kernel.

    Returns:
        The stored kernels, in batch order.

    Example:
        >>> registry.add_predicted("team/blur", kernels, model=net, inputs=images)   # doctest: +SKIP
    """
    values, batch = _numpy(kernels), _numpy(inputs)
    if values.ndim not in (3, 5):
        raise InvalidKernelError(
            f"add_predicted stores planes (B, kh, kw) or full kernels (B, kh, kw, in, out). Received: kernels of "
            f"shape {values.shape}. Per-pixel kernels are a map per sample: store the kernels of chosen pixels."
        )
    if batch.ndim == 0 or batch.shape[0] != values.shape[0]:
        raise InvalidKernelError(
            f"add_predicted needs one input sample per kernel: expected inputs of shape ({values.shape[0]}, ...). "
            f"Received: inputs of shape {batch.shape}."
        )
    framework = (
        type(model).__module__.split(".")[0]
        if hasattr(model, "get_weights") or hasattr(model, "state_dict")
        else None
    )
    source = {
        "framework": framework,
        "model": str(getattr(model, "name", None) or type(model).__name__)[:256],
        "checkpoint_sha256": weights_sha256(model),
    }
    input_sha = _digest([batch])
    reg = default_registry() if registry is None else registry
    width = len(str(values.shape[0] - 1))
    stored = []
    with reg.batch():
        for i, value in enumerate(values):
            said = f"Predicted by {source['model']} for sample {i} of an input batch (sha256 {input_sha})."
            stored.append(
                reg.add(
                    f"{name}/{i:0{width}d}",
                    value,
                    layout="HW" if values.ndim == 3 else "HWIO",
                    origin="learned",
                    description=(description + " " if description else "") + said,
                    tags=tags,
                    license=license,
                    author=author,
                    references=[f"kreg:input-sha256={input_sha};index={i}"],
                    provenance={"source": {k: v for k, v in source.items() if v is not None}},
                )
            )
    return stored
