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

from .._exceptions import InvalidKernelError
from ..format.names import did_you_mean
from . import filters as f

ParamValue = bool | int | float
#: Most planes a Gabor bank makes (64 planes of 511x511 float32 is 64 MB).
MAX_ORIENTATIONS = 64


@dataclass(frozen=True)
class Family:
    """A generator of kernels: its parameters, their types and defaults, and what it is."""

    name: str
    make: Callable[..., np.ndarray]
    params: Mapping[str, ParamValue]
    description: str
    references: tuple[str, ...] = ()
    layout: str = "HW"
    #: What the weights are scaled to: a fixed text, or a function of the resolved parameters.
    normalization: str | Callable[[Mapping[str, ParamValue]], str] | None = None
    tags: tuple[str, ...] = field(default=())

    def normalization_text(self, params: Mapping[str, ParamValue]) -> str | None:
        """The normalization of the kernel these (resolved) parameters make, in words."""
        return self.normalization(params) if callable(self.normalization) else self.normalization

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
    if not 1 <= orientations <= MAX_ORIENTATIONS:
        raise InvalidKernelError(
            f"orientations must be from 1 to {MAX_ORIENTATIONS}. Received: orientations={orientations}."
        )
    planes = [
        f.get_gabor_kernel2d(ksize=ksize, sigma=sigma, theta=math.pi * i / orientations, lambd=lambd,
                             gamma=gamma, psi=psi)
        for i in range(orientations)
    ]
    return np.stack(planes, axis=-1)[:, :, None, :]


def _times(factor: float) -> str:
    """`` / 8`` or `` x 0.3`` or ``""``: a scale factor in words."""
    if factor == 1:
        return ""
    if factor == -1:
        return ", negated"
    inverse = 1 / factor
    if abs(inverse - round(inverse)) < 1e-9:
        return f" / {round(inverse)}" if inverse > 0 else f", negated, / {-round(inverse)}"
    return f" x {factor:.6g}"


def _derivative_text(integer: str, order: Callable[[Mapping[str, ParamValue]], int]) -> Callable[..., str]:
    """Normalization text of a smoothed derivative family with ``unit`` and ``scale`` parameters."""

    def text(params: Mapping[str, ParamValue]) -> str:
        scale = float(params["scale"])
        if params["unit"]:
            if order(params) == 1:
                return f"unit scale{_times(scale)}: a unit ramp gives {scale:g}"
            return f"unit scale{_times(scale)}: a unit polynomial gives {'its' if scale == 1 else f'{scale:g} x its'} derivative"
        return integer + _times(scale)

    return text


def _order(params: Mapping[str, ParamValue]) -> int:
    return int(params.get("dx", 0)) + int(params.get("dy", 0))


_CV = "https://docs.opencv.org/4.x/d4/d86/group__imgproc__filter.html"
_SOBEL = "I. Sobel, G. Feldman, 'A 3x3 isotropic gradient operator for image processing', 1968"
FAMILIES: dict[str, Family] = {
    fam.name: fam
    for fam in [
        Family("sobel", f.get_sobel_kernel2d, {"ksize": 3, "dx": 1, "dy": 0, "unit": False, "scale": 1.0},
               "Sobel derivative as cv2.Sobel / cv2.getDerivKernels compute it.", (_CV, _SOBEL),
               normalization=_derivative_text("OpenCV's integer weights", _order), tags=("edge",)),
        Family("scharr", f.get_scharr_kernel2d, {"dx": 1, "dy": 0, "unit": False, "scale": 1.0},
               "Scharr 3x3 first derivative (3, 10, 3), as cv2.Scharr.",
               (_CV, "H. Scharr, 'Optimale Operatoren in der digitalen Bildverarbeitung', 2000"),
               normalization=_derivative_text("OpenCV's integer weights (3, 10, 3)", _order), tags=("edge",)),
        Family("prewitt", f.get_prewitt_kernel2d, {"dx": 1, "dy": 0, "unit": False, "scale": 1.0},
               "Prewitt 3x3 first derivative.",
               ("J. M. S. Prewitt, 'Object enhancement and extraction', 1970",),
               normalization=_derivative_text("integer weights", _order), tags=("edge",)),
        Family("farid", f.get_farid_kernel2d, {"dx": 1, "dy": 0},
               "Farid & Simoncelli 5x5 first derivative.",
               ("H. Farid, E. P. Simoncelli, 'Differentiation of discrete multidimensional signals', "
                "IEEE TIP 13(4), 2004",), normalization="as published", tags=("edge",)),
        Family("laplacian", f.get_laplacian_kernel2d, {"ksize": 1, "neighbours": 4, "scale": 1.0},
               "Laplacian as cv2.Laplacian (ksize 1, 3, 5, 7) or the 8-neighbour stencil.", (_CV,),
               normalization=lambda p: "OpenCV's integer weights, sum 0" + _times(float(p["scale"])),
               tags=("edge", "second-derivative")),
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
               "Box (mean) filter, as cv2.blur.", (_CV,),
               normalization=lambda p: "sums to 1" if p["normalize"] else "all ones (unnormalized)",
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
        Family("roberts", f.get_roberts_kernel2d, {"negative": False, "scale": 1.0},
               "Roberts cross 2x2 diagonal difference.",
               ("L. G. Roberts, 'Machine perception of three-dimensional solids', 1963",),
               normalization=lambda p: "integer weights" + _times(float(p["scale"])), tags=("edge",)),
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
        from .._exceptions import KernelNotFoundError

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
    normalization: str | None = None,
) -> dict[str, Any]:
    """The record of values generated by ``family`` with ``params``, validated against the schema.

    Rank-1 ``HW`` kernels get their separable factors, in their familiar form where one
    exists (see :func:`familiar_factors`). ``normalization`` replaces the family's text.
    """
    from ..format.content import content_hash
    from ..format.spec import KernelRecord

    factors = separable_factors(values) if family.layout == "HW" else None
    if factors is not None:
        factors = familiar_factors(*factors, values)
    record = {
        "name": name,
        "version": version,
        "shape": values.shape,
        "dtype": values.dtype.name,
        "layout": family.layout,
        "normalization": normalization or family.normalization_text(params),
        "separable": {"column": factors[0].tolist(), "row": factors[1].tolist()} if factors else None,
        "tags": sorted({*family.tags, *tags}),
        "provenance": {
            "origin": origin,
            "created_at": created_at,
            "author": author,
            "description": family.description if description is None else description,
            "references": list(dict.fromkeys([*family.references, *references])),  # each once, in order
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


def familiar_factors(column: np.ndarray, row: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same outer product, written the way people know it.

    Whole numbers where both factors can be (Sobel: ``[1, 2, 1]`` x ``[-1, 0, 1]``); else a
    column that sums to 1 (Gaussian: each factor sums to 1; unit Sobel: ``[1, 2, 1] / 4`` x
    ``[-0.5, 0, 0.5]``); else the SVD's balanced pair. The signs make the column's sum
    positive (or, for a zero-sum column, the row's). The result is kept only when its outer
    product reproduces ``kernel`` as well as the SVD's did.

    Example:
        >>> col, row = separable_factors(f.get_sobel_kernel2d(ksize=3, dx=1, dy=0))
        >>> [v.tolist() for v in familiar_factors(col, row, f.get_sobel_kernel2d(ksize=3, dx=1, dy=0))]
        [[1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]]
    """
    k = np.asarray(kernel, dtype=np.float64)
    # As good as the SVD's pair, with room for the rounding of a rescaled float pair.
    tolerance = max(2 * float(np.abs(np.outer(column, row) - k).max()), 1e-7 * float(np.abs(k).max()))
    candidates = []
    for base in (column, row):
        nonzero = np.abs(base[np.abs(base) > 1e-12 * np.abs(base).max()])
        for multiple in range(1, 17):  # [2, 3] is whole only as a multiple of its smallest entry
            s = multiple / nonzero.min() if base is column else nonzero.min() / multiple
            c, r = np.round(column * s), np.round(row / s)
            candidates.append((c, r))
    if abs(column.sum()) > 1e-9 * np.abs(column).sum():
        candidates.append((column / column.sum(), row * column.sum()))
    if abs(row.sum()) > 1e-9 * np.abs(row).sum():
        candidates.append((column * row.sum(), row / row.sum()))
    candidates.append((column, row))
    for c, r in candidates:
        if (np.sign(c.sum()) or np.sign(r.sum())) < 0:
            c, r = -c, -r
        # Shortest decimals first: 0.25, not 0.25000000000000006 (float32 precision, as the values).
        for pair in ((_tidy(c), _tidy(r)), (c, r)):
            if np.abs(np.outer(*pair) - k).max() <= tolerance:
                return pair[0] + 0.0, pair[1] + 0.0  # + 0.0: no -0.0
    return column, row


def _tidy(v: np.ndarray) -> np.ndarray:
    return np.array([float(str(np.float32(x))) for x in v])


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
