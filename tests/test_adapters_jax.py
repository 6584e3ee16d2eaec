"""The JAX adapter: every built-in and border against scipy / OpenCV, the same numbers as the Keras
and torch layers, kernels from Flax-style params.

These tests run in a child pytest process: once JAX has computed, its threads make the
fork-based reliability tests of the parent process liable to deadlock (JAX warns so).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")  # importing is harmless; computing is what starts JAX's threads
skimage_data = pytest.importorskip("skimage.data")

import registry  # noqa: E402
import registry.jax as rj  # noqa: E402
from registry import Registry  # noqa: E402
from registry._api import add_converted  # noqa: E402

RGB = (skimage_data.astronaut()[60:120, 200:270] / 255.0).astype(np.float32)
CHILD = "KREG_JAX_CHILD"
in_child = pytest.mark.skipif(
    os.environ.get(CHILD) != "1", reason="runs in the child process (see the module doc)"
)
BUILTINS = [info.name for info in registry.list_kernels(origin="builtin")]


def test_the_jax_tests_in_their_own_process() -> None:
    if os.environ.get(CHILD) == "1":
        pytest.skip("this is the child")
    root = Path(registry.__file__).parents[1]
    env = {
        **os.environ,
        CHILD: "1",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1] and "failed" not in result.stdout.splitlines()[-1]


@in_child
@pytest.mark.parametrize("name", BUILTINS)
def test_jax_function(name: str) -> None:
    from test_adapters import check_everything

    def apply(kernel: registry.Kernel, image: np.ndarray, border: str) -> np.ndarray:
        batch = image[None, :, :, None] if image.ndim == 2 else image[None]
        return np.asarray(jax.jit(rj.to_layer(kernel, border=border))(batch))[0]

    check_everything(name, apply)


@in_child
@pytest.mark.parametrize(
    "options",
    [
        dict(border="symmetric", separable=True),
        dict(padding="same", strides=2),
        dict(in_channels=3, mode="mean", border="wrap", dilation_rate=2),
    ],
)
def test_the_jax_layer_equals_the_torch_module(options: dict) -> None:
    torch = pytest.importorskip("torch")
    kernel = registry.load("gaussian7")
    ours = np.asarray(jax.jit(rj.to_layer(kernel, **options))(RGB[None]))[0]
    with torch.no_grad():
        theirs = kernel.to_torch(**options)(
            torch.from_numpy(np.ascontiguousarray(RGB.transpose(2, 0, 1)[None]))
        )
    np.testing.assert_allclose(ours, theirs[0].numpy().transpose(1, 2, 0), atol=1e-5)


@in_child
@pytest.mark.parametrize(("groups", "out"), [(1, 4), (3, 6), (3, 3)])
def test_flax_style_params_to_kreg_to_keras(reg: Registry, groups: int, out: int) -> None:
    """A grouped / depthwise lax convolution with bias -> kreg -> Keras and torch: same outputs."""
    rng = np.random.default_rng(3)
    kernel_hwio = rng.standard_normal((3, 3, 3 // groups, out)).astype(np.float32)
    bias = rng.standard_normal(out).astype(np.float32)
    params = {"params": {"Conv_0": {"kernel": kernel_hwio, "bias": bias}}}
    expected = np.asarray(
        jax.lax.conv_general_dilated(
            RGB[None],
            kernel_hwio,
            (1, 1),
            "VALID",
            rhs_dilation=(2, 2),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
        + bias
    )[0]
    stored = add_converted(reg, "jax/conv", rj.from_layer(params, "params/Conv_0", groups=groups))
    prov = stored.spec.provenance
    assert (prov.source.framework, prov.source.layer, prov.source_layout) == ("jax", "params/Conv_0", "HWIO")
    assert stored.layout == ("HWIM" if groups == 3 else "HWIO")
    np.testing.assert_allclose(
        np.asarray(rj.to_layer(stored, dilation_rate=2)(RGB[None]))[0], expected, atol=1e-5
    )
    pytest.importorskip("keras")
    np.testing.assert_allclose(
        np.asarray(stored.to_keras(dilation_rate=2)(RGB[None]))[0], expected, atol=1e-5
    )
    with pytest.raises(
        registry.InvalidKernelError, match="No 'Conv_9' in the params at 'params/Conv_9'. Keys there: Conv_0"
    ):
        rj.from_layer(params, "params/Conv_9")


@in_child
def test_bad_input_and_the_probe() -> None:
    layer = rj.to_layer(registry.load("sobel_x"), in_channels=3, border="reflect101")
    with pytest.raises(
        registry.InvalidKernelError, match="emitted for in_channels=3 and received 1 channels"
    ):
        layer(RGB[None, :, :, :1])
    with pytest.raises(registry.InvalidKernelError, match=r"takes a batch of images \(N, H, W, C\)"):
        layer(RGB[:, :, 0])
    from registry.adapters import plan as _adapt

    flipped = rj.Conv(layer.plan, {"kernel": layer.params["kernel"][::-1, ::-1]})
    x = _adapt.probe_input(layer.plan)
    with pytest.raises(registry.ProbeMismatchError):
        _adapt.check_probe(
            registry.load("sobel_x"),
            np.asarray(flipped(x)),
            x,
            {"in_channels": 3, "border": "reflect101"},
            what="flipped",
        )
