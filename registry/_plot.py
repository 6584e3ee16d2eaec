"""Pictures of kernels: a grid of filters with colour bars, and their responses on an image as their layers compute them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._exceptions import InvalidKernelError
from ._lazy import require
from .kernels.kernel import Kernel

#: Output channels per row of the grid; each cell is CELL inches at DPI dots per inch.
COLUMNS, CELL, DPI = 8, 2.0, 100
#: Most output channels drawn (a unit is one output channel: its input planes and response).
MAX_UNITS = 64
#: Font size of the values written in the cells, in points.
VALUE_FONT = 6.0
#: Diverging map for signed values (zero is white), sequential map for responses that cannot be negative.
DIVERGING, SEQUENTIAL = "RdBu_r", "gray"


@dataclass
class Unit:
    """One output channel of a kernel: the planes it reads (one per input channel) and how it reads them."""

    title: str
    planes: list[tuple[str, np.ndarray]]
    channels: list[int]  # the image channel each plane reads
    in_channels: int  # channels of the layer's input

    @property
    def non_negative(self) -> bool:
        """Smoothing-like: no negative weight, so the response of a non-negative image is non-negative."""
        return all(float(p.min()) >= 0 for _, p in self.planes)


def units(kernel: Kernel) -> list[Unit]:
    """The output channels of ``kernel`` as its layer computes them.

    ``HW``: one output reading one channel. ``HWIO``: output ``j`` sums plane ``[i, j]``
    over every input channel ``i``. ``HWIM`` (depthwise): output ``(c, m)`` reads channel
    ``c`` only.
    """
    a = kernel.array.astype(np.float64)
    if kernel.layout == "HW":
        return [Unit(kernel.ref, [(kernel.ref, a)], [0], 1)]
    h, w, first, second = a.shape
    out = []
    if kernel.layout == "HWIM":
        for c in range(first):
            for m in range(second):
                title = f"{kernel.ref} [{c},{m}]"
                out.append(Unit(title, [(title, a[:, :, c, m])], [c], first))
        return out[:MAX_UNITS]
    for j in range(second):
        planes = [(f"{kernel.ref} [{i},{j}]", a[:, :, i, j]) for i in range(first)]
        out.append(Unit(f"{kernel.ref} [:,{j}]" if first > 1 else planes[0][0], planes, list(range(first)), first))
    return out[:MAX_UNITS]


def panel_count(kernel: Kernel) -> int:
    """How many panels (output channels, see :func:`units`) ``kernel`` has, before any cap."""
    if kernel.layout == "HW":
        return 1
    return kernel.shape[2] * kernel.shape[3] if kernel.layout == "HWIM" else kernel.shape[3]


def sample_image(spec: str, *, colour: bool = False) -> np.ndarray:
    """A float image in [0, 1]: a scikit-image sample name (``camera``) or a file path.

    Grayscale ``(H, W)`` by default; with ``colour`` an ``(H, W, 3)`` RGB image when the
    source has colour, else ``(H, W)``.
    """
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
            import difflib

            samples = [n for n in getattr(data, "__all__", dir(data)) if not n.startswith(("_", "download", "lfw"))]
            close = difflib.get_close_matches(spec, samples, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise InvalidKernelError(
                f"--image is a file or a scikit-image sample such as camera, astronaut, coins. Received: {spec!r}."
                f"{hint}"
            )
        image = np.asarray(loader(), dtype=np.float64) / 255.0
    if image.ndim == 3:
        image = image[..., :3] if colour and image.shape[2] >= 3 else image[..., :3].mean(axis=2)
    return image


def layer_input(image: np.ndarray, channels: int) -> tuple[np.ndarray, str]:
    """``image`` as a ``(H, W, channels)`` layer input, and a note on how it was made.

    An RGB image feeds a 3-channel layer as it is; otherwise the grey image is repeated
    in every channel.
    """
    if image.ndim == 3 and channels == 3:
        return image, ""
    grey = image.mean(axis=2) if image.ndim == 3 else image
    if channels == 1:
        return grey[..., None], ""
    return np.repeat(grey[..., None], channels, axis=2), f" (grey x{channels})"


def correlate(image: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """Same-size correlation with a reflect101 border (OpenCV's default), in NumPy."""
    h, w = plane.shape
    padded = np.pad(image, ((h // 2, h - 1 - h // 2), (w // 2, w - 1 - w // 2)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, plane.shape)
    return np.einsum("ijkl,kl->ij", windows, plane)


def response(unit: Unit, image: np.ndarray) -> np.ndarray:
    """What the layer's output channel ``unit`` gives on ``image`` (``(H, W, in_channels)``)."""
    return sum(correlate(image[..., c], plane) for (_, plane), c in zip(unit.planes, unit.channels))


def plot_kernels(kernels: Sequence[Kernel], out: str | Path, *, image: str | None = None,
                 shared_scale: bool = False) -> tuple[int, int]:
    """Write a PNG grid of the kernels (and their responses on ``image``); return its pixel size.

    See :func:`figure` for what is drawn.
    """
    plt = require("matplotlib.pyplot", feature="kreg plot")
    fig = figure(kernels, image=image, shared_scale=shared_scale)
    try:
        fig.savefig(out, dpi=DPI)
        width, height = fig.get_size_inches() * DPI
    finally:
        plt.close(fig)
    return int(round(width)), int(round(height))


def figure(kernels: Sequence[Kernel], *, image: str | None = None, shared_scale: bool = False) -> object:
    """The matplotlib figure of the kernels (and their responses on ``image``).

    Each plane is drawn on a diverging colour map centred on zero (red positive, blue
    negative) with a colour bar; values are written in where they fit. A multi-channel
    kernel is drawn as one column per output channel, its input planes above the response
    the layer computes from them.

    Args:
        kernels: the kernels to draw.
        out: the PNG to write.
        image: a scikit-image sample name or an image file; draws each output's response.
            Responses that cannot be negative (smoothing) use a sequential grey map.
        shared_scale: one colour scale for every plane (and one for every response), so
            that ``sobel_x`` and ``sobel_x_unit`` look different; by default each plane
            uses its own.
    """
    mpl = require("matplotlib", feature="kreg plot")
    mpl.use("Agg")
    plt = require("matplotlib.pyplot", feature="kreg plot")
    chosen = [unit for kernel in kernels for unit in units(kernel)][:MAX_UNITS]
    if not chosen:
        raise InvalidKernelError("Nothing to plot: no kernels matched.")
    picture = sample_image(image, colour=True) if image else None
    name = Path(image).stem if image and Path(image).is_file() else image
    depth = max(len(u.planes) for u in chosen) + (1 if picture is not None else 0)
    columns = min(COLUMNS, len(chosen))
    rows = math.ceil(len(chosen) / columns) * depth
    fig, axes = plt.subplots(rows, columns, figsize=(columns * CELL, rows * CELL), dpi=DPI, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    plane_limit = max(float(np.abs(p).max()) for u in chosen for _, p in u.planes) or 1.0
    responses = [None] * len(chosen)
    if picture is not None:
        responses = [response(u, layer_input(picture, u.in_channels)[0]) for u in chosen]
        response_limit = max(_bound(r) for r in responses)
    annotate = []
    for n, unit in enumerate(chosen):
        block, col = divmod(n, columns)
        for k, (title, plane) in enumerate(unit.planes):
            ax = axes[block * depth + k, col]
            limit = plane_limit if shared_scale else float(np.abs(plane).max()) or 1.0
            shown = ax.imshow(plane, cmap=DIVERGING, vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=5)
            annotate.append((ax, plane, limit))
        if responses[n] is not None:
            result = responses[n]
            ax = axes[block * depth + depth - 1, col]
            bound = response_limit if shared_scale else _bound(result)
            if unit.non_negative:
                shown = ax.imshow(result, cmap=SEQUENTIAL, vmin=0, vmax=bound)
            else:
                shown = ax.imshow(result, cmap=DIVERGING, vmin=-bound, vmax=bound)
            ax.set_title(f"{unit.title} on {name}{layer_input(picture, unit.in_channels)[1]}", fontsize=7)
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=5)
    fig.tight_layout()
    for ax, plane, limit in annotate:
        _write_values(ax, plane, limit)
    return fig


def _bound(result: np.ndarray) -> float:
    # The 99.5th percentile: a few strong edges must not wash out the rest.
    return float(np.percentile(np.abs(result), 99.5)) or float(np.abs(result).max()) or 1.0


def _write_values(ax: object, plane: np.ndarray, limit: float) -> None:
    """Write each value in its cell when the text fits there (measured on the drawn axes)."""
    box = ax.get_window_extent()  # type: ignore[attr-defined]
    cell_w, cell_h = box.width / plane.shape[1], box.height / plane.shape[0]
    font_px = VALUE_FONT * DPI / 72
    texts = [[f"{v + 0.0:.3g}" for v in row] for row in plane.tolist()]
    widest = max(len(t) for row in texts for t in row)
    if widest * 0.62 * font_px > 0.92 * cell_w or 1.3 * font_px > cell_h:
        return
    for (y, x), value in np.ndenumerate(plane):
        ax.text(x, y, texts[y][x], ha="center", va="center", fontsize=VALUE_FONT,  # type: ignore[attr-defined]
                color="white" if abs(value) > 0.6 * limit else "black")


# -- small pictures for the catalogue site (``registry.site``) -------------------------------


def png(fig: object) -> bytes:
    """The PNG bytes of a figure from :func:`figure`, which is closed after."""
    import io

    plt = require("matplotlib.pyplot", feature="kreg site")
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI)  # type: ignore[attr-defined]
    finally:
        plt.close(fig)
    return buffer.getvalue()


def raster(values: np.ndarray, *, signed: bool, bound: float | None = None, zoom: int = 1) -> bytes:
    """A PNG of ``values`` with no axes: the diverging map centred on zero when ``signed``,
    else the sequential one from zero, each value ``zoom`` pixels a side."""
    import io

    require("matplotlib", feature="kreg site").use("Agg")
    image = require("matplotlib.image", feature="kreg site")
    limit = bound if bound is not None else (_bound(values) if values.size > 64 else float(np.abs(values).max()) or 1.0)
    shown = np.kron(values, np.ones((zoom, zoom))) if zoom > 1 else values
    buffer = io.BytesIO()
    image.imsave(buffer, shown, format="png", cmap=DIVERGING if signed else SEQUENTIAL,
                 vmin=-limit if signed else 0.0, vmax=limit)
    return buffer.getvalue()


def frequency_response(plane: np.ndarray, size: int = 64) -> np.ndarray:
    """The magnitude of the 2-D DFT of ``plane`` zero-padded to ``size`` a side (larger for a
    larger plane), zero frequency in the centre: a smoother is bright in the middle, a
    derivative dark there."""
    n = max(size, *plane.shape)
    return np.fft.fftshift(np.abs(np.fft.fft2(plane, s=(n, n))))


def response_bound(result: np.ndarray) -> float:
    """The colour limit of a response (the 99.5th percentile of its magnitude), as :func:`figure` uses."""
    return _bound(result)

