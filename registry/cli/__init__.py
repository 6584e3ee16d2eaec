"""The ``kreg`` command line: a thin click layer over the library (see :mod:`registry.cli._common`).

Each module adds its commands to the one group below: ``listing`` (list), ``kernels`` (show, add,
rm, verify, diff, plot), ``history`` (label, deprecate, log), ``packs`` (export, import, keygen),
``remote`` (copy), ``store`` (fsck), ``site`` (site) and ``about`` (schema, families, info).
"""

from __future__ import annotations

from pathlib import Path

import click

from . import about, history, kernels, listing, packs, remote, site, store
from ._common import KregGroup, Location


@click.group(cls=KregGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", type=Location(), envvar="KREG_DB",
              help="Registry directory or URL (s3://BUCKET/PREFIX, gs://, az://; default: $KREG_DB, "
                   "else the user data directory).")
@click.option("-q", "--quiet", is_flag=True, help="No messages on stderr, only data on stdout.")
@click.version_option(package_name="kreg", prog_name="kreg")
@click.pass_context
def cli(ctx: click.Context, db: Path | str | None, quiet: bool) -> None:
    """kreg: a registry of convolution kernels you can trust.

    \b
    Example:
      kreg list 'sobel*'
      kreg show sobel_x
      kreg add team/edge --values '[[1, 0, -1]]' --description 'step'
    """
    ctx.obj = {"db": db, "quiet": quiet, "registry": None}




for _module in (listing, kernels, history, packs, remote, store, site, about):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Entry point of the ``kreg`` console script."""
    cli(prog_name="kreg")
