"""The pictures and downloads of one kernel version, drawn by the plot code (:mod:`registry._plot`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import _plot
from ..adapters.files import write_kernels
from ..kernels.kernel import Kernel

#: The scikit-image samples each kernel is shown on (halved to 256 pixels a side: the page
#: stays light and a response takes milliseconds).
SAMPLES = ("camera", "astronaut")
#: Output channels shown as responses and spectra; the heatmap shows up to ``_plot.MAX_UNITS``.
MAX_SHOWN_UNITS = 4
#: Kernels larger than this a side get no response picture (a NumPy correlation of a 256-pixel
#: image with a 511-pixel kernel takes minutes); their heatmap and spectrum are still drawn.
MAX_RESPONSE_SIDE = 65
#: Changes when the pictures are drawn differently: every picture is drawn again once.
STYLE = "1"
#: Side of the frequency response picture, in pixels.
SPECTRUM_PIXELS = 128


class Painter:
    """Draws pictures; holds the sample images, loaded once per build."""

    def __init__(self) -> None:
        self._samples: dict[str, np.ndarray] = {}

    def sample(self, name: str) -> np.ndarray:
        if name not in self._samples:
            image = _plot.sample_image(name, colour=True)
            h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
            image = image[:h, :w]
            self._samples[name] = image.reshape(h // 2, 2, w // 2, 2, *image.shape[2:]).mean(axis=(1, 3))
        return self._samples[name]

    def heatmap(self, kernel: Kernel) -> bytes:
        """Every plane with its colour bar, values written where they fit (``kreg plot``'s picture)."""
        return _plot.png(_plot.figure([kernel]))

    def spectrum(self, kernel: Kernel) -> bytes:
        """|DFT| of the first plane of each shown output channel, side by side."""
        planes = [unit.planes[0][1] for unit in _plot.units(kernel)[:MAX_SHOWN_UNITS]]
        spectra = [_plot.frequency_response(p) for p in planes]
        zoom = max(1, SPECTRUM_PIXELS // spectra[0].shape[0])
        return _plot.raster(_tile(spectra), signed=False, bound=max(float(s.max()) for s in spectra) or 1.0, zoom=zoom)

    def responses(self, kernel: Kernel) -> list[tuple[str, str, bytes]]:
        """``(sample, title, png)`` for each sample image and shown output channel."""
        if max(kernel.array.shape[:2]) > MAX_RESPONSE_SIDE:
            return []
        found = []
        for name in SAMPLES:
            picture = self.sample(name)
            for n, unit in enumerate(_plot.units(kernel)[:MAX_SHOWN_UNITS]):
                image, note = _plot.layer_input(picture, unit.in_channels)
                result = _plot.response(unit, image)
                bound = _plot.response_bound(result)
                title = f"{unit.title} on {name}{note}" + ("" if unit.non_negative else " (red positive, blue negative)")
                found.append((f"{name}-{n}", title, _plot.raster(result, signed=not unit.non_negative, bound=bound)))
        return found

    def difference(self, old: Kernel, new: Kernel) -> tuple[bytes | None, str]:
        """A picture of ``new - old`` and a sentence about it (no picture when the shapes differ)."""
        if old.array.shape != new.array.shape or old.layout != new.layout:
            return None, f"@{new.version} has shape {new.shape} {new.layout}, @{old.version} had {old.shape} {old.layout}: no picture of the difference."
        delta = new.array.astype(np.float64) - old.array.astype(np.float64)
        largest = float(np.abs(delta).max())
        if largest == 0:
            return None, f"Same values as @{old.version} (the record changed)."
        planes = [delta[..., i, j] if delta.ndim == 4 else delta for i, j in _pairs(delta)][:MAX_SHOWN_UNITS]
        zoom = max(1, 96 // max(delta.shape[:2]))
        note = f"@{new.version} minus @{old.version} (largest change {largest:.4g}; red: larger now, blue: smaller)."
        return _plot.raster(_tile(planes), signed=True, bound=largest, zoom=zoom), note


def downloads(reg: Any, kernel: Kernel) -> list[tuple[str, str, bytes]]:
    """``(label, file name, bytes)`` of each download of ``kernel``: the values as ``.npy``, the
    record and values as ``.json``, ``.safetensors`` when the package is installed, a pack."""
    files = [("json", "kernel.json", write_kernels([kernel], "json"))]
    if kernel._record.get("bias") is None:  # a .npy file cannot hold the bias; the others carry it
        files.insert(0, ("npy", "kernel.npy", write_kernels([kernel], "npy")))
    try:
        files.append(("safetensors", "kernel.safetensors", write_kernels([kernel], "safetensors")))
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="kreg-site-") as folder:
        path = Path(folder) / "pack.h5"
        reg.export([kernel.ref], path, name=kernel.name.replace("/", "-"))
        files.append(("pack", "pack.h5", path.read_bytes()))
    return files


def _pairs(array: np.ndarray) -> list[tuple[int, int]]:
    if array.ndim != 4:
        return [(0, 0)]
    return [(i, j) for j in range(array.shape[3]) for i in range(array.shape[2])]


def _tile(planes: list[np.ndarray]) -> np.ndarray:
    """Planes side by side with a one-pixel transparent gap (NaN is drawn as nothing)."""
    height = max(p.shape[0] for p in planes)
    parts = []
    for p in planes:
        padded = np.full((height, p.shape[1]), np.nan)
        padded[: p.shape[0]] = p
        parts += [padded, np.full((height, 1), np.nan)]
    return np.concatenate(parts[:-1], axis=1)

