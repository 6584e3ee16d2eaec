"""Named, immutable kernel versions on a storage backend: a local directory or object storage.

``Registry`` (``registry.py``, its read side in ``reader.py``, labels, deprecations and the
history in ``curation.py``) keeps the meaning: names, versions, the built-in layer, caches. It holds a backend (``backend.py`` is the interface,
``local.py`` a directory through ``tree.py``, ``object.py`` a bucket through ``clients.py`` and
``cache.py``) and writes through one transaction per commit (``writer.py``) into the format-2
index (:mod:`registry.format.index`); ``fsck.py`` checks and rebuilds it, ``packs.py`` imports
packs.
"""

from .reader import open_backend
from .registry import Registry

__all__ = ["Registry", "open_backend"]
