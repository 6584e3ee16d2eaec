"""The PyTorch adapter: modules and tensors from kernels, kernels from modules, state_dicts and
safetensors checkpoints, and learned layers crossing between PyTorch and Keras unchanged."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
skimage_data = pytest.importorskip("skimage.data")

import registry  # noqa: E402
import registry.torch as rt  # noqa: E402
from registry import Registry  # noqa: E402
from registry._api import add_converted  # noqa: E402

nn = torch.nn
RGB = (skimage_data.astronaut()[100:164, 150:230] / 255.0).astype(np.float32)
CAMERA = (skimage_data.camera()[200:260, 100:172] / 255.0).astype(np.float32)


def nchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(
        np.ascontiguousarray(image[None, None] if image.ndim == 2 else image.transpose(2, 0, 1)[None])
    )


def to_hwc(out: torch.Tensor) -> np.ndarray:
    return out.detach()[0].numpy().transpose(1, 2, 0)


def learned_conv(conv: nn.Conv2d, steps: int = 5) -> nn.Sequential:
    """A model whose first layer is ``conv``, trained a few steps to tell two sample images apart."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv1", conv)
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("head", nn.Linear(conv.out_channels, 2))
    rng = np.random.default_rng(0)
    coffee = (skimage_data.coffee() / 255.0).astype(np.float32)
    patches, labels = [], []
    for label, image in enumerate([skimage_data.astronaut() / 255.0, coffee]):
        for _ in range(16):
            y, x = rng.integers(0, 300, 2)
            patches.append(image[y : y + 24, x : x + 24].transpose(2, 0, 1))
            labels.append(label)
    x = torch.tensor(np.asarray(patches, np.float32)[:, : conv.in_channels])
    if conv.in_channels > 3:
        x = torch.cat([x, x[:, : conv.in_channels - 3]], dim=1)
    y = torch.tensor(labels)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


# -- learned layers between PyTorch and Keras ---------------------------------------------------


@pytest.mark.parametrize(("groups", "out"), [(1, 4), (3, 6), (3, 3)])
def test_a_learned_torch_conv2d_gives_the_same_outputs_as_a_keras_layer(
    reg: Registry, groups: int, out: int
) -> None:
    """Conv2d with bias, groups (1, grouped, depthwise) and dilation -> kreg -> Keras: same outputs."""
    keras = pytest.importorskip("keras")
    model = learned_conv(nn.Conv2d(3, out, 3, groups=groups, dilation=2, bias=True))
    conv = model.conv1
    kernel = add_converted(reg, "torch/conv1", rt.from_layer(model, "conv1"))
    record = reg.load(kernel.ref).spec
    assert record.provenance.origin == "learned" and record.provenance.source_layout == "OIHW"
    assert (record.provenance.source.framework, record.provenance.source.layer) == ("pytorch", "conv1")
    assert record.layout == ("HWIM" if groups == 3 else "HWIO")  # groups = in_channels: depthwise
    np.testing.assert_array_equal(kernel.bias, conv.bias.detach().numpy().astype(np.float64))
    with torch.no_grad():
        expected = to_hwc(conv(nchw(RGB)))
    layer = kernel.to_keras(dilation_rate=2)
    np.testing.assert_allclose(np.asarray(layer(RGB[None]))[0], expected, atol=1e-5)
    # torch's padding=2 on a dilated 3x3 (5 pixels) is kreg's zero border: same size, same values
    padded = nn.Conv2d(3, out, 3, groups=groups, dilation=2, padding=2)
    padded.load_state_dict(conv.state_dict())
    with torch.no_grad():
        expected = to_hwc(padded(nchw(RGB)))
    bordered = kernel.to_keras(dilation_rate=2, border="zero")
    np.testing.assert_allclose(np.asarray(bordered(RGB[None]))[0], expected, atol=1e-5)
    assert type(layer) is (keras.layers.DepthwiseConv2D if record.layout == "HWIM" else keras.layers.Conv2D)


@pytest.mark.parametrize(
    ("kind", "channels", "groups", "layout"),
    [("conv", 3, 1, "HWIO"), ("conv", 4, 2, "HWIO"), ("conv", 3, 3, "HWIM"), ("depthwise", 3, 3, "HWIM")],
)
def test_a_keras_conv2d_gives_the_same_outputs_as_a_torch_module(
    reg: Registry, kind: str, channels: int, groups: int, layout: str
) -> None:
    """The reverse: Keras Conv2D (bias, groups, dilation) or DepthwiseConv2D -> kreg -> torch."""
    keras = pytest.importorskip("keras")
    import registry.keras as rk

    keras.utils.set_random_seed(1)
    if kind == "depthwise":
        layer = keras.layers.DepthwiseConv2D(
            5,
            depth_multiplier=2,
            dilation_rate=2,
            use_bias=True,
            bias_initializer="glorot_uniform",
            name="dw",
        )
    else:
        layer = keras.layers.Conv2D(
            6,
            3,
            groups=groups,
            dilation_rate=2,
            use_bias=True,
            bias_initializer="glorot_uniform",
            name="conv",
        )
    image = np.concatenate([RGB, RGB[..., :1] * 0.5], axis=2)[..., :channels]
    expected = np.asarray(layer(image[None]))[0]
    kernel = add_converted(reg, "keras/layer", rk.from_layer(layer))
    assert kernel.layout == layout
    assert kernel.spec.provenance.source_layout == ("HWIM" if kind == "depthwise" else "HWIO")
    module = kernel.to_torch(dilation_rate=2)
    assert isinstance(module, nn.Conv2d) and module.groups == (3 if layout == "HWIM" else 1)
    with torch.no_grad():
        np.testing.assert_allclose(to_hwc(module(nchw(image))), expected, atol=1e-5)


# -- torch and Keras agree on every option ------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(border="symmetric"),
        dict(border="reflect101", separable=True),
        dict(border="constant(0.5)", strides=2),
        dict(padding="same", strides=2),
        dict(padding="same"),
        dict(padding="same", dilation_rate=2),
        dict(border="wrap", dilation_rate=(2, 1)),
        dict(in_channels=3, mode="mean", border="replicate"),
        dict(in_channels=3, mode="sum", separable=True, padding="same"),
        dict(in_channels=3, border="symmetric"),
    ],
)
@pytest.mark.parametrize("name", ["sobel_x", "roberts_pos", "gaussian7"])
def test_torch_module_equals_the_keras_layer_on_the_same_batch(name: str, options: dict) -> None:
    pytest.importorskip("keras")
    kernel = registry.load(name)
    if options.get("separable") and kernel.separable is None:
        pytest.skip(f"{name} has no separable factors")
    keras_out = np.asarray(kernel.to_keras(**options)(RGB[None]))[0]
    with torch.no_grad():
        torch_out = to_hwc(kernel.to_torch(**options)(nchw(RGB)))
    assert torch_out.shape == keras_out.shape
    np.testing.assert_allclose(torch_out, keras_out, atol=1e-5)


def test_to_tensor_is_a_writable_copy_in_oihw_without_warnings() -> None:
    kernel = registry.load("gabor_bank8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy of kreg's read-only array would warn
        weight = rt.to_tensor(kernel)
        plane = rt.to_tensor(registry.load("sobel_x"), in_channels=3)
    np.testing.assert_array_equal(weight.numpy(), kernel.as_layout("OIHW"))
    assert plane.shape == (3, 1, 3, 3) and weight.dtype == torch.float32
    weight.add_(1.0)  # the caller's own tensor: the kernel is unchanged
    np.testing.assert_array_equal(registry.load("gabor_bank8").as_layout("OIHW"), kernel.as_layout("OIHW"))


def test_a_plane_takes_any_channel_count_and_trainable_is_honoured() -> None:
    module = registry.load("gaussian5").to_torch(border="reflect101", trainable=True)
    with torch.no_grad():
        gray, rgb = module(nchw(CAMERA)), module(nchw(RGB))
    assert gray.shape[1] == 1 and rgb.shape[1] == 3
    assert all(p.requires_grad for p in module.parameters())
    assert not any(p.requires_grad for p in registry.load("gaussian5").to_torch().parameters())
    with pytest.raises(
        registry.InvalidKernelError, match="emitted for in_channels=1 and received 3 channels"
    ):
        registry.load("gaussian5").to_torch(in_channels=1, border="wrap")(nchw(RGB))
    with pytest.raises(registry.InvalidKernelError, match=r"takes a batch of images \(N, C, H, W\)"):
        registry.load("gaussian5").to_torch(border="wrap")(torch.from_numpy(CAMERA))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_dtypes(dtype: str) -> None:
    module = registry.load("gaussian5").to_torch(dtype=dtype, border="reflect101")
    assert next(module.parameters()).dtype == getattr(torch, dtype)


# -- state_dicts and safetensors checkpoints ---------------------------------------------------


def test_from_a_state_dict_with_groups(reg: Registry) -> None:
    conv = nn.Conv2d(4, 4, 3, groups=2)
    state = {"backbone.conv.weight": conv.weight.detach(), "backbone.conv.bias": conv.bias.detach()}
    kernel = rt.from_layer(state, "backbone.conv", groups=2)
    assert kernel.shape == (3, 3, 4, 4) and kernel.bias is not None
    assert not kernel.array[:, :, 2:, :2].any()  # the zeros across groups
    with torch.no_grad():
        expected = to_hwc(conv(nchw(np.concatenate([RGB, RGB[..., :1]], axis=2))))
    module = kernel.to_torch()
    with torch.no_grad():
        np.testing.assert_allclose(
            to_hwc(module(nchw(np.concatenate([RGB, RGB[..., :1]], axis=2)))), expected, atol=1e-5
        )
    with pytest.raises(registry.InvalidKernelError, match="No tensor 'head' in the checkpoint"):
        rt.from_layer(state, "head")
    with pytest.raises(registry.InvalidKernelError, match=r"has 2 Conv2d layers; name one .*\(a, b\)"):
        rt.from_layer(_two_convs())


def _two_convs() -> nn.Module:
    model = nn.Module()
    model.a, model.b = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)
    return model


def test_kreg_add_from_a_safetensors_checkpoint_and_export_back(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from registry.cli import cli

    model = learned_conv(nn.Conv2d(3, 4, 5, bias=True))
    ckpt = tmp_path / "model.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(ckpt))
    runner = CliRunner()
    db = ["--db", str(tmp_path / "db")]
    result = runner.invoke(
        cli, [*db, "add", "team/conv1", "--from", str(ckpt), "--tensor", "conv1.weight", "--tag", "learned"]
    )
    assert (result.exit_code, result.stdout) == (0, "team/conv1@1\n"), result.stderr
    kernel = Registry(tmp_path / "db").load("team/conv1")
    prov = kernel.spec.provenance
    assert (prov.origin, prov.source_layout, prov.source.layer) == ("learned", "OIHW", "conv1")
    assert prov.source.checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert kernel.layout == "HWIO" and kernel.shape == (5, 5, 3, 4)
    np.testing.assert_array_equal(kernel.bias, model.conv1.bias.detach().numpy().astype(np.float64))
    with torch.no_grad():
        np.testing.assert_allclose(
            to_hwc(kernel.to_torch()(nchw(RGB))), to_hwc(model.conv1(nchw(RGB))), atol=1e-6
        )

    missing = runner.invoke(cli, [*db, "add", "x", "--from", str(ckpt), "--tensor", "conv9.weight"])
    assert missing.exit_code == 2
    assert (
        "Error: model.safetensors has no tensor 'conv9.weight'. Weights there: conv1.weight, head.weight"
        in missing.stderr
    )
    alone = runner.invoke(cli, [*db, "add", "x", "--values", "[[1]]", "--tensor", "w"])
    assert alone.exit_code == 2 and "--tensor goes with --from" in alone.stderr

    out = tmp_path / "conv1.safetensors"
    rt.save_file(kernel, out)
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert sorted(f.keys()) == ["bias", "weight"]
        meta = f.metadata()
    assert json.loads(meta["kreg.record"])["sha256"] == kernel.sha256 and meta["kreg.layout"] == "OIHW"
    fresh = nn.Conv2d(3, 4, 5)
    fresh.load_state_dict(safetensors_torch.load_file(str(out)))  # PyTorch's own keys
    with torch.no_grad():
        np.testing.assert_array_equal(fresh(nchw(RGB)).numpy(), model.conv1(nchw(RGB)).numpy())
    again = runner.invoke(cli, [*db, "add", "team/again", "--from", str(out), "--tensor", "weight"])
    assert again.exit_code == 0, again.stderr
    assert Registry(tmp_path / "db").load("team/again").sha256 == kernel.sha256


def test_a_depthwise_export_loads_into_a_grouped_conv_and_comes_back(tmp_path: Path, reg: Registry) -> None:
    kernel = reg.add(
        "team/dw",
        np.random.default_rng(2).standard_normal((3, 3, 3, 2)).astype(np.float32),
        layout="HWIM",
        bias=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    )
    path = tmp_path / "dw.safetensors"
    rt.save_file(kernel, path)
    conv = nn.Conv2d(3, 6, 3, groups=int(_metadata(path)["kreg.groups"]))
    conv.load_state_dict(safetensors_torch.load_file(str(path)))
    with torch.no_grad():
        np.testing.assert_allclose(to_hwc(conv(nchw(RGB))), to_hwc(kernel.to_torch()(nchw(RGB))), atol=1e-6)
    back = rt.from_layer(path, "weight")  # kreg's own export: its groups and layout come back
    assert back.layout == "HWIM" and back.sha256 == kernel.sha256


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return dict(f.metadata())


def test_a_hostile_checkpoint_gives_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(registry.InvalidKernelError, match="is not a readable .safetensors file"):
        rt.from_layer(bad, "conv1.weight")
    huge_header = tmp_path / "huge.safetensors"
    huge_header.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(registry.InvalidKernelError, match="is not a readable .safetensors file"):
        rt.from_layer(huge_header, "conv1.weight")
    with pytest.raises(registry.InvalidKernelError, match="No such file"):
        rt.from_layer(tmp_path / "none.safetensors", "w")
