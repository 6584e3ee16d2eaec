"""A small kernel-prediction network trained in the test: it learns which Gaussian blurred its input.

The network sees a sharp patch and its blurred copy and predicts the blur's sigma; the kernel
(``exp(-r^2 / 2 sigma^2)`` as logits, normalised by ``kernel_conv(normalize="softmax")``)
blurs the sharp patch, and the loss is the difference from the blurred copy: every gradient
passes through the kernels input. The blurs come from the registry's ``gaussian`` family
applied by scipy; the predicted kernels are then stored with provenance and read back.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ndimage = pytest.importorskip("scipy.ndimage")
skimage_data = pytest.importorskip("skimage.data")

import registry  # noqa: E402
import registry.torch as rt  # noqa: E402


def test_a_kernel_prediction_network_learns_the_blur_and_its_kernels_are_stored(
    reg: registry.Registry,
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: more threads only contend on a shared machine
    try:
        start = time.process_time()
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        images = [skimage_data.camera(), skimage_data.astronaut().mean(-1), skimage_data.coffee().mean(-1)]
        patches = []
        for _ in range(256):
            image = images[rng.integers(len(images))]
            y, x = rng.integers(0, image.shape[0] - 24), rng.integers(0, image.shape[1] - 24)
            patches.append(image[y : y + 24, x : x + 24].astype(np.float32))
        patches_ = np.stack(patches)
        patches_ = (patches_ - patches_.mean((1, 2), keepdims=True)) / (
            patches_.std((1, 2), keepdims=True) + 1e-3
        )
        sigmas = np.linspace(0.5, 2.0, 6)
        truth = np.stack([registry.load("gaussian", ksize=5, sigma=float(s)).array for s in sigmas]).astype(
            "f4"
        )
        blurred = np.stack([[ndimage.correlate(p, k, mode="mirror") for p in patches_] for k in truth])

        class Abs(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x.abs()

        net = torch.nn.Sequential(
            torch.nn.Conv2d(2, 8, 3),
            Abs(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(8, 16),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 1),
        )
        r2 = torch.tensor(
            [[(y - 2) ** 2 + (x - 2) ** 2 for x in range(5)] for y in range(5)], dtype=torch.float32
        )
        conv = rt.kernel_conv(border="reflect101", normalize="softmax")
        optimizer = torch.optim.Adam(net.parameters(), 1e-2)

        def predict(sharp: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
            sigma = torch.nn.functional.softplus(net(torch.cat([sharp, blur], 1))) + 0.2
            return -r2 / (2 * sigma[:, :, None] ** 2)  # logits; the layer's softmax normalises them

        losses = []
        for _ in range(1200):
            i, j = rng.integers(0, 256, 32), rng.integers(0, 6, 32)
            sharp, blur = torch.tensor(patches_[i])[:, None], torch.tensor(blurred[j, i])[:, None]
            loss = torch.mean((conv(sharp, predict(sharp, blur)) - blur) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        cpu = time.process_time() - start
        fall = np.mean(losses[:20]) / np.mean(losses[-20:])
        assert fall >= 10, f"loss fell {fall:.1f}x"
        assert cpu <= 30, f"{cpu:.1f} s of CPU"

        i, j = np.arange(8), np.arange(8) % 6
        sharp, blur = torch.tensor(patches_[i])[:, None], torch.tensor(blurred[j, i])[:, None]
        kernels = torch.softmax(predict(sharp, blur).reshape(8, 25), -1).reshape(8, 5, 5)
        assert float((kernels.detach() - torch.tensor(truth[j])).abs().mean()) < 0.01
        inputs = torch.cat([sharp, blur], 1)
        raw = inputs.numpy()
        digest = hashlib.sha256(f"{raw.dtype.str}{raw.shape};".encode() + raw.tobytes()).hexdigest()
        stored = registry.add_predicted("kpn/blur", kernels, model=net, inputs=inputs, registry=reg)
        for n, kernel in enumerate(stored):
            again = reg.load(kernel.ref)
            assert np.array_equal(again.array, kernels[n].detach().numpy())
            assert again.spec.provenance.references == (f"kreg:input-sha256={digest};index={n}",)
    finally:
        torch.set_num_threads(threads)
