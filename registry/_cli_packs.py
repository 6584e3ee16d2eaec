"""``kreg export``, ``kreg import`` and ``kreg keygen``: kernel packs between teams."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._cli import _info, _registry, _show_progress, cli, fail


def _progress(items: list, label: str):  # type: ignore[no-untyped-def]
    """A progress bar on stderr for a person at a terminal; silent otherwise or with --quiet."""
    if not _show_progress() or len(items) < 20:
        return _Silent(items)
    return click.progressbar(items, label=label, file=sys.stderr)


class _Silent:
    def __init__(self, items: list) -> None:
        self.items = items

    def __enter__(self) -> list:
        return self.items

    def __exit__(self, *exc: object) -> None:
        return None


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write: a pack (.h5), or one kernel with --format.")
@click.option("--format", "fmt", type=click.Choice(["pack", "npy", "safetensors", "json"]), default="pack",
              show_default=True, help="pack: kreg's HDF5 pack; npy/safetensors/json: one kernel's values for other tools.")
@click.option("--name", help="Pack name recorded in the manifest (default: the file name).")
@click.option("--author", help="Author recorded in the manifest.")
@click.option("--sign", "key", metavar="KEY", help="Sign the manifest with this private key file (see kreg keygen).")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.pass_context
def export(ctx: click.Context, refs: tuple[str, ...], output: Path, fmt: str, name: str | None,
           author: str | None, key: str | None, force: bool) -> None:
    """Export kernels (refs or glob patterns) to a pack for another team, or one kernel to a file.

    \b
    Example:
      kreg export sobel_x sobel_y 'team/*' -o edges.h5 --author 'Vision team'
      kreg export edges.h5 ... --sign ~/.kreg/key
      kreg export team/edge --format npy -o edge.npy
    """
    reg = _registry(ctx)
    kernels = reg.resolve(refs)
    if fmt != "pack":
        if len(kernels) != 1:
            fail(f"--format {fmt} writes one kernel; {len(kernels)} matched. Use a pack for several.", 2)
        if output.exists() and not force:
            fail(f"{output} exists; pass --force to replace it.", 2)
        from ._files import write_safetensors, write_values

        if fmt == "safetensors":  # PyTorch's keys (weight, bias) and the record as metadata
            write_safetensors(kernels[0], output)
        else:
            write_values(kernels[0].array, output, fmt)
        click.echo(str(output))
        return
    from ._pack import write_pack
    from ._signing import read_key

    signing_key = read_key(key, what="--sign") if key else None
    with _progress(kernels, "checking") as items:
        pairs = [(k._record, k.array) for k in items]
    write_pack(output, pairs, name=name or output.stem, author=author, signing_key=signing_key, overwrite=force)
    click.echo(str(output))
    _info(f"Exported {len(pairs)} kernels to {output}{' (signed)' if key else ''}.")


@cli.command("import")
@click.argument("pack", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only show what would be added, versioned or skipped.")
@click.option("--prefix", default="", help="Namespace put before every name, e.g. team/.")
@click.option("--trust", "trusted", multiple=True, metavar="PUBKEY",
              help="Require a signature by this public key (hex or .pub file; repeatable).")
@click.pass_context
def import_(ctx: click.Context, pack: Path, dry_run: bool, prefix: str, trusted: tuple[str, ...]) -> None:
    """Import a pack all or nothing: every kernel checked before anything is added.

    Identical content is skipped, other content under a known name becomes a new version,
    and each record notes the pack it came in.

    \b
    Example:
      kreg import edges.h5 --dry-run
      kreg import edges.h5 --prefix vision/ --trust vision.pub
    """
    from ._pack import import_pack
    from ._signing import read_key

    keys = [read_key(t, what="--trust").hex() for t in trusted]
    report = import_pack(_registry(ctx), pack, prefix=prefix, dry_run=dry_run, trusted_keys=keys)
    if report.pack.signer is None:
        _info(f"Notice: {pack} is unsigned; its origin is not verified.")
    elif not keys:
        _info(f"Notice: {pack} is signed by key {report.pack.signer[:16]}..., which you did not --trust.")
    verbs = {"add": "add", "version": "new version", "skip": "skip (identical)"}
    for step in report.steps:
        click.echo(f"{verbs[step.action]:<17} {step.source} -> {step.result}")
    counts = {a: sum(s.action == a for s in report.steps) for a in verbs}
    summary = f"{counts['add']} added, {counts['version']} new versions, {counts['skip']} skipped"
    _info(("Dry run: would do " if dry_run else "Imported: ") + summary + ".")


@cli.command()
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file to write (mode 0600); the public key goes to OUTPUT.pub.")
@click.option("--force", is_flag=True, help="Replace existing key files.")
def keygen(output: Path, force: bool) -> None:
    """Make an ed25519 key pair for signing packs.

    \b
    Example:
      kreg keygen -o ~/.kreg/key
      kreg export 'team/*' -o team.h5 --sign ~/.kreg/key
      kreg import team.h5 --trust ~/.kreg/key.pub
    """
    from ._signing import keygen as make

    private, public, public_hex = make(output, overwrite=force)
    click.echo(public_hex)
    _info(f"Wrote {private} (keep it secret) and {public} (share it).")
