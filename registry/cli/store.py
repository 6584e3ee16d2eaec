"""``kreg fsck``: check the whole store, and rebuild its index from the kernels' own records."""

from __future__ import annotations

import click

from ..format.names import escape
from ._common import current_registry, fail, tell


@click.command()
@click.option("--repair", is_flag=True,
              help="Rebuild the index from the objects' own records; set aside what cannot be placed.")
@click.pass_context
def fsck(ctx: click.Context, repair: bool) -> None:
    """Check the registry: index against objects, hashes, orphans, leftovers, foreign files, links.

    Exits 1 when a problem is found. With --repair, the index is rebuilt from every good
    object (no version number is ever issued twice) and damaged or orphaned objects are
    moved to attic/ in the registry, never deleted. Links and FIFOs are never touched.

    \b
    Example:
      kreg fsck
      kreg fsck --repair
    """
    reg = current_registry(ctx)
    report = reg.fsck(repair=repair)
    for key, problem in report.problems:
        click.echo(f"{_shown(key)}: {_shown(problem)}", err=True)
    if repair:
        click.echo(f"Rebuilt the index of {reg.url}: {report.kernels} kernel versions "
                   f"({report.adopted} not in the old index), {len(report.set_aside)} set aside.")
        for path in report.set_aside:
            click.echo(f"set aside: {_shown(path)}")
        return
    if report.problems:
        fail(f"{len(report.problems)} problem(s) in {reg.url}. 'kreg fsck --repair' rebuilds the index.", 1)
    tell(f"{reg.url}: {report.kernels} kernel versions, no problems.")


def _shown(text: str) -> str:
    """Plain text as it is; anything with control or non-ASCII characters escaped (names on disk
    can hold terminal escape sequences)."""
    return text if text.isprintable() and text.isascii() else escape(text)


#: The commands this module adds to the ``kreg`` group.
COMMANDS = [fsck]
