"""Optional dependencies, imported only when a feature needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from ._exceptions import MissingDependencyError

#: Which extra brings which module.
EXTRAS = {"tensorflow": "tensorflow", "keras": "keras", "torch": "torch", "jax": "jax", "matplotlib": "plot",
          "obstore": "s3",
          "jinja2": "site"}


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


def require_keras() -> ModuleType:
    """Keras, or an error that says whether Keras or its backend is what is missing."""
    import importlib.util
    import os

    if importlib.util.find_spec("keras") is None:
        return require("keras", feature="The Keras adapter (registry.keras)")
    try:
        import keras as module
    except ImportError as exc:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        extra = backend if backend in ("jax", "torch") else "tensorflow"
        raise MissingDependencyError(
            f"The Keras adapter (registry.keras) needs a Keras backend: KERAS_BACKEND={backend} could not be "
            f"imported ({exc}). Install it (pip install 'kreg[{extra}]'), "
            f"or set KERAS_BACKEND to jax or torch where that is installed."
        ) from None
    return module
