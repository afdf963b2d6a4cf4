"""Periodic neighbour lists for orthorhombic boxes.

Pairs are found with a periodic k-d tree (scipy's cKDTree, one query for the pairs
i < j), so the cost is linear in the number of particles; no N x N array is ever
built. The tree proposes the pairs, and one exact rule here decides them and their
images; everything per edge runs in fixed-size blocks and the edges are ordered by an
in-place sort of packed keys, so the time per particle stays nearly flat up to 10⁶
particles (``python -m benchmarks.graph_build``).

Conventions used throughout:

* ``positions``: [N, 3] float, σ. Particles may lie anywhere (inside or outside
  the box, any wrapping convention); only differences modulo the box matter.
* ``box``: [3] float, σ, side lengths of the orthorhombic periodic box.
* an edge ``e`` joins ``centres[e]`` to ``neighbours[e]`` and carries an integer
  image shift, so that its vector (σ) is
  ``positions[neighbours] - positions[centres] + shifts * box``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

# The tree is asked for a marginally larger radius and the result is filtered
# here with an exact strict test, so pairs sitting on the cutoff within
# round-off are decided by one consistent rule (|vector| < cutoff).
_SEARCH_MARGIN = 1e-9


def padded_capacity(count: int, margin: float) -> int:
    """Slots for ``count`` items plus a relative ``margin``, rounded up to a coarse grid.

    The grid step is a power of two between 1/32 and 1/16 of the size. Configurations of
    one system have pair counts a few per cent apart, so most get the same capacity, and
    jit-compiled code whose shapes it sets compiles once, not once per configuration.
    """
    wanted = max(1, math.ceil(count * margin))
    step = 1 << max(0, wanted.bit_length() - 5)
    return -(-wanted // step) * step


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


# Everything per edge runs in blocks of this many edges: the temporaries stay in cache
# and are reused by the allocator. Whole-array temporaries of E elements are fresh,
# page-faulting allocations each time, which made the cost per edge grow with N.
_BLOCK = 1 << 16


def _blocks(n_edges: int):
    """Slices covering range(n_edges) in blocks of _BLOCK."""
    for start in range(0, n_edges, _BLOCK):
        yield slice(start, min(start + _BLOCK, n_edges))


def _columns(positions) -> tuple[np.ndarray, ...]:
    """The x, y, z columns of [N, 3] positions as contiguous [N] float64 arrays."""
    return tuple(np.ascontiguousarray(positions[:, d]) for d in range(3))


class _Appender:
    """Arrays filled block by block; ``capacity`` rows are reserved, only written pages are used."""

    def __init__(self, capacity: int, *row_shapes):
        self.arrays = [np.empty((capacity,) + shape, dtype) for shape, dtype in row_shapes]
        self.size = 0

    def append(self, *parts):
        k = len(parts[0])
        for array, part in zip(self.arrays, parts):
            array[self.size:self.size + k] = part
        self.size += k

    def result(self) -> list[np.ndarray]:
        return [array[:self.size] for array in self.arrays]


def _wrap(vectors, box):
    """Minimum image of ``vectors`` (σ) in a periodic box of sides ``box`` (broadcast)."""
    wrapped = vectors - box * np.floor(vectors / box + 0.5)
    # floor() of a quotient can land one image off when a component sits within
    # round-off of ±L/2; one correction pass restores the half-open interval.
    half = 0.5 * box
    wrapped = np.where(wrapped >= half, wrapped - box, wrapped)
    wrapped = np.where(wrapped < -half, wrapped + box, wrapped)
    return wrapped


def minimum_image(vectors, box) -> np.ndarray:
    """Wrap displacement vectors to the minimum image.

    vectors: [..., 3] float, σ.  box: [3] float, σ.
    Returns [..., 3] float64 with every component in [-L/2, L/2).
    """
    box = _as_box(box)
    return _wrap(np.asarray(vectors, dtype=np.float64), box)


def _squared_lengths(columns, box, centres, neighbours, shifts) -> np.ndarray:
    """|positions[neighbours] - positions[centres] + shifts * box|² of one block, [B] float64 σ².

    Evaluated per component and summed x, y, z: the operations, in the order, of
    ``np.sum(vectors * vectors, axis=1)`` on the [B, 3] vectors.
    """
    total = None
    for d in range(3):
        x = columns[d][neighbours] - columns[d][centres] + shifts[:, d] * box[d]
        total = x * x if total is None else total + x * x
    return total


def _images(columns, box, first, second, *, lengths: bool = False):
    """Minimum images of one block of pairs given without shifts.

    columns: x, y, z of the positions, [N] float64 each, σ.  box: [3] float64, σ.
    first, second: [B] int.
    Returns ``shifts`` [B, 3] int32 such that
    ``positions[second] - positions[first] + shifts * box`` is the minimum image,
    ``squared`` [B] float64 σ², that vector's squared length as
    :func:`_squared_lengths` evaluates it, and, with ``lengths``, [B] float64 σ, the
    length of ``minimum_image(positions[second] - positions[first], box)``.
    """
    shifts = np.empty((len(first), 3), np.int32)
    total = wrapped_total = None
    for d in range(3):
        raw = columns[d][second] - columns[d][first]
        wrapped = _wrap(raw, box[d])
        shift = np.rint((wrapped - raw) / box[d]).astype(np.int32)
        shifts[:, d] = shift
        x = raw + shift * box[d]
        total = x * x if total is None else total + x * x
        if lengths:
            w2 = wrapped * wrapped
            wrapped_total = w2 if wrapped_total is None else wrapped_total + w2
    return shifts, total, (np.sqrt(wrapped_total) if lengths else None)


def _wrapped_lengths(columns, box, first, second) -> np.ndarray:
    """|minimum_image(positions[second] - positions[first], box)| of one block, [B] float64 σ."""
    total = None
    for d in range(3):
        wrapped = _wrap(columns[d][second] - columns[d][first], box[d])
        total = wrapped * wrapped if total is None else total + wrapped * wrapped
    return np.sqrt(total)


def _check_search(box, cutoff) -> float:
    cutoff = float(cutoff)
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    if np.any(box <= 2.0 * cutoff):
        raise ValueError(
            f"every box side must exceed 2*cutoff = {2.0 * cutoff}, got box {box}"
        )
    return cutoff


def _candidates(positions, box, cutoff) -> np.ndarray:
    """Candidate pairs (i < j) within ``cutoff`` (1 + margin), [P, 2] int64, unordered.

    positions: [N, 3] float64 σ, N >= 2; box: [3] float64 σ. The array is the caller's
    to overwrite.
    """
    # The tree wants every coordinate in [0, L); np.mod can round up to L itself.
    inside = np.mod(positions, box)
    inside = np.where(inside >= box, inside - box, inside)
    return cKDTree(inside, boxsize=box).query_pairs(
        cutoff * (1.0 + _SEARCH_MARGIN), output_type="ndarray")


def _shift_bound(columns, box) -> int:
    """A bound on |minimum-image shift| of any pair of these positions (any wrapping)."""
    # |x_j - x_i| <= span, and the wrapped difference is within L/2 of it.
    return max(int(np.ceil((column.max() - column.min()) / side)) + 1
               for column, side in zip(columns, box)) if len(columns[0]) else 1


class _DirectedEdges:
    """Half pairs (i < j, shifts), added block by block, handed back in both directions
    sorted by (centre, neighbour), the reverse edge (j, i) carrying -shifts.

    Each directed edge is one int64 key: (centre·n + neighbour) in the high bits, the
    image shift in the low ones. The keys are distinct and their order is (centre,
    neighbour) order, so one in-place np.sort orders the edges and carries their shifts
    along, without the random-access gathers of an argsort on large arrays (which made
    the cost per edge grow with N). When the keys cannot hold the shifts (N near 2^28,
    or positions unwrapped by very many boxes), the edges are argsorted instead.
    """

    def __init__(self, n: int, bound: int, capacity: int, buffer: np.ndarray | None = None):
        """n: particles; bound: |shift| <= bound for every pair added; capacity: the most
        pairs added. buffer: int64 memory of at least 2·capacity keys to write into,
        reused as is (e.g. the candidate array being read: key k is written only once
        pair k has been read)."""
        self.n, self.bound = n, bound
        self.bits = max(1, (2 * bound).bit_length())
        self.packed = n >= 2 and (n * n - 1).bit_length() + 3 * self.bits <= 63
        self.size = 0
        if self.packed:
            self.keys = buffer if buffer is not None else np.empty(2 * capacity, np.int64)
        else:
            self.half = _Appender(capacity, ((), np.int32), ((), np.int32), ((3,), np.int32))
        self._sorted = None

    def add(self, first, second, shifts) -> None:
        if not self.packed:
            self.half.append(first, second, shifts)
            self.size += 2 * len(first)
            return
        bits, n = self.bits, self.n
        i, j = first.astype(np.int64), second.astype(np.int64)
        s = shifts.astype(np.int64) + self.bound  # in [0, 2·bound]
        r = 2 * self.bound - s  # the reverse edge's shift, + bound
        low = 3 * bits
        k = len(i)
        keys = self.keys[self.size:self.size + 2 * k]
        keys[:k] = ((i * n + j) << low) | (s[:, 0] << (2 * bits)) | (s[:, 1] << bits) | s[:, 2]
        keys[k:] = ((j * n + i) << low) | (r[:, 0] << (2 * bits)) | (r[:, 1] << bits) | r[:, 2]
        self.size += 2 * k

    def __len__(self) -> int:
        return self.size

    def blocks(self, shift_dtype=np.int32):
        """Yields (centres [B] int32, neighbours [B] int32, shifts [B, 3] shift_dtype) in order."""
        if not self.packed:
            if self._sorted is None:
                first, second, shifts = self.half.result()
                self._sorted = _sort_edges(
                    self.n, np.concatenate([first, second]), np.concatenate([second, first]),
                    np.concatenate([shifts, -shifts]))
                del self.half
            centres, neighbours, shifts = self._sorted
            for block in _blocks(self.size):
                yield centres[block], neighbours[block], shifts[block].astype(shift_dtype)
            return
        if self._sorted is None:
            self._sorted = self.keys[:self.size]
            self._sorted.sort()
        bits, n = self.bits, self.n
        mask = (1 << bits) - 1
        for block in _blocks(self.size):
            key = self._sorted[block]
            pair = key >> (3 * bits)
            centres = pair // n
            shifts = np.empty((len(key), 3), shift_dtype)
            shifts[:, 0] = ((key >> (2 * bits)) & mask) - self.bound
            shifts[:, 1] = ((key >> bits) & mask) - self.bound
            shifts[:, 2] = (key & mask) - self.bound
            yield centres.astype(np.int32), (pair - centres * n).astype(np.int32), shifts

    def arrays(self, shift_dtype=np.int32):
        """All edges: (centres [E] int32, neighbours [E] int32, shifts [E, 3] shift_dtype)."""
        edges = _Appender(self.size, ((), np.int32), ((), np.int32), ((3,), shift_dtype))
        for block in self.blocks(shift_dtype):
            edges.append(*block)
        return tuple(edges.result())


def _sort_edges(n, centres, neighbours, *per_edge):
    """Sort edges lexicographically by (centre, neighbour) (each pair at most once)."""
    order = np.argsort(centres.astype(np.int64) * n + neighbours)
    return (centres[order], neighbours[order]) + tuple(a[order] for a in per_edge)


_EMPTY_PAIRS = (np.zeros(0, np.int32), np.zeros(0, np.int32))


class SortedPairs:
    """Every ordered pair closer than a cutoff in one structure, sorted by (centre,
    neighbour) and held compactly; :meth:`blocks` hands them out a block at a time.

    ``inner``: the pairs (first < second) closer than the ``inner`` cutoff, when one
    was asked for, as ``(first [P] int32, second [P] int32)``, unordered; else None.
    """

    def __init__(self, positions, box, cutoff, inner: float | None = None):
        """positions: [N, 3] float σ (any wrapping); box: [3] float σ; cutoff: float σ;
        inner (optional): a second, smaller cutoff σ whose pairs are kept in ``inner``."""
        self.positions = _as_positions(positions)
        self.box = _as_box(box)
        cutoff = _check_search(self.box, cutoff)
        self.columns = _columns(self.positions)
        n = len(self.positions)
        if inner is not None and not 0 < inner <= cutoff:
            raise ValueError(f"inner cutoff must be in (0, {cutoff}], got {inner}")
        if n < 2:
            self.edges = _DirectedEdges(n, 1, 0)
            self.inner = _EMPTY_PAIRS if inner is not None else None
            return
        found = _candidates(self.positions, self.box, cutoff)
        # The keys go into the candidates' own memory (2 int64 per pair, as many as the
        # two directions need), so sorting needs no second array of that size.
        self.edges = _DirectedEdges(n, _shift_bound(self.columns, self.box), len(found),
                                    buffer=found.reshape(-1))
        kept_inner = None if inner is None else _Appender(len(found), ((), np.int32), ((), np.int32))
        for block in _blocks(len(found)):
            first, second = found[block, 0], found[block, 1]
            # A pair within the cutoff (< L/2) has exactly one image that close, its
            # minimum image; the strict test decides every pair on that image's vector.
            shifts, squared, _ = _images(self.columns, self.box, first, second)
            keep = (squared < cutoff * cutoff) & (first != second)
            first, second, shifts, squared = first[keep], second[keep], shifts[keep], squared[keep]
            if kept_inner is not None:
                close = squared < inner * inner
                kept_inner.append(first[close], second[close])
            self.edges.add(first, second, shifts)
        self.inner = None if kept_inner is None else tuple(kept_inner.result())

    def __len__(self) -> int:
        return len(self.edges)

    def blocks(self):
        """Yields (centres [B] int32, neighbours [B] int32, shifts [B, 3] int32,
        squared_lengths [B] float64 σ²) in (centre, neighbour) order; the squared length
        of ``positions[neighbours] - positions[centres] + shifts * box``."""
        for centres, neighbours, shifts in self.edges.blocks():
            yield centres, neighbours, shifts, _squared_lengths(
                self.columns, self.box, centres, neighbours, shifts)


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
    return SortedPairs(positions, box, cutoff).edges.arrays()


def union_pairs(positions_a, positions_b, box, cutoff, *, pairs_b=None, shift_dtype=np.int32):
    """Union of the neighbour pairs of two configurations of the same particles.

    positions_a, positions_b: [N, 3] float, σ (each may be wrapped differently),
    e.g. an instantaneous and an inherent structure.  box: [3] float, σ.
    cutoff: float, σ.  pairs_b (optional): the pairs of b closer than ``cutoff`` when
    already at hand, ``(first, second)`` with first < second, e.g. the ``inner`` of
    ``SortedPairs(positions_b, box, longer_cutoff, inner=cutoff)``.
    shift_dtype: dtype of the returned shifts (values are integers either way).

    Returns ``(centres [E] int32, neighbours [E] int32, shifts_a [E, 3] shift_dtype)``:
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
    cutoff = _check_search(box, cutoff)
    n = len(positions_a)
    if n < 2:
        return (np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros((0, 3), shift_dtype))
    columns_a, columns_b = _columns(positions_a), _columns(positions_b)
    squared_cutoff = cutoff * cutoff
    if pairs_b is None:
        pairs_b = SortedPairs(positions_b, box, cutoff, inner=cutoff).inner

    # Every union edge is shorter than the cutoff (< half the box) in the structure it
    # was found in; its minimum image in the other structure must be short as well.
    half_side = 0.5 * float(np.min(box))
    worst = [-1.0, 0, 0]

    def track(lengths, first, second):
        if lengths.size:
            k = int(np.argmax(lengths))
            if lengths[k] > worst[0]:
                worst[:] = float(lengths[k]), int(first[k]), int(second[k])

    def check(name):
        if worst[0] >= half_side:
            raise ValueError(
                f"union edge ({worst[1]}, {worst[2]}) has length {worst[0]:.4g} in structure "
                f"{name}, not below half the shortest box side {half_side:.4g}"
            )
        worst[:] = -1.0, 0, 0

    # The pairs of b seen in a: minimum image in a and, by the very test that finds the
    # pairs of a below, whether a holds them too; those that fail it are exactly the
    # pairs of b missing from a.
    only_b = _Appender(len(pairs_b[0]), ((), np.int32), ((), np.int32), ((3,), np.int32))
    for block in _blocks(len(pairs_b[0])):
        first, second = pairs_b[0][block], pairs_b[1][block]
        shifts, squared, lengths = _images(columns_a, box, first, second, lengths=True)
        track(lengths, first, second)
        new = ~(squared < squared_cutoff)
        only_b.append(first[new], second[new], shifts[new])
    check("a")
    only_b = only_b.result()

    # The pairs of a, straight into the sorted edge list.
    found = _candidates(positions_a, box, cutoff)
    edges = _DirectedEdges(n, _shift_bound(columns_a, box), len(found) + len(only_b[0]))
    for block in _blocks(len(found)):
        first, second = found[block, 0], found[block, 1]
        shifts, squared, _ = _images(columns_a, box, first, second)
        keep = (squared < squared_cutoff) & (first != second)
        first, second, shifts = first[keep], second[keep], shifts[keep]
        track(_wrapped_lengths(columns_b, box, first, second), first, second)
        edges.add(first, second, shifts)
    del found
    check("b")
    for block in _blocks(len(only_b[0])):
        edges.add(*(part[block] for part in only_b))
    return edges.arrays(shift_dtype)
