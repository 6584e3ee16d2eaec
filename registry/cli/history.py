"""The commands on what a team says about versions: label, deprecate, and log (the history)."""

from __future__ import annotations

import json

import click

from ..format.names import escape
from ..store.curation import event_details
from ._common import complete_ref, current_registry, tell


@click.command()
@click.argument("ref", shell_complete=complete_ref)
@click.argument("label")
@click.option("--rm", "remove", is_flag=True, help="Take the label away (REF may be the name alone).")
@click.pass_context
def label(ctx: click.Context, ref: str, label: str, remove: bool) -> None:
    """Point LABEL of a kernel at the version REF names (NAME@VERSION; NAME: its latest).

    A label is a word, never a number or 'sha256'. It moves: NAME@LABEL then loads the version
    it points at now. The move commits with its event ('kreg log').

    \b
    Example:
      kreg label team/edge@3 stable
      kreg label team/edge stable --rm
    """
    reg = current_registry(ctx)
    before = reg.label(ref, label, remove=remove)
    name = ref.partition("@")[0]
    if remove:
        click.echo(f"removed label {name}@{label} (was {before})")
        return
    now = reg.labels(name).get(label)
    click.echo(f"{name}@{label} -> {name}@{now}")
    if before is not None and before != f"{name}@{now}":
        tell(f"Moved from {before}.")


@click.command()
@click.argument("ref", shell_complete=complete_ref)
@click.option("--reason", "-r", default="", help="Why, and what to use instead (required), e.g. 'sign bug, use @3'.")
@click.option("--undo", is_flag=True, help="Take the deprecation back.")
@click.pass_context
def deprecate(ctx: click.Context, ref: str, reason: str, undo: bool) -> None:
    """Retire the version REF names (NAME@VERSION or NAME@LABEL) without breaking those who pinned it.

    It still loads by its number or label, with a warning carrying the reason; NAME alone
    loads the latest version not deprecated; 'kreg list' marks it.

    \b
    Example:
      kreg deprecate team/edge@2 --reason 'sign bug, use @3'
      kreg deprecate team/edge@2 --undo
    """
    done = current_registry(ctx).deprecate(ref, reason, undo=undo)
    click.echo(f"{'undeprecated' if undo else 'deprecated'} {done}")


@click.command()
@click.argument("pattern", default="*", shell_complete=complete_ref)
@click.option("--since", metavar="DATE", help="Only events from this date (ISO 8601, UTC unless it says: 2026-12-01).")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
@click.pass_context
def log(ctx: click.Context, pattern: str, since: str | None, as_json: bool) -> None:
    """The history of kernels whose names match PATTERN (a name or a glob; all when none), oldest first.

    Every add, remove, label, deprecation and copy, with who, when and from which machine.

    \b
    Example:
      kreg log
      kreg log 'team/*' --since 2026-12-01
    """
    events = current_registry(ctx).history(pattern, since=since)
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    if not events:
        tell("No events match.")
        return
    lines = []
    for e in events:
        when = str(e.get("at", ""))[:19].replace("T", " ")
        detail = event_details(e)
        text = f"{when}  {e.get('op', '?'):<11} {e.get('ref', '?'):<24} {e.get('by', '?')} ({e.get('host', '?')})"
        lines.append(escape(f"{text}  {detail}".rstrip(), quote=False))  # events may come from a hostile bucket
    click.echo("\n".join(lines))


#: The commands this module adds to the ``kreg`` group.
COMMANDS = [label, deprecate, log]
