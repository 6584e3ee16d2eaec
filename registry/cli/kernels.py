"""The commands on kernels themselves: show, add, rm, verify, diff, plot (list is in ``listing``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from .._env import env_text
from .._exceptions import InvalidKernelError, RemoteError
from ..format.names import escape
from ..store import Registry
from ._common import complete_ref, current_registry, fail, show_progress, tell

#: The most panels ``kreg plot`` draws in one picture.
GRID_LIMIT = 16

@click.command()
@click.argument("ref", shell_complete=complete_ref)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="With a family name: a parameter (repeatable), e.g. -p sigma=2. See kreg families.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.pass_context
def show(ctx: click.Context, ref: str, params: tuple[str, ...], as_json: bool) -> None:
    """Show a kernel's record and its values (statistics for large kernels).

    REF is NAME, NAME@VERSION, a content pin NAME@sha256:HEX (the pin line below), or a family
    name with -p parameters.

    \b
    Example:
      kreg show sobel_x
      kreg show team/edge@2 --json
      kreg show team/edge@sha256:d7edadade470
      kreg show gaussian -p sigma=2
    """
    kernel = _load(current_registry(ctx), ref, params)
    record = kernel.to_dict()
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(f"{kernel.ref}  {'x'.join(map(str, kernel.shape))} {kernel.dtype} {kernel.layout}")
    if kernel.version > 0:  # a stored version: a kernel generated here is in no registry to pin
        click.echo(f"  {'pin':<28} {kernel.pin}")
    for key, value in _flatten(record):
        click.echo(f"  {key:<28} {value}")
    if kernel.version >= 1 and record.get("provenance", {}).get("origin") != "builtin":  # a built-in has neither
        reg = current_registry(ctx)
        try:
            labels = sorted(label for label, v in reg.labels(kernel.name).items() if v == kernel.version)
            reason = reg.deprecations(kernel.name).get(kernel.version)
        except RemoteError:  # offline: the version came from this machine's cache
            labels, reason = [], None
            tell("(Its labels and deprecation are not shown: the registry cannot be reached.)")
        if labels:
            click.echo(f"  {'labels':<28} {escape(', '.join(labels), quote=False)}")
        if reason is not None:
            click.echo(f"  {'deprecated':<28} {escape(reason, quote=False)}")
    click.echo()
    click.echo(_values_text(kernel.array, kernel.layout))


def _load(reg: Registry, ref: str, params: Sequence[str]) -> Any:
    """Load ``ref``; a family name takes ``-p`` parameters, and a failure says how to give them."""
    from ..kernels.families import FAMILIES

    family = FAMILIES.get(ref)
    if params and family is None:
        _check_family(ref, f"-p sets the parameters of a family; {ref!r} is not one.")
    if family is None:
        return reg.load(ref)
    try:
        return reg.load(ref, **_parse_params(params))
    except InvalidKernelError as exc:
        if params:
            raise
        fail(f"{exc} {ref!r} is a family: give its parameters with -p KEY=VALUE (it takes "
             f"{', '.join(family.params)}; kreg families {ref} shows their defaults).", 2)


def _check_family(name: str, problem: str) -> None:
    """Exit 2 with ``problem`` unless ``name`` is a family, suggesting the nearest (``gausian``: ``gaussian``)."""
    import difflib

    from ..kernels.families import FAMILIES

    if name in FAMILIES:
        return
    close = difflib.get_close_matches(name, list(FAMILIES), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    fail(f"{problem}{hint} See 'kreg families' for them and their parameters.", 2)


def _flatten(record: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    skip = {"name", "version", "shape", "dtype", "layout"}
    out = []
    for key, value in record.items():
        if not prefix and key in skip:
            continue
        if isinstance(value, dict) and value:
            out += _flatten(value, f"{prefix}{key}.")
        elif value not in (None, "", [], {}):
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            out.append((prefix + key, escape(text, quote=False)))  # metadata may come from a pack
    return out


def _values_text(array: np.ndarray, layout: str) -> str:
    planes = array.reshape(array.shape[0], array.shape[1], -1)
    if array.shape[0] > GRID_LIMIT or array.shape[1] > GRID_LIMIT or planes.shape[2] > 8:
        a = array.astype(np.float64)
        return (
            f"values: {array.size} ({array.nbytes} bytes), min {a.min():.6g}, max {a.max():.6g}, "
            f"mean {a.mean():.6g}, std {a.std():.6g}, sum {a.sum():.6g}"
        )
    scale = float(np.abs(array).max()) or 1.0
    blocks = []
    for p in range(planes.shape[2]):
        plane = planes[:, :, p]
        index = ", ".join(str(int(i)) for i in np.unravel_index(p, array.shape[2:]))
        title = "" if layout == "HW" else f"[:, :, {index}]\n"
        texts = [[f"{v + 0.0:.4g}" for v in row] for row in plane.tolist()]
        width = max(len(t) for row in texts for t in row)
        rows = []
        for values, row in zip(plane.tolist(), texts):
            rows.append(" ".join(_coloured(t.rjust(width), v / scale) for t, v in zip(row, values)))
        blocks.append(title + "\n".join(rows))
    return "\n\n".join(blocks)


def _coloured(text: str, weight: float) -> str:
    # Diverging: red for positive, blue for negative, bold where large. https://no-color.org
    if env_text("NO_COLOR"):
        return text
    if weight == 0:
        return click.style(text, dim=True)
    return click.style(text, fg="red" if weight > 0 else "blue", bold=abs(weight) > 0.5)


@click.command()
@click.argument("name")
@click.option("--from", "source", metavar="FILE[:KEY]",
              help="Read values from .npy, .npz[:key], .safetensors[:key], .json, or a text matrix (.csv, .txt: "
                   "numbers separated by commas or spaces). A kreg JSON export brings its layout, dtype, bias "
                   "and record.")
@click.option("--values", "inline", metavar="JSON", help="Values inline, e.g. '[[1, 0, -1]]'.")
@click.option("--from-keras", "keras_model", metavar="MODEL", type=click.Path(dir_okay=False),
              help="Take a trained Conv2D/DepthwiseConv2D kernel from a saved Keras model (.keras).")
@click.option("--layer", help="With --from-keras: the layer's name.")
@click.option("--tensor", metavar="KEY",
              help="With --from CKPT.safetensors: the weight to take, e.g. conv1.weight (OIHW unless --layout; "
                   "conv1.bias comes along).")
@click.option("--family", help="Materialize a built-in family, e.g. gaussian (see --param).")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A family parameter (repeatable), e.g. -p sigma=2 -p ksize=9.")
@click.option("--origin", type=click.Choice(["learned", "imported", "handmade", "generated"]),
              help="Provenance origin (default: handmade; imported with --from; learned with --from-keras; "
                   "generated with --family).")
@click.option("--layout", type=click.Choice(["HW", "HWIO", "HWIM", "OIHW"]),
              help="Layout of the values (default HW for 2-D; 4-D values must say).")
@click.option("--dtype", type=click.Choice(["float16", "float32", "float64", "int8", "int16", "int32", "uint8"]),
              help="Convert the values to this dtype.")
@click.option("--convolution", is_flag=True, help="The values are a true convolution: flip them and record it.")
@click.option("--description", "-d", default="", help="What the kernel is.")
@click.option("--tag", "-t", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--license", "license_", help="SPDX license expression, e.g. MIT or CC-BY-4.0.")
@click.option("--reference", "references", multiple=True, help="A paper or URL (repeatable).")
@click.option("--author", help="Who made it (default: $KREG_AUTHOR, else git's user.name <user.email>, "
                                "else login@host; a new version keeps the previous version's).")
@click.option("--no-inherit", is_flag=True,
              help="Do not take description, tags, license, references and author from the previous version.")
@click.pass_context
def add(ctx: click.Context, name: str, source: str | None, inline: str | None, keras_model: str | None,
        layer: str | None, tensor: str | None, family: str | None, params: tuple[str, ...], origin: str | None,
        layout: str | None, dtype: str | None, convolution: bool, description: str, tags: tuple[str, ...],
        license_: str | None, references: tuple[str, ...], author: str | None, no_inherit: bool) -> None:
    """Add a new version of kernel NAME and print its NAME@VERSION.

    The values come from exactly one of --from, --values, --from-keras or --family. A new
    version keeps what the previous one says (description, tags, license, references,
    author) unless given or --no-inherit; kreg says what it kept.

    \b
    Example:
      kreg add team/edge --values '[[1, 0, -1], [2, 0, -2], [1, 0, -1]]' -d 'Sobel x'
      kreg add torch/conv1 --from weights.npz:conv1 --layout OIHW --tag learned
      kreg add team/conv1 --from-keras model.keras --layer conv1
      kreg add team/conv1 --from ckpt.safetensors --tensor conv1.weight
      kreg add team/blur --family gaussian -p sigma=2 -p ksize=9
    """
    given = [opt for opt, value in (("--from", source), ("--values", inline), ("--from-keras", keras_model),
                                    ("--family", family)) if value is not None]
    if len(given) != 1:
        fail("Give the values with exactly one of --from FILE, --values JSON, --from-keras MODEL or --family NAME.", 2)
    if params and family is None:
        fail("--param goes with --family.", 2)
    if layer and keras_model is None:
        fail("--layer goes with --from-keras.", 2)
    if tensor is not None and (source is None or dtype is not None or convolution):
        fail("--tensor goes with --from CKPT.safetensors (and not with --dtype or --convolution).", 2)
    reg = current_registry(ctx)
    meta = dict(description=description, tags=tags, license=license_, author=author, references=references,
                inherit=not no_inherit)
    if keras_model is not None:
        from .._api import add_from_keras

        click.echo(add_from_keras(keras_model, layer, name=name, registry=reg, **meta).ref)
        _say_inherited(reg)
        return
    if tensor is not None:
        click.echo(_add_tensor(reg, name, source, tensor, layout, origin, meta).ref)
        _say_inherited(reg)
        return
    values: Any
    extra: dict[str, Any] = {}
    if family is not None:
        _check_family(family, f"No kernel family named {family!r}.")
        values = _load(reg, family, params)
    elif inline is not None:
        from ..adapters.files import parse_json

        try:
            values = parse_json(inline, what="--values")
        except InvalidKernelError as exc:
            fail(f"{exc} Example: --values '[[1, 0, -1]]'.", 2)
    else:
        from ..adapters.files import read_kernel

        found = read_kernel(source)  # type: ignore[arg-type]
        values, layout, origin = found.values, layout or found.layout, origin or "imported"
        extra = _from_record(found.record, meta)
        if found.bias is not None:
            extra["bias"] = found.bias
    kernel = reg.add(name, values, layout=layout, dtype=dtype, convolution=convolution, origin=origin,
                     **{**meta, **extra})
    click.echo(kernel.ref)
    _say_inherited(reg)


def _say_inherited(reg: Registry) -> None:
    if reg.last_inherited is not None:
        ref, fields = reg.last_inherited
        tell(f"Kept {', '.join(fields)} from {ref} (--no-inherit to start afresh).")


def _add_tensor(reg: Registry, name: str, source: str | None, tensor: str, layout: str | None,
                origin: str | None, meta: dict[str, Any]) -> Any:
    """``--from CKPT.safetensors --tensor KEY``: the weight (OIHW by default), its bias, the checkpoint's hash."""
    from .._api import add_converted
    from ..adapters.files import read_checkpoint
    from ..adapters.learned import from_checkpoint

    import warnings

    from .._exceptions import LayoutWarning

    tensors, sha256, metadata = read_checkpoint(Path(str(source)), tensor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LayoutWarning)
        kernel = from_checkpoint(tensors, tensor, metadata, layout=layout, source={"checkpoint_sha256": sha256})
    for warning in caught:  # one line each, not Python's file:line report
        if issubclass(warning.category, LayoutWarning):
            tell(f"Warning: {warning.message}")
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return add_converted(reg, name, kernel, origin=origin, **meta)


def _from_record(record: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """What a kreg JSON export's record says that the command line did not: description, tags, ..."""
    if not record:
        return {}
    prov = record.get("provenance") or {}
    given = {
        "description": meta["description"] or prov.get("description", ""),
        "tags": meta["tags"] or tuple(record.get("tags", ())),
        "license": meta["license"] or prov.get("license"),
        "author": meta["author"] or prov.get("author"),
        "references": meta["references"] or tuple(prov.get("references", ())),
        "normalization": record.get("normalization"),
    }
    if prov.get("source"):  # where learned values were taken from: framework, model, layer, checkpoint
        given["provenance"] = {"source": prov["source"]}
    return given


def _parse_params(params: Sequence[str]) -> dict[str, str]:
    parsed = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--param takes KEY=VALUE, e.g. -p sigma=2. Received: {item!r}.", 2)
        parsed[key.strip()] = value.strip()
    return parsed


@click.command()
@click.argument("ref", shell_complete=complete_ref)
@click.option("--all", "all_versions", is_flag=True, help="Remove every version of the name.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation with --all.")
@click.pass_context
def rm(ctx: click.Context, ref: str, all_versions: bool, yes: bool) -> None:
    """Remove one kernel version (NAME@VERSION), or all of them with --all.

    Version numbers are never reused: a later add gets a new one. For a version others may
    have pinned, 'kreg deprecate' retires it without breaking them.

    \b
    Example:
      kreg rm team/edge@2
      kreg rm team/edge --all --yes
    """
    reg = current_registry(ctx)
    if all_versions and not yes:
        versions = reg.versions(ref.partition("@")[0])
        if not versions:
            reg.load(ref)  # raises the not-found error with suggestions
        if not click.confirm(f"Remove all {len(versions)} versions of {ref}?", err=True):
            tell("Nothing removed.")  # the answer asked for, not a failure
            return
    removed = reg.remove(ref, all_versions=all_versions)
    for done in removed:
        click.echo(f"removed {done}")
    if "@" in ref:
        tell(f"Code that pinned {removed[0]} now fails. To retire a version others may use, "
             f"'kreg deprecate {removed[0]} --reason ...' keeps it loadable with a warning.")


@click.command()
@click.argument("refs", nargs=-1, shell_complete=complete_ref)
@click.pass_context
def verify(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Check kernels against their hashes and the schema (all when no REFS).

    Exits 1 when anything is damaged, naming what and where.

    \b
    Example:
      kreg verify
      kreg verify team/edge sobel_x@1
    """
    reg = current_registry(ctx)
    if show_progress():
        total = sum(len(reg.versions(r.name)) for r in reg.list_kernels(list(refs) or "*"))
        with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
            problems = reg.verify(refs, progress=lambda _ref: bar.update(1))
    else:
        problems = reg.verify(refs)
    for ref, problem in problems:
        click.echo(f"{ref}: {problem}", err=True)
    if problems:
        fail(f"{len(problems)} damaged kernel version(s).", 1)
    tell("All kernels verified.")


@click.command()
@click.argument("first", shell_complete=complete_ref)
@click.argument("second", shell_complete=complete_ref)
@click.pass_context
def diff(ctx: click.Context, first: str, second: str) -> None:
    """Compare two kernels: record differences and value statistics.

    Exits 0 when the values are identical, 1 when they differ (like diff(1)), 2 on bad input.

    \b
    Example:
      kreg diff sobel_x sobel_x_unit
      kreg diff team/edge@1 team/edge@2
    """
    reg = current_registry(ctx)
    a, b = reg.load(first), reg.load(second)
    left, right = dict(_flatten(a.to_dict())), dict(_flatten(b.to_dict()))
    click.echo(f"--- {a.ref}\n+++ {b.ref}")
    for key in sorted(set(left) | set(right), key=lambda k: (k.count("."), k)):
        if left.get(key) != right.get(key):
            click.echo(f"  {key}: {left.get(key, '(none)')} -> {right.get(key, '(none)')}")
    if a.shape != b.shape:
        click.echo(f"values: shapes differ, {a.shape} vs {b.shape}")
        sys.exit(1)
    x, y = a.array.astype(np.float64), b.array.astype(np.float64)
    delta = np.abs(x - y)
    scale = float(np.abs(x).max()) or 1.0
    identical = a.array.tobytes() == b.array.tobytes() and a.dtype == b.dtype
    click.echo(
        f"values: {'identical' if identical else 'differ'}; max abs diff {delta.max():.6g}, "
        f"mean abs diff {delta.mean():.6g}, max relative {delta.max() / scale:.3g}, "
        f"{int((delta > 0).sum())} of {delta.size} differ"
    )
    if not identical:
        sys.exit(1)


@click.command()
@click.argument("refs", nargs=-1, required=True, shell_complete=complete_ref)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG to write.")
@click.option("--image", help="Also show each output channel's response on this image, as its layer computes "
                              "it: a file or a scikit-image sample name (camera, astronaut, coins, ...).")
@click.option("--shared-scale", is_flag=True,
              help="One colour scale for all kernels (and one for all responses), so that scale differences show.")
@click.pass_context
def plot(ctx: click.Context, refs: tuple[str, ...], output: Path, image: str | None, shared_scale: bool) -> None:
    """Draw kernels as a PNG grid with colour bars (diverging colours centred on zero, values where they fit).

    REFS are refs or glob patterns. A multi-channel kernel gets one column per output
    channel. Needs matplotlib: pip install 'kreg[plot]'.

    \b
    Example:
      kreg plot 'sobel*' scharr_x -o edges.png
      kreg plot sobel_x sobel_x_unit --shared-scale -o scale.png
      kreg plot gabor_bank8 -o gabor.png --image camera
    """
    from .._plot import MAX_UNITS, panel_count, plot_kernels

    if not output.parent.is_dir():  # before the kernels are loaded and drawn
        fail(f"Cannot write {output}: the folder {output.parent} does not exist. Create it, or choose another "
             "path.", 2)
    kernels = current_registry(ctx).resolve(refs)
    width, height = plot_kernels(kernels, output, image=image, shared_scale=shared_scale)
    click.echo(str(output))
    total = sum(panel_count(k) for k in kernels)
    if total > MAX_UNITS:
        tell(f"Wrote {output} ({width}x{height} px): drew {MAX_UNITS} of {total} panels (one per output channel) "
             f"of {len(kernels)} kernels, the most one picture holds; plot fewer kernels to see the rest.")
    else:
        tell(f"Wrote {output} ({width}x{height} px, {total} panels of {len(kernels)} kernels).")


#: The commands this module adds to the ``kreg`` group.
COMMANDS = [show, add, rm, verify, diff, plot]
