"""Reading, validating and writing Kob–Andersen glass configurations.

One configuration is one ``.npz`` file holding a snapshot of a 3-D binary
Kob–Andersen mixture and, optionally, its dynamical labels.  Two layouts are
read by the same code:

* GlassBench (published benchmark): ``KA_models/T{T}/{train,test}/N4096T{T}_{i}.npz``
  with keys ``types``, ``initial_positions``, ``initial_positions_inherent``,
  sometimes ``initial_positions_cage``, ``md_prop`` [10, N], ``bb_prop`` and,
  in test files, predictions of published models under their names
  (:data:`PUBLISHED_MODELS`, read as :attr:`Configuration.published`).  These
  files carry no ``box`` and no ``times``: the box follows from the number
  density 1.2 and the times are GlassBench's grid of the temperature in the file's name
  or folder (:data:`GLASSBENCH_TIME_GRIDS`).
* Our own data sets, which add ``md_disp`` [T, N, 3], ``times`` [T] and ``box`` [3].

Units are Lennard-Jones units of the A–A interaction: lengths in σ, times in τ.

Every array keeps the dtype it was stored with (consumers cast), so loading a
file, writing it with :func:`write_configuration` and loading the result
reproduces the arrays bit for bit and the file's key set exactly.  Every problem found in
a file raises :class:`DataError`, whose message names the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Mapping, Sequence

import numpy as np

from eignn_jax import files
from eignn_jax.physics import periodic
from eignn_jax.physics.kob_andersen import DENSITY, box_from_density
from eignn_jax.physics.neighbours import neighbour_pairs

__all__ = [
    "GLASSBENCH_TIMES",
    "KEY_HALF_PROPENSITY",
    "MIN_SEPARATION",
    "PUBLISHED_MODELS",
    "Configuration",
    "DataError",
    "configuration_arrays",
    "configuration_from_arrays",
    "find_overlap",
    "glassbench_split",
    "list_configurations",
    "load_configuration",
    "split_paths",
    "write_configuration",
]


GLASSBENCH_TIMES: tuple[float, ...] = (
    0.13, 1.3, 13.0, 130.0, 412.0, 1300.0, 4120.0, 13000.0, 41200.0, 130000.0
)
"""Times (τ) of the 10 rows of GlassBench ``md_prop`` at T = 0.44."""

GLASSBENCH_TIME_GRIDS: dict[float, tuple[float, ...]] = {
    0.44: GLASSBENCH_TIMES,
    0.50: (0.108, 0.434, 2.17, 6.86, 21.7, 68.6, 217.0, 686.0, 2170.0, 6860.0),
    0.56: (0.104, 0.33, 0.99, 1.65, 5.2, 16.5, 52.0, 165.0, 520.0, 1650.0),
    0.64: (0.032, 0.1, 0.165, 0.52, 1.65, 5.2, 16.5, 52.0, 165.0, 520.0),
}
"""GlassBench 3D KA time grids (τ) per temperature: each temperature has its own."""

MIN_SEPARATION = 0.5
"""Two particles closer than this (σ, periodic minimum image) are not a liquid this model knows:
a Kob–Andersen pair there costs 10³–10⁴ ε, while the closest pair of real data (dev set,
T = 0.64, initial and inherent structures) is 0.75 σ apart. Catches duplicates, overlaps and
coordinates in other units (e.g. scaled [0, 1) coordinates with a box in σ)."""

PUBLISHED_MODELS: tuple[str, ...] = ("BOTAN", "CAGE", "GlassMLP", "SE3")
"""Keys under which GlassBench test files carry other models' per-particle predictions, each
[T', N] float (one row per time scale, in any units: a Pearson correlation ignores affine
scales); the names are those of the published Pcc tables (public EIGNN repository,
``results/pcc_*_TTT.csv``). Only these names count as predictions: other float [T, N] arrays
of a file are labels or descriptors (``bb_prop`` is one), not a model's output, so they stay
plain :attr:`Configuration.extras`."""

# Keys with a dedicated Configuration attribute; everything else goes to `extras`.
_KEY_TYPES = "types"
_KEY_POSITIONS = "initial_positions"
_KEY_INHERENT = "initial_positions_inherent"
_KEY_CAGE = "initial_positions_cage"
_KEY_PROPENSITY = "md_prop"
_KEY_TIMES = "times"
_KEY_BOX = "box"
_KEY_DISPLACEMENT = "md_disp"
_KEY_BB_PROPENSITY = "bb_prop"
KEY_HALF_PROPENSITY = "md_prop_half"
"""[2, T, N]: the propensity of each half of the iso-configurational runs (our generator
writes it when R >= 2; GlassBench files do not have it). Its two rows give the split-half
noise ceiling of Pcc (:func:`eignn_jax.metrics.split_half_ceiling`)."""
_RESERVED_KEYS = frozenset(
    {_KEY_TYPES, _KEY_POSITIONS, _KEY_INHERENT, _KEY_CAGE, _KEY_PROPENSITY, _KEY_TIMES, _KEY_BOX}
)
_EQUILIBRIUM_KEYS = {"inherent": _KEY_INHERENT, "cage": _KEY_CAGE}

# Pseudo-keys for problems that concern the whole file or folder rather than one array.
FILE_FIELD = "<file>"
FOLDER_FIELD = "<folder>"

_CUBIC_RTOL = 1e-6


class DataError(ValueError):
    """A configuration file (or folder of them) is missing, unreadable or inconsistent.

    Attributes ``path`` and ``field`` (the npz key, or ``"<file>"`` / ``"<folder>"``)
    say where the problem is; both appear in the message.
    """

    def __init__(self, path: str | os.PathLike, field: str, message: str):
        # The three parts are passed to ValueError so that the exception pickles
        # and unpickles intact (e.g. when raised inside a worker process).
        super().__init__(str(path), field, message)
        self.path = str(path)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}: field '{self.field}': {self.message}"


@dataclasses.dataclass(frozen=True, eq=False)
class Configuration:
    """One snapshot of a periodic 3-D KA mixture plus its optional labels.

    Attributes:
        path: file it was read from; ``""`` when built in memory.
        types: [N] integer (dtype as stored); 1 = A, 2 = B.
        positions: [N, 3] float (dtype as stored), σ; ``initial_positions``.
        box: [3] float64, σ; side lengths of the cubic periodic box.
        inherent: [N, 3] float, σ; ``initial_positions_inherent`` (energy-minimised structure).
        cage: [N, 3] float, σ; ``initial_positions_cage`` (cage-averaged structure).
        propensity: [T, N] float, σ; ``md_prop``, mean |displacement| at each time.
        times: [T] float, τ; ``times`` as stored, else, for a 10-row GlassBench file, its
          temperature's grid (``GLASSBENCH_TIME_GRIDS``, temperature from its name or folder).
        extras: every other key, verbatim (``md_disp``, ``bb_prop``, model predictions, ...).
        box_stored: whether the file had a ``box`` key; the writer writes ``box`` only then.
        times_stored: whether the file had a ``times`` key; likewise.
        box_dtype: dtype the ``box`` key was stored with, so a rewrite reproduces it;
            ``None`` writes float64.
    """

    path: str
    types: np.ndarray
    positions: np.ndarray
    box: np.ndarray
    inherent: np.ndarray | None = None
    cage: np.ndarray | None = None
    propensity: np.ndarray | None = None
    times: np.ndarray | None = None
    extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    box_stored: bool = True
    times_stored: bool = True
    box_dtype: np.dtype | None = None

    @property
    def n_particles(self) -> int:
        """Number of particles N."""
        return int(self.types.shape[0])

    @property
    def published(self) -> dict[str, np.ndarray]:
        """Other models' predictions the file carries: {name: [T', N] float (dtype as
        stored)} for the names of :data:`PUBLISHED_MODELS` among ``extras``, in that order.

        Read-time checks: float, 2-D with N columns, finite. Whether T' is the labels' T is
        checked by whoever scores them (a file may hold predictions for fewer time scales).
        """
        return {name: self.extras[name] for name in PUBLISHED_MODELS if name in self.extras}

    @property
    def is_type_a(self) -> np.ndarray:
        """[N] bool, True for A particles (type 1)."""
        return self.types == 1

    def equilibrium(self, kind: str) -> np.ndarray:
        """Equilibrium structure [N, 3] (σ) of the given kind: ``'inherent'`` or ``'cage'``.

        Raises ValueError for an unknown kind and DataError (naming the file and
        key) when the configuration does not hold that structure.
        """
        if kind not in _EQUILIBRIUM_KEYS:
            raise ValueError(
                f"unknown equilibrium kind {kind!r}; expected one of {sorted(_EQUILIBRIUM_KEYS)}"
            )
        value = self.inherent if kind == "inherent" else self.cage
        if value is None:
            raise DataError(
                self.path or "<in-memory configuration>",
                _EQUILIBRIUM_KEYS[kind],
                f"no {kind} structure in this configuration",
            )
        return value


# ----------------------------------------------------------------------------
# Small geometric helpers
# ----------------------------------------------------------------------------


def find_overlap(
    positions: np.ndarray, box: np.ndarray, min_distance: float = MIN_SEPARATION
) -> tuple[int, int, float] | None:
    """First pair (i < j, distance σ) closer than ``min_distance`` under minimum image, or None.

    positions: [N, 3] float, σ (any periodic image); box: [3] float, σ, every side longer
    than 2 min_distance. "First" is in (i, j) order. Cost is linear in N (the periodic
    k-d tree of :func:`eignn_jax.physics.neighbours.neighbour_pairs`).
    """
    positions = np.asarray(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    centres, others, shifts = neighbour_pairs(positions, box, min_distance)
    # Edges come sorted by (centre, neighbour): the first with i < j is the first pair.
    upper = np.flatnonzero(centres < others)
    if upper.size == 0:
        return None
    k = upper[0]
    i, j = int(centres[k]), int(others[k])
    return i, j, float(np.linalg.norm(positions[j] - positions[i] + shifts[k] * box))


# ----------------------------------------------------------------------------
# Per-key validation.  Each check takes the file path for its error messages.
# ----------------------------------------------------------------------------


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    """Index tuple of the first True entry of ``mask``."""
    return tuple(int(k) for k in np.argwhere(mask)[0])


def _check_floating(path: str, key: str, array: np.ndarray) -> None:
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(path, key, f"must be a floating-point array, got dtype {array.dtype}")


def _check_finite(path: str, key: str, array: np.ndarray) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        where = _first_index(bad)
        raise DataError(
            path, key, f"{int(bad.sum())} non-finite value(s), first {array[where]} at index {where}"
        )


def _check_types(path: str, types: np.ndarray) -> None:
    """types: [N] integer with values in {1, 2}, N >= 1.

    Float arrays are rejected even when they hold whole numbers: converting them
    would change the stored dtype and break exact round trips.
    """
    if types.ndim != 1:
        raise DataError(path, _KEY_TYPES, f"must be 1-D [N], got shape {types.shape}")
    if not np.issubdtype(types.dtype, np.integer):
        raise DataError(path, _KEY_TYPES, f"must be an integer array, got dtype {types.dtype}")
    if types.shape[0] == 0:
        raise DataError(path, _KEY_TYPES, "needs at least one particle, got N = 0")
    unknown = (types != 1) & (types != 2)
    if unknown.any():
        first = int(np.flatnonzero(unknown)[0])
        raise DataError(
            path,
            _KEY_TYPES,
            f"unknown particle type {types[first]} at index {first} "
            f"({int(unknown.sum())} particle(s)); expected 1 (A) or 2 (B)",
        )


def _check_coordinates(path: str, key: str, coords: np.ndarray, n: int, box: np.ndarray) -> None:
    """coords: [n, 3] float, finite, every |x| <= box side, no two particles overlapping."""
    if coords.ndim == 2 and coords.shape[0] == n and coords.shape[1] in (1, 2):
        raise DataError(
            path, key, f"has {coords.shape[1]} columns; only 3-D systems are supported"
        )
    if coords.shape != (n, 3):
        raise DataError(path, key, f"must have shape [N, 3] = [{n}, 3], got {coords.shape}")
    _check_floating(path, key, coords)
    _check_finite(path, key, coords)
    # One full box from the centre accepts both the [-L/2, L/2) and the [0, L)
    # conventions while still catching unwrapped or mis-scaled coordinates.
    outside = np.abs(coords) > box
    if outside.any():
        p, axis = _first_index(outside)
        raise DataError(
            path,
            key,
            f"particle {p} coordinate {axis} = {coords[p, axis]} lies more than one box "
            f"side ({box[axis]:g}) from the centre; {int(outside.any(axis=1).sum())} particle(s) affected",
        )
    if n > 1 and np.any(box <= 2.0 * MIN_SEPARATION):
        raise DataError(
            path, _KEY_BOX, f"sides {box.tolist()} σ hold no liquid of {n} particles: box or "
            f"coordinates in other units than σ?")
    overlap = find_overlap(coords, box)
    if overlap is not None:
        i, j, d = overlap
        raise DataError(
            path,
            key,
            f"particles {i} and {j} are {d:.3g} σ apart (periodic minimum image), closer than "
            f"{MIN_SEPARATION:g} σ (no real liquid pair is): duplicate or overlapping particles, "
            f"or coordinates in other units than σ",
        )


def _parse_box(path: str, raw: np.ndarray | None, n: int) -> np.ndarray:
    """Box sides [3] float64 from a stored scalar/[3] ``box``, or from N and DENSITY."""
    if raw is None:
        return box_from_density(n)
    if raw.shape not in ((), (3,)):
        raise DataError(path, _KEY_BOX, f"must be a scalar or have shape [3], got {raw.shape}")
    if not (np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.integer)):
        raise DataError(path, _KEY_BOX, f"must be numeric, got dtype {raw.dtype}")
    box = np.broadcast_to(raw.astype(np.float64), (3,)).copy()
    _check_finite(path, _KEY_BOX, box)
    if (box <= 0).any():
        raise DataError(path, _KEY_BOX, f"side lengths must be positive, got {box}")
    if not np.allclose(box, box[0], rtol=_CUBIC_RTOL, atol=0.0):
        raise DataError(path, _KEY_BOX, f"only cubic boxes are supported, got sides {box}")
    return box


def _check_propensity(path: str, prop: np.ndarray, n: int) -> None:
    """md_prop: [T, N] float, finite, >= 0 (it is a mean distance)."""
    if prop.ndim != 2 or prop.shape[1] != n or prop.shape[0] == 0:
        raise DataError(
            path, _KEY_PROPENSITY, f"must have shape [T, N] with N = {n}, T >= 1; got {prop.shape}"
        )
    _check_floating(path, _KEY_PROPENSITY, prop)
    _check_finite(path, _KEY_PROPENSITY, prop)
    negative = prop < 0
    if negative.any():
        where = _first_index(negative)
        raise DataError(
            path, _KEY_PROPENSITY, f"must be non-negative, got {prop[where]} at index {where}"
        )


def _check_prediction(path: str, key: str, prediction: np.ndarray, n: int) -> None:
    """A published model's predictions (:data:`PUBLISHED_MODELS`): [T', N] float, finite."""
    if prediction.ndim != 2 or prediction.shape[1] != n or prediction.shape[0] == 0:
        raise DataError(
            path, key, f"predictions of a published model must have shape [T, N] with N = {n}, "
            f"T >= 1 (one row per time scale); got {prediction.shape}"
        )
    _check_floating(path, key, prediction)
    _check_finite(path, key, prediction)


def _check_displacement(path: str, disp: np.ndarray, n: int) -> None:
    """md_disp: [T, N, 3] float, finite."""
    if disp.ndim != 3 or disp.shape[1:] != (n, 3):
        raise DataError(
            path, _KEY_DISPLACEMENT, f"must have shape [T, N, 3] with N = {n}; got {disp.shape}"
        )
    _check_floating(path, _KEY_DISPLACEMENT, disp)
    _check_finite(path, _KEY_DISPLACEMENT, disp)


def _check_half_propensity(path: str, halves: np.ndarray, propensity: np.ndarray | None, n: int) -> None:
    """md_prop_half: [2, T, N] float, finite, with the T of md_prop."""
    expected = f"[2, T, N] with N = {n}" + (f", T = {propensity.shape[0]}" if propensity is not None else "")
    if (halves.ndim != 3 or halves.shape[0] != 2 or halves.shape[2] != n
            or (propensity is not None and halves.shape[1] != propensity.shape[0])):
        raise DataError(path, KEY_HALF_PROPENSITY, f"must have shape {expected}; got {halves.shape}")
    _check_floating(path, KEY_HALF_PROPENSITY, halves)
    _check_finite(path, KEY_HALF_PROPENSITY, halves)


_GLASSBENCH_NAME = re.compile(r"^N\d+T(\d\.\d+)_\d+\.npz$")
_GLASSBENCH_FOLDER = re.compile(r"^T(\d\.\d+)$")


def glassbench_temperature(path: str | os.PathLike) -> float | None:
    """The temperature a GlassBench file's name (``N4096T0.44_7.npz``) or its temperature
    folder (``KA_models/T0.44/train/…``) states, or None."""
    path = pathlib.Path(path)
    match = _GLASSBENCH_NAME.match(path.name)
    for folder in (path.parent, path.parent.parent):
        match = match or _GLASSBENCH_FOLDER.match(folder.name)
    return round(float(match.group(1)), 2) if match else None


def _parse_times(path: str, raw: np.ndarray | None, n_times: int | None) -> np.ndarray | None:
    """Times [T] (τ): the stored ``times`` (dtype kept); for a 10-row file without them,
    GlassBench's grid of the temperature its name or folder states (each temperature has its
    own grid, ``GLASSBENCH_TIME_GRIDS``).

    ``n_times`` is T of the dynamical labels, or None when the file has none.
    """
    if raw is None:
        if n_times is None:
            return None
        temperature = glassbench_temperature(path)
        if n_times == len(GLASSBENCH_TIMES) and temperature in GLASSBENCH_TIME_GRIDS:
            return np.asarray(GLASSBENCH_TIME_GRIDS[temperature], dtype=np.float64)
        raise DataError(
            path,
            _KEY_TIMES,
            f"times are needed: the labels have T = {n_times} time points but the file has no "
            f"'times' key; only 10-row files named as in GlassBench (N4096T0.44_7.npz, or in a "
            f"folder T0.44) imply GlassBench's time grid of their temperature "
            f"{sorted(GLASSBENCH_TIME_GRIDS)}",
        )
    if raw.ndim != 1:
        raise DataError(path, _KEY_TIMES, f"must be 1-D [T], got shape {raw.shape}")
    if n_times is not None and raw.shape[0] != n_times:
        raise DataError(
            path, _KEY_TIMES, f"has {raw.shape[0]} entries but the labels have T = {n_times}"
        )
    if not (np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.integer)):
        raise DataError(path, _KEY_TIMES, f"must be numeric, got dtype {raw.dtype}")
    _check_finite(path, _KEY_TIMES, raw)
    if (raw <= 0).any():
        raise DataError(path, _KEY_TIMES, f"must be positive, got {raw}")
    if (np.diff(raw) <= 0).any():
        raise DataError(path, _KEY_TIMES, f"must be strictly increasing, got {raw}")
    return raw


def _label_count(path: str, arrays: Mapping[str, np.ndarray]) -> int | None:
    """T shared by md_prop and md_disp (None if neither is present)."""
    counts = {
        key: arrays[key].shape[0] for key in (_KEY_PROPENSITY, _KEY_DISPLACEMENT) if key in arrays
    }
    if len(set(counts.values())) > 1:
        raise DataError(
            path,
            _KEY_DISPLACEMENT,
            f"has T = {counts[_KEY_DISPLACEMENT]} time points but md_prop has T = {counts[_KEY_PROPENSITY]}",
        )
    return next(iter(counts.values()), None)


def configuration_from_arrays(
    path: str, arrays: Mapping[str, np.ndarray], require: Sequence[str] = ()
) -> Configuration:
    """Validate a key -> array mapping in the GlassBench layout and build a Configuration.

    arrays: what one npz file holds, e.g. ``types`` [N] int (1 = A, 2 = B),
      ``initial_positions`` [N, 3] float (σ), optional ``box`` [3] or scalar (σ) and
      the other keys described in the module docstring; dtypes are kept.
    path: names the source in error messages (a file, or a file and a frame in it).
    require: keys beyond ``types`` and ``initial_positions`` that must be present.
    Raises DataError naming ``path`` and the key on any problem (the checks of
    :func:`load_configuration`).
    """
    for key in (_KEY_TYPES, _KEY_POSITIONS, *require):
        if key not in arrays:
            raise DataError(path, key, f"required key is missing (file has {sorted(arrays)})")
    for key, array in arrays.items():
        if array.dtype == object:
            raise DataError(path, key, "object arrays are not supported")

    types = arrays[_KEY_TYPES]
    _check_types(path, types)
    n = types.shape[0]
    box = _parse_box(path, arrays.get(_KEY_BOX), n)
    for key in (_KEY_POSITIONS, _KEY_INHERENT, _KEY_CAGE):
        if key in arrays:
            _check_coordinates(path, key, arrays[key], n, box)

    if _KEY_PROPENSITY in arrays:
        _check_propensity(path, arrays[_KEY_PROPENSITY], n)
    if _KEY_DISPLACEMENT in arrays:
        _check_displacement(path, arrays[_KEY_DISPLACEMENT], n)
    if _KEY_BB_PROPENSITY in arrays:
        # Its layout differs between GlassBench releases; only its values are checked.
        _check_floating(path, _KEY_BB_PROPENSITY, arrays[_KEY_BB_PROPENSITY])
        _check_finite(path, _KEY_BB_PROPENSITY, arrays[_KEY_BB_PROPENSITY])
    for key in PUBLISHED_MODELS:
        if key in arrays:
            _check_prediction(path, key, arrays[key], n)
    if KEY_HALF_PROPENSITY in arrays:
        _check_half_propensity(path, arrays[KEY_HALF_PROPENSITY], arrays.get(_KEY_PROPENSITY), n)
    times = _parse_times(path, arrays.get(_KEY_TIMES), _label_count(path, arrays))

    raw_box = arrays.get(_KEY_BOX)
    return Configuration(
        path=path,
        types=types,
        positions=arrays[_KEY_POSITIONS],
        box=box,
        inherent=arrays.get(_KEY_INHERENT),
        cage=arrays.get(_KEY_CAGE),
        propensity=arrays.get(_KEY_PROPENSITY),
        times=times,
        extras={k: v for k, v in arrays.items() if k not in _RESERVED_KEYS},
        box_stored=raw_box is not None,
        times_stored=_KEY_TIMES in arrays,
        box_dtype=None if raw_box is None else raw_box.dtype,
    )


# ----------------------------------------------------------------------------
# File I/O
# ----------------------------------------------------------------------------


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """All arrays of an npz file, with every I/O or format failure turned into DataError."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise DataError(path, FILE_FIELD, "no such file") from None
    except OSError as exc:
        raise DataError(path, FILE_FIELD, f"cannot open ({exc.strerror or exc})") from exc
    # Owning the handle guarantees it is closed: np.load leaks its own handle
    # when the archive turns out to be corrupt.
    with handle:
        # Checking the signature first gives a clear message for the common
        # mistakes; np.load would call a text file "pickled data".
        magic = handle.read(len(_NPY_MAGIC))
        handle.seek(0)
        if magic.startswith(_NPY_MAGIC):
            raise DataError(path, FILE_FIELD, "holds a single .npy array, not an .npz archive of named arrays")
        if not magic.startswith(_ZIP_MAGICS):
            raise DataError(path, FILE_FIELD, "not an .npz file (no zip archive signature)")
        try:
            npz = np.load(handle, allow_pickle=False)
        except Exception as exc:  # ValueError, BadZipFile, EOFError, ... depending on the damage
            raise DataError(
                path, FILE_FIELD, f"not a readable .npz file ({type(exc).__name__}: {exc})"
            ) from exc
        with npz:
            # 'x.npy' and a second 'x.npy' (or a plain 'x') are both key 'x': one would be lost.
            seen: set[str] = set()
            for key in npz.files:
                if key in seen:
                    raise DataError(path, key, "the archive holds more than one member of this name")
                seen.add(key)
            return {key: _read_member(path, npz, key) for key in npz.files}


def _read_member(path: str, npz, key: str) -> np.ndarray:
    """One array of an open npz archive.

    Object arrays, corrupt members and members that are not ``.npy`` arrays raise DataError.
    """
    try:
        value = npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(path, key, "object (pickled) arrays are not supported") from None
        raise DataError(path, key, f"cannot read array ({exc})") from exc
    except Exception as exc:  # truncated or corrupt member (BadZipFile, EOFError, zlib.error, ...)
        raise DataError(path, key, f"cannot read array ({type(exc).__name__}: {exc})") from exc
    # np.load hands back the raw bytes of a member without the .npy header (a README.txt
    # added to the archive, a damaged header) instead of raising.
    if not isinstance(value, np.ndarray):
        raise DataError(
            path, key, f"archive member is not a .npy array ({len(value)} bytes of other data); "
            f"an .npz configuration holds only arrays"
        )
    return value


def load_configuration(
    path: str | os.PathLike, *, require: Sequence[str] = ()
) -> Configuration:
    """Read and validate one configuration file.

    ``require`` lists keys beyond ``types`` and ``initial_positions`` that must be
    present, e.g. ``("md_prop", "initial_positions_inherent")``.  Raises DataError
    (naming the file and the key) on any problem.
    """
    path = os.fspath(path)
    return configuration_from_arrays(path, _read_npz(path), tuple(require))


def configuration_arrays(config: Configuration) -> dict[str, np.ndarray]:
    """The key -> array mapping that ``write_configuration`` stores for ``config``."""
    clash = _RESERVED_KEYS.intersection(config.extras)
    if clash:
        raise ValueError(f"extras use keys reserved for Configuration attributes: {sorted(clash)}")
    arrays = {_KEY_TYPES: config.types, _KEY_POSITIONS: config.positions}
    optional = {
        _KEY_INHERENT: config.inherent,
        _KEY_CAGE: config.cage,
        _KEY_PROPENSITY: config.propensity,
        _KEY_TIMES: config.times if config.times_stored else None,
        _KEY_BOX: (
            np.asarray(config.box, dtype=config.box_dtype or np.float64) if config.box_stored else None
        ),
    }
    arrays.update({k: v for k, v in optional.items() if v is not None})
    arrays.update(config.extras)
    return {k: np.asarray(v) for k, v in arrays.items()}


def write_configuration(path: str | os.PathLike, config: Configuration) -> None:
    """Validate ``config`` and write it as an uncompressed npz, atomically.

    Exactly the keys the configuration holds are written, with their dtypes;
    ``box`` and ``times`` only when ``box_stored`` / ``times_stored``.  A
    configuration whose box or times could not be recovered from the written
    file (not stored and not the defaults) raises DataError instead of being
    silently changed.  The file appears at ``path`` only once complete.
    """
    path = os.fspath(path)
    arrays = configuration_arrays(config)
    # Validating what is about to be written guarantees every written file loads.
    reread = configuration_from_arrays(path, arrays)
    if not np.allclose(reread.box, config.box, rtol=_CUBIC_RTOL, atol=0.0):
        raise DataError(
            path, _KEY_BOX, f"box {config.box} is not the density-{DENSITY} default; set box_stored=True"
        )
    if config.times is not None and not (
        reread.times is not None and np.array_equal(reread.times, config.times)
    ):
        raise DataError(
            path, _KEY_TIMES, "times differ from the GlassBench defaults; set times_stored=True"
        )

    files.atomic_savez(path, arrays)


# ----------------------------------------------------------------------------
# Folders and splits
# ----------------------------------------------------------------------------

_INDEX_PATTERN = re.compile(r"^(?P<stem>.*)_(?P<index>\d+)\.[^.]+$")


def _natural_key(path: pathlib.Path) -> tuple[str, int, str]:
    """Sort key (stem, trailing index, name): ``x_2.npz`` before ``x_10.npz``; unindexed files first."""
    match = _INDEX_PATTERN.match(path.name)
    if match is None:
        return (path.name, -1, path.name)
    return (match["stem"], int(match["index"]), path.name)


def list_configurations(
    folder: str | os.PathLike, suffixes: Sequence[str] = (".npz",)
) -> list[pathlib.Path]:
    """The files of ``folder`` whose extension is one of ``suffixes`` (with the dot, e.g.
    ``".npz"``), in natural order of their trailing ``_{i}`` index.

    Raises DataError if the folder does not exist or holds no such file.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DataError(folder, FOLDER_FIELD, "no such directory")
    paths = [p for p in folder.iterdir() if p.suffix in suffixes and p.is_file()]
    if not paths:
        raise DataError(folder, FOLDER_FIELD, f"contains no {'/'.join(suffixes)} configuration files")
    return sorted(paths, key=_natural_key)


def expand_inputs(
    inputs: Sequence[str | os.PathLike], suffixes: Sequence[str] = (".npz",)
) -> list[pathlib.Path]:
    """Command-line inputs, files and folders, → the files, in the order given, each folder
    replaced by its :func:`list_configurations` of ``suffixes`` (the extensions read).

    Raises DataError for a folder that holds no such file; a path that is not a folder is
    taken as a file (reading it names any problem, a missing file included).
    """
    paths = []
    for item in inputs:
        path = pathlib.Path(item)
        paths += list_configurations(path, suffixes) if path.is_dir() else [path]
    return paths


# Beside the files of a generated data set: every parameter that made them (experiments.simulate).
META_NAME = "meta.json"
META_TAU_ALPHA = "tau_alpha_assumed"   # the τ_α (τ) a generated folder's time grid was built on


MAX_MEDIAN_DISPLACEMENT = 1.0
"""σ. Real Kob–Andersen data never reach it (dev set, T = 0.64: median |d_i| ≤ 0.22 σ); two
arrays of one configuration in different particle orders give ≈ L/2."""


def displacements(config: Configuration, kind: str) -> np.ndarray:
    """d_i [N, 3] float64 (σ): from each particle to its position in the equilibrium
    structure ``kind`` ('inherent' or 'cage'), the minimum image of r^equi_i − r_i: the
    displacement EIGNN takes as input (paper §3) and the directional analysis compares with
    d^MD (§5.3).

    Raises DataError naming the file and key when the structure is missing or does not
    belong to the configuration (median |d_i| > MAX_MEDIAN_DISPLACEMENT, e.g. another
    particle order).
    """
    box = np.asarray(config.box, np.float64)
    d = periodic.wrap(np.asarray(config.equilibrium(kind), np.float64) - np.asarray(config.positions, np.float64), box)
    median = float(np.median(np.linalg.norm(d, axis=-1))) if len(d) else 0.0
    if median > MAX_MEDIAN_DISPLACEMENT:
        raise DataError(
            config.path or "<in-memory configuration>", _EQUILIBRIUM_KEYS[kind],
            f"the median distance from initial_positions to this {kind} structure is {median:.3g} σ "
            f"(real data: below {MAX_MEDIAN_DISPLACEMENT} σ): are the two arrays in different particle orders?")
    return d


def folder_meta(folder: str | os.PathLike) -> dict | None:
    """The content of ``folder``'s :data:`META_NAME`, or None if it has none.

    Raises DataError naming the file if it is not a JSON object.
    """
    return read_json_object(pathlib.Path(folder) / META_NAME)


def read_json_object(path: str | os.PathLike) -> dict | None:
    """The JSON object in the file ``path`` (a folder's record: meta.json, equilibrate.json),
    or None if there is no such file.

    Raises DataError naming the file if it is not valid JSON or not a JSON object.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(path, FILE_FIELD, f"not valid JSON ({error})") from error
    if not isinstance(content, dict):
        raise DataError(path, FILE_FIELD, f"expected a JSON object, got {type(content).__name__}")
    return content


def tau_alpha_time_index(times: np.ndarray, folder: pathlib.Path) -> int:
    """Index into ``times`` [T] (τ, > 0) of the time scale nearest τ_α, for figures that show
    one time scale: the one nearest, on a log scale, the τ_α recorded in ``folder``'s meta.json (``tau_alpha_assumed``,
    written by ``experiments.simulate``), else the middle one.

    Raises DataError naming a meta.json that is not a JSON object.
    """
    tau_alpha = (folder_meta(folder) or {}).get(META_TAU_ALPHA)
    if isinstance(tau_alpha, (int, float)) and not isinstance(tau_alpha, bool) and tau_alpha > 0:
        return int(np.argmin(np.abs(np.log(np.asarray(times) / tau_alpha))))
    return len(times) // 2


def split_paths(
    paths: Sequence, n_train: int, n_test: int, seed: int
) -> tuple[list, list]:
    """Seeded random, disjoint (train, test) subsets of ``paths``, each in input order.

    The same ``paths``, sizes and seed always give the same split (numpy default_rng).
    Raises ValueError for negative sizes, n_train + n_test > len(paths) or repeated paths.
    """
    paths = list(paths)
    if n_train < 0 or n_test < 0:
        raise ValueError(f"split sizes must be non-negative, got n_train={n_train}, n_test={n_test}")
    if n_train + n_test > len(paths):
        raise ValueError(
            f"n_train + n_test = {n_train + n_test} exceeds the {len(paths)} available paths"
        )
    if len({str(p) for p in paths}) != len(paths):
        raise ValueError("paths contain duplicates, so a split could not be disjoint")
    order = np.random.default_rng(seed).permutation(len(paths))
    # Sorting the chosen indices keeps each subset in the (natural) input order,
    # which makes split files easy to read and diff.
    train = sorted(order[:n_train].tolist())
    test = sorted(order[n_train : n_train + n_test].tolist())
    return [paths[k] for k in train], [paths[k] for k in test]


def glassbench_split(root: str | os.PathLike) -> tuple[list, list] | None:
    """(train, test) listings of ``root/train`` and ``root/test``, or None if that layout is absent.

    GlassBench ships a fixed split per temperature (``KA_models/T{T}/{train,test}``);
    when present it should be used instead of :func:`split_paths`.
    """
    root = pathlib.Path(root)
    subsets = [root / "train", root / "test"]
    if not all(d.is_dir() and any(p.is_file() for p in d.glob("*.npz")) for d in subsets):
        return None
    train, test = (list_configurations(d) for d in subsets)
    return train, test
