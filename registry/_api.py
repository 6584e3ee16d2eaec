"""Module-level entry points that act on the default registry."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._index import KernelInfo
from ._kernel import Kernel
from ._paths import default_registry_path
from .store import Registry

_default: dict[Path, Registry] = {}


def default_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """The registry used by the module-level functions.

    Resolution: ``path`` if given, else the ``KREG_DB`` environment variable,
    else the platform's user data directory (``platformdirs``). One
    :class:`Registry` is kept per resolved path, so its caches are shared.
    """
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


def add(name: str, values: object, **options: Any) -> Kernel:
    """Add a kernel version to the default registry; see :meth:`Registry.add`."""
    return default_registry().add(name, values, **options)


def list_kernels(
    pattern: str | Sequence[str] = "*",
    exclude: str | Sequence[str] = (),
    tags: Sequence[str] = (),
    **options: Any,
) -> list[KernelInfo]:
    """List kernels of the default registry; see :meth:`Registry.list_kernels`."""
    return default_registry().list_kernels(pattern, exclude, tags, **options)


def remove(ref: str, *, all_versions: bool = False) -> list[str]:
    """Remove a version (or all) from the default registry; see :meth:`Registry.remove`."""
    return default_registry().remove(ref, all_versions=all_versions)


def verify(refs: Sequence[str] = (), **options: Any) -> list[tuple[str, str]]:
    """Check the default registry's kernels; see :meth:`Registry.verify`."""
    return default_registry().verify(refs, **options)


def bank(refs: str | Sequence[str]) -> Kernel:
    """Stack kernels of the default registry into one ``HWIO`` kernel; see :meth:`Registry.bank`."""
    return default_registry().bank(refs)


def add_from_keras(source: Any, layer: str | None = None, *, name: str, **options: Any) -> Kernel:
    """Register a trained Keras layer's kernel; see :func:`registry.tensorflow.add_from_keras`.

    Needs the ``tensorflow`` extra (``pip install 'kreg[tensorflow]'``).
    """
    from . import tensorflow

    return tensorflow.add_from_keras(source, layer, name=name, **options)
