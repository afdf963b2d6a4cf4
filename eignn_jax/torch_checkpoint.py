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


class _Frozen:
    """What ``find_class`` hands the pickle for an allowed global: a fresh wrapper per use,
    with no attributes a pickle could set (BUILD on it is refused), so a file cannot change
    the loader's state for later loads."""

    __slots__ = ("_target", "_name")

    def __init__(self, target, name: str):
        self._target, self._name = target, name

    def __call__(self, *args):
        return self._target(*args)

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"refusing to modify {self._name}")


class _Storage(_Frozen):
    """A tensor storage type (``torch.FloatStorage`` …): only its element type matters."""

    __slots__ = ()

    @property
    def dtype(self) -> np.dtype:
        return self._target


_STORAGE_TYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


def _whole_numbers(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ValueError(f"tensor {what} must be non-negative integers, got {values!r}")
    return tuple(values)


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2: a strided view of a flat storage (offset and strides
    in elements), checked to lie inside it and to read no element twice, then copied."""
    if not isinstance(storage, np.ndarray):
        raise ValueError(f"a tensor's storage must be a stored array, got {type(storage).__name__}")
    (offset,) = _whole_numbers((offset,), "offset")
    size, stride = _whole_numbers(size, "size"), _whole_numbers(stride, "stride")
    if len(size) != len(stride):
        raise ValueError(f"tensor size {size} and stride {stride} differ in length")
    count = int(np.prod(size, dtype=object)) if size else 1
    if count == 0:
        return np.zeros(size, storage.dtype)
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    # A checkpoint's tensors are plain views: more elements than the storage holds would be
    # a broadcast (stride 0), which a file could use to blow up memory.
    if extent > storage.size or count > storage.size:
        raise ValueError(f"tensor of size {size} (offset {offset}, stride {stride}) does not fit its "
                         f"storage of {storage.size} elements")
    view = np.ndarray(size, storage.dtype, buffer=storage, offset=offset * storage.itemsize,
                      strides=tuple(s * storage.itemsize for s in stride))
    return view.copy()


def _rebuild_parameter(data, *_ignored) -> np.ndarray:
    return data


def _new_ordered_dict(*args):
    return collections.OrderedDict(*args)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _new_ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path):
        super().__init__(file)
        self._archive, self._prefix, self._path = archive, prefix, path
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_TYPES:
            return _Storage(np.dtype(_STORAGE_TYPES[name]), f"torch.{name}")
        if (module, name) in _ALLOWED_GLOBALS:
            return _Frozen(_ALLOWED_GLOBALS[(module, name)], f"{module}.{name}")
        raise CheckpointFileError(
            self._path, f"holds a pickled {module}.{name}, which is not a tensor; refusing to "
            f"load it (only tensors, numbers, strings and containers are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _Storage) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise CheckpointFileError(self._path, f"unexpected persistent object {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            member = self._archive.getinfo(f"{self._prefix}/data/{key}")
            dtype = storage_type.dtype.newbyteorder("<")
            # torch stores storages uncompressed and exactly numel elements long: anything
            # else could inflate to more memory than the file suggests.
            if member.compress_type != zipfile.ZIP_STORED or member.file_size != numel * dtype.itemsize:
                raise CheckpointFileError(self._path, f"storage {key} is not {numel} stored "
                                                      f"{dtype.name} elements")
            raw = self._archive.read(member)
            self._storages[key] = np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype)
        storage = self._storages[key]
        if storage.dtype != storage_type.dtype:
            raise CheckpointFileError(self._path, f"storage {key} is used with two element types")
        return storage


def load(path: pathlib.Path | str):
    """The object saved in a ``torch.save`` zip file, with tensors as numpy arrays.

    Raises CheckpointFileError (a ValueError naming the file) for a file that is missing or
    not such an archive, is big-endian, pickles anything but tensors, numbers, strings and
    containers, or whose tensors do not fit their storages.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointFileError(path, "no such file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointFileError(path, f"not a PyTorch zip checkpoint ({error})") from error
    try:
        with archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise CheckpointFileError(path, "not a PyTorch zip checkpoint (no <name>/data.pkl)")
            prefix = pickles[0].split("/")[0]
            byteorder = f"{prefix}/byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
                raise CheckpointFileError(path, "big-endian checkpoints are not supported")
            with archive.open(pickles[0]) as file:
                return _TensorUnpickler(file, archive, prefix, path).load()
    except CheckpointFileError:
        raise
    except Exception as error:   # anything a malformed archive or pickle raises, as one error
        raise CheckpointFileError(path, f"cannot read it ({type(error).__name__}: {error})") from error


def load_state_dict(path: pathlib.Path | str, key: str = "net") -> dict[str, np.ndarray]:
    """name → array of the module state dict saved under ``key`` (or of the whole file,
    when it is itself a state dict). Raises CheckpointFileError if there is none."""
    return state_dict_of(load(path), path, key)


def state_dict_of(content, path: pathlib.Path | str, key: str = "net") -> dict[str, np.ndarray]:
    """The state dict in ``content`` (what :func:`load` returned for ``path``); see
    :func:`load_state_dict`."""
    state = content.get(key, content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) and (np.issubdtype(v.dtype, np.number)
                                                                  or v.dtype == np.bool_)
            for k, v in state.items()):
        raise CheckpointFileError(path, f"holds no state dict of numeric tensors (looked under {key!r})")
    return dict(state)
