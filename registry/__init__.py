"""kreg: a registry and serialization format for convolution kernels.

``import registry`` is cheap: NumPy and h5py only. The pydantic schema models
load on first use, and TensorFlow only inside the adapters.

Example:
    >>> import registry                              # doctest: +SKIP
    >>> k = registry.load("sobel_x")                 # doctest: +SKIP
    >>> k.array, k.spec                              # doctest: +SKIP
"""

import typing as _typing

from ._api import add, add_from_keras, bank, default_registry, list_kernels, load, remove, verify
from ._batch import add_predicted, stack
from ._exceptions import (
    ConfigError,
    DeprecatedKernelWarning,
    IntegrityError,
    InvalidKernelError,
    InvalidNameError,
    KernelNotFoundError,
    KregError,
    KregWarning,
    LockTimeoutError,
    MissingDependencyError,
    ProbeMismatchError,
    ReadOnlyError,
    RemoteError,
    SchemaVersionError,
    StoreWriteError,
    UnsafeFileError,
)
from ._version import __version__
from .format.rows import KernelInfo
from .kernels.kernel import Kernel
from .store import Registry

if _typing.TYPE_CHECKING:
    from .format.spec import KernelRecord, Provenance

__all__ = [
    "ConfigError",
    "DeprecatedKernelWarning",
    "IntegrityError",
    "InvalidKernelError",
    "InvalidNameError",
    "Kernel",
    "KernelInfo",
    "KernelNotFoundError",
    "KernelRecord",
    "KregError",
    "KregWarning",
    "LockTimeoutError",
    "MissingDependencyError",
    "ProbeMismatchError",
    "Provenance",
    "ReadOnlyError",
    "Registry",
    "RemoteError",
    "SchemaVersionError",
    "StoreWriteError",
    "UnsafeFileError",
    "__version__",
    "add",
    "add_from_keras",
    "add_predicted",
    "bank",
    "default_registry",
    "list_kernels",
    "load",
    "remove",
    "stack",
    "verify",
]

_LAZY = {"KernelRecord", "Provenance"}


def __getattr__(name: str) -> _typing.Any:
    # The pydantic models cost ~90 ms to build; load them only when asked for.
    if name in _LAZY:
        from .format import spec as _spec

        return getattr(_spec, name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")
