"""Periodic neighbour lists for orthorhombic boxes.

All searches go through matscipy's cell-list neighbour search, so the cost is
linear in the number of particles; no N x N array is ever built.

Conventions used throughout:

* ``positions``: [N, 3] float, σ. Particles may lie anywhere (inside or outside
  the box, any wrapping convention); only differences modulo the box matter.
* ``box``: [3] float, σ, side lengths of the orthorhombic periodic box.
* an edge ``e`` joins ``centres[e]`` to ``neighbours[e]`` and carries an integer
  image shift, so that its vector (σ) is
  ``positions[neighbours] - positions[centres] + shifts * box``.
"""

from __future__ import annotations

import numpy as np
from matscipy.neighbours import neighbour_list

# matscipy is asked for a marginally larger radius and the result is filtered
# here with an exact strict test, so pairs sitting on the cutoff within
# round-off are decided by one consistent rule (|vector| < cutoff).
_SEARCH_MARGIN = 1e-9


def _as_box(box) -> np.ndarray:
    """Validate ``box`` and return it as a [3] float64 array (σ)."""
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (3,):
        raise ValueError(f"box must have 3 side lengths, got shape {box.shape}")
    if np.any(~np.isfinite(box)) or np.any(box <= 0):
        raise ValueError(f"box side lengths must be positive and finite, got {box}")
    return box


def _as_positions(positions) -> np.ndarray:
    """Validate ``positions`` and return them as [N, 3] float64 (σ)."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain non-finite values")
    return positions


def _sort_edges(centres, neighbours, *per_edge):
    """Sort edges lexicographically by (centre, neighbour).

    centres, neighbours: [E] int; per_edge: arrays with leading dimension E.
    Returns the sorted arrays in the same order as given.
    """
    order = np.lexsort((neighbours, centres))
    return (centres[order], neighbours[order]) + tuple(a[order] for a in per_edge)


def minimum_image(vectors, box) -> np.ndarray:
    """Wrap displacement vectors to the minimum image.

    vectors: [..., 3] float, σ.  box: [3] float, σ.
    Returns [..., 3] float64 with every component in [-L/2, L/2).
    """
    box = _as_box(box)
    vectors = np.asarray(vectors, dtype=np.float64)
    wrapped = vectors - box * np.floor(vectors / box + 0.5)
    # floor() of a quotient can land one image off when a component sits within
    # round-off of ±L/2; one correction pass restores the half-open interval.
    half = 0.5 * box
    wrapped = np.where(wrapped >= half, wrapped - box, wrapped)
    wrapped = np.where(wrapped < -half, wrapped + box, wrapped)
    return wrapped


def _minimum_image_shifts(positions, box, centres, neighbours) -> np.ndarray:
    """Integer image shifts that turn raw differences into minimum-image vectors.

    positions: [N, 3] float64, σ.  box: [3] float64, σ.  centres, neighbours: [E] int.
    Returns shifts [E, 3] int32 with
    ``positions[neighbours] - positions[centres] + shifts * box`` in [-L/2, L/2).
    """
    raw = positions[neighbours] - positions[centres]
    wrapped = minimum_image(raw, box)
    return np.rint((wrapped - raw) / box).astype(np.int32)


def neighbour_pairs(positions, box, cutoff):
    """All ordered pairs (i, j), i != j, closer than ``cutoff`` under periodic boundaries.

    positions: [N, 3] float, σ (any wrapping).  box: [3] float, σ.  cutoff: float, σ.

    Returns ``(centres [E] int32, neighbours [E] int32, shifts [E, 3] int32)``
    such that ``positions[neighbours] - positions[centres] + shifts * box`` has
    length < cutoff. Both (i, j) and (j, i) are present; edges are sorted by
    (centre, neighbour).

    Raises ValueError if any box side is <= 2 * cutoff: a pair could then be
    within the cutoff through more than one image, and each pair must map to a
    single edge.
    """
    positions = _as_positions(positions)
    box = _as_box(box)
    cutoff = float(cutoff)
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    if np.any(box <= 2.0 * cutoff):
        raise ValueError(
            f"every box side must exceed 2*cutoff = {2.0 * cutoff}, got box {box}"
        )
    empty = (np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros((0, 3), np.int32))
    if len(positions) < 2:
        return empty

    centres, neighbours, shifts = neighbour_list(
        "ijS",
        positions=positions,
        cell=np.diag(box),
        pbc=[True, True, True],
        cutoff=cutoff * (1.0 + _SEARCH_MARGIN),
    )
    centres = centres.astype(np.int32)
    neighbours = neighbours.astype(np.int32)
    shifts = shifts.astype(np.int32)

    vectors = positions[neighbours] - positions[centres] + shifts * box
    keep = np.sum(vectors * vectors, axis=1) < cutoff * cutoff
    # With box > 2*cutoff a particle cannot see its own image, but the guard is
    # kept so the i != j contract never depends on the search library.
    keep &= centres != neighbours
    return _sort_edges(centres[keep], neighbours[keep], shifts[keep])


def union_pairs(positions_a, positions_b, box, cutoff):
    """Union of the neighbour pairs of two configurations of the same particles.

    positions_a, positions_b: [N, 3] float, σ (each may be wrapped differently),
    e.g. an instantaneous and an inherent structure.  box: [3] float, σ.
    cutoff: float, σ.

    Returns ``(centres [E] int32, neighbours [E] int32, shifts_a [E, 3] int32)``:
    every ordered pair (i, j) that is closer than ``cutoff`` in a or in b,
    each exactly once, sorted by (centre, neighbour). ``shifts_a`` gives the
    minimum image in structure a:
    ``positions_a[j] - positions_a[i] + shifts_a * box`` is the minimum-image
    vector of the pair in a.

    Raises ValueError if the box is too small for ``neighbour_pairs`` or if a
    union edge is at least half the shortest box side long in either structure
    (its minimum image would not be well defined, so a and b could disagree on
    which image the edge refers to).
    """
    positions_a = _as_positions(positions_a)
    positions_b = _as_positions(positions_b)
    if positions_a.shape != positions_b.shape:
        raise ValueError(
            f"structures differ in shape: {positions_a.shape} vs {positions_b.shape}"
        )
    box = _as_box(box)
    n = len(positions_a)

    centres_a, neighbours_a, _ = neighbour_pairs(positions_a, box, cutoff)
    centres_b, neighbours_b, _ = neighbour_pairs(positions_b, box, cutoff)
    # Encode each ordered pair as one int64 key; np.union1d both deduplicates and
    # sorts, and key order equals (centre, neighbour) lexicographic order.
    keys = np.union1d(
        centres_a.astype(np.int64) * n + neighbours_a,
        centres_b.astype(np.int64) * n + neighbours_b,
    )
    centres = (keys // n).astype(np.int32)
    neighbours = (keys % n).astype(np.int32)

    half_side = 0.5 * float(np.min(box))
    for name, positions in (("a", positions_a), ("b", positions_b)):
        vectors = minimum_image(positions[neighbours] - positions[centres], box)
        lengths = np.sqrt(np.sum(vectors * vectors, axis=1))
        if lengths.size and np.max(lengths) >= half_side:
            worst = int(np.argmax(lengths))
            raise ValueError(
                f"union edge ({centres[worst]}, {neighbours[worst]}) has length "
                f"{lengths[worst]:.4g} in structure {name}, not below half the "
                f"shortest box side {half_side:.4g}"
            )

    shifts_a = _minimum_image_shifts(positions_a, box, centres, neighbours)
    return centres, neighbours, shifts_a
