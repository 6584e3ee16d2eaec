"""``kreg schema``, ``kreg families`` and ``kreg info``: what kreg knows about its format, families and set-up."""

from __future__ import annotations

import json
import sys

import click
import numpy as np

from ._common import current_registry, tell


@click.command()
@click.option("--version", "version", type=int, default=None, help="Schema version (default: the current one).")
def schema(version: int | None) -> None:
    """Print the JSON Schema of a kernel record.

    \b
    Example:
      kreg schema > kernel-record.schema.json
    """
    from ..format.spec import SCHEMA_VERSION, json_schema

    click.echo(json.dumps(json_schema(SCHEMA_VERSION if version is None else version), indent=2, sort_keys=True))


@click.command()
@click.argument("patterns", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print families, parameters and defaults as JSON.")
def families(patterns: tuple[str, ...], as_json: bool) -> None:
    """List the kernel families and their parameters with defaults.

    A family makes a kernel on the fly: kreg show NAME -p KEY=VALUE, or
    kreg add my/NAME --family NAME -p KEY=VALUE; in Python, registry.load(NAME, key=value).

    \b
    Example:
      kreg families
      kreg families 'gauss*'
      kreg show gaussian -p sigma=2 -p ksize=9
    """
    from ..format.names import match
    from ..kernels.families import FAMILIES

    names = match(FAMILIES, patterns or ("*",))
    if as_json:
        click.echo(json.dumps([{"name": n, "parameters": dict(FAMILIES[n].params), "layout": FAMILIES[n].layout,
                                "description": FAMILIES[n].description} for n in names], indent=2))
        return
    if not names:
        tell("No families match.")
        return
    width = max(len(n) for n in names)
    for n in names:
        family = FAMILIES[n]
        params = " ".join(f"{k}={_param_text(v)}" for k, v in family.params.items()) or "(no parameters)"
        click.echo(f"{n:<{width}}  {params}")
        click.echo(f"{'':<{width}}  {family.description}")


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = f"{value:.6g}"
        return text if any(c in text for c in ".en") else text + ".0"  # a float stays visibly a float
    return str(value)


@click.command()
@click.pass_context
def info(ctx: click.Context) -> None:
    """Where the registry and the built-ins live, and the versions in use.

    \b
    Example:
      kreg info
    """
    import importlib.metadata as md

    import h5py

    reg = current_registry(ctx)
    rows = reg.list_kernels(all_versions=True)
    builtin = sum(row.builtin for row in rows)
    lines = [
        ("kreg", md.version("kreg")),
        ("registry", reg.url),  # a URL as given: a Path would fold az:// into az:/
        ("kernel versions", str(len(rows) - builtin)),
        ("built-ins", f"{reg.builtin_path} ({builtin} kernels)"),
        ("python", sys.version.split()[0]),
        ("numpy", np.__version__),
        ("h5py", h5py.version.version),
        ("HDF5", h5py.version.hdf5_version),
    ]
    try:
        lines.append(("tensorflow", md.version("tensorflow")))
    except md.PackageNotFoundError:
        lines.append(("tensorflow", "not installed (pip install 'kreg[tensorflow]')"))
    for key, value in lines:
        click.echo(f"{key + ':':<17}{value}")


#: The commands this module adds to the ``kreg`` group.
COMMANDS = [schema, families, info]
