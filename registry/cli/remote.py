"""``kreg copy``: kernels from one registry to another (local or remote), every ``name@v`` kept."""

from __future__ import annotations

import sys
from typing import Any

import click

from .._exceptions import KernelNotFoundError
from ._common import fail, show_progress, tell


def _open(source: str, target: str) -> tuple[Any, Any]:
    """Both registries (a malformed URL of either is the error first), the source known to exist."""
    from ..store import Registry

    src, dst = (Registry(where.removeprefix("file://")) for where in (source, target))
    if not src.backend.exists():
        raise KernelNotFoundError(f"There is no registry at {src.url} to copy from (nothing there). "
                                  "Check the path or URL ('kreg --db SOURCE list').")
    return src, dst


@click.command()
@click.argument("source")
@click.argument("target")
@click.argument("refs", nargs=-1)
@click.option("--latest", is_flag=True, help="Only the newest version of each name (its number is still kept).")
@click.option("--prefix", default="", metavar="NS/", help="Put every name under this namespace in TARGET.")
def copy(source: str, target: str, refs: tuple[str, ...], latest: bool, prefix: str) -> None:
    """Mirror kernels (refs or globs; all when none) from registry SOURCE to TARGET, directories or URLs.

    NAME@V in TARGET is then the same kernel as NAME@V in SOURCE: every version keeps its
    number, numbers SOURCE removed are never issued by TARGET, records are kept and the copy
    is noted in each. A name TARGET already used a number of for other content is refused
    (nothing of it is written); --prefix puts the copy under another namespace. Each name is
    one commit: run the same command again after an interruption, it copies only what is missing.

    \b
    Example:
      kreg copy ~/kreg s3://team-bucket/kernels 'edge/*'
      kreg copy s3://team-bucket/kernels ./offline-copy sobel_team@3
      kreg copy ./theirs ./mine --prefix theirs/
    """
    from ..store.mirror import mirror, plan

    src, dst = _open(source, target)
    chosen = plan(src, refs, latest=latest)
    done: list[Any] = []
    bar = None
    if show_progress():
        bar = click.progressbar(length=sum(map(len, chosen.values())), label="copying", file=sys.stderr)
        bar.__enter__()

    def settled(step: Any) -> None:
        done.append(step)
        if bar is not None:
            bar.update(1)
        else:
            _echo(step)

    try:
        mirror(src, dst, refs, latest=latest, prefix=prefix, progress=settled, chosen=chosen)
    except KeyboardInterrupt:
        if bar is not None:
            bar.__exit__(None, None, None)
        settled_names = {step.source.partition("@")[0] for step in done}
        current = next((name for name in chosen if name not in settled_names), None)
        during = f" {prefix}{current} was being copied: it is there whole or not at all." if current else ""
        fail(f"Interrupted. Before it: {_summary(done, src.url, dst.url)}{during} Run the same command again "
             "to copy the rest (it copies only what is missing).", 130)
    if bar is not None:
        bar.__exit__(None, None, None)
        for step in done:
            _echo(step)
    tell(_summary(done, src.url, dst.url))
    if any(step.action == "refuse" for step in done):
        sys.exit(1)


def _echo(step: Any) -> None:
    if step.action == "refuse":
        click.echo(f"Refused {step.target}: {step.why}.", err=True)
    else:
        label = "copy" if step.action == "copy" else "skip (identical)"
        click.echo(f"{label:<17} {step.source} -> {step.target}")


def _summary(done: list[Any], source: str, target: str) -> str:
    copied = sum(s.action == "copy" for s in done)
    there = sum(s.action == "skip" for s in done)
    refused = sum(s.action == "refuse" for s in done)
    text = f"Copied {copied} kernel versions from {source} to {target}, {there} already there"
    return text + (f", {refused} names refused." if refused else ".")


#: The commands this module adds to the ``kreg`` group.
COMMANDS = [copy]
