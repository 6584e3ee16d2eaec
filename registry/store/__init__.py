"""Named, immutable kernel versions on a storage backend (a local directory today).

``Registry`` (``registry.py``) keeps the meaning: names, versions, the built-in layer, caches.
It holds a backend (``backend.py`` is the interface, ``local.py`` a directory) and writes
through one transaction per commit (``writer.py``) into a format-2 index (``index.py``);
``fsck.py`` checks and rebuilds it, ``v1.py`` reads format-1 registries.
"""

from .registry import Registry, open_backend

__all__ = ["Registry", "open_backend"]
