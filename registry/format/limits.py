"""One frozen set of limits shared by every writer (add, batch, export) and the guarded reader.

Whatever a writer accepts, the reader accepts: the writers check a kernel against
:data:`LIMITS` before a byte is written, and :class:`registry.format.guard.GuardedFile` refuses
only what breaks the same numbers. ``schema/FORMAT.md`` states them for other readers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Caps on names, records, kernels and containers (the defaults are the format's)."""

    #: Characters in a kernel name.
    max_name_length: int = 128
    #: ``/``-separated segments in a kernel name: ``/kernels/s1/.../sN/@V`` nests N + 1
    #: groups, so a reader allowing ``max_depth`` levels reads names of ``max_depth - 1``.
    max_name_segments: int = 15
    #: Group nesting below the root (``/kernels`` is level 1).
    max_depth: int = 16
    #: Bytes of one ``record`` attribute: HDF5 keeps attributes of the "earliest" file
    #: format in the object header, which holds at most 64 KiB.
    max_record_bytes: int = 64 * 2**10
    #: Room a record keeps for what import adds (``provenance.pack``: a 256-character
    #: name and author, escaped as ``\\uXXXX``, a hash, a key and a time): a writer refuses
    #: records whose JSON without ``provenance.pack`` is larger than ``max_record_bytes -
    #: import_reserve``, so that an exported record can always be imported.
    import_reserve: int = 4 * 2**10
    #: Bytes of any other attribute.
    max_attribute_bytes: int = 64 * 2**10
    #: Attributes on one object.
    max_attributes: int = 16
    #: Bytes of a pack manifest (a ``/manifest`` dataset since pack version 2).
    max_manifest_bytes: int = 128 * 2**20
    #: Dimensions of a kernel (HW: 2, HWIO/HWIM: 4).
    max_rank: int = 4
    #: Values in one kernel (2**31: 8 GiB of float32).
    max_elements: int = 2**31
    #: Declared bytes of one dataset.
    max_kernel_bytes: int = 8 * 2**30
    #: Declared bytes of all datasets of a container.
    max_total_bytes: int = 32 * 2**30
    #: Groups and datasets in a container.
    max_objects: int = 200_000
    #: Chunks of one chunked dataset (kreg itself writes none).
    max_chunks: int = 65_536
    #: Declared bytes of a chunk over its stored bytes: kernel values (mostly floats)
    #: compress a few times at best; 100:1 and up is a bomb.
    max_compression_ratio: int = 100

    @property
    def max_writer_record_bytes(self) -> int:
        """Largest record a writer stores (see ``import_reserve``)."""
        return self.max_record_bytes - self.import_reserve


#: The limits of this kreg's format.
LIMITS = Limits()
