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

The list formats, all built here:

* ordered pairs, sorted (:class:`SortedPairs`, :func:`neighbour_pairs`,
  :func:`union_pairs`): graph edges and per-particle energies, numpy;
* a fixed-capacity half list (:class:`HalfList`, :func:`half_pairs`,
  :func:`half_list`) with a skin, for minimisers (:func:`covers` says when it must be
  rebuilt);
* a fixed-capacity row-per-particle list (:func:`pack_rows`), for the cage sampler's
  single-particle moves.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matscipy.neighbours import neighbour_list
from scipy.spatial import cKDTree

from eignn_jax.physics.periodic import as_box, as_positions, wrap

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
    length of ``wrap(positions[second] - positions[first], box)``.
    """
    shifts = np.empty((len(first), 3), np.int32)
    total = wrapped_total = None
    for d in range(3):
        raw = columns[d][second] - columns[d][first]
        wrapped = wrap(raw, box[d])
        shift = np.rint((wrapped - raw) / box[d]).astype(np.int32)
        shifts[:, d] = shift
        x = raw + shift * box[d]
        total = x * x if total is None else total + x * x
        if lengths:
            w2 = wrapped * wrapped
            wrapped_total = w2 if wrapped_total is None else wrapped_total + w2
    return shifts, total, (np.sqrt(wrapped_total) if lengths else None)


def _wrapped_lengths(columns, box, first, second) -> np.ndarray:
    """|wrap(positions[second] - positions[first], box)| of one block, [B] float64 σ."""
    total = None
    for d in range(3):
        wrapped = wrap(columns[d][second] - columns[d][first], box[d])
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
    # The tree wants every coordinate in [0, L).
    return cKDTree(wrap(positions, box, centred=False), boxsize=box).query_pairs(
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
        self.positions = as_positions(positions)
        self.box = as_box(box)
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
    positions_a = as_positions(positions_a)
    positions_b = as_positions(positions_b)
    if positions_a.shape != positions_b.shape:
        raise ValueError(
            f"structures differ in shape: {positions_a.shape} vs {positions_b.shape}"
        )
    box = as_box(box)
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


# ----------------------------------------------------------------------------
# Fixed-capacity lists for compiled loops
# ----------------------------------------------------------------------------
#
# Compiled code needs fixed shapes, so the lists below hold a fixed number of slots
# (the capacity) with padding. A list that needs more slots than it has is never
# truncated: building it raises NeighbourListOverflow, and the caller's Capacity grows.


class NeighbourListOverflow(RuntimeError):
    """More pairs (or neighbours of one particle) than the list has slots for.

    Attributes ``n_pairs`` (pairs, or neighbours, found) and ``capacity`` (slots).
    """

    def __init__(self, n_pairs: int, capacity: int):
        super().__init__(n_pairs, capacity)
        self.n_pairs = n_pairs
        self.capacity = capacity

    def __str__(self) -> str:
        return f"{self.n_pairs} pairs within range exceed the neighbour-list capacity {self.capacity}"


@dataclasses.dataclass
class Capacity:
    """The slot count of a list that is rebuilt many times, grown on overflow.

    margin: a list is (re)allocated with room for this many times the pairs found.
    capacity: the current slot count (None: not yet allocated).
    reallocations: times the list outgrew its slots after the first allocation.
    """

    margin: float
    capacity: int | None = None
    reallocations: int = 0

    def fit(self, count: int) -> int:
        """The slot count for ``count`` pairs: the current one if it suffices, else a larger one.

        A new slot count means new array shapes, so JAX compiles the loop again; the
        margin and :func:`padded_capacity`'s coarse grid keep that rare as the pair
        count fluctuates, within one run and from one configuration to the next.
        """
        if self.capacity is None or count > self.capacity:
            self.reallocations += self.capacity is not None
            self.capacity = padded_capacity(count, self.margin)
        return self.capacity


def half_pairs(positions, types, box, reach):
    """All pairs i < j closer than the range of their type pair (numpy, float64 geometry).

    positions: [N, 3] float64, σ (any periodic images).  types: [N] int, 1 or 2.
    box: [3] float64, σ.  reach: [2, 2] float, σ, the range of each type pair
    (indexed by [type_i − 1, type_j − 1], symmetric).
    Returns (centres [P] int32, neighbours [P] int32, shifts [P, 3] int32), sorted by
    centre, with ``positions[j] − positions[i] + shifts · box`` the pair vector.
    Raises ValueError if a box side is not longer than twice the longest reach (a pair
    could then be in range through two images).
    """
    reach = np.asarray(reach, dtype=np.float64)
    longest = float(reach.max())
    if np.any(box <= 2.0 * longest):
        raise ValueError(
            f"box {box} too small for a neighbour range of {longest:.4g} σ: every side must "
            f"exceed {2.0 * longest:.4g} σ so each pair has a single image in range")
    # matscipy's cell list, called directly with per-type-pair ranges: a rebuild sits on
    # a minimiser's critical path, and the ordered (i, j) and (j, i) list of
    # neighbour_pairs costs twice the search itself.
    centres, neighbours, shifts = neighbour_list(
        "ijS", positions=positions, cell=np.diag(box), pbc=[True, True, True],
        numbers=np.asarray(types), cutoff={(a, b): float(reach[a - 1, b - 1]) for a in (1, 2) for b in (1, 2)})
    upper = centres < neighbours
    centres = centres[upper].astype(np.int32)
    neighbours = neighbours[upper].astype(np.int32)
    shifts = shifts[upper].astype(np.int32)
    # Half lists are scattered into with sorted indices; matscipy documents this order,
    # and this cheap check keeps a wrong result impossible if it changes.
    if np.any(np.diff(centres) < 0):
        order = np.argsort(centres, kind="stable")
        centres, neighbours, shifts = centres[order], neighbours[order], shifts[order]
    return centres, neighbours, shifts


class HalfList(NamedTuple):
    """Fixed-capacity half neighbour list of a moving configuration; a pytree of arrays.

    centres: [C] int32, i of each pair, non-decreasing (padding uses N − 1 so the
        order holds, which lets scatters assume sorted indices).
    neighbours: [C] int32, j of each pair, i < j for real pairs.
    shifts: [C, 3] int32, image shift; the pair vector (σ) is
        ``positions[j] − positions[i] + shifts · box`` for the positions the list
        was built from and any continuous motion of them (never re-wrap them).
    mask: [C] bool, True for real pairs, False for padding.
    reference: [N, 3] float, σ; positions at the build.
    half_skin: float scalar, σ; half the skin the list was built with.

    Real pairs are all i < j within their interaction range + skin at the build. While
    no particle has moved more than skin / 2 since then (:func:`covers`), every pair
    within its interaction range is in the list.
    """

    centres: jax.Array
    neighbours: jax.Array
    shifts: jax.Array
    mask: jax.Array
    reference: jax.Array
    half_skin: jax.Array

    @property
    def capacity(self) -> int:
        """C, the number of pair slots."""
        return int(self.centres.shape[0])


def half_list(centres, neighbours, shifts, reference, skin: float, capacity: int, dtype) -> HalfList:
    """A :class:`HalfList` of ``capacity`` slots holding the pairs of :func:`half_pairs`.

    reference: [N, 3] float, σ, the positions the pairs were found for.  skin: σ.
    dtype: float dtype of ``reference`` and ``half_skin``.
    Raises :class:`NeighbourListOverflow` if there are more pairs than ``capacity``.
    """
    if len(centres) > capacity:
        raise NeighbourListOverflow(len(centres), int(capacity))
    pad = capacity - len(centres)
    last = len(reference) - 1
    return HalfList(
        centres=jnp.asarray(np.concatenate([centres, np.full(pad, last, np.int32)])),
        neighbours=jnp.asarray(np.concatenate([neighbours, np.full(pad, last, np.int32)])),
        shifts=jnp.asarray(np.concatenate([shifts, np.zeros((pad, 3), np.int32)])),
        mask=jnp.asarray(np.arange(capacity) < len(centres)),
        reference=jnp.asarray(reference, dtype=dtype),
        half_skin=jnp.asarray(0.5 * skin, dtype=dtype),
    )


def covers(positions, pairs: HalfList):
    """Whether ``pairs`` still holds every interacting pair of ``positions``; jittable.

    positions: [N, 3] float, σ (same images as at the build).  Returns a bool scalar:
    True while no particle is more than skin / 2 from where it was at the build (two
    particles then close in by less than the skin). NaN positions count as covered, so
    that non-finite forces, not a rebuild, report them.
    """
    moved = jnp.max(jnp.sum((positions - pairs.reference) ** 2, axis=-1))
    return ~(moved > pairs.half_skin * pairs.half_skin)


def pack_rows(n: int, centres, others, capacity: int):
    """Slots of ordered pairs in a row-per-particle list of ``capacity`` columns.

    n: particles.  centres, others: [P] int, pairs sorted by centre.
    Returns (index [n, capacity] int32, slot [P] int): row i lists i's neighbours in
    columns 0, 1, …, and pads the rest with i itself; pair p sits at
    ``[centres[p], slot[p]]``. Raises :class:`NeighbourListOverflow` (``n_pairs``:
    the most neighbours of one particle) if a row would need more columns.
    """
    counts = np.bincount(centres, minlength=n)
    largest = int(counts.max()) if len(counts) else 0
    if largest > capacity:
        raise NeighbourListOverflow(largest, int(capacity))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(centres)) - start[centres]
    index = np.repeat(np.arange(n, dtype=np.int32)[:, None], capacity, axis=1)
    index[centres, slot] = others
    return index, slot
