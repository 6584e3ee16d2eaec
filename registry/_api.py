"""Module-level entry points that act on the default registry."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._env import env_text
from ._exceptions import InvalidKernelError
from ._paths import ENV_VAR, check_location, default_registry_path
from .format.rows import KernelInfo
from .kernels.kernel import Kernel
from .store import Registry

_default: dict[Path | str, Registry] = {}


def default_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """The registry used by the module-level functions.

    Resolution: ``path`` if given, else the ``KREG_DB`` environment variable,
    else the platform's user data directory (``platformdirs``). One
    :class:`Registry` is kept per resolved path, so its caches are shared.
    """
    location = os.fspath(path) if path else (env_text(ENV_VAR) or "")
    if not isinstance(path, os.PathLike):  # a Path object is a path by choice, even one named 's3:x'
        check_location(location)  # before a Path folds 's3//b' into 's3/b'
    resolved: Path | str
    if "://" in location and not location.startswith("file://"):
        resolved = location  # an object-store URL: no path to resolve
    else:
        resolved = Path(path).expanduser().absolute() if path else default_registry_path().absolute()
    reg = _default.get(resolved)
    if reg is None or reg._closed:
        reg = _default[resolved] = Registry(resolved)
    return reg


def load(ref: str, *, verify: bool = True, **params: Any) -> Kernel:
    """Load ``"name"`` (latest), ``"name@version"``, or a family with parameters.

    See :meth:`Registry.load`.

    Example:
        >>> import registry
        >>> registry.load("sobel_x@1").array
        array([[-1.,  0.,  1.],
               [-2.,  0.,  2.],
               [-1.,  0.,  1.]], dtype=float32)
        >>> registry.load("gaussian", ksize=3, sigma=0.0).array * 16
        array([[1., 2., 1.],
               [2., 4., 2.],
               [1., 2., 1.]], dtype=float32)
    """
    return default_registry().load(ref, verify=verify, **params)


def add(
    name: str,
    values: object,
    *,
    layout: str | None = None,
    dtype: str | None = None,
    convolution: bool = False,
    description: str = "",
    tags: Sequence[str] = (),
    license: str | None = None,
    author: str | None = None,
    references: Sequence[str] = (),
    origin: str | None = None,
    normalization: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    separable: Mapping[str, Sequence[float]] | None = None,
    bias: Sequence[float] | None = None,
    inherit: bool = True,
) -> Kernel:
    """Add a kernel version to the default registry; see :meth:`Registry.add` for the arguments.

    Example:
        >>> import registry                                          # doctest: +SKIP
        >>> registry.add("team/edge", [[1, 0, -1]], description="step").ref  # doctest: +SKIP
        'team/edge@1'
    """
    return default_registry().add(
        name, values, layout=layout, dtype=dtype, convolution=convolution, description=description, tags=tags,
        license=license, author=author, references=references, origin=origin, normalization=normalization,
        provenance=provenance, separable=separable, bias=bias, inherit=inherit,
    )


def list_kernels(
    pattern: str | Sequence[str] = "*",
    exclude: str | Sequence[str] = (),
    tags: Sequence[str] = (),
    *,
    origin: str | None = None,
    all_versions: bool = False,
) -> list[KernelInfo]:
    """List kernels of the default registry; see :meth:`Registry.list_kernels`."""
    return default_registry().list_kernels(pattern, exclude, tags, origin=origin, all_versions=all_versions)


def remove(ref: str, *, all_versions: bool = False) -> list[str]:
    """Remove a version (or all) from the default registry; see :meth:`Registry.remove`."""
    return default_registry().remove(ref, all_versions=all_versions)


def verify(refs: Sequence[str] = (), *, progress: Callable[[str], object] | None = None) -> list[tuple[str, str]]:
    """Check the default registry's kernels; see :meth:`Registry.verify`."""
    return default_registry().verify(refs, progress=progress)


def bank(kernels: str | Kernel | Sequence[str | Kernel]) -> Kernel:
    """Stack kernels into one ``HWIO`` kernel, one output channel each, in the order given.

    Args:
        kernels: refs, glob patterns (resolved in the default registry) and
            :class:`Kernel` objects (say, ``load("gaussian", sigma=2)``), mixed freely.

    Raises:
        InvalidKernelError: an item that is neither a ref nor a Kernel, or kernels of
            different height, width or input depth.

    Example:
        >>> import registry
        >>> registry.bank(["sobel_x", registry.load("sobel_y")]).shape
        (3, 3, 1, 2)
    """
    return default_registry().bank(kernels)


def add_from_keras(
    source: Any,
    layer: str | None = None,
    *,
    name: str,
    registry: Registry | None = None,
    description: str = "",
    tags: Sequence[str] = (),
    license: str | None = None,
    author: str | None = None,
    references: Sequence[str] = (),
    inherit: bool = True,
) -> Kernel:
    """Register a trained Keras ``Conv2D`` / ``DepthwiseConv2D`` kernel with its provenance.

    The adapter converts (:func:`registry.keras.from_layer`); this adds. Needs ``keras`` and a
    backend (``pip install 'kreg[tensorflow]'``, or ``keras`` with jax or torch).

    Example:
        >>> registry.add_from_keras("model.keras", "conv1", name="team/conv1")   # doctest: +SKIP
    """
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        # before importing Keras, which brings its backend (TensorFlow: seconds and a page of log)
        raise InvalidKernelError(f"No such model file: {os.fspath(source)}. Give the path of a saved Keras model "
                                 "(.keras), or a model or layer object.")
    from . import keras

    reg = default_registry() if registry is None else registry
    return add_converted(reg, name, keras.from_layer(source, layer), description=description, tags=tags,
                         license=license, author=author, references=references, inherit=inherit)


def add_converted(reg: Registry, name: str, kernel: Kernel, **options: Any) -> Kernel:
    """Store a kernel an adapter converted (``from_layer``), keeping its origin, source and source layout."""
    prov = kernel._record.get("provenance", {})
    kept = {key: prov[key] for key in ("source", "source_layout") if prov.get(key)}
    if options.get("origin") is None:
        options["origin"] = prov.get("origin")
    bias = None if kernel.bias is None else kernel.bias.tolist()
    return reg.add(name, kernel.array, layout=kernel.layout, bias=bias,
                   provenance={**kept, **options.pop("provenance", {})}, **options)
