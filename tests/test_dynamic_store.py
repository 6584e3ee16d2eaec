"""Predicted kernels back into the registry: one commit for the batch, each with its provenance."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import registry
from registry import InvalidKernelError, Registry


def _sha(*arrays: np.ndarray) -> str:
    """The recipe the docstring promises, written out: dtype string, shape, ';', then the raw bytes."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape};".encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_a_predicted_batch_is_stored_with_its_provenance(reg: Registry) -> None:
    rng = np.random.default_rng(0)
    predicted, images = rng.random((12, 5, 5)).astype("f4"), rng.random((12, 8, 9, 3))
    weights = {"dense": {"kernel": np.arange(6.0).reshape(2, 3), "bias": np.zeros(3)}}
    stored = registry.add_predicted(
        "team/blur", predicted, model=weights, inputs=images, registry=reg, tags=["kpn"]
    )
    assert [k.ref for k in stored] == [f"team/blur/{i:02d}@1" for i in range(12)]
    for i in (0, 7, 11):
        again = reg.load(f"team/blur/{i:02d}")
        assert np.array_equal(again.array, predicted[i]) and again.layout == "HW"
        prov = again.spec.provenance
        assert prov.origin == "learned" and "kpn" in again.spec.tags
        assert prov.source.checkpoint_sha256 == _sha(weights["dense"]["bias"], weights["dense"]["kernel"])
        assert prov.references == (f"kreg:input-sha256={_sha(images)};index={i}",)
        assert f"sample {i} of" in prov.description


def test_full_kernels_and_a_torch_module() -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Conv2d(2, 3, 3)
    predicted = torch.randn(2, 3, 3, 2, 3, requires_grad=True)
    first = registry.add_predicted("net/k", predicted * 2, model=net, inputs=torch.zeros(2, 4))
    assert first[1].layout == "HWIO" and np.allclose(first[1].array, predicted[1].detach().numpy() * 2)
    state = [t.detach().numpy() for t in net.state_dict().values()]
    assert first[0].spec.provenance.source.checkpoint_sha256 == _sha(*state)
    assert first[0].spec.provenance.source.framework == "torch"
    with torch.no_grad():
        net.weight += 1
    second = registry.add_predicted("net/k", predicted * 3, model=net, inputs=torch.zeros(2, 4))
    assert (
        second[0].spec.provenance.source.checkpoint_sha256
        != first[0].spec.provenance.source.checkpoint_sha256
    )


def test_all_or_nothing(reg: Registry) -> None:
    """A kernel the registry refuses (a NaN) in the middle: none of the batch is stored."""
    predicted = np.ones((5, 3, 3), "f4")
    predicted[3, 1, 1] = np.nan
    with pytest.raises(registry.KregError):
        registry.add_predicted(
            "team/p", predicted, model={"w": np.ones(2)}, inputs=np.zeros((5, 2)), registry=reg
        )
    assert reg.list_kernels("team/*") == []


@pytest.mark.parametrize(
    ("kernels", "inputs", "message"),
    [
        (np.ones((2, 4, 4, 9)), np.zeros((2, 3)), r"Received: kernels of shape \(2, 4, 4, 9\)"),
        (
            np.ones((2, 3, 3)),
            np.zeros((3, 3)),
            r"expected inputs of shape \(2, \.\.\.\)\. Received: inputs of shape \(3, 3\)",
        ),
    ],
)
def test_wrong_batches_are_refused(
    reg: Registry, kernels: np.ndarray, inputs: np.ndarray, message: str
) -> None:
    with pytest.raises(InvalidKernelError, match=message):
        registry.add_predicted("team/p", kernels, model={"w": np.ones(2)}, inputs=inputs, registry=reg)
    with pytest.raises(InvalidKernelError, match="Received: str"):
        registry.add_predicted(
            "team/p", np.ones((2, 3, 3)), model="net", inputs=np.zeros((2, 3)), registry=reg
        )
