"""Where a site is written: a local directory or an object-store prefix, with a manifest of what
kreg wrote there so that a rebuild writes only what changed and removes only its own files."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from pathlib import Path
from typing import Any

from .._exceptions import InvalidKernelError, StoreWriteError

#: The site's own record of the files it holds (path -> sha256 of the bytes).
MANIFEST = ".kreg-site.json"
MANIFEST_FORMAT = "kreg-site"

#: Content types by suffix, so that a bucket's static website serves each file as what it is.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".npy": "application/octet-stream",
    ".safetensors": "application/octet-stream",
    ".h5": "application/x-hdf5",
}


def content_type(path: str) -> str:
    return CONTENT_TYPES.get(posixpath.splitext(path)[1], "application/octet-stream")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plain_path(path: str) -> bool:
    """A relative path of named segments: what the site writes, and all a manifest may list."""
    return path != MANIFEST and "\\" not in path and all(part not in ("", ".", "..") for part in path.split("/"))


def open_output(target: str | os.PathLike[str]) -> LocalOutput | ObjectOutput:
    """The output for a directory, a ``file://`` URL or an ``s3://`` / ``gs://`` / ``az://`` prefix."""
    text = os.fspath(target)
    if "://" in text and not text.startswith("file://"):
        return ObjectOutput(text)
    return LocalOutput(Path(text.removeprefix("file://")))


class _Output:
    """What both outputs share: the manifest and the decision of what to write."""

    where: str

    def __init__(self) -> None:
        self.old: dict[str, str] = {}
        self.new: dict[str, str] = {}
        # Short texts a rebuild needs without drawing again (the titles of pictures), by key.
        self.old_notes: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self.written: list[str] = []

    def load_manifest(self) -> None:
        data = self._read(MANIFEST)
        if data is None:
            return
        try:
            document = json.loads(data)
            files = document["files"] if document.get("format") == MANIFEST_FORMAT else None
            notes = document.get("notes", {})
        except (ValueError, KeyError, TypeError, AttributeError):
            files = notes = None
        if (not isinstance(files, dict) or not isinstance(notes, dict)
                or not all(isinstance(p, str) and _plain_path(p) for p in files)):
            raise InvalidKernelError(f"{self.where}/{MANIFEST} is not a kreg site manifest. Choose another "
                                     "output, or delete that file to rebuild the site from scratch.")
        self.old = {str(k): str(v) for k, v in files.items()}
        self.old_notes = {str(k): str(v) for k, v in notes.items()}

    def has(self, path: str, source: str) -> bool:
        """True when ``path`` was written from ``source`` (a content hash) and is still there:
        it is kept as it is, without drawing it again."""
        if self.old.get(path) == source and self._exists(path):
            self.new[path] = source
            return True
        return False

    def put(self, path: str, data: bytes, source: str | None = None) -> None:
        """Record ``path``; write it only when its bytes (or ``source``) differ from the last build."""
        key = source or digest(data)
        self.new[path] = key
        if self.old.get(path) == key and self._exists(path):
            return
        self._write(path, data)
        self.written.append(path)

    def finish(self) -> list[str]:
        """Write the manifest, then remove the files of the last build that this one no longer has."""
        document = {"format": MANIFEST_FORMAT, "version": 1, "files": dict(sorted(self.new.items())),
                    "notes": dict(sorted(self.notes.items()))}
        self._write(MANIFEST, (json.dumps(document, indent=0) + "\n").encode())
        gone = sorted(set(self.old) - set(self.new))
        for path in gone:
            self._delete(path)
        return gone

    def _read(self, path: str) -> bytes | None:
        raise NotImplementedError

    def _exists(self, path: str) -> bool:
        raise NotImplementedError

    def _write(self, path: str, data: bytes) -> None:
        raise NotImplementedError

    def _delete(self, path: str) -> None:
        raise NotImplementedError


class LocalOutput(_Output):
    """A directory; each file is written beside its name and renamed over it (readers never see
    half a page). A directory that holds other files and no manifest is refused."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.where = str(root)
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise InvalidKernelError(f"The site output {root} is not a directory. Choose a new or empty directory.")
        if root.is_dir() and any(root.iterdir()) and not (root / MANIFEST).is_file():
            raise InvalidKernelError(f"{root} is not empty and holds no kreg site ({MANIFEST}); kreg will not write "
                                     "among other files. Choose a new or empty directory.")

    def _file(self, path: str) -> Path:
        target = self.root
        for part in path.split("/"):
            if part in ("", ".", ".."):
                raise InvalidKernelError(f"Not a site path: {path!r}.")
            target = target / part
            if target.is_symlink():
                raise InvalidKernelError(f"{target} is a symbolic link; a site never writes through one. "
                                         "Remove it, or choose a new directory.")
        return target

    def _read(self, path: str) -> bytes | None:
        try:
            return self._file(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreWriteError(f"Cannot read {self.root / path}: {exc.strerror}.") from None

    def _exists(self, path: str) -> bool:
        return self._file(path).is_file()

    def _write(self, path: str, data: bytes) -> None:
        target = self._file(path)
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "xb") as handle:
                handle.write(data)
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise StoreWriteError(f"Cannot write the site file {target}: {exc.strerror}. Free some space or "
                                  "choose another output; the files already there are whole.") from None

    def _delete(self, path: str) -> None:
        target = self._file(path)
        try:
            if target.is_dir():  # a manifest kreg did not write; only files of its own are removed
                return
            target.unlink(missing_ok=True)
            parent = target.parent
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        except OSError as exc:
            raise StoreWriteError(f"Cannot remove the old site file {target}: {exc.strerror}.") from None


class ObjectOutput(_Output):
    """An object-store prefix (``s3://bucket/site``), each object with its content type."""

    def __init__(self, url: str) -> None:
        super().__init__()
        from ..store.object import split_url

        scheme, bucket, prefix = split_url(url, InvalidKernelError)
        self.where = f"{scheme}://{bucket}/{prefix}".rstrip("/")
        from .._lazy import require
        from ..store.clients import make_store, wait_limits

        require("obstore", feature=f"Publishing a site to {self.where}")
        self._store = make_store(scheme, bucket, prefix, 4, wait_limits(), self.where)
        self._listed: set[str] | None = None

    def _call(self, call: Any, path: str, *, writing: bool = False) -> Any:
        from ..store.cloud_errors import translated

        return translated(call, self.where, path, writing=writing)

    def _read(self, path: str) -> bytes | None:
        import obstore as obs

        from ..store.backend import ObjectMissing

        try:
            return bytes(self._call(lambda: obs.get(self._store, path).bytes(), path))
        except ObjectMissing:
            return None

    def _exists(self, path: str) -> bool:
        import obstore as obs

        if self._listed is None:  # one listing instead of a request per file
            self._listed = {str(meta["path"]) for page in self._call(lambda: list(obs.list(self._store)), "")
                            for meta in page}
        return path in self._listed

    def _write(self, path: str, data: bytes) -> None:
        import obstore as obs

        self._call(lambda: obs.put(self._store, path, data, attributes={"Content-Type": content_type(path)},
                                   use_multipart=False), path, writing=True)

    def _delete(self, path: str) -> None:
        import obstore as obs

        self._call(lambda: obs.delete(self._store, path), path, writing=True)
