"""Optional dependencies, imported only when a feature needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from ._exceptions import MissingDependencyError

#: Which extra brings which module.
EXTRAS = {"tensorflow": "tensorflow", "keras": "keras", "torch": "torch", "jax": "jax", "matplotlib": "plot",
          "obstore": "s3"}


def require(module: str, *, feature: str) -> ModuleType:
    """Import ``module`` or say which extra to install for ``feature``.

    Nothing is ever installed at run time.

    Example:
        >>> require("numpy", feature="arrays").__name__
        'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(module.split(".")[0])
        how = f"pip install 'kreg[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise MissingDependencyError(f"{feature} needs {module.split('.')[0]}, which is not installed: {how}") from None
