"""Where things live: the default registry, the built-in database, the schema files."""

from __future__ import annotations

from pathlib import Path

from ._env import env_text

#: Environment variable naming the default registry directory.
ENV_VAR = "KREG_DB"

_PACKAGE = Path(__file__).resolve().parent


def default_registry_path() -> Path:
    """The registry used when none is named: ``$KREG_DB``, else the user data directory.

    Example:
        >>> import os
        >>> os.environ["KREG_DB"] = "/tmp/kreg-example"
        >>> default_registry_path()
        PosixPath('/tmp/kreg-example')
        >>> del os.environ["KREG_DB"]
    """
    env = env_text(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs  # only here: explicit paths never pay for it

    return platformdirs.user_data_path("kreg", appauthor=False) / "registry"


def _shipped(relative: str) -> Path:
    # In a wheel the files sit in registry/_data; in a source checkout (editable
    # install) they are the repository's own top-level folders.
    packaged = _PACKAGE / "_data" / relative
    return packaged if packaged.exists() else _PACKAGE.parent / relative


def builtin_db_path() -> Path:
    """The built-in kernel database shipped with kreg (it may not exist in a bare checkout)."""
    return _shipped("kernels_db/builtin.h5")


def schema_dir() -> Path:
    """The folder of versioned JSON Schema files and the format document."""
    return _shipped("schema")
