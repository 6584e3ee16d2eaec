"""The registry surface, the same tests on a local directory and on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

import registry
from registry import KernelNotFoundError
from registry.format.pack import write_pack
from registry.store.packs import import_pack


def test_add_load_versions(any_registry: registry.Registry) -> None:
    reg = any_registry
    a = reg.add("team/edge", np.array([[1, -1]], "f4"), description="step")
    b = reg.add("team/edge", np.array([[1, -2]], "f4"))
    assert (a.ref, b.ref) == ("team/edge@1", "team/edge@2")
    assert reg.add("team/edge", np.array([[1, -2]], "f4")).ref == "team/edge@2"  # identical: no new version
    np.testing.assert_array_equal(reg.load("team/edge@1").array, [[1, -1]])
    np.testing.assert_array_equal(reg.load("team/edge").array, [[1, -2]])
    assert reg.versions("team/edge") == [1, 2]
    assert reg.next_version("team/edge") == 3
    assert "team/edge@2" in reg and "team/edge@3" not in reg


def test_loaded_values_filter_like_scipy(any_registry: registry.Registry) -> None:
    """What comes back from the store computes what the stored array computes (scipy as the reference)."""
    rng = np.random.default_rng(1)
    values = rng.normal(size=(5, 5)).astype("f8")
    any_registry.add("blur", values, dtype="float64")
    image = rng.normal(size=(32, 32))
    got = scipy.ndimage.correlate(image, fresh(any_registry).load("blur").array)
    np.testing.assert_allclose(got, scipy.ndimage.correlate(image, values))


def fresh(reg: registry.Registry) -> registry.Registry:
    """Another Registry object on the same store (nothing shared in memory)."""
    return registry.Registry(reg.url, builtins=False)


def test_list_remove_and_numbers_never_reissued(any_registry: registry.Registry) -> None:
    reg = any_registry
    for i in range(3):
        reg.add(f"k{i}", [[float(i)]])
    reg.add("k1", [[9.0]])
    assert [i.ref for i in reg.list_kernels()] == ["k0@1", "k1@2", "k2@1"]
    assert [i.ref for i in reg.list_kernels("k1", all_versions=True)] == ["k1@1", "k1@2"]
    assert reg.remove("k1@2") == ["k1@2"]
    assert reg.add("k1", [[10.0]]).ref == "k1@3"
    with pytest.raises(KernelNotFoundError, match="no version 2"):
        fresh(reg).load("k1@2")
    with pytest.raises(KernelNotFoundError, match="Did you mean"):
        reg.load("k11")


def test_batch_all_or_nothing(any_registry: registry.Registry) -> None:
    reg = any_registry
    with reg.batch():
        for i in range(5):
            reg.add(f"b/{i}", [[float(i)]])
    assert len(fresh(reg).list_kernels()) == 5
    with pytest.raises(RuntimeError), reg.batch():
        reg.add("b/late", [[1.0]])
        raise RuntimeError("abort")
    assert "b/late" not in fresh(reg)
    assert fresh(reg).fsck().ok


def test_verify_and_fsck_clean(any_registry: registry.Registry) -> None:
    reg = any_registry
    reg.add("g", registry.load("gaussian", ksize=5, sigma=1.0))
    assert reg.verify() == []
    report = fresh(reg).fsck()
    assert report.ok and report.kernels == 1


def test_packs_export_import_between_backends(any_registry: registry.Registry, tmp_path) -> None:
    reg = any_registry
    reg.add("p/a", [[1.0, 2.0]])
    pack = tmp_path / "p.h5"
    write_pack(pack, [(k._record, k.array) for k in reg.resolve(["p/*"])], name="p")
    report = import_pack(reg, pack, prefix="copy/")
    assert [s.result for s in report.steps] == ["copy/p/a@1"]
    assert fresh(reg).load("copy/p/a")._record["provenance"]["pack"]["name"] == "p"


def test_builtin_layer_under_a_remote_registry(remote_url: str) -> None:
    with registry.Registry(remote_url) as reg:
        np.testing.assert_array_equal(reg.load("sobel_x@1").array, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
        with pytest.raises(registry.ReadOnlyError):
            reg.add("sobel_x", [[1.0]])


def test_fsck_repair_rebuilds_a_lost_remote_index(remote_url: str) -> None:
    import obstore as obs

    reg = registry.Registry(remote_url, builtins=False)
    reg.add("r/a", [[1.0]])
    reg.add("r/a", [[2.0]])
    obs.delete(reg.backend.store, "index.json")
    again = registry.Registry(remote_url, builtins=False)
    with pytest.raises(registry.UnsafeFileError, match="fsck --repair"):
        again.list_kernels()
    assert again.fsck(repair=True).kernels == 2
    assert again.add("r/a", [[3.0]]).ref == "r/a@3"
