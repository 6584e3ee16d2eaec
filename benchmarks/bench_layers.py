"""Emitted layers beside each framework's own fastest formulation and OpenCV, on CPU.

Two cases, each on each backend (Keras on TensorFlow, torch, JAX), in one run:

* a 31x31 Gaussian (sigma 5, border reflect101) on a 1024x1024 float32 grey image;
* a 3x3 Sobel (x derivative, border reflect101) on a 1024x1024x3 float32 image.

For each, the time of kreg's layer (``method="auto"``) beside the framework's own direct
(one 2-D convolution), separable (two 1-D convolutions) and FFT (image and 2-D kernel through
the framework's real 2-D FFT at a 2-3-5-smooth length, product, inverse) formulations, each
with the same border done by the framework's own padding, and beside ``cv2.GaussianBlur`` /
``cv2.Sobel`` measured in the same process. Best of 30 rounds after a warm-up, every contender
(OpenCV too) timed in each round in a shuffled order (the machine is shared: the best is the
figure to compare); the time is the framework's call alone (a TensorFlow tensor's ``.numpy()``
copy, 1 ms for 1024x1024x3, is left out, as OpenCV has none). Every output is checked against
OpenCV first (1e-4).

Targets: kreg's layer within 1.25x of the fastest formulation of its framework; Keras on
TensorFlow within 2.5x of ``cv2.GaussianBlur``, JAX within 3.5x; the Sobel within 2x of
``cv2.Sobel`` in Keras on TensorFlow.
``tensorflow-xla`` runs the TensorFlow contenders again, each compiled by XLA
(``tf.function(jit_compile=True)``), with kreg's separable layer beside its ``auto`` one.
Run: ``.venv/bin/python benchmarks/bench_layers.py [tensorflow|tensorflow-xla|torch|jax ...]`` (each backend
runs in a process of its own; a missing framework is skipped).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import registry  # noqa: E402
from timing import race  # noqa: E402  (benchmarks/timing.py, beside this script)
from registry.adapters.methods import fast_size  # noqa: E402

REPEAT = 30
SIDE = 1024
#: (framework's fastest, OpenCV) bars per backend and case; None: no bar against OpenCV.
TARGETS = {
    ("tensorflow", "gaussian"): (1.25, 2.5),
    ("jax", "gaussian"): (1.25, 3.5),
    ("torch", "gaussian"): (1.25, None),
    ("tensorflow", "sobel"): (1.25, 2.0),
    ("jax", "sobel"): (1.25, None),
    ("torch", "sobel"): (1.25, None),
    ("tensorflow-xla", "gaussian"): (1.25, 2.5),
    ("tensorflow-xla", "sobel"): (1.25, 2.0),
}


def images() -> tuple[np.ndarray, np.ndarray]:
    import skimage.data
    import skimage.transform

    grey = skimage.transform.resize(skimage.data.camera(), (SIDE, SIDE)).astype(np.float32)
    rgb = skimage.transform.resize(skimage.data.astronaut(), (SIDE, SIDE)).astype(np.float32)
    return grey, rgb


def cases() -> dict[str, dict]:
    """Per case: the kernel, the layer options, the image, OpenCV's call, and the 1-D factors."""
    grey, rgb = images()
    gauss = registry.load("gaussian", ksize=31, sigma=5.0)
    sobel = registry.load("sobel_x")
    return {
        "gaussian": {
            "kernel": gauss,
            "options": {"border": "reflect101"},
            "image": grey[:, :, None],
            "cv2": lambda: cv2.GaussianBlur(grey, (31, 31), 5, borderType=cv2.BORDER_REFLECT_101),
            "what": "31x31 Gaussian sigma 5, reflect101, 1024x1024 grey",
        },
        "sobel": {
            "kernel": sobel,
            "options": {"border": "reflect101"},
            "image": rgb,
            "cv2": lambda: cv2.Sobel(rgb, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101),
            "what": "3x3 Sobel x, reflect101, 1024x1024x3",
        },
    }


def formulations(backend: str, case: dict) -> tuple[dict[str, Callable[[], object]], Callable[[object], np.ndarray]]:
    """kreg's layer and the framework's own direct / separable / FFT, each returning the framework's
    result (computed: JAX's blocked on), and the conversion of a result to NHWC NumPy."""
    kernel, image = case["kernel"], case["image"]
    values = np.asarray(kernel.array, np.float32)
    column, row = (np.asarray(f, np.float32) for f in kernel.separable)
    h, w = values.shape
    pads = ((h // 2, h - 1 - h // 2), (w // 2, w - 1 - w // 2))
    c = image.shape[2]
    size = [fast_size(image.shape[0] + h - 1), fast_size(image.shape[1] + w - 1)]
    if backend.startswith("tensorflow"):
        import tensorflow as tf

        import registry.keras as rk

        x = tf.constant(image[None])
        layer = rk.to_layer(kernel, **case["options"])
        pad = [[0, 0], list(pads[0]), list(pads[1]), [0, 0]]
        plane = tf.constant(values[:, :, None, None])
        col = tf.constant(np.repeat(column[:, None, None, None], c, 2))
        rw = tf.constant(np.repeat(row[None, :, None, None], c, 2))

        def conv(y: object, weight: object) -> object:  # a plain convolution for one channel
            if c == 1:
                return tf.nn.conv2d(y, weight, 1, "VALID")
            return tf.nn.depthwise_conv2d(y, tf.tile(weight, (1, 1, c, 1)), [1, 1, 1, 1], "VALID")

        def fft() -> object:
            y = tf.transpose(tf.pad(x, pad, "REFLECT"), (0, 3, 1, 2))
            kf = tf.math.conj(tf.signal.rfft2d(tf.constant(values), fft_length=size))
            out = tf.signal.irfft2d(tf.signal.rfft2d(y, fft_length=size) * kf, fft_length=size)
            return tf.transpose(out[:, :, : image.shape[0], : image.shape[1]], (0, 2, 3, 1))

        run = {
            "kreg": lambda: layer(x),
            "direct": lambda: conv(tf.pad(x, pad, "REFLECT"), plane),
            "separable": lambda: conv(conv(tf.pad(x, pad, "REFLECT"), col[:, :, :1]), rw[:, :, :1]),
            "fft": fft,
        }
        if backend == "tensorflow-xla":  # everything compiled by XLA; kreg's separable layer too
            separable = rk.to_layer(kernel, **case["options"], method="separable")
            run["kreg separable"] = lambda: separable(x)
        xla = backend == "tensorflow-xla"
        return {k: tf.function(f, jit_compile=xla, autograph=False) for k, f in run.items()}, lambda r: r.numpy()
    if backend == "torch":
        import torch
        import torch.nn.functional as F

        import registry.torch as rt

        torch.set_grad_enabled(False)
        x = torch.tensor(image.transpose(2, 0, 1)[None].copy())
        module = rt.to_layer(kernel, **case["options"])
        pad = [pads[1][0], pads[1][1], pads[0][0], pads[0][1]]
        plane = torch.tensor(values)[None, None].expand(c, 1, h, w)
        col = torch.tensor(column).view(1, 1, h, 1).expand(c, 1, h, 1)
        rw = torch.tensor(row).view(1, 1, 1, w).expand(c, 1, 1, w)

        def fft() -> object:
            y = F.pad(x, pad, mode="reflect")
            kf = torch.fft.rfft2(torch.tensor(values), s=size).conj()
            return torch.fft.irfft2(torch.fft.rfft2(y, s=size) * kf, s=size)[
                :, :, : image.shape[0], : image.shape[1]
            ]

        run = {
            "kreg": lambda: module(x),
            "direct": lambda: F.conv2d(F.pad(x, pad, mode="reflect"), plane, groups=c),
            "separable": lambda: F.conv2d(
                F.conv2d(F.pad(x, pad, mode="reflect"), col, groups=c), rw, groups=c
            ),
            "fft": fft,
        }
        return run, lambda r: r.numpy().transpose(0, 2, 3, 1)
    import jax
    import jax.numpy as jnp
    from jax import lax

    import registry.jax as rj

    x = jnp.asarray(image[None])
    layer = rj.to_layer(kernel, **case["options"])
    pad = ((0, 0), pads[0], pads[1], (0, 0))
    numbers = ("NHWC", "HWIO", "NHWC")
    plane = jnp.asarray(np.repeat(values[:, :, None, None], c, 3))
    col = jnp.asarray(np.repeat(column[:, None, None, None], c, 3))
    rw = jnp.asarray(np.repeat(row[None, :, None, None], c, 3))

    def conv(y: object, weight: object) -> object:
        return lax.conv_general_dilated(
            y, weight, (1, 1), "VALID", dimension_numbers=numbers, feature_group_count=c
        )

    def fft(y: object) -> object:
        y = jnp.moveaxis(jnp.pad(y, pad, mode="reflect"), 3, 1)
        kf = jnp.conj(jnp.fft.rfft2(jnp.asarray(values), s=size))
        out = jnp.fft.irfft2(jnp.fft.rfft2(y, s=size) * kf, s=size)
        return jnp.moveaxis(out[:, :, : image.shape[0], : image.shape[1]], 1, 3)

    run = {
        "kreg": jax.jit(layer),
        "direct": jax.jit(lambda y: conv(jnp.pad(y, pad, mode="reflect"), plane)),
        "separable": jax.jit(lambda y: conv(conv(jnp.pad(y, pad, mode="reflect"), col), rw)),
        "fft": jax.jit(fft),
    }
    return {k: (lambda f=f: f(x).block_until_ready()) for k, f in run.items()}, np.asarray


def run_backend(backend: str) -> bool:
    """Times every case on ``backend``; prints one line per formulation; True if every bar is met."""
    met = True
    for name, case in cases().items():
        expected = case["cv2"]()
        expected = expected if expected.ndim == 3 else expected[:, :, None]
        timed, to_numpy = formulations(backend, case)
        for label, fn in timed.items():
            error = float(np.abs(to_numpy(fn())[0] - expected).max())
            if error > 1e-4 * max(1.0, float(np.abs(expected).max())):
                print(f"  {backend} {label}: max |difference| from OpenCV {error:.3g}: NOT the same numbers")
                met = False
        contenders = {"cv2": case["cv2"], **timed}
        ms = dict(zip(contenders, (t * 1e3 for t in race(REPEAT, **contenders))))
        fastest = min(("direct", "separable", "fft"), key=ms.__getitem__)
        own, opencv = TARGETS[(backend, name)]
        print(f"{backend}: {case['what']} (kreg: {method_of(backend.split('-')[0], case)})")
        for label in ("cv2", "direct", "separable", "fft", *[k for k in timed if k.startswith("kreg")]):
            print(
                f"  {label:9s} {ms[label]:8.2f} ms  {ms[label] / ms['cv2']:6.2f}x cv2  "
                f"{ms[label] / ms[fastest]:5.2f}x {backend}'s fastest ({fastest})"
            )
        ok_own = ms["kreg"] <= own * ms[fastest]
        ok_cv2 = opencv is None or ms["kreg"] <= opencv * ms["cv2"]
        print(
            f"  target: kreg within {own}x of {fastest}: {'met' if ok_own else 'MISSED'}"
            + (f"; within {opencv}x of cv2: {'met' if ok_cv2 else 'MISSED'}" if opencv else "")
        )
        met = met and ok_own and ok_cv2
    return met


def method_of(backend: str, case: dict) -> str:
    from registry.adapters import plan

    p = plan.plan(case["kernel"], framework=backend, name="bench", **case["options"])
    return f"method={p.method!r}"


def main(argv: list[str]) -> int:
    backends = argv or ["tensorflow", "tensorflow-xla", "torch", "jax"]
    if len(backends) == 1:
        return 0 if run_backend(backends[0]) else 1
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (a shared machine: best of {REPEAT} rounds)"
    )
    failed = []
    for backend in backends:
        if importlib.util.find_spec(backend.split("-")[0]) is None:
            print(f"{backend}: not installed, skipped")
            continue
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        if subprocess.run([sys.executable, __file__, backend], env=env).returncode:
            failed.append(backend)
    print("every target met" if not failed else f"targets missed on: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
