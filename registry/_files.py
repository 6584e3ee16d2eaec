"""Kernel values to and from the files other tools use: .npy, .npz, .safetensors, .json, .csv."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._exceptions import InvalidKernelError, MissingDependencyError

if TYPE_CHECKING:
    from ._kernel import Kernel

#: File suffixes ``read_values`` understands, and whether they hold several arrays.
READERS = {".npy": False, ".npz": True, ".safetensors": True, ".json": False, ".csv": False}
#: Formats ``write_values`` can write.
WRITERS = ("npy", "safetensors", "json")


def split_key(spec: str) -> tuple[Path, str | None]:
    """``"weights.npz:conv1"`` -> ``(Path("weights.npz"), "conv1")``; no key -> ``None``."""
    for suffix, keyed in READERS.items():
        marker = f"{suffix}:"
        if keyed and marker in spec:
            path, _, key = spec.rpartition(marker)
            return Path(path + suffix), key
    return Path(spec), None


def read_values(spec: str) -> np.ndarray:
    """Read kernel values from ``FILE`` or ``FILE:KEY`` (for .npz and .safetensors).

    Nothing is unpickled: .npy/.npz are read with ``allow_pickle=False``.

    Raises:
        InvalidKernelError: a missing file, an unknown suffix, a missing key,
            or a file that is not what its suffix says.
    """
    path, key = split_key(spec)
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise InvalidKernelError(
            f"Cannot read values from {path.name}: the suffix must be one of "
            f"{', '.join(READERS)}. Received: {spec!r}."
        )
    if not path.is_file():
        raise InvalidKernelError(f"No such file: {path}.")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
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
            data = json.loads(path.read_text(encoding="utf-8"))
            return np.asarray(data["values"] if isinstance(data, dict) else data, dtype=np.float32)
        return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except (InvalidKernelError, MissingDependencyError):
        raise
    except Exception as exc:  # each library has its own error types for a bad file
        raise InvalidKernelError(
            f"{path} is not a readable {suffix} file ({type(exc).__name__}: {exc})."
        ) from None


def _pick(arrays: dict[str, np.ndarray], key: str | None, path: Path) -> np.ndarray:
    if key is None:
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        raise InvalidKernelError(
            f"{path} holds {len(arrays)} arrays; name one as {path}:KEY. "
            f"Keys: {', '.join(sorted(arrays)[:10])}."
        )
    if key not in arrays:
        raise InvalidKernelError(f"{path} has no array {key!r}. Keys: {', '.join(sorted(arrays)[:10])}.")
    return arrays[key]


def write_values(array: np.ndarray, path: Path, fmt: str, *, key: str = "kernel") -> None:
    """Write one kernel's values for another tool: ``npy``, ``safetensors`` or ``json``."""
    if fmt == "npy":
        np.save(path, array, allow_pickle=False)
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


def read_checkpoint(path: Path, key: str) -> tuple[dict[str, np.ndarray], str, dict[str, str]]:
    """The weight ``key`` (``conv1.weight`` or ``conv1``) and its ``.bias`` from a .safetensors
    checkpoint, read one tensor at a time, the file's sha256 and its metadata.

    Raises:
        InvalidKernelError: a missing file, not a safetensors file, or no such tensor (naming the
            weights there).
    """
    import hashlib

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
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
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
            return tensors, digest.hexdigest(), dict(f.metadata() or {})
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
