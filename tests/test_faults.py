"""Write steps of the local store: their durable order, and a disk error injected at each one.

Every system call kreg makes to write a registry is recorded (``os.write``, ``os.fsync``,
``os.link``, ``os.rename``, ``os.mkdir``, ``os.open`` for writing). The order test checks the
rules that make a commit durable: a file is fsynced before it is given its name, the
directory is fsynced after a name is added to it, and a new directory's parent is fsynced.
The fault test fails each step in turn with ENOSPC and EIO: one clear error, the registry
exactly as before (or, only when the commit already happened, the kernel there and intact).
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from registry import Registry, StoreWriteError

CALLS = ("open", "write", "fsync", "link", "rename", "mkdir", "dup")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


class Recorder:
    """Records kreg's write calls as ``(call, detail)`` and fails the n-th one with ``error``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None, error: int = 0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail_at, self.error = fail_at, error
        self._fds: dict[int, str] = {}
        for name in CALLS:
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _describe(self, name: str, args: tuple, kwargs: dict) -> str | None:  # type: ignore[type-arg]
        if name == "open":
            flags = args[1] if len(args) > 1 else kwargs.get("flags", 0)
            if flags & os.O_DIRECTORY:
                return None
            if not flags & _WRITE_FLAGS:
                return None
            return f"file:{args[0]}"
        if name in ("write", "fsync"):
            return self._fds.get(args[0], "fd?")
        if name == "mkdir":  # which directory gains the new name
            return f"{args[0]} in {self._fds.get(kwargs.get('dir_fd'), 'dir:?')}"
        return "/".join(str(a) for a in args[:2])

    def _wrap(self, name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            if not _called_by_kreg():
                return fn(*args, **kwargs)
            if name == "dup":  # a copy of a directory descriptor keeps its name
                fd = fn(*args, **kwargs)
                self._fds[fd] = self._fds.get(args[0], "dir:?")
                return fd
            detail = self._describe(name, args, kwargs)
            if detail is None and name == "open":
                fd = fn(*args, **kwargs)
                self._fds[fd] = f"dir:{args[0]}"
                return fd
            self.calls.append((name, detail or ""))
            if self.fail_at is not None and len(self.calls) - 1 == self.fail_at:
                raise OSError(self.error, os.strerror(self.error))
            result = fn(*args, **kwargs)
            if name == "open":
                self._fds[result] = detail or ""
            return result

        return wrapper


def _called_by_kreg() -> bool:
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.endswith(("pathlib.py", "os.py")):
        frame = frame.f_back
    return frame is not None and f"{os.sep}registry{os.sep}" in frame.f_code.co_filename


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def record_add(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    reg = Registry(tmp_path / "probe", builtins=False)
    reg.add("first", [[0.0]])
    with monkeypatch.context() as m:
        recorder = Recorder(m)
        reg.add("new/ns/k", np.ones((3, 3), np.float32))
    return recorder.calls


def test_a_commit_is_durable_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = record_add(tmp_path, monkeypatch)
    names = [c for c, _ in calls]
    assert {"write", "fsync", "link", "rename", "mkdir"} <= set(names), calls
    # Each file is written, then fsynced, before a link or rename gives it its name.
    written: dict[str, bool] = {}
    for call, detail in calls:
        if call == "open":
            written[detail] = False
        elif call == "fsync" and detail.startswith("file:"):
            written[detail] = True
        elif call in ("link", "rename"):
            src = f"file:{detail.split('/')[0]}"
            assert written.get(src), f"{call} of {src} before its fsync: {calls}"
    # After each link, rename or mkdir, the directory it changed is fsynced before the next name is given.
    pending = 0
    for call, detail in calls:
        if call in ("link", "rename", "mkdir"):
            pending += 1
        elif call == "fsync" and detail.startswith("dir:"):
            pending = 0
        if call == "rename":
            assert pending == 1, f"a name was still not durable when the root was renamed: {calls}"
    assert pending == 0, f"the last change was not fsynced: {calls}"
    # A directory created on the way is made durable in its parent: that parent is fsynced after
    # the mkdir and before the commit.
    commit = names.index("rename")
    for i, (call, detail) in enumerate(calls[:commit]):
        if call == "mkdir":
            parent = detail.split(" in ", 1)[1]
            assert ("fsync", parent) in calls[i + 1:commit], f"{detail}: parent never fsynced: {calls}"
    assert any(c == "mkdir" for c, _ in calls), "the add created no directory: nothing was tested"
    # The root rename is the commit, and it comes last.
    assert [c for c in names if c in ("link", "rename")][-1] == "rename"


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_a_failure_at_each_write_step_leaves_the_registry_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int
) -> None:
    steps = record_add(tmp_path, monkeypatch)
    assert len(steps) >= 15, steps
    for n, step in enumerate(steps):
        path = tmp_path / f"reg-{error}-{n}"
        reg = Registry(path, builtins=False)
        reg.add("first", [[0.0]])
        before = snapshot(path)
        with monkeypatch.context() as m:
            recorder = Recorder(m, n, error)
            with pytest.raises(StoreWriteError) as info:
                reg.add("new/ns/k", np.ones((3, 3), np.float32))
        message = str(info.value)
        assert os.strerror(error) in message, (n, step, message)
        committed = "was committed" in message
        assert committed == ("rename" in [c for c, _ in recorder.calls[:n]]), (n, step, message)
        fresh = Registry(path, builtins=False)  # the next command
        listed = [i.ref for i in fresh.list_kernels()]
        if committed:  # only the directory fsync after the commit failed: the kernel is there, intact
            assert listed == ["first@1", "new/ns/k@1"] and fresh.verify() == []
        else:
            assert listed == ["first@1"], (n, step)
            after = snapshot(path)
            assert after == before, f"step {n} ({step}) changed {set(after) ^ set(before)}"
        # only leftovers: tmp/ files, or the segment the commit replaced (when it failed after the commit)
        assert all(k.startswith("tmp/") or "orphan segment" in p for k, p in fresh.fsck().problems)
        assert fresh.add("new/ns/k", np.full((3, 3), 2.0, np.float32)).ref.startswith("new/ns/k@")
        assert fresh.verify() == []


def test_a_batch_makes_everything_durable_once_before_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import registry.store.local as local

    events: list[str] = []
    reg = Registry(tmp_path / "reg", builtins=False)
    reg.add("seed", [[0.0]])
    real_syncfs, real_rename = local._syncfs, os.rename
    monkeypatch.setattr(local, "_syncfs", lambda fd: events.append("syncfs") or real_syncfs(fd))
    monkeypatch.setattr(os, "rename", lambda *a, **k: events.append("rename") or real_rename(*a, **k))
    with reg.batch():
        for i in range(20):
            reg.add(f"team/k{i}", [[float(i)]])
    assert events == ["syncfs", "rename"], events
    # Where syncfs is missing, every deferred file and directory is fsynced instead.
    events.clear()
    monkeypatch.setattr(local, "_syncfs", lambda fd: False)
    with monkeypatch.context() as m:
        recorder = Recorder(m)
        with reg.batch():
            for i in range(3):
                reg.add(f"other/k{i}", [[float(i)]])
    names = [c for c, _ in recorder.calls]
    commit = names.index("rename")
    last_link = max(i for i, c in enumerate(names[:commit]) if c == "link")
    links = names[:commit].count("link")
    # After the last name is given and before the commit: an fsync for each file and its directory.
    assert names[last_link:commit].count("fsync") >= 2 * links, recorder.calls
