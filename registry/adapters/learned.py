"""Kernels from other frameworks' weights: PyTorch's OIHW, grouped convolutions, checkpoints.

The adapters (``registry.keras``, ``registry.torch``, ``registry.jax``) and ``kreg add
--tensor`` turn what they read into NumPy and hand it here; the result is a version-0
:class:`Kernel` carrying its provenance, which the caller stores (adapters never add).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .._exceptions import InvalidKernelError
from ..format.container import parse_json
from ..format.content import check_values, content_hash, refuse_masked
from ..kernels.kernel import Kernel


def ungroup_hwio(values: np.ndarray, groups: int) -> np.ndarray:
    """A grouped ``(H, W, C/g, O)`` weight as the full ``(H, W, C, O)`` one: zeros across groups.

    Output channel ``o`` belongs to group ``o // (O / g)`` and reads that group's inputs.

    Example:
        >>> ungroup_hwio(np.ones((1, 1, 1, 2)), 2)[0, 0].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    h, w, per_group, out = values.shape
    if groups < 1 or out % groups:
        raise InvalidKernelError(f"{out} output channels do not split into groups={groups}.")
    full = np.zeros((h, w, per_group * groups, out), values.dtype)
    step = out // groups
    for g in range(groups):
        full[:, :, g * per_group : (g + 1) * per_group, g * step : (g + 1) * step] = values[
            :, :, :, g * step : (g + 1) * step
        ]
    return full


def oihw_to_stored(weight: np.ndarray, groups: int = 1) -> tuple[np.ndarray, str]:
    """A PyTorch ``(O, I/g, H, W)`` weight as kreg stores it: ``HWIM`` when depthwise, else ``HWIO``.

    ``groups`` equal to the input channels with one input per group is a depthwise layer
    (output ``c * M + m``, as TensorFlow orders it); other groups are expanded to a full kernel.
    """
    if weight.ndim != 4:
        raise InvalidKernelError(
            f"A PyTorch conv weight is (out, in/groups, H, W). Received: shape={weight.shape}."
        )
    out, per_group, h, w = weight.shape
    if groups > 1 and per_group == 1:
        if out % groups:
            raise InvalidKernelError(f"{out} output channels do not split into groups={groups}.")
        return np.ascontiguousarray(weight.reshape(groups, out // groups, h, w).transpose(2, 3, 0, 1)), "HWIM"
    hwio = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    return (ungroup_hwio(hwio, groups) if groups > 1 else hwio), "HWIO"


#: Where each 4-D layout keeps its output channels and its spatial axes (HWIM: its two channel axes).
_AXES = {"OIHW": ((0,), (2, 3)), "HWIO": ((3,), (0, 1)), "HWIM": ((2, 3), (0, 1))}


def check_layout_fits(name: str, shape: tuple[int, ...], layout: str, bias: int | None, groups: int = 1) -> None:
    """Refuse a 4-D weight whose bias says it is in another layout; warn when, without a bias,
    its shape reads as a kernel only in another layout (a 16x3 kernel as given, 3x3 otherwise).

    A wrong layout would otherwise be stored silently whenever the shape happens to allow it, or
    fail later in the schema with a dump of the record.

    Raises:
        InvalidKernelError: the bias has as many values as another layout's outputs, not this one's.
    """
    if len(shape) != 4 or layout not in _AXES:
        return
    outputs = {lay: int(np.prod([shape[a] for a in out])) for lay, (out, _) in _AXES.items()}
    if layout == "OIHW" and groups > 1 and shape[1] == 1:
        outputs["OIHW"] = shape[0]  # depthwise: one output per (channel, multiplier) either way
    if bias is not None and bias != outputs[layout]:
        fits = [lay for lay in ("OIHW", "HWIO", "HWIM") if outputs[lay] == bias and lay != layout]
        looks = f": this looks like {fits[0]}. Give that layout (--layout {fits[0]})" if fits else (
            ". Check the layout and that the bias belongs to this weight")
        raise InvalidKernelError(f"The bias of {name!r} has {bias} values, but as {layout} its shape {tuple(shape)} "
                                 f"has {outputs[layout]} outputs{looks}.")
    if bias is not None:
        return
    h, w = (shape[a] for a in _AXES[layout][1])
    other = "HWIO" if layout == "OIHW" else "OIHW"
    h2, w2 = (shape[a] for a in _AXES[other][1])
    # the other reading is a square kernel no larger than this one, and this one is oblong or larger
    if h2 == w2 and h2 <= max(h, w) and (h != w or h2 < h):
        import warnings

        from .._exceptions import LayoutWarning

        warnings.warn(f"{name!r} of shape {tuple(shape)} reads as a {h}x{w} kernel in {layout} but as a {h2}x{w2} "
                      f"one in {other}: this looks like {other}. Stored as {layout}, as given; if that is wrong, "
                      f"remove it and add it again with --layout {other} (layout={other!r}).",
                      LayoutWarning, stacklevel=3)


def learned_kernel(
    values: np.ndarray,
    layout: str,
    *,
    bias: np.ndarray | None,
    source: Mapping[str, Any],
    source_layout: str | None,
) -> Kernel:
    """A version-0 :class:`Kernel` (not stored) carrying where learned values came from.

    ``registry.add(name, kernel)`` or :func:`registry._api.add_converted` stores it.
    """
    refuse_masked(values)  # before np.asarray, which would drop the mask
    refuse_masked(bias, "The bias values")
    array = check_values(np.asarray(values))
    expected = {"HW": 2, "HWIO": 4, "HWIM": 4}[layout]
    if array.ndim != expected:
        raise InvalidKernelError(
            f"Layout {layout} needs values of rank {expected}. Received: shape={array.shape}."
        )
    clean = {k: v for k, v in source.items() if v is not None}
    label = f"{clean.get('framework', 'learned')}:{clean.get('layer', 'kernel')}"
    record = {
        "schema_version": 1,
        "name": "learned",
        "version": 0,
        "shape": list(array.shape),
        "dtype": array.dtype.name,
        "layout": layout,
        "operation": "correlation",
        "bias": None if bias is None else [float(b) for b in np.asarray(bias).ravel()],
        "separable": None,
        "tags": [],
        "provenance": {
            "origin": "learned",
            "created_at": datetime.now(timezone.utc).isoformat(),
            "description": "",
            "references": [],
            "source": clean,
            "source_layout": source_layout,
        },
        "sha256": content_hash(array),
    }
    return Kernel(record, array, label=label)


def from_tensors(
    tensors: Mapping[str, Any],
    key: str,
    *,
    layout: str = "OIHW",
    groups: int = 1,
    source: Mapping[str, Any] | None = None,
) -> Kernel:
    """The kernel named ``key`` in a ``state_dict``-like mapping of NumPy arrays, its bias beside it.

    Args:
        tensors: name -> array (a ``state_dict`` converted to NumPy, or a safetensors file's).
        key: ``conv1.weight``, or ``conv1`` (``.weight`` is added); the bias is ``conv1.bias``.
        layout: how the values are laid out: ``OIHW`` (PyTorch, the default), ``HWIO``, ``HWIM``, ``HW``.
        groups: the layer's ``groups`` for ``OIHW`` (``in_channels`` for depthwise).
        source: provenance ``source`` fields (framework, model, checkpoint_sha256).

    Example:
        >>> k = from_tensors({"c.weight": np.ones((2, 1, 3, 3), "f4"), "c.bias": np.zeros(2, "f4")}, "c")
        >>> k.layout, k.shape, k.bias.tolist()
        ('HWIO', (3, 3, 1, 2), [0.0, 0.0])
    """
    name = key if key in tensors else f"{key}.weight"
    if name not in tensors:
        keys = ", ".join(sorted(k for k in tensors if k.endswith("weight"))[:12])
        raise InvalidKernelError(f"No tensor {key!r} in the checkpoint. Weights there: {keys or 'none'}.")
    layer = name[: -len(".weight")] if name.endswith(".weight") else name
    bias_key = f"{layer}.bias" if name.endswith(".weight") else None
    for tensor in (name, bias_key):
        refuse_masked(tensors.get(tensor) if tensor else None, f"The tensor {tensor!r}")
    weight = np.asarray(tensors[name])
    bias = np.asarray(tensors[bias_key]) if bias_key in tensors else None
    if layout not in ("OIHW", "HW", "HWIO", "HWIM"):
        raise InvalidKernelError(f"layout must be OIHW, HWIO, HWIM or HW. Received: layout={layout!r}.")
    check_layout_fits(name, weight.shape, layout, None if bias is None else bias.size, groups)
    if layout == "OIHW":
        values, stored = oihw_to_stored(weight, groups)
    else:
        values, stored = (ungroup_hwio(weight, groups) if groups > 1 else weight), layout
    return learned_kernel(
        values, stored, bias=bias, source={**(source or {}), "layer": layer}, source_layout=layout
    )


def from_checkpoint(
    tensors: Mapping[str, Any],
    key: str,
    metadata: Mapping[str, str],
    *,
    layout: str | None = None,
    groups: int | None = None,
    source: Mapping[str, Any] | None = None,
) -> Kernel:
    """:func:`from_tensors` for a safetensors file: a file kreg exported says its groups and layout.

    A kreg export (metadata ``kreg.record``) comes back in its recorded layout (``HW``,
    ``HWIM`` or ``HWIO``); any other checkpoint is read as ``layout`` (default ``OIHW``).
    """
    record = None
    if "kreg.record" in metadata:
        try:
            record = parse_json(metadata["kreg.record"])
        except ValueError:
            record = None
    if record is not None and layout is None and metadata.get("kreg.layout") == "OIHW":
        groups = groups or int(metadata.get("kreg.groups", "1") or 1)
    kernel = from_tensors(tensors, key, layout=layout or "OIHW", groups=groups or 1, source=source)
    if (
        isinstance(record, dict)
        and record.get("layout") == "HW"
        and kernel.shape[2:] == (1, 1)
        and layout is None
    ):
        return learned_kernel(
            kernel.array[:, :, 0, 0],
            "HW",
            bias=kernel.bias,
            source=kernel._record["provenance"]["source"],
            source_layout="OIHW",
        )
    return kernel
