"""The Kernel object: registered values, read-only, with their validated record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._exceptions import InvalidKernelError, KernelNotFoundError
from ..format.content import as_layout, content_hash
from ..format.names import MIN_PIN_DIGITS, PIN_MARK

if TYPE_CHECKING:
    from ..format.spec import KernelRecord


class Kernel:
    """One immutable kernel version: its values and its record.

    ``array`` is read-only; ``spec`` is the validated schema record (built on
    first access, so a plain load never pays for pydantic).

    Example:
        >>> import registry                                   # doctest: +SKIP
        >>> k = registry.load("sobel_x")                      # doctest: +SKIP
        >>> k.ref, k.shape, k.layout                          # doctest: +SKIP
        ('sobel_x@1', (3, 3), 'HW')
    """

    __slots__ = ("_array", "_label", "_record", "_spec")

    def __init__(self, record: dict[str, Any], array: np.ndarray, *, label: str | None = None) -> None:
        array.flags.writeable = False
        self._array = array
        self._record = record
        self._spec: KernelRecord | None = None
        self._label = label

    @property
    def array(self) -> np.ndarray:
        """The values, read-only, in the stored layout and dtype."""
        return self._array

    @property
    def spec(self) -> KernelRecord:
        """The validated schema record (:class:`registry.KernelRecord`)."""
        if self._spec is None:
            from ..format.spec import parse_record

            self._spec = parse_record(self._record, where=self.ref)
        return self._spec

    @property
    def ref(self) -> str:
        """``name@version``: always the same bytes. A kernel generated on the fly and not
        stored (version 0) shows as ``family(param=value, ...)``."""
        if self._label is not None:
            return self._label
        if self._record["version"] == 0:
            params = self._record["provenance"]["generator"]["parameters"]
            return f"{self._record['name']}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
        return f"{self._record['name']}@{self._record['version']}"

    @property
    def name(self) -> str:
        return str(self._record["name"])

    @property
    def version(self) -> int:
        return int(self._record["version"])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    @property
    def layout(self) -> str:
        """The stored layout: ``HW``, ``HWIO`` or ``HWIM``."""
        return str(self._record["layout"])

    @property
    def sha256(self) -> str:
        return str(self._record["sha256"])

    @property
    def pin(self) -> str:
        """``name@sha256:`` and 12 hex digits of the values' hash: loads this kernel from any
        registry that holds it, whatever number it has there (``registry.load(k.pin)``)."""
        return f"{self._record['name']}@{PIN_MARK}{self.sha256[:MIN_PIN_DIGITS]}"

    def as_layout(self, layout: str) -> np.ndarray:
        """The values in another layout, e.g. PyTorch's ``OIHW``, as a new writeable C-ordered array.

        A copy, so frameworks take it without warnings (``torch.from_numpy`` warns on
        read-only arrays) and changing it never changes the kernel.

        Example:
            >>> import numpy as np
            >>> k = Kernel({"name": "k", "version": 1, "layout": "HW"}, np.ones((3, 5), "f4"))
            >>> k.as_layout("OIHW").shape
            (1, 1, 3, 5)
        """
        return np.array(as_layout(self._array, self.layout, layout), order="C", copy=True)

    @property
    def bias(self) -> np.ndarray | None:
        """The bias learned with the kernel, one value per output channel (a read-only copy), or ``None``.

        Example:
            >>> Kernel({"name": "k", "version": 1, "layout": "HW", "bias": [0.5]}, np.ones((1, 1))).bias
            array([0.5])
        """
        recorded = self._record.get("bias")
        if recorded is None:
            return None
        bias = np.array(recorded, dtype=np.float64)
        bias.flags.writeable = False
        return bias

    @property
    def separable(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(column, row)``: the 1-D factors of a rank-1 ``HW`` kernel (``outer(column, row)``), or ``None``.

        Example:
            >>> k = Kernel({"name": "k", "version": 1, "layout": "HW",
            ...             "separable": {"column": [1.0, 2.0], "row": [1.0, -1.0]}}, np.ones((2, 2)))
            >>> [f.tolist() for f in k.separable]
            [[1.0, 2.0], [1.0, -1.0]]
        """
        factors = self._record.get("separable")
        if factors is None:
            return None
        column, row = np.array(factors["column"], np.float64), np.array(factors["row"], np.float64)
        column.flags.writeable = row.flags.writeable = False
        return column, row

    # Thin aliases: the adapters decide (registry.adapters.plan) and convert (one module per framework).
    # Each imports its adapter inside the method, on purpose: the adapters import Kernel, so a
    # module-level import would be a cycle (and would import a framework with `import registry`).
    # These are the only imports allowed to point up a layer (tests/test_architecture.py).

    def to_keras(self, **options: Any) -> Any:
        """A ready Keras layer with exactly these weights, on any Keras 3 backend.

        See :func:`registry.keras.to_layer` for the options.

        Needs ``keras`` and one backend: ``pip install 'kreg[keras]'`` (or the ``tensorflow``,
        ``jax`` or ``torch`` extra).
        """
        from .. import keras  # lazy: the adapter imports this module, and its framework

        return keras.to_layer(self, **options)

    def to_tf(self, **options: Any) -> Any:
        """The ``HWIO`` ``tf.Tensor`` for ``tf.nn.conv2d``; see :func:`registry.tensorflow.to_tf`."""
        from .. import tensorflow  # lazy: the adapter imports this module, and its framework

        return tensorflow.to_tf(self, **options)

    def to_tf_depthwise(self, channels: int, **options: Any) -> Any:
        """The filter for ``tf.nn.depthwise_conv2d``; see :func:`registry.tensorflow.to_tf_depthwise`."""
        from .. import tensorflow  # lazy: the adapter imports this module, and its framework

        return tensorflow.to_tf_depthwise(self, channels, **options)

    def to_torch(self, **options: Any) -> Any:
        """A ready ``torch.nn.Module`` with exactly these weights; see :func:`registry.torch.to_layer`."""
        from .. import torch  # lazy: the adapter imports this module, and its framework

        return torch.to_layer(self, **options)

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain JSON-able dict (a copy)."""
        return self.spec.model_dump(mode="json")

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy:
            return np.array(self._array, dtype=dtype)
        return self._array if dtype is None else self._array.astype(dtype)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Kernel):
            return NotImplemented
        return self.ref == other.ref and self.sha256 == other.sha256

    def __hash__(self) -> int:
        return hash((self.ref, self.sha256))

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.shape))
        return f"<Kernel {self.ref} {shape} {self.dtype} {self.layout}>"


def stack(kernels: Sequence[Kernel]) -> Kernel:
    """A bank: kernels of one height, width and input depth as the output channels of one
    ``HWIO`` kernel, in the order given (not stored: version 0)."""
    if not kernels:
        raise KernelNotFoundError("A bank needs at least one kernel.")
    planes = [k.as_layout("HWIO") for k in kernels]
    if len({p.shape[:3] for p in planes}) != 1:
        shapes = ", ".join(f"{k.ref} {k.shape} {k.layout}" for k in kernels)
        raise InvalidKernelError(f"A bank needs kernels of one height, width and input depth. Received: {shapes}.")
    from datetime import datetime, timezone

    dtype = np.result_type(*[p.dtype for p in planes])
    values = np.concatenate([p.astype(dtype) for p in planes], axis=3)
    members = ", ".join(k.ref for k in kernels)
    record = {
        "schema_version": 1,
        "name": "bank",
        "version": 0,
        "shape": list(values.shape),
        "dtype": values.dtype.name,
        "layout": "HWIO",
        "operation": "correlation",
        "tags": ["bank"],
        "provenance": {
            "origin": "generated",
            "created_at": datetime.now(timezone.utc).isoformat(),
            "description": f"Bank of {len(kernels)} kernels; output channel i is kernel i of: {members}.",
            "references": [],
        },
        "sha256": content_hash(values),
    }
    return Kernel(record, values, label=f"bank({members})")
