"""Parametric kernel families: named generators with typed, recorded parameters.

``registry.load("gaussian", sigma=2.0, ksize=9)`` builds a kernel from a family; the
family and its parameters are recorded, so ``verify`` can regenerate stored values and
compare them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _filters as f
from ._exceptions import InvalidKernelError
from ._names import did_you_mean

ParamValue = bool | int | float


@dataclass(frozen=True)
class Family:
    """A generator of kernels: its parameters, their types and defaults, and what it is."""

    name: str
    make: Callable[..., np.ndarray]
    params: Mapping[str, ParamValue]
    description: str
    references: tuple[str, ...] = ()
    layout: str = "HW"
    normalization: str | None = None
    tags: tuple[str, ...] = field(default=())

    def resolve(self, params: Mapping[str, Any]) -> dict[str, ParamValue]:
        """Defaults filled in and every value converted to its parameter's type.

        Raises:
            InvalidKernelError: an unknown parameter or a value of the wrong type.
        """
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise InvalidKernelError(
                f"Family {self.name!r} has no parameter {unknown[0]!r}; it takes "
                f"{', '.join(f'{k}={v!r}' for k, v in self.params.items())}."
            )
        return {key: _convert(self.name, key, params.get(key, default), default)
                for key, default in self.params.items()}

    def generate(self, params: Mapping[str, Any], *, dtype: str = "float32") -> np.ndarray:
        """The kernel for ``params`` (resolved first), cast to ``dtype``."""
        values = self.make(**self.resolve(params))
        return np.ascontiguousarray(values, dtype=dtype)


def _convert(family: str, key: str, value: Any, default: ParamValue) -> ParamValue:
    kind = type(default)
    if isinstance(value, str):
        text = value.strip().lower()
        if kind is bool and text in ("true", "false", "1", "0", "yes", "no"):
            return text in ("true", "1", "yes")
        try:
            value = float(text) if kind is float else int(text)
        except ValueError:
            pass
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if kind is float and isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        if math.isfinite(float(value)):
            return float(value)
    raise InvalidKernelError(
        f"Parameter {key!r} of family {family!r} is a {kind.__name__}. Received: {key}={value!r}."
    )


def _gabor_bank(*, ksize: int, sigma: float, lambd: float, gamma: float, psi: float, orientations: int) -> np.ndarray:
    if orientations < 1:
        raise InvalidKernelError(f"orientations must be >= 1. Received: orientations={orientations}.")
    planes = [
        f.get_gabor_kernel2d(ksize=ksize, sigma=sigma, theta=math.pi * i / orientations, lambd=lambd,
                             gamma=gamma, psi=psi)
        for i in range(orientations)
    ]
    return np.stack(planes, axis=-1)[:, :, None, :]


_CV = "https://docs.opencv.org/4.x/d4/d86/group__imgproc__filter.html"
_SOBEL = "I. Sobel, G. Feldman, 'A 3x3 isotropic gradient operator for image processing', 1968"
FAMILIES: dict[str, Family] = {
    fam.name: fam
    for fam in [
        Family("sobel", f.get_sobel_kernel2d, {"ksize": 3, "dx": 1, "dy": 0, "unit": False, "scale": 1.0},
               "Sobel derivative as cv2.Sobel / cv2.getDerivKernels compute it.", (_CV, _SOBEL),
               normalization="OpenCV scale (unit=True: a unit polynomial gives its derivative)", tags=("edge",)),
        Family("scharr", f.get_scharr_kernel2d, {"dx": 1, "dy": 0, "unit": False, "scale": 1.0},
               "Scharr 3x3 first derivative (3, 10, 3), as cv2.Scharr.",
               (_CV, "H. Scharr, 'Optimale Operatoren in der digitalen Bildverarbeitung', 2000"),
               normalization="OpenCV scale (unit=True: a unit ramp gives 1)", tags=("edge",)),
        Family("prewitt", f.get_prewitt_kernel2d, {"dx": 1, "dy": 0, "unit": False, "scale": 1.0},
               "Prewitt 3x3 first derivative.",
               ("J. M. S. Prewitt, 'Object enhancement and extraction', 1970",),
               normalization="integer weights (unit=True: a unit ramp gives 1)", tags=("edge",)),
        Family("farid", f.get_farid_kernel2d, {"dx": 1, "dy": 0},
               "Farid & Simoncelli 5x5 first derivative.",
               ("H. Farid, E. P. Simoncelli, 'Differentiation of discrete multidimensional signals', "
                "IEEE TIP 13(4), 2004",), normalization="as published", tags=("edge",)),
        Family("laplacian", f.get_laplacian_kernel2d, {"ksize": 1, "neighbours": 4},
               "Laplacian as cv2.Laplacian (ksize 1, 3, 5, 7) or the 8-neighbour stencil.", (_CV,),
               normalization="OpenCV scale", tags=("edge", "second-derivative")),
        Family("gaussian", f.get_gaussian_kernel2d, {"ksize": 0, "sigma": 0.0},
               "Gaussian as cv2.GaussianBlur applies it (ksize from sigma or sigma from ksize).", (_CV,),
               normalization="sums to 1", tags=("smoothing",)),
        Family("gaussian_derivative", f.get_gaussian_derivative_kernel2d,
               {"ksize": 0, "sigma": 1.0, "dx": 1, "dy": 0},
               "Derivative of a Gaussian.", ("J. J. Koenderink, 'The structure of images', 1984",),
               normalization="a unit polynomial of the order gives its derivative", tags=("edge",)),
        Family("log", f.get_log_kernel2d, {"ksize": 0, "sigma": 1.4},
               "Laplacian of Gaussian.", ("D. Marr, E. Hildreth, 'Theory of edge detection', 1980",),
               normalization="sums to 0; (x^2 + y^2) / 2 gives 2", tags=("blob", "second-derivative")),
        Family("dog", f.get_dog_kernel2d, {"ksize": 0, "sigma1": 1.0, "sigma2": 1.6},
               "Difference of Gaussians G(sigma1) - G(sigma2).",
               ("D. Marr, E. Hildreth, 'Theory of edge detection', 1980",), normalization="sums to 0",
               tags=("blob",)),
        Family("box", f.get_box_kernel2d, {"ksize": 3, "normalize": True},
               "Box (mean) filter, as cv2.blur.", (_CV,), normalization="sums to 1 when normalized",
               tags=("smoothing",)),
        Family("binomial", f.get_binomial_kernel2d, {"ksize": 3},
               "Binomial smoothing (Pascal's triangle).", (), normalization="sums to 1", tags=("smoothing",)),
        Family("identity", f.get_identity_kernel2d, {"ksize": 3},
               "One at the centre.", (), normalization="sums to 1"),
        Family("unsharp", f.get_unsharp_kernel2d, {"ksize": 5, "sigma": 0.0, "amount": 1.0},
               "Unsharp masking: identity + amount * (identity - gaussian).", (),
               normalization="sums to 1", tags=("sharpen",)),
        Family("sharpen", f.get_sharpen_kernel2d, {}, "3x3 sharpen: identity minus the 4-neighbour Laplacian.",
               (), normalization="sums to 1", tags=("sharpen",)),
        Family("emboss", f.get_emboss_kernel2d, {}, "3x3 emboss, light from the top left.", (),
               normalization="sums to 1", tags=("stylize",)),
        Family("roberts", f.get_roberts_kernel2d, {"negative": False},
               "Roberts cross 2x2 diagonal difference.",
               ("L. G. Roberts, 'Machine perception of three-dimensional solids', 1963",),
               normalization="integer weights", tags=("edge",)),
        Family("gabor", f.get_gabor_kernel2d,
               {"ksize": 0, "sigma": 4.0, "theta": 0.0, "lambd": 10.0, "gamma": 0.5, "psi": math.pi / 2},
               "Gabor filter exactly as cv2.getGaborKernel.", (_CV,), normalization="unnormalized (peak 1)",
               tags=("texture",)),
        Family("gabor_bank", _gabor_bank,
               {"ksize": 21, "sigma": 4.0, "lambd": 10.0, "gamma": 0.5, "psi": math.pi / 2, "orientations": 8},
               "Gabor filters at `orientations` evenly spaced angles from 0 to pi, one output channel each.",
               (_CV,), layout="HWIO", normalization="unnormalized (peak 1)", tags=("texture", "bank")),
    ]
}


def get_family(name: str) -> Family:
    """The family called ``name``, or an error that lists the close ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        from ._exceptions import KernelNotFoundError

        raise KernelNotFoundError(
            f"No kernel family named {name!r}.{did_you_mean(name, FAMILIES)} "
            f"Families: {', '.join(FAMILIES)}."
        ) from None


def record_for(
    family: Family,
    params: Mapping[str, ParamValue],
    values: np.ndarray,
    *,
    name: str,
    version: int,
    origin: str,
    created_at: str,
    description: str | None = None,
    references: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    license: str | None = None,
    author: str | None = None,
) -> dict[str, Any]:
    """The record of values generated by ``family`` with ``params``, validated against the schema.

    Rank-1 ``HW`` kernels get their separable factors.
    """
    from ._content import content_hash
    from ._spec import KernelRecord

    factors = separable_factors(values) if family.layout == "HW" else None
    record = {
        "name": name,
        "version": version,
        "shape": values.shape,
        "dtype": values.dtype.name,
        "layout": family.layout,
        "normalization": family.normalization,
        "separable": {"column": factors[0].tolist(), "row": factors[1].tolist()} if factors else None,
        "tags": sorted({*family.tags, *tags}),
        "provenance": {
            "origin": origin,
            "created_at": created_at,
            "author": author,
            "description": family.description if description is None else description,
            "references": [*family.references, *references],
            "license": license,
            "generator": {"family": family.name, "parameters": dict(params)},
        },
        "sha256": content_hash(values),
    }
    return KernelRecord.model_validate(record).model_dump(mode="json", exclude_none=True)


def generate_kernel(name: str, params: Mapping[str, Any], *, dtype: str = "float32") -> tuple[dict[str, Any], np.ndarray]:
    """``(record, values)`` of a kernel made on the fly from family ``name`` (version 0: not stored)."""
    from datetime import datetime, timezone

    family = get_family(name)
    resolved = family.resolve(params)
    values = family.generate(resolved, dtype=dtype)
    record = record_for(family, resolved, values, name=family.name, version=0, origin="generated",
                        created_at=datetime.now(timezone.utc).isoformat(), license="CC0-1.0")
    return record, values


def separable_factors(kernel: np.ndarray, *, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray] | None:
    """``(column, row)`` with ``outer(column, row) == kernel`` if the kernel has rank 1, else None.

    Found by SVD and accepted only when the outer product reproduces the kernel to
    ``rtol`` of its largest magnitude. The row's first largest entry is made positive.

    Example:
        >>> col, row = separable_factors(f.get_sobel_kernel2d(ksize=3, dx=1, dy=0))
        >>> np.allclose(np.outer(col, row), f.get_sobel_kernel2d(ksize=3, dx=1, dy=0))
        True
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2:
        return None
    u, s, vt = np.linalg.svd(k)
    if s[0] == 0:
        return None
    column, row = u[:, 0] * math.sqrt(s[0]), vt[0] * math.sqrt(s[0])
    # The first entry of (nearly) largest magnitude is made positive: with a plain argmax, a tie
    # such as Sobel's +-2 flipped the sign with the last bit of the SVD, machine to machine.
    magnitude = np.abs(row)
    if row[np.flatnonzero(magnitude >= magnitude.max() * (1 - 1e-9))[0]] < 0:
        column, row = -column, -row
    if np.abs(np.outer(column, row) - k).max() > rtol * np.abs(k).max():
        return None
    return column, row


def regenerate_problems(record: Mapping[str, Any], values: np.ndarray) -> list[str]:
    """What differs when a generated kernel is rebuilt from its recorded family and parameters."""
    generator = (record.get("provenance") or {}).get("generator")
    if not generator:
        return []
    try:
        family = get_family(generator["family"])
        again = family.generate(generator.get("parameters", {}), dtype=values.dtype.name)
    except Exception as exc:  # a family removed or changed since: report, do not crash verify
        return [f"cannot regenerate from {generator['family']!r}: {exc}"]
    if again.shape != values.shape:
        return [f"regenerated shape {again.shape} differs from the stored {values.shape}"]
    scale = float(np.abs(again).max()) or 1.0
    worst = float(np.abs(again.astype(np.float64) - values.astype(np.float64)).max())
    if worst > 1e-6 * scale:
        return [f"regenerated values differ from the stored ones by up to {worst:.3g}"]
    return []
