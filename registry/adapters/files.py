"""Kernel values to and from the files other tools use: .npy, .npz, .safetensors, .json, .csv, .txt."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._exceptions import InvalidKernelError, MissingDependencyError
from ..format.content import file_sha256

if TYPE_CHECKING:
    from ..kernels.kernel import Kernel

#: File suffixes ``read_kernel`` understands, and whether they hold several arrays.
READERS = {".npy": False, ".npz": True, ".safetensors": True, ".json": False, ".csv": False, ".txt": False}
#: Formats ``write_kernels`` can write (``pack`` is kreg's own HDF5 pack, written by ``_pack``).
WRITERS = ("npy", "npz", "safetensors", "json")
#: The export format each output suffix implies.
SUFFIX_FORMATS = {".h5": "pack", ".hdf5": "pack", ".npy": "npy", ".npz": "npz",
                  ".safetensors": "safetensors", ".json": "json"}
#: Formats that hold one kernel only.
SINGLE = ("npy", "json")
#: Suffix of the array that holds a kernel's bias next to it in .npz and .safetensors files:
#: ``:`` never appears in a kernel name, so ``name:bias`` cannot collide with another kernel.
BIAS_SUFFIX = ":bias"
#: ``format`` field of the JSON document ``kreg export --format json`` writes.
JSON_FORMAT = "kreg-kernel"


@dataclass
class FileKernel:
    """Values read from a file, with what the file says about them (JSON exports say it all)."""

    values: np.ndarray
    layout: str | None = None
    bias: list[float] | None = None
    record: dict[str, Any] = field(default_factory=dict)


def export_format(output: str, fmt: str | None) -> str:
    """The format to write ``output`` in: ``fmt`` if given, else the one its suffix implies.

    Raises:
        InvalidKernelError: ``fmt`` contradicts the suffix, or ``-`` (stdout) without ``fmt``.

    Example:
        >>> export_format("edges.npz", None), export_format("edges.pack", None)
        ('npz', 'pack')
    """
    if output == "-":
        if fmt is None:
            raise InvalidKernelError(
                f"-o - writes to stdout, which has no suffix: name the format with --format "
                f"({', '.join(['pack', *WRITERS])})."
            )
        return fmt
    implied = SUFFIX_FORMATS.get(Path(output).suffix.lower())
    if fmt is not None and implied is not None and implied != fmt:
        raise InvalidKernelError(
            f"--format {fmt} contradicts the suffix of {output} (a {implied} file). "
            f"Drop --format, or name the file with the suffix of {fmt}."
        )
    return fmt or implied or "pack"


def split_key(spec: str) -> tuple[Path, str | None]:
    """``"weights.npz:conv1"`` -> ``(Path("weights.npz"), "conv1")``; no key -> ``None``."""
    for suffix, keyed in READERS.items():
        marker = f"{suffix}:"
        if keyed and marker in spec:
            path, _, key = spec.rpartition(marker)
            return Path(path + suffix), key
    return Path(spec), None


def read_values(spec: str) -> np.ndarray:
    """Read kernel values from ``FILE`` or ``FILE:KEY``; see :func:`read_kernel`."""
    return read_kernel(spec).values


def read_kernel(spec: str) -> FileKernel:
    """Read a kernel from ``FILE`` or ``FILE:KEY`` (for .npz and .safetensors).

    Nothing is unpickled: .npy/.npz are read with ``allow_pickle=False``. A bias written
    by ``kreg export`` (the array ``KEY:bias``) and the layout and record of a kreg JSON
    export come along. Text files (.csv, .txt) hold one row per line, the numbers
    separated by commas or whitespace.

    Raises:
        InvalidKernelError: a missing file, an unknown suffix, a missing key,
            or a file that is not what its suffix says.
    """
    path, key = split_key(spec)
    suffix = path.suffix.lower()
    if suffix == ".keras" or suffix == ".h5":
        raise InvalidKernelError(
            f"{path.name} is a saved Keras model or an HDF5 file, not an array file: take a layer's "
            f"kernel with --from-keras {path} --layer NAME, or import a kreg pack with kreg import {path}."
        )
    if suffix not in READERS:
        raise InvalidKernelError(
            f"Cannot read values from {path.name}: the suffix must be one of "
            f"{', '.join(READERS)}. Received: {spec!r}."
        )
    if not path.is_file():
        raise InvalidKernelError(f"No such file: {path}.")
    try:
        if suffix == ".npy":
            return FileKernel(np.load(path, allow_pickle=False))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _pick(dict(archive), key, path)
        if suffix == ".safetensors":
            try:
                from safetensors.numpy import load_file
            except ImportError:
                raise MissingDependencyError(
                    "Reading .safetensors needs the safetensors package: pip install safetensors"
                ) from None
            return _pick(load_file(str(path)), key, path)
        if suffix == ".json":
            return _from_json(parse_json(path.read_text(encoding="utf-8"), what=str(path)))
        return FileKernel(_read_text(path))
    except (InvalidKernelError, MissingDependencyError):
        raise
    except Exception as exc:  # each library has its own error types for a bad file
        raise InvalidKernelError(
            f"{path} is not a readable {suffix} file ({type(exc).__name__}: {exc})."
        ) from None


def parse_json(text: str, *, what: str) -> Any:
    """``json.loads`` that refuses deep nesting with a clear error instead of a crash.

    Raises:
        InvalidKernelError: invalid JSON or nesting deeper than a kernel can be.
    """
    try:
        return json.loads(text)
    except RecursionError:  # the C decoder recurses per bracket; kernels nest 4 deep at most
        raise InvalidKernelError(f"{what} nests too deep; kernel values have at most 4 levels of lists.") from None
    except ValueError as exc:
        raise InvalidKernelError(f"{what} is not valid JSON ({exc}).") from None


def _from_json(data: Any) -> FileKernel:
    if not isinstance(data, dict):
        return FileKernel(np.asarray(data, dtype=np.float32))
    if "values" not in data:
        raise InvalidKernelError(f"A JSON kernel is a list of rows or an object with \"values\". Keys: {sorted(data)[:10]}.")
    if data.get("format") != JSON_FORMAT:
        return FileKernel(np.asarray(data["values"], dtype=np.float32))
    dtype = data.get("dtype", "float32")
    from ..format.content import DTYPES

    if dtype not in DTYPES:
        raise InvalidKernelError(f"dtype must be one of {', '.join(DTYPES)}. Received: \"dtype\": {dtype!r}.")
    values = np.asarray(data["values"], dtype=np.float64)
    bias = data.get("bias")
    if bias is not None and (not isinstance(bias, list) or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) for b in bias)):
        raise InvalidKernelError(f"\"bias\" is a list of numbers, one per output channel. Received: {bias!r:.80}.")
    layout = data.get("layout")
    if layout is not None and not isinstance(layout, str):
        raise InvalidKernelError(f"\"layout\" is a string such as \"HWIO\". Received: {layout!r:.80}.")
    record = data.get("record") if isinstance(data.get("record"), dict) else {}
    return FileKernel(_cast(values, dtype), layout, bias, record)


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    from ..format.content import check_values

    return check_values(values, dtype=dtype)


def _read_text(path: Path) -> np.ndarray:
    text = path.read_text(encoding="utf-8")
    rows = [line.replace(",", " ").split() for line in text.splitlines()]
    rows = [row for row in rows if row and not row[0].startswith("#")]
    if not rows:
        raise InvalidKernelError(f"{path} holds no numbers.")
    if len({len(row) for row in rows}) != 1:
        raise InvalidKernelError(
            f"{path}: every row needs the same count of numbers. Received rows of "
            f"{sorted({len(row) for row in rows})} numbers."
        )
    return np.array(rows, dtype=np.float64).astype(np.float32)


def _pick(arrays: dict[str, np.ndarray], key: str | None, path: Path) -> FileKernel:
    kernels = sorted(k for k in arrays if not k.endswith(BIAS_SUFFIX))
    if key is None:
        if len(kernels) != 1:
            raise InvalidKernelError(
                f"{path} holds {len(kernels)} arrays; name one as {path}:KEY. "
                f"Keys: {', '.join(kernels[:10])}."
            )
        key = kernels[0]
    if key not in arrays:
        raise InvalidKernelError(f"{path} has no array {key!r}. Keys: {', '.join(kernels[:10])}.")
    bias = arrays.get(key + BIAS_SUFFIX)
    return FileKernel(arrays[key], bias=None if bias is None else [float(b) for b in np.ravel(bias)])


# -- writing --------------------------------------------------------------------------------


def write_kernels(kernels: Sequence[Any], fmt: str, *, layout: str | None = None, bias: bool = True) -> bytes:
    """The bytes of ``kernels`` (:class:`registry.Kernel` objects) written as ``fmt``.

    npz and safetensors hold several kernels, each under its name, its bias as
    ``NAME:bias``; npy and json hold one. json carries the record, layout, dtype and bias
    so that ``kreg add NAME --from FILE.json`` needs no flags.

    Args:
        kernels: the kernels to write.
        fmt: one of :data:`WRITERS`.
        layout: the layout of the written values (default: each kernel's stored layout),
            e.g. ``"OIHW"`` for PyTorch.
        bias: write recorded biases; npy cannot hold one, and a kernel with a bias is
            refused there unless ``bias=False``.

    Raises:
        InvalidKernelError: an unknown format, several kernels for a one-kernel format,
            or a bias the format cannot hold.
    """
    if fmt not in WRITERS:
        raise InvalidKernelError(f"format must be one of {', '.join(WRITERS)}. Received: {fmt!r}.")
    if fmt in SINGLE and len(kernels) != 1:
        raise InvalidKernelError(
            f"--format {fmt} writes one kernel; {len(kernels)} matched. Use .npz, .safetensors or a pack for several."
        )
    # Each kernel under its name; under NAME@VERSION when several versions of a name are written.
    names = [k.name for k in kernels]
    keys = [k.name if names.count(k.name) == 1 else k.ref for k in kernels]
    arrays = {key: k.as_layout(layout) if layout else np.array(k.array) for key, k in zip(keys, kernels)}
    biases = {key: k._record.get("bias") for key, k in zip(keys, kernels) if bias and k._record.get("bias") is not None}
    if fmt == "npy":
        (kernel,), (key,) = kernels, keys
        if key in biases:
            raise InvalidKernelError(
                f"{kernel.ref} has a bias of {len(biases[key])} values and a .npy file holds one array: "
                "export to .npz, .safetensors or .json (which carry it), or leave it out with --no-bias."
            )
        buffer = io.BytesIO()
        np.save(buffer, arrays[key], allow_pickle=False)
        return buffer.getvalue()
    if fmt == "json":
        (kernel,), (key,) = kernels, keys
        document = {
            "format": JSON_FORMAT,
            "version": 1,
            "ref": kernel.ref,
            "layout": layout or kernel.layout,
            "dtype": kernel.dtype.name,
            "shape": list(arrays[key].shape),
            "values": arrays[key].tolist(),
            **({"bias": biases[key]} if key in biases else {}),
            "record": kernel.to_dict(),
        }
        return (json.dumps(document, indent=1) + "\n").encode("utf-8")
    named = {**arrays, **{name + BIAS_SUFFIX: np.asarray(b, dtype=arrays[name].dtype) for name, b in biases.items()}}
    if fmt == "npz":
        buffer = io.BytesIO()
        np.savez(buffer, **named)
        return buffer.getvalue()
    try:
        from safetensors.numpy import save
    except ImportError:
        raise MissingDependencyError(
            "Writing .safetensors needs the safetensors package: pip install safetensors"
        ) from None
    layouts = {key: layout or k.layout for key, k in zip(keys, kernels)}
    return bytes(save({k: np.ascontiguousarray(v) for k, v in named.items()},
                      metadata={"format": "kreg", "layouts": json.dumps(layouts, sort_keys=True),
                                "records": json.dumps({key: k.to_dict() for key, k in zip(keys, kernels)},
                                                      sort_keys=True)}))


def write_values(array: np.ndarray, path: Path, fmt: str, *, key: str = "kernel") -> None:
    """Write one bare array for another tool: ``npy``, ``npz``, ``safetensors`` or ``json``.

    The file is written exactly at ``path`` (``np.save`` would add a ``.npy`` suffix).
    """
    if fmt == "npy":
        with open(path, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    elif fmt == "npz":
        with open(path, "wb") as fh:
            np.savez(fh, **{key: array})
    elif fmt == "safetensors":
        try:
            from safetensors.numpy import save_file
        except ImportError:
            raise MissingDependencyError(
                "Writing .safetensors needs the safetensors package: pip install safetensors"
            ) from None
        save_file({key: np.ascontiguousarray(array)}, str(path))
    elif fmt == "json":
        path.write_text(json.dumps({"values": array.tolist()}) + "\n", encoding="utf-8")
    else:
        raise InvalidKernelError(f"format must be one of {', '.join(WRITERS)}. Received: {fmt!r}.")


# -- PyTorch checkpoints ---------------------------------------------------------------------


def read_checkpoint(path: Path, key: str) -> tuple[dict[str, np.ndarray], str, dict[str, str]]:
    """The weight ``key`` (``conv1.weight`` or ``conv1``) and its ``.bias`` from a .safetensors
    checkpoint, read one tensor at a time, the file's sha256 and its metadata.

    Raises:
        InvalidKernelError: a missing file, not a safetensors file, or no such tensor (naming the
            weights there).
    """
    if path.suffix.lower() != ".safetensors":
        raise InvalidKernelError(
            f"Checkpoint tensors are read from .safetensors files (never a pickle such as .pt). "
            f"Received: {path.name}. "
            f"Convert it with safetensors.torch.save_file(model.state_dict(), 'model.safetensors')."
        )
    if not path.is_file():
        raise InvalidKernelError(f"No such file: {path}.")
    try:
        from safetensors import safe_open
    except ImportError:
        raise MissingDependencyError(
            "Reading .safetensors needs the safetensors package: pip install safetensors"
        ) from None
    sha256 = file_sha256(path)
    layer = key.removesuffix(".weight")
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = set(f.keys())
            weight = key if key in keys else f"{layer}.weight"
            if weight not in keys:
                names = ", ".join(sorted(k for k in keys if k.endswith("weight"))[:12]) or "none"
                raise InvalidKernelError(f"{path.name} has no tensor {key!r}. Weights there: {names}.")
            bias = f"{layer}.bias" if weight.endswith(".weight") else None
            tensors = {k: f.get_tensor(k) for k in (weight, bias) if k in keys}
            return tensors, sha256, dict(f.metadata() or {})
    except InvalidKernelError:
        raise
    except Exception as exc:  # safetensors raises its own types for a bad header or dtype
        raise InvalidKernelError(
            f"{path} is not a readable .safetensors file ({type(exc).__name__}: {exc})."
        ) from None


def write_safetensors(kernel: Kernel, path: Path) -> None:
    """One kernel as PyTorch's ``weight`` (``OIHW``) and ``bias``, the record as metadata.

    ``nn.Conv2d.load_state_dict(safetensors.torch.load_file(path))`` takes it as it is
    (with ``groups`` = the metadata's ``groups``); ``kreg.record`` holds the record's JSON.
    """
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise MissingDependencyError(
            "Writing .safetensors needs the safetensors package: pip install safetensors"
        ) from None
    tensors = {"weight": np.ascontiguousarray(kernel.as_layout("OIHW"))}
    if kernel.bias is not None:
        dtype = kernel.dtype if kernel.dtype.kind == "f" else np.float32
        tensors["bias"] = np.array(kernel.bias, dtype=dtype)
    groups = kernel.shape[2] if kernel.layout == "HWIM" else 1
    metadata = {"format": "pt", "kreg.layout": "OIHW", "kreg.groups": str(groups), "kreg.ref": kernel.ref,
                "kreg.record": json.dumps(kernel.to_dict(), sort_keys=True)}
    save_file(tensors, str(path), metadata=metadata)
