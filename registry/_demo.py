"""The end-to-end demo behind ``make demo``: every step printed as the command a person would type."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import numpy as np

OUT = Path("demo-out")


def kreg(*args: str) -> None:
    """Run one ``kreg`` command in-process, echoing it first; stop the demo if it fails."""
    from ._cli import cli

    print(f"\n$ kreg {shlex.join(args)}", flush=True)
    try:
        cli.main(list(args), prog_name="kreg", standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            sys.exit(f"demo step failed: kreg {shlex.join(args)}")


def main() -> None:
    import registry

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    db = str(OUT / "registry")
    print(f"kreg {registry.__version__} demo: a fresh registry in {db}")

    kreg("--db", db, "add", "demo/sobel_x", "--values", "[[1, 0, -1], [2, 0, -2], [1, 0, -1]]",
         "--description", "Sobel x derivative, OpenCV sign convention", "--tag", "edge", "--license", "CC0-1.0")

    # A PyTorch-layout (OIHW) bank of 4 random 5x5 filters over RGB, saved as .npz like a checkpoint.
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    np.savez(OUT / "torch_weights.npz", conv1=bank)
    kreg("--db", db, "add", "demo/torch_conv1", "--from", str(OUT / "torch_weights.npz:conv1"),
         "--layout", "OIHW", "--description", "conv1 of a PyTorch model, converted to HWIO", "--tag", "learned")

    # A true-convolution kernel flipped into the correlation form TensorFlow computes.
    kreg("--db", db, "add", "demo/emboss", "--values", "[[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]",
         "--convolution", "--description", "emboss, given as a convolution kernel")
    kreg("--db", db, "add", "demo/sobel_x", "--values", "[[1, 0, -1], [2, 0, -2], [1, 0, -1]]")  # same bytes
    kreg("--db", db, "list")
    kreg("--db", db, "show", "demo/emboss")

    print("\n$ python -c 'import registry; ...'")
    reg = registry.Registry(db)
    kernel = reg.load("demo/torch_conv1@1")
    print(f"  {kernel!r}: stored {kernel.layout} {kernel.shape}, as OIHW {kernel.as_layout('OIHW').shape}")
    print(f"  round trip to PyTorch layout is exact: {np.array_equal(kernel.as_layout('OIHW'), bank)}")
    kreg("--db", db, "verify")
    print(f"\nDone. The registry is in {OUT / 'registry'}; try: kreg --db {db} list")


if __name__ == "__main__":
    main()
