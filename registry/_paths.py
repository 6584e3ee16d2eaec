"""Where things live: the default registry, the built-in database, the schema files."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ._env import env_text
from ._exceptions import UnsafeFileError

#: Environment variable naming the default registry directory.
ENV_VAR = "KREG_DB"

_PACKAGE = Path(__file__).resolve().parent

#: An object-store URL typed slightly wrong: a scheme kreg serves (any case) followed by
#: something other than exactly "://" (``s3:/b``, ``s3:b``, ``s3//b``) or in capitals (``S3://b``).
_MISTYPED_URL = re.compile(r"(?i)(s3a?|gs|az|azure|abfss?)(:/*|//+)([^/].*)", re.DOTALL)


def check_location(location: str) -> None:
    """Refuse a registry location that is an object-store URL with a typo, before it becomes a
    local folder named ``s3:`` and every write lands on this machine instead of the bucket.

    A folder really named so is still reachable as ``./s3:x``.

    Example:
        >>> check_location("s3:/kernels/team")
        Traceback (most recent call last):
        ...
        registry._exceptions.UnsafeFileError: 's3:/kernels/team' is not a registry URL: did you mean s3://kernels/team? (a local folder of that name is ./s3:/kernels/team)
    """
    match = _MISTYPED_URL.fullmatch(location)
    if match is None:
        return
    scheme, separator, rest = match.groups()
    if separator == "://" and scheme == scheme.lower():
        return  # a well-formed URL
    shown = re.split(r"[?#]", location, maxsplit=1)[0]  # a pasted token is never echoed
    suggestion = re.split(r"[?#]", f"{scheme.lower()}://{rest}", maxsplit=1)[0]
    local = "" if "://" in separator else f" (a local folder of that name is ./{shown})"
    raise UnsafeFileError(f"{shown!r} is not a registry URL: did you mean {suggestion}?{local}")


def default_registry_path() -> Path:
    """The registry used when none is named: ``$KREG_DB``, else the user data directory.

    Example:
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


def read_shipped(path: Path, max_bytes: int) -> bytes:
    """The bytes of a file shipped with kreg, at most ``max_bytes``, opened without following a
    link or waiting on a FIFO: a device (``/dev/zero``) or a runaway file put in its place is
    refused, never read until memory runs out."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafeFileError(f"Cannot open {path}: {exc.strerror or exc}.") from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFileError(f"{path} is not a regular file (a directory, FIFO or device); "
                                  "reinstall kreg to restore it.")
        data = f.read(max_bytes + 1)  # a /proc file says 0 bytes and holds more: the read is the bound
    if len(data) > max_bytes:
        raise UnsafeFileError(f"{path} holds more than the {max_bytes} bytes kreg reads from it; "
                              "reinstall kreg to restore it.")
    return data


def schema_dir() -> Path:
    """The folder of versioned JSON Schema files and the format document."""
    return _shipped("schema")
