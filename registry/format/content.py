"""Kernel values: the dtypes and layouts kreg accepts, the content hash, and what makes two kernels the same."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._exceptions import InvalidKernelError
from .limits import LIMITS

#: Dtypes a stored kernel may have (schema v1); nothing else is read or written.
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "uint8")
#: Layouts kept in a store, with the rank each implies.
STORED_LAYOUTS = {"HW": 2, "HWIO": 4, "HWIM": 4}
#: Layouts accepted on the way in and converted to a stored one.
INPUT_LAYOUTS = {"OIHW": "HWIO"}
#: Layouts ``as_layout`` can give, for each stored layout.
VIEW_LAYOUTS = {
    "HW": ("HW", "HWIO", "OIHW"),
    "HWIO": ("HWIO", "OIHW", "HW"),
    "HWIM": ("HWIM", "HWIO", "OIHW"),
}
#: Most elements one kernel may hold (2**31: 8 GiB of float32).
MAX_ELEMENTS = LIMITS.max_elements


def refuse_masked(values: object, what: str = "The kernel values") -> None:
    """A numpy masked array carries a mask no kreg file can hold: refused, never silently
    stripped of it (``np.asarray`` would); the caller picks what the masked entries become."""
    if isinstance(values, np.ma.MaskedArray):
        raise InvalidKernelError(
            f"{what} came as a numpy masked array ({int(np.ma.count_masked(values))} of {values.size} values "
            "masked); kreg stores plain arrays and would drop the mask. Pass values.filled(x) with the value "
            "the masked entries should take (e.g. values.filled(0))."
        )


def check_values(values: object, *, dtype: str | None = None) -> np.ndarray:
    """Return ``values`` as a C-ordered array of an allowed dtype, or explain why not.

    Arrays keep their dtype unless ``dtype`` is given; nested lists and other
    array-likes become float32 by default. Values must be finite.

    Raises:
        InvalidKernelError: for an unknown dtype, a lossy integer cast,
            an empty or oversized array, NaN / infinity, or a masked array.
    """
    if dtype is not None and dtype not in DTYPES:
        raise InvalidKernelError(
            f"dtype must be one of {', '.join(DTYPES)}. Received: dtype={dtype!r}."
        )
    refuse_masked(values)
    if isinstance(values, np.ndarray):
        array = values
    else:
        try:
            with np.errstate(over="ignore"):  # 1e40 -> inf is reported below, in words
                array = np.asarray(values)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidKernelError(
                f"Kernel values must be a numeric array or nested lists of equal lengths. "
                f"Received: {type(values).__name__} ({exc})."
            ) from None
        if dtype is None and array.dtype.kind in "biuf":
            dtype = "float32"
    if array.dtype.kind not in "biuf":
        raise InvalidKernelError(
            f"Kernel values must be numbers. Received: dtype {array.dtype} "
            f"(allowed: {', '.join(DTYPES)})."
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidKernelError(
            "Kernel values must be finite; found NaN or infinity. "
            f"Received: {int((~np.isfinite(array)).sum())} non-finite of {array.size} values."
        )
    if dtype is not None:
        target = np.dtype(dtype)
        if target.kind == "f" and array.dtype.kind in "biuf" and array.size:
            largest = float(np.abs(array).max())
            if largest > float(np.finfo(target).max):
                raise InvalidKernelError(
                    f"The values do not fit in {dtype}: the largest magnitude is {largest:.6g} and {dtype} "
                    f"holds up to {float(np.finfo(target).max):.6g}. Pick a wider dtype (float64) "
                    "or rescale the values."
                )
        with np.errstate(over="ignore", invalid="ignore"):
            cast = array.astype(target)
        if target.kind in "iu" and not np.array_equal(cast, array):
            raise InvalidKernelError(
                f"Casting the values to {dtype} would change them (out of range or not "
                f"whole numbers). Pick a wider dtype. Received: dtype {array.dtype}."
            )
        array = cast
    elif array.dtype.name not in DTYPES:
        raise InvalidKernelError(
            f"Kernel dtype {array.dtype} is not stored by kreg; allowed: {', '.join(DTYPES)}. "
            f"Convert it (dtype=\"float32\" in Python, --dtype float32 on the command line)."
        )
    if array.size == 0 or 0 in array.shape:
        raise InvalidKernelError(f"A kernel needs at least one value. Received: shape={array.shape}.")
    if array.size > MAX_ELEMENTS:
        raise InvalidKernelError(
            f"A kernel holds at most {MAX_ELEMENTS} values. Received: shape={array.shape}."
        )
    # Always a private copy: the Kernel made from it is read-only, the caller's array is not.
    return np.array(array, dtype=array.dtype.newbyteorder("<"), order="C", copy=True)


def to_stored_layout(
    array: np.ndarray, layout: str, *, convolution: bool = False
) -> tuple[np.ndarray, str, str | None]:
    """Convert ``array`` given in ``layout`` to a stored layout.

    Args:
        array: the checked values.
        layout: one of the stored layouts or an input layout such as ``OIHW``.
        convolution: the values are a true-convolution kernel; flip both
            spatial axes so that they compute the same thing as a correlation.

    Returns:
        ``(values, stored_layout, source_layout)`` where ``source_layout`` is
        ``None`` when no conversion happened.
    """
    allowed = [*STORED_LAYOUTS, *INPUT_LAYOUTS]
    if layout not in allowed:
        raise InvalidKernelError(
            f"layout must be one of {', '.join(allowed)}. Received: layout={layout!r}."
        )
    rank = STORED_LAYOUTS.get(layout, 4)
    if array.ndim != rank:
        raise InvalidKernelError(
            f"Layout {layout} needs values of rank {rank}. Received: shape={array.shape} "
            f"(rank {array.ndim}). " + _layout_hint(array.ndim)
        )
    source = None
    if layout == "OIHW":
        array, source, layout = array.transpose(2, 3, 1, 0), "OIHW", "HWIO"
    if convolution:
        array = array[::-1, ::-1]
    return np.ascontiguousarray(array), layout, source


def _layout_hint(ndim: int) -> str:
    if ndim == 2:
        return "A single plane is layout='HW'."
    if ndim == 4:
        return "A full kernel is layout='HWIO' (Keras) or 'OIHW' (PyTorch)."
    return "Kernels are 2-D (HW) or 4-D (HWIO, HWIM, OIHW)."


def as_layout(array: np.ndarray, stored: str, target: str) -> np.ndarray:
    """View or copy a stored kernel in another layout.

    ``HW`` becomes ``HWIO``/``OIHW`` with single in and out channels;
    ``HWIO`` with one in and one out channel becomes ``HW``; ``HWIM`` becomes
    the ``(H, W, 1, C*M)`` / ``(C*M, 1, H, W)`` grouped-convolution weight that
    TensorFlow and PyTorch use for a depthwise layer.

    Example:
        >>> a = np.arange(4.0).reshape(2, 2)
        >>> as_layout(a, "HW", "OIHW").shape
        (1, 1, 2, 2)
    """
    allowed = VIEW_LAYOUTS[stored]
    if target not in allowed:
        raise InvalidKernelError(
            f"A {stored} kernel can be given as {', '.join(allowed)}. Received: layout={target!r}."
        )
    if stored == "HW":
        hwio = array[:, :, None, None]
    elif stored == "HWIM":
        h, w, c, m = array.shape
        hwio = array.reshape(h, w, 1, c * m)
    else:
        hwio = array
    if target == stored:
        return array
    if target == "HWIO":
        return hwio
    if target == "OIHW":
        return np.ascontiguousarray(hwio.transpose(3, 2, 0, 1))
    if array.shape[2:] != (1, 1):
        raise InvalidKernelError(
            f"Only an HWIO kernel with one input and one output channel is a single HW "
            f"plane. Received: shape={array.shape}."
        )
    return array[:, :, 0, 0]


def content_hash(array: np.ndarray) -> str:
    """sha256 of the canonical bytes: a header naming dtype and shape, then the
    values little-endian in C order.

    Example:
        >>> content_hash(np.zeros((1, 1), "<f4"))[:16]
        'dc8dc1b31b26dda3'
    """
    data = np.ascontiguousarray(array, array.dtype.newbyteorder("<"))
    header = f"kreg-v1:{array.dtype.name}:{','.join(map(str, array.shape))}\n"
    digest = hashlib.sha256(header.encode("ascii"))
    digest.update(memoryview(data).cast("B"))
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a whole file, read a megabyte at a time (a checkpoint, a pack)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def identity(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two stored kernels the same kernel: values, dtype and shape (all in
    ``sha256``), layout and bias.

    ``sha256`` alone is not identity: an ``HWIO`` and an ``HWIM`` kernel with equal values
    share it, and so do two learned layers that differ only in their bias.
    """
    bias = record.get("bias")
    return (
        record.get("sha256"),
        record.get("layout"),
        tuple(record.get("shape") or ()),
        record.get("dtype"),
        None if bias is None else tuple(float(b) for b in bias),
    )


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether records ``a`` and ``b`` describe the same kernel (see :func:`identity`).

    A writer that dedupes (``add`` returning the latest version, ``import`` skipping a
    kernel) MUST use this: anything else is a new version, never silently the old one.

    Example:
        >>> a = {"sha256": "ab" * 32, "layout": "HWIO", "shape": [1, 1, 1, 1], "dtype": "float32"}
        >>> same_content(a, {**a, "layout": "HWIM"}), same_content(a, {**a, "bias": [0.5]})
        (False, False)
    """
    return identity(a) == identity(b)


def record_problems(record: Mapping[str, Any], values: np.ndarray, *, check_hash: bool = True) -> list[str]:
    """What in ``record`` does not hold for ``values``: the claims a record makes about
    its own values that a schema cannot check.

    - ``sha256``, ``shape`` and ``dtype`` describe ``values``;
    - ``bias`` and the ``separable`` factors are finite numbers;
    - ``outer(column, row)`` equals the values up to the rounding of their dtype, so a
      layer built from the factors computes what the hash-checked values compute.

    Args:
        record: the kernel record (a dict as stored).
        values: its values.
        check_hash: also hash the values (a writer that just computed the hash skips it).

    Returns:
        One sentence per problem; empty when the record is truthful.
    """
    problems = []
    if list(record.get("shape") or ()) != list(values.shape) or record.get("dtype") != values.dtype.name:
        problems.append(
            f"the record says {record.get('shape')} {record.get('dtype')}, the values are "
            f"{list(values.shape)} {values.dtype.name}"
        )
        return problems
    if check_hash and record.get("sha256") != content_hash(values):
        problems.append("the values do not match the recorded sha256")
    for what, numbers in (("bias", record.get("bias")),
                          ("separable column", (record.get("separable") or {}).get("column")),
                          ("separable row", (record.get("separable") or {}).get("row"))):
        if numbers is not None and not all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers):
            problems.append(f"the {what} holds NaN, infinity or a non-number")
    factors = record.get("separable")
    if factors is not None and not problems:
        problem = separable_problem(factors["column"], factors["row"], values)
        if problem:
            problems.append(problem)
    return problems


def separable_problem(column: Any, row: Any, values: np.ndarray) -> str | None:
    """Why ``outer(column, row)`` is not ``values`` (``None`` when it is, to the dtype's rounding)."""
    col = np.asarray(column, dtype=np.float64)
    rw = np.asarray(row, dtype=np.float64)
    if values.ndim != 2 or (col.size, rw.size) != values.shape:
        return f"separable factors of lengths {col.size} and {rw.size} cannot make a {values.shape} kernel"
    exact = values.astype(np.float64)
    worst = float(np.abs(np.outer(col, rw) - exact).max())
    scale = float(np.abs(exact).max())
    # Stored values are the product rounded to their dtype: allow a few units of that rounding
    # (integers: the product must round to them).
    if values.dtype.kind == "f":
        tolerance = 4 * float(np.finfo(values.dtype).eps) * scale
    else:
        tolerance = 0.5
    if not worst <= tolerance:  # also catches a NaN product
        return (
            f"outer(column, row) differs from the values by up to {worst:.3g} (scale {scale:.3g}): "
            "the factors would compute another kernel"
        )
    return None
