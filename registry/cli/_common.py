"""What every ``kreg`` command shares: the group class that turns library errors into one-line
messages and exit codes, the registry in use, messages for people, and name completion.

Exit codes: 0 success, 1 failure (damage found, lock timeout, ...), 2 bad usage or bad input.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import click

from .._exceptions import (
    ConfigError,
    InvalidKernelError,
    InvalidNameError,
    KernelNotFoundError,
    KregError,
    KregWarning,
    ReadOnlyError,
    SchemaVersionError,
    UnsafeFileError,
)
from .._paths import check_location
from ..store import Registry

#: Errors that mean "the input was wrong" (exit 2); every other KregError exits 1.
BAD_INPUT = (ConfigError, InvalidKernelError, InvalidNameError, KernelNotFoundError, ReadOnlyError,
             SchemaVersionError, UnsafeFileError)


#: The options of ``kreg`` itself, given before the command.
GROUP_OPTIONS = ("--db", "-q", "--quiet")


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


class KregGroup(click.Group):
    """Runs a command and turns any KregError into ``Error: ...`` and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", KregWarning)  # every deprecated load is said, once each
                warnings.showwarning = _one_line
                return super().invoke(ctx)
        except click.NoSuchOption as exc:
            if exc.option_name in GROUP_OPTIONS:  # 'kreg import pack.h5 --db X': an option of kreg itself
                exc.message += (f" {exc.option_name} is an option of kreg itself: put it before the command, "
                                f"e.g. 'kreg {exc.option_name} ... {ctx.invoked_subcommand or 'COMMAND'} ...'.")
            raise
        except BAD_INPUT as exc:
            fail(str(exc), 2)
        except KregError as exc:
            fail(str(exc), 1)
        except BrokenPipeError:  # `kreg list | head`: the reader left; nothing to say
            os._exit(1)
        except OSError as exc:  # the machine said no (permissions, a full disk): one line, never a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}.", 1)


def _one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              file: Any = None, line: str | None = None) -> None:
    """A kreg warning as one ``Warning: ...`` line on stderr (shown even with --quiet: it is about
    the data printed); any other warning as Python shows it."""
    if issubclass(category, KregWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def complete_ref(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of kernel names (``kreg show sob<Tab>``) from the registry in use."""
    from click.shell_completion import CompletionItem

    try:
        from .._api import default_registry

        reg = default_registry(ctx.find_root().params.get("db"))
        names = [row.name for row in reg.list_kernels(incomplete + "*")]
        if "@" in incomplete:
            name = incomplete.partition("@")[0]
            names = [f"{name}@{v}" for v in reg.versions(name) if f"{name}@{v}".startswith(incomplete)]
    except Exception:  # completion must never print a traceback into the user's shell
        return []
    return [CompletionItem(name) for name in names]


def current_registry(ctx: click.Context) -> Registry:
    obj = ctx.find_root().obj
    if obj.get("registry") is None:
        from .._api import default_registry

        obj["registry"] = default_registry(obj.get("db"))
    return obj["registry"]


def show_progress() -> bool:
    """Progress bars are for a person at a terminal: never with --quiet or when piped."""
    return not click.get_current_context().find_root().obj.get("quiet") and sys.stderr.isatty()


def tell(message: str) -> None:
    """A message for people: stderr, silent with --quiet."""
    if not click.get_current_context().find_root().obj.get("quiet"):
        click.echo(message, err=True)


class Location(click.ParamType):
    """--db: a registry directory, or an object-store URL kept as it is."""

    name = "PATH|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        text = str(value)
        try:
            check_location(text)  # before a Path folds 's3//b' into 's3/b'
        except UnsafeFileError as exc:
            self.fail(str(exc), param, ctx)  # parsing happens before KregGroup.invoke: click's exit 2
        if "://" in text and not text.startswith("file://"):
            return text
        return click.Path(file_okay=False, path_type=Path).convert(text.removeprefix("file://"), param, ctx)


