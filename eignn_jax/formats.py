"""Configurations from the files simulation codes write, and predictions as a LAMMPS dump.

Read (:func:`read_frames`), by extension or an explicit ``format``:

=============  ===========================  ==========================================
format         extensions                   read by
=============  ===========================  ==========================================
npz            .npz                         :func:`eignn_jax.dataset.load_configuration`
lammps-dump    .dump, .lammpstrj            ASE ``lammps-dump-text`` (frames)
lammps-data    .data, .lmp                  ASE ``lammps-data``
extxyz         .xyz, .extxyz                ASE ``extxyz`` (frames)
gsd            .gsd                         ``gsd.hoomd`` (HOOMD-blue; frames)
=============  ===========================  ==========================================

Coordinates are read as written, in σ (LAMMPS ``units lj``; ASE's default LAMMPS units,
'metal', leave lengths as they are), and wrapped into [−L/2, L/2) as in GlassBench files
(:func:`eignn_jax.physics.periodic.wrap`): LAMMPS dumps may hold unscaled (``x y z``),
scaled (``xs ys zs``) or unwrapped (``xu yu zu``, ``xsu ysu zsu``) coordinates; LAMMPS
data files' image flags are applied before wrapping. The box must be periodic along x,
y and z and orthorhombic; a tilted (triclinic) cell is refused, and so, like in ``.npz``
files, is a non-cubic box: the model was trained on cubic boxes only.

Particle types: each file species is known by a name (an element in an XYZ file or a
dump's ``element`` column, a GSD type name) and/or a number (a LAMMPS type; the atomic
number in an XYZ file). A type map (:func:`parse_type_map`, ``--type-map``) says which
species is A (type 1) and which is B (type 2), looked up by name first, then by number;
the default, :data:`DEFAULT_TYPE_MAP`, is GlassBench's: 1 → A, 2 → B, A → A, B → B.
``.npz`` files always hold types 1/2 and take no type map.

Labels (``md_prop``, ``times``) and equilibrium structures are read from ``.npz`` files
only; the other formats give the configuration alone, which is all prediction needs
(``experiments.equilibrate`` turns any of them into ``.npz`` files to which labels can
be added). Every configuration read runs through the checks of ``.npz`` files
(:func:`eignn_jax.dataset.configuration_from_arrays`), so a problem raises
:class:`~eignn_jax.dataset.DataError` naming the file (and frame) and the field, in the
GlassBench keys ``types``, ``initial_positions`` and ``box``.

ASE and gsd are imported only when a file needs them (``pip install 'eignn_jax[io]'``).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from eignn_jax import dataset, files
from eignn_jax.dataset import Configuration, DataError
from eignn_jax.physics import periodic

__all__ = [
    "DEFAULT_TYPE_MAP",
    "FORMATS",
    "SUFFIXES",
    "Frame",
    "format_lammps_dump",
    "format_of",
    "parse_frames",
    "parse_type_map",
    "read_configurations",
    "read_frames",
    "write_lammps_dump",
]

FORMATS: dict[str, tuple[str, ...]] = {
    "npz": (".npz",),
    "lammps-dump": (".dump", ".lammpstrj"),
    "lammps-data": (".data", ".lmp"),
    "extxyz": (".xyz", ".extxyz"),
    "gsd": (".gsd",),
}
"""Format name → the file extensions that imply it."""

SUFFIXES: tuple[str, ...] = tuple(suffix for suffixes in FORMATS.values() for suffix in suffixes)
"""Every extension read; folders given as inputs expand to files with these."""

# Formats that hold a trajectory: their configurations are frames, named <stem>_frame<k>.
_TRAJECTORIES = frozenset({"lammps-dump", "extxyz", "gsd"})

DEFAULT_TYPE_MAP: dict[str, int] = {"1": 1, "2": 2, "A": 1, "B": 2}
"""GlassBench's species: LAMMPS types 1 and 2, or type names A and B, → 1 (A) and 2 (B)."""

_FRAMES_FIELD = "<frames>"
_TYPES, _POSITIONS, _BOX = "types", "initial_positions", "box"
# Off-diagonal cell entries below this fraction of the largest side are round-off, not tilt.
_TILT_RTOL = 1e-9


@dataclasses.dataclass(frozen=True)
class Frame:
    """One configuration read from a file.

    path: the file. index: the frame's position in the file (0-based) for trajectory
    formats (LAMMPS dump, XYZ, GSD), None for single-configuration formats (.npz, LAMMPS
    data). configuration: validated; its ``path`` names the file and the frame.
    """

    path: pathlib.Path
    index: int | None
    configuration: Configuration

    @property
    def stem(self) -> str:
        """Name for outputs made from this frame: ``<file stem>``, or ``<file stem>_frame<k>``."""
        return self.path.stem if self.index is None else f"{self.path.stem}_frame{self.index}"


# ----------------------------------------------------------------------------- options


def format_of(path: str | os.PathLike, format: str | None = None) -> str:
    """The format name (a key of :data:`FORMATS`) of ``path``: ``format`` if given, else
    the one its extension implies.

    Raises ValueError for an unknown ``format`` and DataError naming the file for an
    extension that implies none.
    """
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMATS)}")
        return format
    suffix = pathlib.Path(path).suffix.lower()
    for name, suffixes in FORMATS.items():
        if suffix in suffixes:
            return name
    raise DataError(path, dataset.FILE_FIELD,
                    f"unknown extension {suffix!r} (known: {' '.join(SUFFIXES)}); say the format with "
                    f"--format ({', '.join(FORMATS)})")


def parse_type_map(text: str) -> dict[str, int]:
    """``"0:A,1:B"`` → ``{"0": 1, "1": 2}``: file species → 1 (A) or 2 (B).

    A species is a number (LAMMPS type, atomic number; ``01`` is ``1``) or a name
    (``Ni:A,P:B``); several species may map to one type. Raises ValueError naming the
    entry for one that is not ``SPECIES:A`` or ``SPECIES:B``, or a species named twice.
    """
    mapping: dict[str, int] = {}
    for entry in text.split(","):
        species, colon, target = (part.strip() for part in entry.partition(":"))
        if not colon or not species or target.upper() not in ("A", "B"):
            raise ValueError(f"type map entry {entry.strip()!r}: expected SPECIES:A or SPECIES:B, "
                             f"comma-separated, e.g. 0:A,1:B or Ni:A,P:B")
        species = _species_key(species)
        if species in mapping:
            raise ValueError(f"type map {text!r} names species {species} twice")
        mapping[species] = 1 if target.upper() == "A" else 2
    return mapping


def _species_key(species: str) -> str:
    """Numbers compare as integers (``01`` is ``1``), names as written."""
    try:
        return str(int(species))
    except ValueError:
        return species


def parse_frames(text: str) -> slice | list[int]:
    """``"3"`` → [3], ``"1,4,7"`` → [1, 4, 7], ``"0:10:2"`` → slice(0, 10, 2), ``":"`` → all.

    Indices are 0-based; negative ones count from the end (``-1``: the last frame).
    Raises ValueError for anything else, or a slice step of 0.
    """
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) > 3:
                raise ValueError
            selection = slice(*(int(part) if part.strip() else None for part in parts))
            if selection.step == 0:
                raise ValueError
            return selection
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"frames {text!r}: expected an index (3, -1), a list (1,4,7) or a slice "
                         f"start:stop[:step] (0:10:2), with a step other than 0") from None


# ----------------------------------------------------------------------------- reading


def read_configurations(path: str | os.PathLike, *, format: str | None = None,
                        frames: slice | Sequence[int] | None = None,
                        type_map: Mapping[str, int] | None = None) -> list[Configuration]:
    """The configurations of :func:`read_frames`, without the frame bookkeeping."""
    return [frame.configuration for frame in
            read_frames(path, format=format, frames=frames, type_map=type_map)]


def read_frames(path: str | os.PathLike, *, format: str | None = None,
                frames: slice | Sequence[int] | None = None,
                type_map: Mapping[str, int] | None = None) -> list[Frame]:
    """Every configuration of one file (see the module docstring for formats and rules).

    format: a key of :data:`FORMATS`; None: from the extension.
    frames: which frames to read (a slice, or indices; negative ones count from the end);
      None: all. They come in file order, each once. A single-configuration file (.npz,
      LAMMPS data) has one frame, index 0.
    type_map: file species → 1 (A) or 2 (B), as from :func:`parse_type_map`; None:
      :data:`DEFAULT_TYPE_MAP`. Ignored for .npz files.
    Returns frames whose configurations hold ``types`` [N] int32 (1/2), positions [N, 3]
    float64 (σ, wrapped into [−L/2, L/2)) and ``box`` [3] float64 (σ); from .npz files,
    exactly what :func:`~eignn_jax.dataset.load_configuration` gives.
    Raises DataError naming the file (and frame) and the field: unreadable file, unknown
    extension, species not in the type map, cell not periodic, tilted or not cubic, any
    failed check of the configuration, frames not in the file; ImportError saying what to
    install when ASE or gsd is missing.
    """
    path = pathlib.Path(path)
    name = format_of(path, format)
    type_map = DEFAULT_TYPE_MAP if type_map is None else type_map
    if name == "npz":
        return [Frame(path, None, dataset.load_configuration(path))
                for _ in _selected(path, frames, iter([None]), lambda: 1)]
    if not path.is_file():
        raise DataError(path, dataset.FILE_FIELD, "no such file")
    if name == "gsd":
        return _read_gsd(path, frames, type_map)
    return _read_with_ase(path, name, frames, type_map)


def _selected(path: pathlib.Path, frames: slice | Sequence[int] | None, items: Iterable,
              length: Callable[[], int]) -> Iterator[tuple[int, object]]:
    """(index, item) for the items of a file's frame sequence that ``frames`` picks.

    items: lazy, in file order; length(): their number, asked only for negative indices.
    Stops reading past the last frame picked. Raises DataError when a frame asked for by
    index is not in the file, or when nothing is picked.
    """
    stop, asked = None, {}
    if frames is None:
        wanted = lambda k: True   # noqa: E731
    elif isinstance(frames, slice):
        start, step = frames.start or 0, frames.step or 1
        if step > 0 and start >= 0 and (frames.stop is None or frames.stop >= 0):
            stop = frames.stop
            wanted = lambda k: k >= start and (k - start) % step == 0   # noqa: E731
        else:
            picked = set(range(length())[frames])
            wanted, stop = picked.__contains__, max(picked, default=-1) + 1
    else:
        n = length() if any(k < 0 for k in frames) else 0
        asked = {(k + n if k < 0 else k): k for k in frames}
        wanted, stop = asked.__contains__, max(asked, default=-1) + 1
    seen, found, exhausted = 0, set(), True
    for k, item in enumerate(items):
        if stop is not None and k >= stop:
            exhausted = False
            break
        seen = k + 1
        if wanted(k):
            found.add(k)
            yield k, item
    holds = f"the file holds {seen} frame(s)" + (f", 0 to {seen - 1}" if seen else "")
    missing = [given for k, given in asked.items() if k not in found]
    if missing:     # only once every frame was read: ``seen`` is their number
        raise DataError(path, _FRAMES_FIELD, f"frame(s) {missing} asked for, but {holds}")
    if not found:
        asked_for = "" if frames is None else f"the frames asked for ({_describe_frames(frames)}) pick none; "
        raise DataError(path, _FRAMES_FIELD, f"no frame read: {asked_for}"
                                             + (holds if exhausted else f"the file holds at least {seen + 1}"))


def _describe_frames(frames: slice | Sequence[int]) -> str:
    if isinstance(frames, slice):
        text = ":".join("" if v is None else str(v) for v in (frames.start, frames.stop))
        return text if frames.step is None else f"{text}:{frames.step}"
    return ",".join(map(str, frames))


def _configuration(where: str, names: np.ndarray | None, numbers: np.ndarray | None,
                   positions: np.ndarray, cell: np.ndarray, pbc: Sequence[bool],
                   type_map: Mapping[str, int]) -> Configuration:
    """A validated Configuration from one frame's species, positions [N, 3] σ (any image)
    and cell [3, 3] σ (rows are the cell vectors)."""
    box = _orthorhombic_box(where, np.asarray(cell, np.float64), pbc)
    arrays = {_TYPES: _map_species(where, names, numbers, type_map),
              _POSITIONS: np.asarray(positions, np.float64), _BOX: box}
    # A box that is no box (zero or negative sides) is left for the check to report.
    if np.all(box > 0):
        arrays[_POSITIONS] = periodic.wrap(arrays[_POSITIONS], box)
    return dataset.configuration_from_arrays(where, arrays)


def _orthorhombic_box(where: str, cell: np.ndarray, pbc: Sequence[bool]) -> np.ndarray:
    """Side lengths [3] (σ) of an orthorhombic cell periodic along x, y and z."""
    if not all(pbc):
        axes = "".join(axis for axis, periodic_ in zip("xyz", pbc) if not periodic_)
        raise DataError(where, _BOX, f"not periodic along {axes}: the model describes a bulk liquid "
                                     f"in a periodic box (x, y and z)")
    sides = np.diag(cell).copy()
    tilt = cell - np.diag(sides)
    if np.any(np.abs(tilt) > _TILT_RTOL * np.abs(sides).max()):
        raise DataError(where, _BOX, f"tilted (triclinic) cell {cell.tolist()}: only orthorhombic boxes "
                                     f"are supported, and of those cubic ones (the model was trained "
                                     f"on cubic boxes)")
    return sides


def _map_species(where: str, names: np.ndarray | None, numbers: np.ndarray | None,
                 type_map: Mapping[str, int]) -> np.ndarray:
    """types [N] int32 (1/2) from per-particle names and/or numbers through ``type_map``."""
    keys = names if names is not None else numbers
    values, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True,
                                               return_counts=True)
    types = np.empty(len(values), np.int32)
    for u, (i, count) in enumerate(zip(first, counts)):
        labels = ([str(names[i])] if names is not None else []) + (
            [str(int(numbers[i]))] if numbers is not None else [])
        known = [type_map[label] for label in labels if label in type_map]
        if not known:
            entries = ",".join(f"{species}:{'A' if t == 1 else 'B'}" for species, t in type_map.items())
            raise DataError(where, _TYPES,
                            f"species {' / '.join(labels)} ({count} particle(s)) is not in the type map "
                            f"{entries}: say which species is A and which B with --type-map "
                            f"(type_map), e.g. --type-map {labels[0]}:A,…")
        types[u] = known[0]
    return types[inverse.reshape(-1)]


def _read_gsd(path: pathlib.Path, frames, type_map) -> list[Frame]:
    gsd_hoomd = _require("gsd.hoomd", "reading GSD files")
    try:
        trajectory = gsd_hoomd.open(os.fspath(path), "r")
    except Exception as error:   # gsd raises RuntimeError, OSError, ... for a file it cannot read
        raise DataError(path, dataset.FILE_FIELD, f"not a readable GSD file ({type(error).__name__}: "
                                                  f"{error})") from error
    with trajectory:
        result = []
        for k, _ in _selected(path, frames, range(len(trajectory)), lambda: len(trajectory)):
            where = f"{path} (frame {k})"
            snapshot = trajectory[k]
            if snapshot.configuration.dimensions != 3:
                raise DataError(where, _POSITIONS, f"a {snapshot.configuration.dimensions}-D system; "
                                                   f"only 3-D systems are supported")
            lx, ly, lz, xy, xz, yz = (float(v) for v in snapshot.configuration.box)
            # HOOMD's tilt factors scale the off-diagonal entries: a = (Lx, 0, 0),
            # b = (xy Ly, Ly, 0), c = (xz Lz, yz Lz, Lz).
            cell = np.array([[lx, 0, 0], [xy * ly, ly, 0], [xz * lz, yz * lz, lz]])
            type_names, typeid = np.asarray(snapshot.particles.types), np.asarray(snapshot.particles.typeid)
            if typeid.size and typeid.max() >= len(type_names):
                raise DataError(where, _TYPES, f"type id {typeid.max()} but only {len(type_names)} type "
                                               f"name(s) {type_names.tolist()}")
            names = type_names[typeid]
            result.append(Frame(path, k, _configuration(where, names, None, snapshot.particles.position,
                                                        cell, (True, True, True), type_map)))
    return result


# ASE takes the first of these coordinate columns that a dump holds; see _read_with_ase.
_ASE_DUMP_COORDINATES = ("x", "xs", "xu", "xsu")


def _read_with_ase(path: pathlib.Path, name: str, frames, type_map) -> list[Frame]:
    ase_io = _require("ase.io", "reading LAMMPS and XYZ files")
    options = {"lammps-dump": {"format": "lammps-dump-text"},
               # atom_style None: ASE reads the style LAMMPS writes after "Atoms" (atomic, full,
               # charge, ...), or tells atomic and full apart by the number of columns.
               "lammps-data": {"format": "lammps-data", "atom_style": None},
               "extxyz": {"format": "extxyz"}}[name]
    columns = _dump_columns(path) if name == "lammps-dump" else []
    # ASE places unscaled (and unwrapped) dump coordinates where they are, but builds
    # scaled ones from the cell alone, without the box's lower corner (xlo, ylo, zlo):
    # that corner is added back here, or every particle would be shifted by it.
    scaled = name == "lammps-dump" and next(
        (c for c in _ASE_DUMP_COORDINATES if c in columns), None) in ("xs", "xsu")

    def images() -> Iterator:
        return _ase_errors(path, name, ase_io.iread(os.fspath(path), index=":", **options))

    result = []
    for k, atoms in _selected(path, frames, images(), lambda: sum(1 for _ in images())):
        index = k if name in _TRAJECTORIES else None
        where = str(path) if index is None else f"{path} (frame {k})"
        positions = atoms.positions + (atoms.get_celldisp().reshape(3) if scaled else 0.0)
        if name == "extxyz":
            names, numbers = np.asarray(atoms.get_chemical_symbols()), atoms.numbers
        else:
            # LAMMPS types (ASE keeps them as the 'type' array; its element guess from
            # masses would give both KA species the same element).
            names = np.asarray(atoms.get_chemical_symbols()) if "element" in columns else None
            numbers = atoms.arrays["type"] if "type" in atoms.arrays else None
            if names is None and numbers is None:
                raise DataError(where, _TYPES, "no 'type' or 'element' column: the particles' "
                                               "species are unknown")
        result.append(Frame(path, index, _configuration(where, names, numbers, positions,
                                                        atoms.cell.array, atoms.pbc, type_map)))
    return result


def _dump_columns(path: pathlib.Path) -> list[str]:
    """Column names of the first ``ITEM: ATOMS`` line of a LAMMPS text dump (a dump
    command writes the same columns in every frame)."""
    try:
        with open(path, errors="replace") as handle:
            for line in handle:
                if line.startswith("ITEM: ATOMS"):
                    return line.split()[2:]
    except OSError as error:
        raise DataError(path, dataset.FILE_FIELD, f"cannot open ({error.strerror or error})") from error
    return []


def _ase_errors(path: pathlib.Path, name: str, images: Iterator) -> Iterator:
    """``images`` with ASE's failures (of any type: it raises what its parsers hit) as DataError."""
    while True:
        try:
            atoms = next(images)
        except StopIteration:
            return
        except Exception as error:
            raise DataError(path, dataset.FILE_FIELD, f"not a readable {name} file (ASE: "
                                                      f"{type(error).__name__}: {error})") from error
        yield atoms


def _require(module: str, purpose: str):
    """The module ``module``, or ImportError saying how to install it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{purpose} needs the package {module.split('.')[0]!r}: "
                          f"pip install 'eignn_jax[io]'") from error


# ----------------------------------------------------------------------------- writing


def format_lammps_dump(types: np.ndarray, positions: np.ndarray, box: np.ndarray,
                       columns: Mapping[str, np.ndarray], *, timestep: int = 0) -> str:
    """One frame of a LAMMPS text dump: ``id type x y z`` and one column per entry of ``columns``.

    types: [N] int (1 = A, 2 = B); positions: [N, 3] σ, written as given; box: [3] σ, its
    bounds written as −L/2 … L/2, periodic (``pp pp pp``); columns: name → [N] values,
    names without whitespace. Name per-particle results ``d_<name>`` (a LAMMPS custom
    per-atom property): OVITO reads every column, ASE only those with a LAMMPS prefix
    (``c_``, ``f_``, ``v_``, ``d_``, ``i_``). Numbers are written with 9 significant
    digits, which round-trips float32 values exactly. Raises ValueError for a column
    name with whitespace or values not of shape [N].
    """
    # ASE reads LAMMPS dumps but cannot write them (its lammps-dump-text format is
    # read-only), so this small writer makes them.
    types = np.asarray(types)
    n = len(types)
    table = [np.arange(1, n + 1), types, *np.asarray(positions, np.float64).reshape(n, 3).T]
    for name, values in columns.items():
        values = np.asarray(values, np.float64)
        if not name or any(c.isspace() for c in name) or values.shape != (n,):
            raise ValueError(f"dump column {name!r}: needs a name without whitespace and [{n}] values, "
                             f"got shape {values.shape}")
        table.append(values)
    bounds = "".join(f"{-side / 2:.17g} {side / 2:.17g}\n" for side in np.asarray(box, np.float64))
    out = io.StringIO()
    header = " ".join(["id", "type", "x", "y", "z", *columns])
    out.write(f"ITEM: TIMESTEP\n{timestep}\nITEM: NUMBER OF ATOMS\n{n}\nITEM: BOX BOUNDS pp pp pp\n{bounds}"
              f"ITEM: ATOMS {header}\n")
    np.savetxt(out, np.column_stack(table), fmt=["%d", "%d"] + ["%.9g"] * (len(table) - 2))
    return out.getvalue()


def write_lammps_dump(path: str | os.PathLike, *args, **kwargs) -> None:
    """Atomic write of :func:`format_lammps_dump` to ``path``."""
    files.atomic_write(path, format_lammps_dump(*args, **kwargs))
