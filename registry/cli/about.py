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

    from ..store.cache import open_cache

    reg = current_registry(ctx)
    rows = reg.list_kernels(all_versions=True)
    builtin = sum(row.builtin for row in rows)
    cache = open_cache()
    lines = [
        ("kreg", md.version("kreg")),
        ("registry", reg.url),  # a URL as given: a Path would fold az:// into az:/
        ("endpoint", _endpoint(reg.url)),
        ("kernel versions", str(len(rows) - builtin)),
        ("built-ins", f"{reg.builtin_path} ({builtin} kernels)"),
        ("cache", "off (KREG_CACHE_BYTES=0)" if cache is None else
         f"{cache.path} ({_size(cache.used_bytes())} of {_size(cache.max_bytes)})"),
        ("python", sys.version.split()[0]),
        ("numpy", np.__version__),
        ("h5py", h5py.version.version),
        ("HDF5", h5py.version.hdf5_version),
    ]
    # from the installed metadata alone: importing keras or torch would take seconds
    for package, extra in (("obstore", "s3"), ("keras", "keras"), ("torch", "torch"), ("tensorflow", "tensorflow"),
                           ("jax", "jax"), ("safetensors", "torch"), ("matplotlib", "plot")):
        try:
            lines.append((package, md.version(package)))
        except md.PackageNotFoundError:
            lines.append((package, f"not installed (pip install 'kreg[{extra}]')"))
    for key, value in lines:
        click.echo(f"{key + ':':<17}{value}")


def _endpoint(url: str) -> str:
    """The server a registry URL is on, as the environment names it (a local directory has none)."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if not scheme:
        return "none (a local directory)"
    from ..store.clients import cache_space

    where = cache_space(scheme, url).partition("\n")[2].strip()
    if not where:  # Azure without an account or emulator named
        return "Azure Blob Storage (no AZURE_STORAGE_ACCOUNT_NAME set)"
    return {"aws": "AWS S3 (no AWS_ENDPOINT_URL set)", "gcs": "Google Cloud Storage"}.get(where, where)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


#: The commands this module adds to the ``kreg`` group.
COMMANDS = [schema, families, info]
