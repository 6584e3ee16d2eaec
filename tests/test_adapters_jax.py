"""The JAX adapter: jittable layers equal to the Keras and torch ones, kernels from Flax-style params."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
skimage_data = pytest.importorskip("skimage.data")

import registry  # noqa: E402
import registry.jax as rj  # noqa: E402
from registry import Registry  # noqa: E402
from registry._api import add_converted  # noqa: E402

RGB = (skimage_data.astronaut()[60:120, 200:270] / 255.0).astype(np.float32)


@pytest.mark.parametrize("options", [dict(border="symmetric", separable=True), dict(padding="same", strides=2),
                                     dict(in_channels=3, mode="mean", border="wrap", dilation_rate=2)])
def test_the_jax_layer_equals_the_torch_module(options: dict) -> None:
    torch = pytest.importorskip("torch")
    kernel = registry.load("gaussian7")
    ours = np.asarray(jax.jit(rj.to_layer(kernel, **options))(RGB[None]))[0]
    with torch.no_grad():
        theirs = kernel.to_torch(**options)(torch.from_numpy(np.ascontiguousarray(RGB.transpose(2, 0, 1)[None])))
    np.testing.assert_allclose(ours, theirs[0].numpy().transpose(1, 2, 0), atol=1e-5)


@pytest.mark.parametrize(("groups", "out"), [(1, 4), (3, 6), (3, 3)])
def test_flax_style_params_to_kreg_to_keras(reg: Registry, groups: int, out: int) -> None:
    """A grouped / depthwise lax convolution with bias -> kreg -> Keras and torch: same outputs."""
    rng = np.random.default_rng(3)
    kernel_hwio = rng.standard_normal((3, 3, 3 // groups, out)).astype(np.float32)
    bias = rng.standard_normal(out).astype(np.float32)
    params = {"params": {"Conv_0": {"kernel": kernel_hwio, "bias": bias}}}
    expected = np.asarray(jax.lax.conv_general_dilated(
        RGB[None], kernel_hwio, (1, 1), "VALID", rhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups) + bias)[0]
    stored = add_converted(reg, "jax/conv", rj.from_layer(params, "params/Conv_0", groups=groups))
    prov = stored.spec.provenance
    assert (prov.source.framework, prov.source.layer, prov.source_layout) == ("jax", "params/Conv_0", "HWIO")
    assert stored.layout == ("HWIM" if groups == 3 else "HWIO")
    np.testing.assert_allclose(np.asarray(rj.to_layer(stored, dilation_rate=2)(RGB[None]))[0], expected, atol=1e-5)
    pytest.importorskip("keras")
    np.testing.assert_allclose(np.asarray(stored.to_keras(dilation_rate=2)(RGB[None]))[0], expected, atol=1e-5)
    with pytest.raises(registry.InvalidKernelError, match="No 'Conv_9' in the params at 'params/Conv_9'. Keys there: Conv_0"):
        rj.from_layer(params, "params/Conv_9")


def test_bad_input_and_the_probe() -> None:
    layer = rj.to_layer(registry.load("sobel_x"), in_channels=3, border="reflect101")
    with pytest.raises(registry.InvalidKernelError, match="emitted for in_channels=3 and received 1 channels"):
        layer(RGB[None, :, :, :1])
    with pytest.raises(registry.InvalidKernelError, match=r"takes a batch of images \(N, H, W, C\)"):
        layer(RGB[:, :, 0])
    from registry import _adapt

    flipped = rj.Conv(layer.plan, {"kernel": layer.params["kernel"][::-1, ::-1]})
    x = _adapt.probe_input(layer.plan)
    with pytest.raises(registry.ProbeMismatchError):
        _adapt.check_probe(registry.load("sobel_x"), np.asarray(flipped(x)), x,
                           {"in_channels": 3, "border": "reflect101"}, what="flipped")
