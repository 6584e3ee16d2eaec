"""Hostile packs: every kind refused with an error naming the reason, the registry byte-for-byte unchanged."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from registry import Registry, UnsafeFileError
from registry.format.guard import Limits
from registry.format.pack import parse_pack, write_pack
from registry.store.packs import import_pack

from hostile import KINDS


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "reg")
    reg.add("team/existing", [[1.0, 2.0]])
    return reg


@pytest.fixture
def pack(tmp_path: Path, reg: Registry) -> Path:
    rng = np.random.default_rng(0)
    kernels = [
        reg.add("team/big", rng.standard_normal((64, 64)).astype(np.float32)),
        reg.add("team/bank", rng.standard_normal((3, 3, 2, 4)).astype(np.float16), layout="HWIO"),
        reg.add("team/int", np.arange(9, dtype=np.int8).reshape(3, 3)),
    ]
    out = tmp_path / "packs" / "valid.h5"
    out.parent.mkdir()
    return write_pack(out, [(k._record, k.array) for k in kernels], name="valid", author="tests")


def test_the_valid_pack_imports(reg: Registry, pack: Path, tmp_path: Path) -> None:
    fresh = Registry(tmp_path / "fresh")
    report = import_pack(fresh, pack)
    assert [s.action for s in report.steps] == ["add", "add", "add"]
    assert fresh.verify() == []


def test_there_are_at_least_25_kinds() -> None:
    assert len(KINDS) >= 25


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_hostile_pack_is_refused_and_registry_unchanged(kind: str, reg: Registry, pack: Path, tmp_path: Path) -> None:
    build, error, reason = KINDS[kind]
    hostile = build(pack, tmp_path)
    before = snapshot(reg.path)
    with pytest.raises(error) as info:
        import_pack(reg, hostile, timeout=30)
    assert reason in str(info.value)
    assert str(hostile.name) in str(info.value) or kind in ("symlink_to_the_registry",)
    assert snapshot(reg.path) == before
    assert not Path("/tmp/kreg-pwned").exists()


def test_too_many_objects_is_refused(pack: Path) -> None:
    with pytest.raises(Exception, match="more than 2 objects"):
        parse_pack(pack, limits=Limits(max_objects=2))


PLUGIN = textwrap.dedent(
    """
    #include <stdio.h>
    #include <stdlib.h>
    __attribute__((constructor)) static void mark(void) {
        const char *path = getenv("KREG_MARKER");
        if (path) { FILE *f = fopen(path, "w"); if (f) { fputs("ran", f); fclose(f); } }
    }
    int H5PLget_plugin_type(void) { return 0; }
    const void *H5PLget_plugin_info(void) { return 0; }
    """
)


def test_a_plugin_filter_never_loads_a_library(pack: Path, reg: Registry, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler to build the marker plugin")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (tmp_path / "marker.c").write_text(PLUGIN)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(plugins / "libmarker.so"), str(tmp_path / "marker.c")],
                   check=True)
    hostile = KINDS["plugin_filter"][0](pack, tmp_path)
    marker = tmp_path / "marker"
    env = {**os.environ, "HDF5_PLUGIN_PATH": str(plugins), "KREG_MARKER": str(marker)}
    # Control: plain h5py reading that dataset does run the library, so the marker works.
    control = "import h5py; f = h5py.File(%r); f['kernels/plug/@1'][...]" % str(hostile)
    subprocess.run([sys.executable, "-c", control], env=env, capture_output=True)
    if not marker.exists():
        pytest.skip("this libhdf5 does not load filter plugins at all")
    marker.unlink()
    monkeypatch.setenv("HDF5_PLUGIN_PATH", str(plugins))
    monkeypatch.setenv("KREG_MARKER", str(marker))
    with pytest.raises(Exception, match="compression filter id 32999 is not allowed"):
        import_pack(reg, hostile)
    assert not marker.exists(), "opening the pack loaded an HDF5 plugin"


OPEN_ALLOW_LIST = textwrap.dedent(
    """
    # Test only: stands in for the Python interpreter read_pack starts. It runs the reader
    # child's own program unchanged, in the environment read_pack gave it, after letting
    # filter 32999 through the guard's allow-list: only the child's plugin switch remains.
    import json, sys
    args = sys.argv[1:]
    code = args[args.index("-c") + 1]
    sys.argv = ["-c", *args[args.index("-c") + 2:]]
    sys.path[:] = json.loads(sys.argv[2])
    import registry.format.guard as guard
    guard.ALLOWED_FILTERS[32999] = "test"
    exec(compile(code, "<child>", "exec"))
    """
)


def planted_filter_with_a_record(pack: Path) -> Path:
    """A well-formed kernel (record, hash) whose one filter is id 32999."""
    import json

    import h5py

    from registry.format.content import content_hash

    values = np.ones((4, 4), np.float32)
    record = {"schema_version": 1, "name": "plug", "version": 1, "shape": [4, 4], "dtype": "float32",
              "layout": "HW", "provenance": {"origin": "handmade", "created_at": "2026-11-25T00:00:00Z"},
              "sha256": content_hash(values)}
    with h5py.File(pack, "r+") as f:
        ds = f.create_dataset("kernels/plug/@1", data=values, chunks=(4, 4), compression="lzf")
        ds.attrs["record"] = json.dumps(record)
    data = bytearray(pack.read_bytes())
    name = data.find(b"lzf\x00")  # filter pipeline message: id(2) name length(2) flags(2) count(2) name
    data[name - 8:name - 6] = (32999).to_bytes(2, "little")
    pack.write_bytes(bytes(data))
    return pack


def test_the_reader_child_disables_hdf5_plugins_on_its_own(pack: Path, reg: Registry, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth, tested apart from the guard's filter allow-list: with the
    allow-list opened in the child, a pack whose filter is a planted plugin must still not load it."""
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler to build the marker plugin")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (tmp_path / "marker.c").write_text(PLUGIN)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(plugins / "libmarker.so"), str(tmp_path / "marker.c")],
                   check=True)
    interpreter = tmp_path / "python-open-allow-list"
    interpreter.write_text(f"#!{sys.executable}\n{OPEN_ALLOW_LIST}")
    interpreter.chmod(0o755)
    hostile = planted_filter_with_a_record(pack)
    marker = tmp_path / "marker"
    env = {"HDF5_PLUGIN_PATH": str(plugins), "KREG_MARKER": str(marker)}
    # Control: parsing in a process without the switch does reach the plugin loader.
    control = ("import registry.format.guard as g; g.ALLOWED_FILTERS[32999] = 'test'\n"
               f"from registry.format.pack import parse_pack\ntry: parse_pack({str(hostile)!r})\nexcept Exception as e: print(e)")
    out = subprocess.run([sys.executable, "-c", control], env={**os.environ, **env}, capture_output=True, text=True)
    if not marker.exists():
        pytest.skip(f"this libhdf5 does not load filter plugins at all ({out.stdout.strip()[-200:]})")
    marker.unlink()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    with pytest.raises(UnsafeFileError) as info:
        import_pack(reg, hostile, timeout=60)
    # The allow-list was open in the child, so the refusal came from the read, not the guard.
    assert "could not read" in str(info.value), info.value
    assert not marker.exists(), "the reader child loaded an HDF5 plugin"


@pytest.mark.parametrize("kind", ["external_link_absolute", "external_link_to_sibling", "external_storage",
                                  "virtual_dataset"])
def test_no_file_outside_the_pack_is_opened(kind: str, pack: Path, tmp_path: Path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    hostile = KINDS[kind][0](pack, tmp_path)
    log = tmp_path / "strace.log"
    code = f"from registry.format.pack import parse_pack\ntry: parse_pack({str(hostile)!r})\nexcept Exception as e: print(type(e).__name__)"
    result = subprocess.run([strace, "-f", "-e", "trace=open,openat,openat2", "-o", str(log), sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=60)
    if "Operation not permitted" in result.stderr or not log.exists():
        pytest.skip("strace cannot trace here")
    assert result.stdout.strip() == "UnsafeFileError"
    opened = log.read_text()
    assert "/etc/passwd" not in opened
    assert "secret.h5" not in opened
