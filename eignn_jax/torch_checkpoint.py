"""Reading PyTorch checkpoint files (``torch.save`` zip archives) without PyTorch, safely.

A ``.pt`` file is a zip archive holding a pickle (``<name>/data.pkl``) whose tensors point
at raw little-endian storages (``<name>/data/<key>``). Unpickling can run arbitrary code,
so the unpickler here resolves only the few globals that rebuild tensors and ordered
dicts; any other global is refused with an error naming it, before it could be called.
"""

from __future__ import annotations

import collections
import pathlib
import pickle
import zipfile

import numpy as np


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be read, or that holds something other than tensors."""

    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")


class _Storage:
    """A tensor storage type (``torch.FloatStorage`` …): only its element type matters."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


_STORAGE_TYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_ignored) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2: a strided view of a flat storage, copied."""
    if len(size) == 0:
        return np.array(storage[offset])
    needed = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    if needed > storage.size:
        raise ValueError(f"tensor of size {tuple(size)} overruns its storage of {storage.size}")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * storage.itemsize for s in stride))
    return view.copy()


def _rebuild_parameter(data: np.ndarray, *_ignored) -> np.ndarray:
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _Storage(dtype) for name, dtype in _STORAGE_TYPES.items()},
}


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path):
        super().__init__(file)
        self._archive, self._prefix, self._path = archive, prefix, path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointFileError(
                self._path, f"holds a pickled {module}.{name}, which is not a tensor; refusing to "
                f"load it (only tensors, numbers, strings and containers are read)") from None

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _Storage):
            raise CheckpointFileError(self._path, f"unexpected persistent object {kind!r}")
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        storage = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"))
        if storage.size < numel:
            raise CheckpointFileError(self._path, f"storage {key} holds {storage.size} of {numel} elements")
        return storage[:numel].astype(storage_type.dtype)


def load(path: pathlib.Path | str):
    """The object saved in a ``torch.save`` zip file, with tensors as numpy arrays.

    Raises CheckpointFileError (a ValueError naming the file) for a file that is not such
    an archive, is big-endian, or pickles anything but tensors, numbers, strings and
    containers.
    """
    path = pathlib.Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointFileError(path, f"not a PyTorch zip checkpoint ({error})") from error
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointFileError(path, "not a PyTorch zip checkpoint (no <name>/data.pkl)")
        prefix = pickles[0].split("/")[0]
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise CheckpointFileError(path, "big-endian checkpoints are not supported")
        with archive.open(pickles[0]) as file:
            try:
                return _TensorUnpickler(file, archive, prefix, path).load()
            except CheckpointFileError:
                raise
            except (pickle.UnpicklingError, ValueError, TypeError, KeyError, EOFError) as error:
                raise CheckpointFileError(path, f"cannot read {pickles[0]}: {error}") from error


def load_state_dict(path: pathlib.Path | str, key: str = "net") -> dict[str, np.ndarray]:
    """name → array of the module state dict saved under ``key`` (or of the whole file,
    when it is itself a state dict). Raises CheckpointFileError if there is none."""
    content = load(path)
    state = content.get(key, content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise CheckpointFileError(path, f"holds no state dict of tensors (looked under {key!r})")
    return dict(state)
