"""Every built-in through every adapter and every border mode, against scipy and OpenCV on sample images.

The adapters: Keras on TensorFlow (in this process), Keras on JAX and on PyTorch (each in a
subprocess where ``import tensorflow`` fails), native PyTorch modules, and the raw tensors
for ``tf.nn`` and ``torch.nn.functional``. The references never go through kreg's adapter
code: ``scipy.ndimage.correlate`` with the matching border, and ``cv2.filter2D`` for the
borders OpenCV has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
ndimage = pytest.importorskip("scipy.ndimage")
skimage_data = pytest.importorskip("skimage.data")

import registry  # noqa: E402

BUILTINS = [info.name for info in registry.list_kernels(origin="builtin")]
BORDERS = ["zero", "constant(0.25)", "reflect101", "symmetric", "replicate", "wrap"]
#: kreg border -> (scipy.ndimage mode, cval), (OpenCV border or None).
SCIPY = {
    "zero": ("constant", 0.0),
    "constant(0.25)": ("constant", 0.25),
    "reflect101": ("mirror", 0.0),
    "symmetric": ("reflect", 0.0),
    "replicate": ("nearest", 0.0),
    "wrap": ("wrap", 0.0),
}
OPENCV = {
    "zero": cv2.BORDER_CONSTANT,
    "reflect101": cv2.BORDER_REFLECT_101,
    "symmetric": cv2.BORDER_REFLECT,
    "replicate": cv2.BORDER_REPLICATE,
}
# Real images, cropped so that ~2,000 layers stay quick: a gray one and a colour one.
GRAY = (skimage_data.camera()[100:164, 200:276] / 255.0).astype(np.float32)
RGB = (skimage_data.astronaut()[40:88, 180:236] / 255.0).astype(np.float32)
ROOT = Path(registry.__file__).parents[1]


def scipy_reference(kernel: registry.Kernel, image: np.ndarray, border: str) -> np.ndarray:
    """HWC output of the kernel on an HW or HWC image, channel by channel, with scipy alone."""
    mode, cval = SCIPY[border]
    planes = image[..., None] if image.ndim == 2 else image
    values = kernel.as_layout("HWIO").astype(np.float64)
    if kernel.layout == "HW":
        return np.stack(
            [
                ndimage.correlate(planes[..., c].astype(np.float64), values[:, :, 0, 0], mode=mode, cval=cval)
                for c in range(planes.shape[2])
            ],
            axis=-1,
        )
    return np.stack(
        [
            sum(
                ndimage.correlate(planes[..., c].astype(np.float64), values[:, :, c, o], mode=mode, cval=cval)
                for c in range(values.shape[2])
            )
            for o in range(values.shape[3])
        ],
        axis=-1,
    )


def opencv_reference(kernel: registry.Kernel, image: np.ndarray, border: str) -> np.ndarray | None:
    if border not in OPENCV or kernel.layout != "HW":
        return None
    out = cv2.filter2D(
        image.astype(np.float64), cv2.CV_64F, kernel.array.astype(np.float64), borderType=OPENCV[border]
    )
    return out[..., None] if out.ndim == 2 else out


def assert_close(ours: np.ndarray, reference: np.ndarray, what: str) -> None:
    """max |difference| <= 1e-5 of the reference's range (at least 1), everywhere."""
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != {reference.shape}"
    span = max(float(reference.max() - reference.min()), 1.0)
    worst = float(np.abs(ours - reference).max())
    assert worst <= 1e-5 * span, f"{what}: max |difference| {worst:.3g} over a range of {span:.3g}"


def cases(name: str) -> list[tuple[str, np.ndarray]]:
    """The images a kernel is tried on: gray for all, colour too for a plane (any channel count)."""
    kernel = registry.load(name)
    return [("gray", GRAY), ("rgb", RGB)] if kernel.layout == "HW" else [("gray", GRAY)]


def check_everything(
    name: str, apply: Callable[[registry.Kernel, np.ndarray, str], np.ndarray | None]
) -> None:
    kernel = registry.load(name)
    for label, image in cases(name):
        for border in BORDERS:
            out = apply(kernel, image, border)
            if out is None:
                continue
            what = f"{name} on {label} with {border}"
            assert_close(out, scipy_reference(kernel, image, border), what + " vs scipy")
            cv = opencv_reference(kernel, image, border)
            if cv is not None:
                assert_close(out, cv, what + " vs cv2.filter2D")


# -- Keras on TensorFlow, tf.nn ------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
def test_keras_on_tensorflow(name: str) -> None:
    pytest.importorskip("tensorflow")

    def apply(kernel: registry.Kernel, image: np.ndarray, border: str) -> np.ndarray:
        layer = kernel.to_keras(border=border)  # no in_channels: a plane takes gray and RGB alike
        batch = image[None, :, :, None] if image.ndim == 2 else image[None]
        return np.asarray(layer(batch))[0]

    check_everything(name, apply)


@pytest.mark.parametrize("name", BUILTINS)
def test_tf_nn_with_the_tensor(name: str) -> None:
    tf = pytest.importorskip("tensorflow")
    import registry.tensorflow as rtf

    def apply(kernel: registry.Kernel, image: np.ndarray, border: str) -> np.ndarray | None:
        tf_mode = {"zero": "CONSTANT", "reflect101": "REFLECT", "symmetric": "SYMMETRIC"}.get(border)
        if tf_mode is None:  # tf.pad has no replicate / wrap / constant value: the Keras layer does those
            return None
        channels = 1 if image.ndim == 2 else image.shape[2]
        h, w = kernel.shape[:2]
        batch = tf.constant(image[None, :, :, None] if image.ndim == 2 else image[None])
        padded = tf.pad(batch, [[0, 0], [h // 2, h - 1 - h // 2], [w // 2, w - 1 - w // 2], [0, 0]], tf_mode)
        if kernel.layout == "HW":
            filt = rtf.to_tensor(kernel, in_channels=channels)
            return tf.nn.depthwise_conv2d(padded, filt, [1, 1, 1, 1], "VALID")[0].numpy()
        return tf.nn.conv2d(padded, rtf.to_tensor(kernel), 1, "VALID")[0].numpy()

    check_everything(name, apply)


# -- native PyTorch ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
def test_torch_module(name: str) -> None:
    torch = pytest.importorskip("torch")

    def apply(kernel: registry.Kernel, image: np.ndarray, border: str) -> np.ndarray:
        module = kernel.to_torch(border=border)
        batch = torch.from_numpy(
            np.ascontiguousarray(image[None, None] if image.ndim == 2 else image.transpose(2, 0, 1)[None])
        )
        with torch.no_grad():
            return module(batch)[0].numpy().transpose(1, 2, 0)

    check_everything(name, apply)


@pytest.mark.parametrize("name", BUILTINS)
def test_torch_functional_with_the_tensor(name: str) -> None:
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    import registry.torch as rt

    def apply(kernel: registry.Kernel, image: np.ndarray, border: str) -> np.ndarray | None:
        torch_mode = {
            "zero": "constant",
            "reflect101": "reflect",
            "replicate": "replicate",
            "wrap": "circular",
        }.get(border)
        if torch_mode is None:  # F.pad has no symmetric mode: registry.torch.BorderPad2d does it
            return None
        channels = 1 if image.ndim == 2 else image.shape[2]
        h, w = kernel.shape[:2]
        batch = torch.from_numpy(
            np.ascontiguousarray(image[None, None] if image.ndim == 2 else image.transpose(2, 0, 1)[None])
        )
        padded = F.pad(batch, (w // 2, w - 1 - w // 2, h // 2, h - 1 - h // 2), mode=torch_mode)
        groups = channels if kernel.layout == "HW" else 1
        weight = rt.to_tensor(kernel, in_channels=channels) if kernel.layout == "HW" else rt.to_tensor(kernel)
        return F.conv2d(padded, weight, groups=groups)[0].numpy().transpose(1, 2, 0)

    check_everything(name, apply)


# -- Keras on JAX and on PyTorch, without TensorFlow ----------------------------------------------

BLOCKER = '''
"""Hides tensorflow from this interpreter, as on a machine where it is not installed."""
import importlib.machinery
import sys


class _PathFinderWithoutTensorflow(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None  # not found, as importlib.util.find_spec would say on such a machine
        return super().find_spec(name, path, target)


sys.meta_path[:] = [_PathFinderWithoutTensorflow if f is importlib.machinery.PathFinder else f
                    for f in sys.meta_path]
'''

BACKEND_SCRIPT = """
import json, sys
import numpy as np
import keras, registry
gray, rgb = np.load(sys.argv[1]), np.load(sys.argv[2])
outputs = {}
for name in json.loads(sys.argv[3]):
    kernel = registry.load(name)
    for border in json.loads(sys.argv[4]):
        for label, image in [("gray", gray), ("rgb", rgb)] if kernel.layout == "HW" else [("gray", gray)]:
            layer = kernel.to_keras(border=border)
            batch = image[None, :, :, None] if image.ndim == 2 else image[None]
            outputs[f"{name}|{border}|{label}"] = keras.ops.convert_to_numpy(layer(batch))[0]
# a model with a border layer and a channel-agnostic plane survives save / load on this backend
inputs = keras.Input((None, None, 3))
x = registry.load("sobel_x").to_keras(border="symmetric")(inputs)
model = keras.Model(inputs, registry.load("gaussian5").to_keras(in_channels=3, separable=True,
                                                                 border="wrap")(x))
model.save(sys.argv[5] + "/m.keras")
again = keras.models.load_model(sys.argv[5] + "/m.keras")
np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(rgb[None])),
                              keras.ops.convert_to_numpy(model(rgb[None])))
outputs["model|rgb"] = keras.ops.convert_to_numpy(model(rgb[None]))[0]
np.savez(sys.argv[5] + "/out.npz", **outputs)
print(json.dumps({"backend": keras.backend.backend(),
                  "tensorflow_imported": "tensorflow" in sys.modules}))
"""

# All built-ins with OpenCV's default border; every border on kernels of each shape kind.
BACKEND_CASES = [(name, ["reflect101"]) for name in BUILTINS] + [
    (name, BORDERS) for name in ("sobel_x", "roberts_pos", "gaussian5", "gabor_bank8")
]


def run_without_tensorflow(
    code: str, args: list[str], tmp: Path, backend: str
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with KERAS_BACKEND=backend and ``import tensorflow`` failing."""
    blocker = tmp / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}",
        "KREG_DB": str(tmp / "db"),
        "JAX_PLATFORMS": "cpu",
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=900,
    )


@pytest.fixture(scope="module", params=["jax", "torch"])
def backend_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Any, dict]:
    backend = request.param
    pytest.importorskip(backend)
    pytest.importorskip("keras")
    tmp = tmp_path_factory.mktemp(f"keras-{backend}")
    np.save(tmp / "gray.npy", GRAY)
    np.save(tmp / "rgb.npy", RGB)
    names = [name for name, _ in BACKEND_CASES]
    # one process per backend: each case is (name, borders); flatten to the union per name
    borders_of = {name: borders for name, borders in BACKEND_CASES}
    script = BACKEND_SCRIPT.replace(
        "for border in json.loads(sys.argv[4]):", "for border in json.loads(sys.argv[4])[name]:"
    )
    result = run_without_tensorflow(
        script,
        [str(tmp / "gray.npy"), str(tmp / "rgb.npy"), json.dumps(names), json.dumps(borders_of), str(tmp)],
        tmp,
        backend,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return backend, np.load(tmp / "out.npz"), report


def test_keras_runs_on_the_backend_without_tensorflow(backend_run: tuple[str, Any, dict]) -> None:
    backend, _, report = backend_run
    assert report == {"backend": backend, "tensorflow_imported": False}


@pytest.mark.parametrize(("name", "borders"), BACKEND_CASES, ids=[n for n, b in BACKEND_CASES])
def test_keras_on_jax_and_torch_backends(
    backend_run: tuple[str, Any, dict], name: str, borders: list[str]
) -> None:
    _, outputs, _ = backend_run
    kernel = registry.load(name)
    for label, image in cases(name):
        for border in borders:
            ours = outputs[f"{name}|{border}|{label}"]
            assert_close(ours, scipy_reference(kernel, image, border), f"{name} {border} {label} vs scipy")


def test_the_saved_model_gives_the_same_output_on_every_backend(backend_run: tuple[str, Any, dict]) -> None:
    """sobel_x (symmetric) then a separable 5x5 Gaussian (wrap), against scipy composed by hand."""
    _, outputs, _ = backend_run
    edges = scipy_reference(registry.load("sobel_x"), RGB, "symmetric")
    expected = scipy_reference(registry.load("gaussian5"), edges.astype(np.float32), "wrap")
    assert_close(outputs["model|rgb"], expected, "saved model")


def test_keras_alone_error_names_the_backend_extra(tmp_path: Path) -> None:
    """With KERAS_BACKEND=tensorflow (the default) and no TensorFlow: kreg's error, not a traceback."""
    code = """
        import registry
        try:
            registry.load("sobel_x").to_keras()
        except registry.MissingDependencyError as exc:
            print(exc)
        print(registry.load("sobel_x").to_torch().__class__.__name__)
    """
    pytest.importorskip("torch")
    result = run_without_tensorflow(code, [], tmp_path, "tensorflow")
    assert "needs a Keras backend: KERAS_BACKEND=tensorflow" in result.stdout, result.stderr[-2000:]
    assert "pip install 'kreg[tensorflow]'" in result.stdout
    assert result.stdout.strip().endswith("PlaneConv2d")  # native torch needs neither
