"""``kreg export``, ``kreg import`` and ``kreg keygen``: kernel packs between teams."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..adapters.files import WRITERS
from ._common import complete_ref, current_registry, fail, show_progress, tell


def _progress(items: list, label: str):  # type: ignore[no-untyped-def]
    """A progress bar on stderr for a person at a terminal; silent otherwise or with --quiet."""
    if not show_progress() or len(items) < 20:
        return _Silent(items)
    return click.progressbar(items, label=label, file=sys.stderr)


class _Silent:
    def __init__(self, items: list) -> None:
        self.items = items

    def __enter__(self) -> list:
        return self.items

    def __exit__(self, *exc: object) -> None:
        return None


@click.command()
@click.argument("refs", nargs=-1, required=True, shell_complete=complete_ref)
@click.option("-o", "--output", required=True, metavar="FILE",
              help="The file to write, or - for stdout. Its suffix names the format: .h5 (pack), .npy, .npz, "
                   ".safetensors, .json.")
@click.option("--format", "fmt", type=click.Choice(["pack", *WRITERS]), default=None,
              help="pack: kreg's HDF5 pack (default for other suffixes); npy/json: one kernel; npz/safetensors: "
                   "several kernels, each under its name. Must agree with the suffix.")
@click.option("--layout", type=click.Choice(["HW", "HWIO", "HWIM", "OIHW"]),
              help="Layout of the written values (not for packs), e.g. OIHW for PyTorch.")
@click.option("--no-bias", is_flag=True, help="Leave recorded biases out (a .npy file cannot hold one).")
@click.option("--name", help="Pack name recorded in the manifest (default: the file name).")
@click.option("--author", help="Author recorded in the manifest.")
@click.option("--sign", "key", metavar="KEY", help="Sign the manifest with this private key file (see kreg keygen).")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.pass_context
def export(ctx: click.Context, refs: tuple[str, ...], output: str, fmt: str | None, layout: str | None,
           no_bias: bool, name: str | None, author: str | None, key: str | None, force: bool) -> None:
    """Export kernels (refs or glob patterns) to a pack for another team, or to files other tools read.

    Prints the path written.

    \b
    Example:
      kreg export sobel_x sobel_y 'team/*' -o edges.h5 --author 'Vision team'
      kreg export 'team/*' -o team.h5 --sign ~/.kreg/key
      kreg export team/edge -o edge.npy
      kreg export 'sobel*' -o sobel.npz --layout OIHW
      kreg export team/edge --format json -o - | jq .record
    """
    from ..adapters.files import export_format, write_kernels

    fmt = export_format(output, fmt)
    if output != "-":
        _check_output(Path(output), force)
    reg = current_registry(ctx)
    kernels = reg.resolve(refs)
    if fmt != "pack":
        if key:
            fail("--sign signs packs only; --format pack or an .h5 file.", 2)
        _emit(output, write_kernels(kernels, fmt, layout=layout, bias=not no_bias))
        tell(f"Exported {len(kernels)} kernel{'s' if len(kernels) != 1 else ''} as {fmt} to "
              f"{'stdout' if output == '-' else output}.")
        return
    if layout is not None:
        fail("A pack keeps each kernel in its stored layout; --layout is for npy, npz, safetensors and json.", 2)
    from ..format.pack import write_pack
    from ..format.signing import read_key

    signing_key = read_key(key, what="--sign") if key else None
    with _progress(kernels, "checking") as items:
        pairs = [(k._record, k.array) for k in items]
    if output == "-":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kreg-export-") as tmp:
            written = write_pack(Path(tmp) / "pack.h5", pairs, name=name or "pack", author=author,
                                 signing_key=signing_key)
            _emit(output, written.read_bytes())
    else:
        path = Path(output)
        write_pack(path, pairs, name=name or path.stem, author=author, signing_key=signing_key, overwrite=force)
        click.echo(str(path))
    tell(f"Exported {len(pairs)} kernels to {'stdout' if output == '-' else output}{' (signed)' if key else ''}.")


def _check_output(path: Path, force: bool) -> None:
    """Refuse, before any work, an output that cannot be written: no folder, a folder, or an existing file."""
    if path.is_dir():
        fail(f"{path} is a directory; give a file name, e.g. {path / 'kernels.h5'}.", 2)
    if not path.parent.is_dir():
        fail(f"The folder {path.parent} does not exist; create it first (mkdir -p {path.parent}).", 2)
    if path.exists() and not force:
        fail(f"{path} exists; pass --force to replace it.", 2)


def _emit(output: str, data: bytes) -> None:
    """Write ``data`` to stdout (``-``) or atomically to the file ``output``, then print the path."""
    if output == "-":
        sys.stdout.flush()
        stream = sys.stdout.buffer
        if stream.isatty() and not data[:1] in (b"{", b"["):
            fail("Refusing to write binary data to a terminal; redirect it (> file) or use --format json.", 2)
        stream.write(data)
        stream.flush()
        return
    import os
    import tempfile

    path = Path(output)
    fd, tmp = tempfile.mkstemp(prefix=".kreg-export-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    click.echo(str(path))


@click.command("import")
@click.argument("pack", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only show what would be added, versioned or skipped.")
@click.option("--prefix", default="", help="Namespace put before every name, e.g. team/.")
@click.option("--trust", "trusted", multiple=True, metavar="PUBKEY",
              help="Require a signature by this public key (hex or .pub file; repeatable).")
@click.option("--allow-downgrade", is_flag=True,
              help="Import a signed pack older than one already imported from the same key and pack name.")
@click.pass_context
def import_(ctx: click.Context, pack: Path, dry_run: bool, prefix: str, trusted: tuple[str, ...],
            allow_downgrade: bool) -> None:
    """Import a pack all or nothing: every kernel checked before anything is added.

    Identical content is skipped, other content under a known name becomes a new version,
    and each record notes the pack it came in.

    \b
    Example:
      kreg import edges.h5 --dry-run
      kreg import edges.h5 --prefix vision/ --trust vision.pub
    """
    from ..store.packs import import_pack

    keys = [_trusted_key(t) for t in trusted]
    reg = current_registry(ctx)
    shown = _StepBar()
    try:
        report = import_pack(reg, pack, prefix=prefix, dry_run=dry_run, trusted_keys=keys,
                             allow_downgrade=allow_downgrade, progress=shown.update)
    except KeyboardInterrupt:
        shown.close()
        _interrupted(reg, pack, shown.steps)
    shown.close()
    if report.pack.signer is None:
        tell(f"Notice: {pack} is unsigned; its origin is not verified.")
    elif not keys:
        tell(f"Notice: {pack} is signed by key {report.pack.signer[:16]}..., which you did not --trust.")
    verbs = {"add": "add", "version": "new version", "skip": "skip (identical)"}
    for step in report.steps:
        click.echo(f"{verbs[step.action]:<17} {step.source} -> {step.result}")
    counts = {a: sum(s.action == a for s in report.steps) for a in verbs}
    summary = f"{counts['add']} added, {counts['version']} new versions, {counts['skip']} skipped"
    tell(("Dry run: would do " if dry_run else "Imported: ") + summary + ".")


class _StepBar:
    """Import progress for a person at a terminal (a bar once the plan is known), and the steps
    seen, so that an interrupt can be told truly."""

    def __init__(self) -> None:
        self.steps: list = []
        self.bar: Any = None

    def update(self, step: Any, done: int, total: int) -> None:
        self.steps.append(step)
        if self.bar is None and show_progress() and total >= 20:
            self.bar = click.progressbar(length=total, label="importing", file=sys.stderr)
            self.bar.__enter__()
            self.bar.update(done - 1)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _interrupted(reg: Any, pack: Path, steps: list) -> None:
    """Ctrl-C during an import: say whether it was committed, from what the store holds now (the
    interrupt may land before the commit, when nothing was, or just after it)."""
    from ..format.names import parse_ref

    staged = [s for s in steps if s.action != "skip"]
    landed = False
    if staged:
        ref = parse_ref(staged[0].result)
        try:
            reg._state.forget()
            landed = ref.version in reg.versions(ref.name)
        except Exception:  # noqa: BLE001 - the store cannot be read now: claim nothing
            fail(f"Interrupted while importing {pack}; whether it was committed could not be checked. "
                 "'kreg list' shows it (a pack imports all or nothing).", 130)
    if landed:
        fail(f"Interrupted after the import of {pack} was committed: its kernels are in the registry "
             "('kreg list' shows them).", 130)
    fail(f"Interrupted: nothing was imported from {pack}; the registry is as it was (a pack imports all or "
         "nothing). Run the command again to import it.", 130)


def _trusted_key(value: str) -> str:
    """The hex public key a --trust value names, or an error that says what was given instead."""
    from ..format.signing import read_key

    path = Path(value)
    if path.is_file() and path.suffix != ".pub" and Path(f"{value}.pub").is_file():
        fail(f"--trust {value} is a private key (its public key is {value}.pub): pass --trust {value}.pub, "
             "and keep the private key to yourself.", 2)
    looks_like_hex = len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)
    if not path.exists() and not looks_like_hex:
        fail(f"--trust {value}: no such file. --trust takes the signer's public key: the KEY.pub file "
             "kreg keygen wrote, or its 64 hex digits.", 2)
    return read_key(value, what="--trust").hex()


@click.command()
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
    from ..format.signing import keygen as make

    if not output.parent.exists():
        # The help's own example is ~/.kreg/key: make its folder, private to the user.
        output.parent.mkdir(mode=0o700, parents=True)
    elif not output.parent.is_dir():
        fail(f"{output.parent} is not a folder; give the key a path inside one.", 2)
    private, public, public_hex = make(output, overwrite=force)
    click.echo(public_hex)
    tell(f"Wrote {private} (keep it secret) and {public} (share it).")


#: The commands this module adds to the ``kreg`` group.
COMMANDS = [export, import_, keygen]
