"""Disk-full and I/O errors injected at each write step of an add: a clear error, the registry as before."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import registry._transactions as store
from registry import Registry, StoreWriteError

STEPS = ("write_container", "fsync", "replace", "mkdir")


class Injector:
    """Counts the write steps of an add and fails the n-th one with ``error``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None, error: int) -> None:
        self.calls: list[str] = []
        self.fail_at, self.error = fail_at, error
        real = {"write_container": store.write_container, "fsync": os.fsync, "replace": os.replace,
                "mkdir": os.mkdir}
        monkeypatch.setattr(store, "write_container", self._wrap("write_container", real["write_container"]))
        monkeypatch.setattr(os, "fsync", self._wrap("fsync", real["fsync"]))
        monkeypatch.setattr(os, "replace", self._wrap("replace", real["replace"]))
        monkeypatch.setattr(os, "mkdir", self._wrap("mkdir", real["mkdir"]))

    def _wrap(self, name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            if not _called_by_kreg():
                return fn(*args, **kwargs)
            self.calls.append(name)
            if self.fail_at is not None and len(self.calls) - 1 == self.fail_at:
                raise OSError(self.error, os.strerror(self.error))
            return fn(*args, **kwargs)
        return wrapper


def _called_by_kreg() -> bool:
    """Whether the nearest caller outside os/pathlib is kreg (filelock's own mkdir is not a write step)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.endswith(("pathlib.py", "os.py")):
        frame = frame.f_back
    return frame is not None and f"{os.sep}registry{os.sep}" in frame.f_code.co_filename


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def step_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reg = Registry(tmp_path / "probe", builtins=False)
    reg.add("first", [[0.0]])
    with monkeypatch.context() as m:
        probe = Injector(m, None, 0)
        reg.add("new/ns/k", np.ones((3, 3), np.float32))
    return probe.calls


def test_every_step_is_covered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = step_count(tmp_path, monkeypatch)
    assert set(calls) == set(STEPS), calls
    assert len(calls) >= 8


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_a_failure_at_each_write_step_leaves_the_registry_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int
) -> None:
    steps = step_count(tmp_path, monkeypatch)
    for n, step in enumerate(steps):
        path = tmp_path / f"reg-{error}-{n}"
        reg = Registry(path, builtins=False)
        reg.add("first", [[0.0]])
        before = snapshot(path)
        with monkeypatch.context() as m:
            injector = Injector(m, n, error)
            with pytest.raises(StoreWriteError) as info:
                reg.add("new/ns/k", np.ones((3, 3), np.float32))
        message = str(info.value)
        assert os.strerror(error) in message, (n, step, message)
        committed = "was committed" in message
        assert committed == (injector.calls[:n].count("replace") == 2), (n, step, message)
        fresh = Registry(path, builtins=False)  # the next command
        listed = [i.ref for i in fresh.list_kernels()]
        if committed:  # only the directory fsync after the commit failed: the kernel is there, intact
            assert listed == ["first@1", "new/ns/k@1"] and fresh.verify() == []
        else:
            assert listed == ["first@1"], (n, step)
            assert snapshot(path) == before, f"step {n} ({step}) left files behind"
        assert not list((path / "tmp").iterdir())
        assert fresh.add("new/ns/k", np.full((3, 3), 2.0, np.float32)).ref.startswith("new/ns/k@")
        assert fresh.verify() == []
