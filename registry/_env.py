"""The environment variables kreg reads, parsed in one place.

A value kreg cannot use is a :class:`~registry._exceptions.ConfigError`: one line naming the
variable, what it holds and what it takes (never a ``ValueError`` traceback from ``int()``).
Unset or empty means the default.
"""

from __future__ import annotations

import functools
import math
import os

from ._exceptions import ConfigError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_text(name: str) -> str | None:
    """The variable's value as set (a path may end in a blank), or None when unset or blank."""
    value = os.environ.get(name, "")
    return value if value.strip() else None


def env_number(name: str, default: float, *, what: str, integer: bool = False) -> float:
    """A finite number >= 0 (a whole one when ``integer``), or ``default`` when unset.

    ``what`` completes "Set it to ..." in the message, e.g. ``"a number of seconds"``.
    """
    value = (env_text(name) or "").strip()
    if not value:
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        number = -1
    if number < 0 or not math.isfinite(number):
        raise _bad(name, value, f"{'a whole' if integer else 'a'} number >= 0", what)
    return number


def env_seconds(name: str, default: float) -> float:
    """A duration in seconds (a finite number >= 0), or ``default`` when unset."""
    return env_number(name, default, what="a number of seconds")


def env_flag(name: str, default: bool) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case), or ``default`` when unset."""
    value = (env_text(name) or "").strip()
    if not value:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _bad(name, value, "a yes or no", "1 (on) or 0 (off)")


def _bad(name: str, value: str, expected: str, what: str) -> ConfigError:
    shown = repr(value if len(value) <= 40 else value[:40] + "...")
    return ConfigError(f"The environment variable {name}={shown} is not {expected}. Set it to {what}, "
                       f"or unset it for the default.")


def default_author() -> str:
    """Who is acting, for a version's author and an event's ``by``: ``KREG_AUTHOR``, else git's
    ``user.name <user.email>`` (read with ``git config``, no network), else ``login@host``.

    Example:
        >>> import os; os.environ["KREG_AUTHOR"] = "Ann <ann@example.org>"
        >>> default_author()
        'Ann <ann@example.org>'
        >>> del os.environ["KREG_AUTHOR"]
    """
    given = env_text("KREG_AUTHOR")
    if given is not None:
        text = " ".join(given.split())
        if not text.isprintable() or len(text) > 256:
            raise _bad("KREG_AUTHOR", given, "a printable name of at most 256 characters",
                       "a name such as 'Ann Lee <ann@example.org>'")
        return text
    return _machine_author()


@functools.cache
def _machine_author() -> str:
    # Once per process: a git subprocess costs milliseconds, and who is at the keyboard does
    # not change while kreg runs.
    name, email = _git_config("user.name"), _git_config("user.email")
    if name and email:
        return f"{name} <{email}>"
    if name or email:
        return name or email
    import getpass
    import socket

    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with an arbitrary uid)
        login = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{login}@{socket.gethostname() or 'localhost'}"


def _git_config(key: str) -> str:
    """A value of git's configuration, or "" (no git, no repository, no such key, a slow disk)."""
    import subprocess

    try:
        done = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True, timeout=5,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    value = " ".join(done.stdout.split()) if done.returncode == 0 else ""
    return value if value.isprintable() and len(value) <= 120 else ""
