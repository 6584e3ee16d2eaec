"""The command that writes the static catalogue of a registry: site."""

from __future__ import annotations

import sys

import click

from ._common import current_registry, show_progress, tell


@click.command()
@click.argument("patterns", nargs=-1)
@click.option("-o", "--output", required=True, metavar="DIR|URL",
              help="Directory to write (new, empty, or an earlier site), or s3://BUCKET/PREFIX (gs://, az://) "
                   "to publish to.")
@click.option("--exclude", multiple=True, help="Leave out names matching this pattern (repeatable).")
@click.pass_context
def site(ctx: click.Context, patterns: tuple[str, ...], output: str, exclude: tuple[str, ...]) -> None:
    """Write a static catalogue of the kernels: an index and a page per name.

    PATTERNS are glob patterns of names (all kernels when none). The site loads nothing from
    outside itself, so it opens from the directory (file://) or from a bucket's static
    website; a rebuild rewrites only what changed. Needs pip install 'kreg[site]'.

    \b
    Example:
      kreg site -o catalogue 'team/*'
      kreg site -o s3://acme-kernels/site/ 'team/*'
    """
    from ..site import build_site

    reg = current_registry(ctx)
    if show_progress():
        bar = click.progressbar(length=0, label="building the site", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.length = total
            bar.update(1)

        with bar:
            report = build_site(reg, output, patterns, exclude=exclude, progress=progress)
    else:
        report = build_site(reg, output, patterns, exclude=exclude)
    click.echo(report.where)
    tell(f"Wrote {len(report.written)} of {report.files} files for {report.names} kernel names"
         + (f", removed {len(report.removed)}" if report.removed else "") + f" ({report.where}/index.html).")


#: The commands this module adds to the ``kreg`` group.
COMMANDS = [site]
