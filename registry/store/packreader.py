"""The child process that parses one pack for :func:`registry.store.packs.read_pack` and streams it back.

Run as ``python -I -c ...`` with the parent's ``sys.path`` (never its ``__main__``, never the
current directory): a caller's script without a ``__main__`` guard is not re-run, and it
works inside a ``multiprocessing`` worker. The output on stdout is a sequence of frames,
each an 8-byte big-endian length and that many bytes: ``b"ok" + JSON header`` followed by
one frame of raw values per kernel, or one ``b"er" + JSON [error class, message]`` frame.
"""

from __future__ import annotations

import json
import sys


def main(path: str, *, cpu_seconds: int | None = None) -> None:
    """Parse ``path`` with :func:`registry.format.pack.parse_pack`, each generator's claim checked,
    and write the frames to stdout.

    With ``cpu_seconds``, the kernel ends this process once it has used that much CPU time: a
    file that sends libhdf5 into an endless loop cannot keep a core busy after the parent that
    would have killed it is gone (killed itself, or interrupted).
    """
    if cpu_seconds is not None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard != resource.RLIM_INFINITY:  # a limit set from outside may be lower still: keep it
            cpu_seconds = min(cpu_seconds, max(hard - 1, 1))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1 if hard == resource.RLIM_INFINITY
                                                 else min(cpu_seconds + 1, hard)))
    import numpy as np

    from .._exceptions import KregError
    from ..format.pack import _canonical, parse_pack, write_frame
    from .packs import check_generator

    out = sys.stdout.buffer
    try:
        pack = parse_pack(path, check=check_generator)
        header = {"sha256": pack.sha256, "manifest": pack.manifest, "signer": pack.signer,
                  "kernels": [[r, v.dtype.str, list(v.shape)] for r, v in pack.kernels]}
        frames = [b"ok" + _canonical(header)] + [np.ascontiguousarray(v).tobytes() for _, v in pack.kernels]
    except KregError as exc:
        frames = [b"er" + json.dumps([type(exc).__name__, str(exc)]).encode()]
    except Exception as exc:  # a bug or a library error not yet mapped: still a clean refusal
        frames = [b"er" + json.dumps(["UnsafeFileError", f"{path}: unreadable pack ({type(exc).__name__}: {exc})."]).encode()]
    for frame in frames:
        write_frame(out, frame)
    out.flush()
