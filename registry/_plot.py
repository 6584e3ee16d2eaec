"""Pictures of kernels: a grid of filters on a diverging colour map, and their responses on an image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._exceptions import InvalidKernelError
from ._kernel import Kernel
from ._lazy import require

#: Planes per row of the grid; each cell is CELL inches at DPI dots per inch.
COLUMNS, CELL, DPI = 8, 2.0, 100
#: Largest plane whose values are written in its cells.
ANNOTATE = 7
#: Most planes drawn from one multi-channel kernel.
MAX_PLANES = 64


def planes(kernel: Kernel) -> list[tuple[str, np.ndarray]]:
    """``(title, 2-D plane)`` for each input/output pair of a kernel (an HW kernel has one)."""
    if kernel.layout == "HW":
        return [(kernel.ref, kernel.array.astype(np.float64))]
    h, w, a, b = kernel.shape
    out = []
    for i in range(a):
        for j in range(b):
            if len(out) == MAX_PLANES:
                return out
            out.append((f"{kernel.ref} [{i},{j}]", kernel.array[:, :, i, j].astype(np.float64)))
    return out


def sample_image(spec: str) -> np.ndarray:
    """A grayscale float image in [0, 1]: a scikit-image sample name (``camera``) or a file path."""
    path = Path(spec)
    if path.is_file():
        plt = require("matplotlib.pyplot", feature="kreg plot")
        try:
            image = np.asarray(plt.imread(path), dtype=np.float64)
        except Exception as exc:  # Pillow and matplotlib each raise their own types for a non-image
            raise InvalidKernelError(
                f"--image {path} is not an image matplotlib can read (PNG, JPEG, ...): {type(exc).__name__}: {exc}"
            ) from None
        if image.max() > 1.0:
            image = image / 255.0
    else:
        data = require("skimage.data", feature="kreg plot --image with a sample name")
        loader = getattr(data, spec, None)
        if spec.startswith("_") or not callable(loader):
            raise InvalidKernelError(
                f"--image is a file or a scikit-image sample such as camera, astronaut, coins. Received: {spec!r}."
            )
        image = np.asarray(loader(), dtype=np.float64) / 255.0
    if image.ndim == 3:
        image = image[..., :3].mean(axis=2)
    return image


def correlate(image: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """Same-size correlation with a reflect101 border (OpenCV's default), in NumPy."""
    h, w = plane.shape
    padded = np.pad(image, ((h // 2, h - 1 - h // 2), (w // 2, w - 1 - w // 2)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, plane.shape)
    return np.einsum("ijkl,kl->ij", windows, plane)


def plot_kernels(kernels: Sequence[Kernel], out: str | Path, *, image: str | None = None) -> tuple[int, int]:
    """Write a PNG grid of the kernels (and their responses on ``image``); return its pixel size.

    Each plane is drawn on a diverging colour map centred on zero (red positive, blue
    negative); planes up to 7x7 have their values written in.
    """
    mpl = require("matplotlib", feature="kreg plot")
    mpl.use("Agg")
    plt = require("matplotlib.pyplot", feature="kreg plot")
    cells = [cell for kernel in kernels for cell in planes(kernel)]
    if not cells:
        raise InvalidKernelError("Nothing to plot: no kernels matched.")
    picture = sample_image(image) if image else None
    columns = min(COLUMNS, len(cells))
    rows = math.ceil(len(cells) / columns) * (2 if picture is not None else 1)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * CELL, rows * CELL), dpi=DPI, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, (title, plane) in enumerate(cells):
        row, col = divmod(n, columns)
        row *= 2 if picture is not None else 1
        limit = float(np.abs(plane).max()) or 1.0
        ax = axes[row, col]
        ax.imshow(plane, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(title, fontsize=7)
        if max(plane.shape) <= ANNOTATE:
            for (y, x), value in np.ndenumerate(plane):
                ax.text(x, y, f"{value + 0.0:.3g}", ha="center", va="center", fontsize=6,
                        color="white" if abs(value) > 0.6 * limit else "black")
        if picture is not None:
            response = correlate(picture, plane)
            bound = float(np.percentile(np.abs(response), 99.5)) or 1.0  # a few edges must not wash out the rest
            axes[row + 1, col].imshow(response, cmap="RdBu_r", vmin=-bound, vmax=bound)
            axes[row + 1, col].set_title("response", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return columns * int(CELL * DPI), rows * int(CELL * DPI)
