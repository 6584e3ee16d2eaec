"""The exceptions kreg raises, one tree for the library and the CLI alike.

Every error derives from :class:`KregError` and also from the builtin that
matches its meaning, so ``except KeyError`` and ``except ValueError`` keep
working for callers who do not know kreg::

    KregError
    ├── KernelNotFoundError      (KeyError)     unknown name or version
    ├── InvalidNameError         (ValueError)   name or ref breaks the grammar
    ├── InvalidKernelError       (ValueError)   values, shape, dtype or layout refused
    ├── SchemaVersionError       (ValueError)   record written by a newer kreg
    ├── IntegrityError           (ValueError)   stored bytes do not match their sha256
    ├── UnsafeFileError          (ValueError)   a file refused by the guarded reader
    ├── ConfigError              (ValueError)   an environment variable kreg cannot use
    ├── ProbeMismatchError       (ValueError)   an emitted layer failed the probe check
    ├── ReadOnlyError            (PermissionError)  write to the built-ins
    ├── LockTimeoutError         (TimeoutError) another writer held the lock too long
    ├── StoreWriteError          (OSError)      the disk refused a write; nothing was committed
    ├── RemoteError              (ConnectionError)  object storage unreachable, refused or missing
    └── MissingDependencyError   (ImportError)  an optional extra is not installed

    KregWarning                  (UserWarning)  kreg did what was asked, and says what to know
    └── DeprecatedKernelWarning                 a deprecated version was loaded (the reason says why)

Messages say what happened, what was expected and how to fix it; the CLI
prints them as one ``Error: ...`` line.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeprecatedKernelWarning",
    "IntegrityError",
    "InvalidKernelError",
    "InvalidNameError",
    "KernelNotFoundError",
    "KregError",
    "KregWarning",
    "LockTimeoutError",
    "MissingDependencyError",
    "ProbeMismatchError",
    "ReadOnlyError",
    "RemoteError",
    "SchemaVersionError",
    "StoreWriteError",
    "UnsafeFileError",
]


class KregError(Exception):
    """Base class of every error kreg raises on purpose."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message; every kreg error reads as prose.
        return str(self.args[0]) if self.args else self.__class__.__name__


class KernelNotFoundError(KregError, KeyError):
    """No kernel with that name, or no such version of it."""


class InvalidNameError(KregError, ValueError):
    """A kernel name or ``name@version`` ref that breaks the grammar."""


class InvalidKernelError(KregError, ValueError):
    """Values, shape, dtype or layout that kreg cannot store."""


class SchemaVersionError(KregError, ValueError):
    """A record whose schema version this kreg cannot read."""


class IntegrityError(KregError, ValueError):
    """Stored values whose sha256 differs from the one recorded."""


class UnsafeFileError(KregError, ValueError):
    """A file the guarded reader refused before reading any values from it."""


class ConfigError(KregError, ValueError):
    """An environment variable kreg reads holds a value it cannot use (``KREG_CACHE_BYTES=lots``)."""


class ProbeMismatchError(KregError, ValueError):
    """An emitted layer or tensor did not compute what the registered kernel says on the probe."""


class ReadOnlyError(KregError, PermissionError):
    """A write aimed at something kreg keeps read-only (the built-ins)."""


class LockTimeoutError(KregError, TimeoutError):
    """Another writer held the registry lock for longer than allowed."""


class StoreWriteError(KregError, OSError):
    """A write to the registry failed (disk full, I/O error); nothing was committed."""


class RemoteError(KregError, ConnectionError):
    """Object storage could not be used: unreachable, credentials refused, bucket missing, throttled."""


class MissingDependencyError(KregError, ImportError):
    """An optional extra is needed and not installed."""


class KregWarning(UserWarning):
    """Base class of every warning kreg gives: the operation went ahead."""


class DeprecatedKernelWarning(KregWarning):
    """A deprecated kernel version was loaded; the message carries the reason it was retired."""


class LayoutWarning(KregWarning):
    """Weights whose shape reads better in another layout than the one given (stored as given)."""


def too_new(where: str, what: str, found: object, supported: int) -> SchemaVersionError:
    """The error for a file or record written by a newer kreg, naming both versions."""
    return SchemaVersionError(
        f"{where} uses kreg {what} version {found}, but this kreg reads {what} versions up to "
        f"{supported}. Upgrade kreg (pip install -U kreg) to read it."
    )
