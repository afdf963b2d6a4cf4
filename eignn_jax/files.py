"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the new one.

Operating-system failures (a full or read-only filesystem, a path that is a file) surface
as ``OSError`` whose message names the file meant to be written, never a temporary one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pathlib
from typing import Iterator

import numpy as np

_TMP_SUFFIX = ".eignn-tmp"


def _temporary_name(path: str) -> str:
    """A short hidden name beside ``path`` (a long file name must not make it too long):
    ``.<hash of the name>.<pid>.eignn-tmp``."""
    digest = hashlib.sha256(os.path.basename(path).encode()).hexdigest()[:12]
    return os.path.join(os.path.dirname(path), f".{digest}.{os.getpid()}{_TMP_SUFFIX}")


def _remove_orphans(path: str) -> None:
    """Deletes temporaries of ``path`` left by processes that were killed mid-write."""
    digest = os.path.basename(_temporary_name(path)).split(".")[1]
    for orphan in pathlib.Path(os.path.dirname(path)).glob(f".{digest}.*{_TMP_SUFFIX}"):
        pid = orphan.name.split(".")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                orphan.unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, syncs it, then renames it over ``path``.

    os.replace is atomic within one filesystem, hence the temporary file in the same folder.
    Raises OSError naming ``path`` (and the reason) when it cannot be written; the
    temporary file is then removed.
    """
    path = os.path.abspath(os.fspath(path))
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    tmp = _temporary_name(path)
    try:
        _remove_orphans(path)
        # Plain open() (not mkstemp) so the file gets the usual umask-derived permissions.
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OSError(error.errno, f"cannot write {path}: {error.strerror or error}") from error
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` (uncompressed) of ``arrays`` to exactly ``path``, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def writable_directory(path: str | os.PathLike) -> pathlib.Path:
    """``path`` as a directory this process can write into, created (with parents) if
    missing: checked before expensive work starts.

    Raises OSError naming ``path``: it exists and is not a directory, it cannot be
    created, or a file cannot be created in it (read-only or full filesystem, permissions).
    """
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(20, f"{path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / os.path.basename(_temporary_name("write-probe"))
        with open(probe, "wb") as handle:
            handle.write(b"probe")
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as error:
        raise OSError(error.errno, f"cannot write into {path}: {error.strerror or error}") from error
    return path


@contextlib.contextmanager
def output_set(*paths: str | os.PathLike) -> Iterator[None]:
    """Files written together (``.npz`` + ``.xyz``, ``pcc.csv`` + ``pcc.png``): if the block
    fails, those of ``paths`` it already wrote are removed, so the set is whole or absent."""
    paths = [pathlib.Path(p) for p in paths]
    before = {p: p.stat().st_mtime_ns if p.exists() else None for p in paths}
    try:
        yield
    except BaseException:
        for p in paths:
            if p.exists() and (before[p] is None or p.stat().st_mtime_ns != before[p]):
                with contextlib.suppress(OSError):
                    p.unlink()
        raise
