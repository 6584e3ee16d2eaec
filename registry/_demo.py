"""The end-to-end demo behind ``make demo``: each step printed as the command a person would type.

It lists and shows built-ins, trains a tiny CNN on scikit-image's sample images, registers
its first layer with provenance, exports it with two built-ins into a signed pack, imports
the pack into a second, empty registry as another team would, applies a kernel from it as a
Keras layer to a sample image, and draws the kernels and their responses.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np

OUT = Path("demo-out")


def kreg(*args: str) -> None:
    """Run one ``kreg`` command in-process, echoing it first; stop the demo if it fails."""
    from .cli import cli

    print(f"\n$ kreg {shlex.join(args)}", flush=True)
    try:
        cli.main(list(args), prog_name="kreg", standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            sys.exit(f"demo step failed: kreg {shlex.join(args)}")
    sys.stdout.flush()


def step(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def train_tiny_cnn(path: Path) -> None:
    """Four 5x5 filters learning to tell patches of two sample images apart (no download)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import skimage.data

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = [skimage.data.camera() / 255.0, skimage.data.coins() / 255.0]
    xs, ys = [], []
    for label, image in enumerate(images):
        for _ in range(256):
            y, x = rng.integers(0, image.shape[0] - 24), rng.integers(0, image.shape[1] - 24)
            xs.append(image[y:y + 24, x:x + 24, None])
            ys.append(label)
    x, y = np.asarray(xs, np.float32), np.asarray(ys)
    model = keras.Sequential([
        keras.Input((24, 24, 1)),
        keras.layers.Conv2D(4, 5, activation="relu", name="conv1"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ], name="tiny_cnn")
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    print(f"  trained tiny_cnn for 5 epochs on 512 patches of camera / coins: "
          f"accuracy {history.history['accuracy'][-1]:.2f}")
    model.save(path)
    print(f"  saved {path}")


def main() -> None:
    import registry

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    ours, theirs = str(OUT / "registry-vision"), str(OUT / "registry-other-team")
    print(f"kreg {registry.__version__} demo; everything it writes goes to {OUT}/")

    step("1. The built-in kernels")
    kreg("--db", ours, "list", "sobel*", "gaussian*", "gabor*")
    kreg("--db", ours, "show", "sobel_x")

    step("2. Train a tiny CNN and register its first layer")
    model = OUT / "tiny_cnn.keras"
    train_tiny_cnn(model)
    kreg("--db", ours, "add", "vision/conv1", "--from-keras", str(model), "--layer", "conv1",
         "--description", "First layer of tiny_cnn (camera vs coins)", "--tag", "learned", "--license", "CC-BY-4.0")
    kreg("--db", ours, "show", "vision/conv1")

    step("3. Export it with two built-ins into a signed pack")
    key = OUT / "vision.key"
    kreg("keygen", "-o", str(key))
    pack = OUT / "vision-pack.h5"
    kreg("--db", ours, "export", "vision/conv1", "sobel_x", "gaussian5", "-o", str(pack),
         "--author", "Vision team", "--sign", str(key))

    step("4. Another team imports it into an empty registry")
    kreg("--db", theirs, "import", str(pack), "--dry-run", "--prefix", "from-vision/", "--trust", f"{key}.pub")
    kreg("--db", theirs, "import", str(pack), "--prefix", "from-vision/", "--trust", f"{key}.pub")
    kreg("--db", theirs, "list", "from-vision/*")
    kreg("--db", theirs, "verify")

    step("5. Load a kernel from it as a Keras layer and apply it to a sample image")
    import skimage.data

    theirs_reg = registry.Registry(theirs)
    kernel = theirs_reg.load("from-vision/vision/conv1")
    layer = kernel.to_keras(border="reflect101")
    image = (skimage.data.camera() / 255.0).astype(np.float32)
    response = np.asarray(layer(image[None, :, :, None]))[0]
    print(f"  {kernel!r} -> {type(layer).__name__} {layer.name!r}; camera {image.shape} -> response {response.shape}")
    print(f"  provenance: {kernel.spec.provenance.source.model}/{kernel.spec.provenance.source.layer}, "
          f"keras {kernel.spec.provenance.source.framework_version}, arrived in pack "
          f"{kernel.spec.provenance.pack.name!r} by {kernel.spec.provenance.pack.author}")
    from ._plot import correlate

    sobel = theirs_reg.load("from-vision/sobel_x")
    by_keras = np.asarray(sobel.to_keras(border="reflect101")(image[None, :, :, None]))[0, :, :, 0]
    by_numpy = correlate(image.astype(np.float64), sobel.array.astype(np.float64))
    print(f"  from-vision/sobel_x as a Keras layer vs a NumPy correlation with OpenCV's border: "
          f"max |difference| = {np.abs(by_keras - by_numpy).max():.2e}")

    step("6. Pictures of the kernels and of their responses")
    kreg("--db", theirs, "plot", "from-vision/*", "-o", str(OUT / "kernels.png"))
    kreg("--db", theirs, "plot", "from-vision/*", "-o", str(OUT / "responses.png"), "--image", "camera")
    print(f"\nDone. Pictures: {OUT / 'kernels.png'} and {OUT / 'responses.png'}")
    print(f"Registries: {ours} and {theirs}; try: kreg --db {theirs} list")


if __name__ == "__main__":
    main()
