"""Orthorhombic periodic boxes: checking positions and boxes, wrapping, minimum images.

Conventions used by the whole package:

* ``positions``: [N, 3] float, σ. Particles may lie anywhere (inside or outside the
  box, any wrapping); only differences modulo the box matter, except where a function
  says it returns wrapped positions.
* ``box``: [3] float, σ, the side lengths L of the periodic box.
* ``types``: [N] int, 1 (A) or 2 (B), as stored in the data files.
"""

from __future__ import annotations

import numpy as np


def as_box(box) -> np.ndarray:
    """``box`` checked and returned as [3] float64 (σ).

    Raises ValueError unless it holds 3 positive, finite side lengths.
    """
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (3,):
        raise ValueError(f"box must have 3 side lengths, got shape {box.shape}")
    if np.any(~np.isfinite(box)) or np.any(box <= 0):
        raise ValueError(f"box side lengths must be positive and finite, got {box}")
    return box


def as_positions(positions) -> np.ndarray:
    """``positions`` checked and returned as [N, 3] float64 (σ).

    Raises ValueError unless the shape is [N, 3] and every value finite.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain non-finite values")
    return positions


def as_system(positions, types, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A configuration checked and converted: ([N, 3] float64 σ, [N] int32, [3] float64 σ).

    Raises ValueError naming the first problem: positions not [N, 3] or not finite,
    types not [N] or not 1 (A) / 2 (B), box not 3 positive finite sides.
    """
    positions = as_positions(positions)
    types = np.asarray(types)
    if types.shape != (len(positions),):
        raise ValueError(f"types must have shape [{len(positions)}], got {types.shape}")
    if not np.all((types == 1) | (types == 2)):
        raise ValueError("types must be 1 (A) or 2 (B)")
    return positions, types.astype(np.int32), as_box(box)


def wrap(x, box, *, centred: bool = True) -> np.ndarray:
    """Positions wrapped into the periodic box, or difference vectors to their minimum image.

    x: [..., 3] float, σ.  box: [3] float, σ (broadcast against x).
    centred: True wraps each component into [−L/2, L/2): for positions, the GlassBench
        convention; for differences r_j − r_i, the minimum image. False wraps into [0, L).
    Returns [..., 3] float64 (or the float dtype of x if wider).

    ``x − L floor(x / L + ½)`` can land one image off when a component sits within
    round-off of a boundary; one correction pass restores the half-open interval.
    """
    x = np.asarray(x, dtype=np.result_type(x, np.float64))
    box = np.asarray(box, dtype=x.dtype)
    if centred:
        wrapped = x - box * np.floor(x / box + 0.5)
        half = 0.5 * box
        wrapped = np.where(wrapped >= half, wrapped - box, wrapped)
        return np.where(wrapped < -half, wrapped + box, wrapped)
    wrapped = x - box * np.floor(x / box)
    wrapped = np.where(wrapped >= box, wrapped - box, wrapped)
    return np.where(wrapped < 0.0, wrapped + box, wrapped)
