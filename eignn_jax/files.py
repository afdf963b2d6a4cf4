"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the new one."""

from __future__ import annotations

import io
import os

import numpy as np


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, syncs it, then renames it over ``path``.

    os.replace is atomic within one filesystem, hence the temporary file in the same folder.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        # Plain open() (not mkstemp) so the file gets the usual umask-derived permissions.
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` (uncompressed) of ``arrays`` to exactly ``path``, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())
