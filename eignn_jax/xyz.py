"""Extended XYZ output (readable by OVITO and ASE) with per-particle columns."""

from __future__ import annotations

import io
from typing import Mapping

import numpy as np

from eignn_jax import files

SPECIES = {1: "A", 2: "B"}


def format_extended_xyz(types: np.ndarray, positions: np.ndarray, box: np.ndarray,
                        columns: Mapping[str, np.ndarray], info: Mapping[str, str] = {}) -> str:
    """One frame: species A/B, positions (σ), the type as ``Z``, and each [N] or [N, k] float column.

    ASE accepts only chemical symbols as species, so the file type (1 = A, 2 = B) is also
    written as the atomic-number column ``Z``: ASE then reads A/B as numbers 1/2, while
    OVITO shows the A/B names.

    types: [N] 1/2; positions: [N, 3] σ; box: [3] σ, with the origin at −L/2 (the file
    convention), given as ``Origin``; columns: name → per-particle values; info: extra
    ``key=value`` pairs for the comment line (values must not contain quotes).
    """
    n = len(types)
    arrays = [np.asarray(positions, np.float64).reshape(n, 3), np.asarray(types, np.float64).reshape(n, 1)]
    properties = ["species:S:1", "pos:R:3", "Z:I:1"]
    for name, values in columns.items():
        values = np.asarray(values, np.float64).reshape(n, -1)
        arrays.append(values)
        properties.append(f"{name}:R:{values.shape[1]}")
    lattice = " ".join(f"{x:.8g}" for x in np.diag(np.asarray(box, np.float64)).ravel())
    origin = " ".join(f"{-x / 2:.8g}" for x in box)
    header = [f'Lattice="{lattice}"', f'Origin="{origin}"', 'pbc="T T T"',
              f"Properties={':'.join(properties)}"]
    header += [f'{key}="{value}"' for key, value in info.items()]
    table = np.concatenate(arrays, axis=1)
    out = io.StringIO()
    out.write(f"{n}\n{' '.join(header)}\n")
    for species, row in zip(types, table):
        out.write(SPECIES[int(species)] + " " + " ".join(
            f"{x:.0f}" if column == 3 else f"{x:.7g}" for column, x in enumerate(row)) + "\n")
    return out.getvalue()


def write_extended_xyz(path, *args, **kwargs) -> None:
    """Atomic write of :func:`format_extended_xyz`."""
    files.atomic_write(path, format_extended_xyz(*args, **kwargs))
