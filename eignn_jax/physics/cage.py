"""Cage states: average positions from Monte Carlo in which no particle may leave its cage.

The cage state of a configuration (Alkemade, Smallenburg and Filion, "Improving the
prediction of glassy dynamics by pinpointing the local cage", J. Chem. Phys. 158,
134512 (2023), arXiv:2301.13106) is the configuration made of the average particle
positions sampled at the configuration's temperature while particle rearrangements
are forbidden.

Procedure implemented here
--------------------------

1. Cages. The cage of particle i is its Voronoi cell in the *initial* configuration
   r⁰ (periodic, plain — not radical — Voronoi):

       C_i = { x : |x − r⁰_i| < |x − r⁰_j − n L|  for every j ≠ i and image n }.

   It is stored as one half-space per Voronoi neighbour image
   (:func:`eignn_jax.physics.voronoi.voronoi_cages`).
2. Sampling. Metropolis Monte Carlo at temperature T with the truncated and shifted
   Kob–Andersen potential of :mod:`eignn_jax.physics.kob_andersen`, starting from r⁰. A trial
   move displaces one particle by a vector with independent components uniform in
   [−δ, δ]. A trial position outside the particle's cage is rejected whatever its
   energy (counted in ``rejected_cage_moves``); otherwise the Metropolis test
   min(1, exp(−ΔU / T)) decides. The cages are fixed regions, so this is a hard
   wall and the chain samples the Boltzmann distribution restricted to ∏_i C_i:
   every particle stays nearer its own initial position than any other particle's,
   so no particle can hop to a neighbour's site or swap with it.
3. Cage state. R independent chains (``replicas``) start from r⁰. Each runs
   ``equilibration_sweeps`` sweeps, then ``sweeps`` more with a sample of its
   unwrapped positions at the end of every ``sample_interval``-th sweep. The cage
   state is the average of all samples of all chains, in the periodic image of the
   input (r⁰ + mean displacement). One sweep is about N trial moves per chain.

What comes from the paper and what is chosen here
-------------------------------------------------

From the paper (its abstract; also the abstract of the follow-up, arXiv:2507.16339):
the cage state is the average of the particle positions in a Monte Carlo
simulation at the temperature of the configuration, with particle rearrangements
forbidden. The full text, which says how rearrangements are forbidden and with what
Monte Carlo parameters, could not be consulted. Confining each particle to the
Voronoi cell it has in the initial configuration (step 1) is this module's
reading of "forbidden". Every parameter below is chosen here, not taken from the
paper:

* δ = 0.075 σ (``step_size``): displacements in a cube of side 0.15 σ, the value
  Berthier and Kob used for Monte Carlo dynamics of this mixture (J. Phys.:
  Condens. Matter 19, 205130 (2007)). At T = 0.64 about 34 % of the moves are
  accepted, and the caged mean squared displacement after 200 sweeps is within
  1 % of the best found for δ between 0.05 and 0.125 σ.
* 8 replicas × (200 equilibration + 1000 production sweeps), a sample every 2
  sweeps (4000 samples). At T = 0.64 the constrained system relaxes slowly:
  particles explore most of their Voronoi cell (rms |x − r⁰| ≈ 0.25 σ) and the
  autocorrelation of a particle's position is still ≈ 0.3 after 400 sweeps, so
  one long chain averages slowly and several chains are run side by side (which
  is also cheaper per sweep, see below). On a dev configuration (N = 1000) two
  runs with different seeds give cage states that differ by 0.06 σ rms per
  particle (correlation 0.91), while they lie about 0.13 σ (mean |Δr|) from r⁰;
  more sweeps or replicas shrink the difference as 1/√(samples).

Parallel updates (why detailed balance holds)
---------------------------------------------

The moves are vectorised with the checkerboard scheme of Anderson, Jankowski, Grubb,
Engel and Glotzer (J. Comput. Phys. 254, 27 (2013)), as in HOOMD's hard-particle
Monte Carlo. The box is cut into n_x × n_y × n_z cells, every n_d a multiple of 3
and every cell side ℓ_d ≥ r_max / 2 with r_max = 2.5 σ_AA the longest interaction
range. Cells are coloured by (i_x mod 3, i_y mod 3, i_z mod 3): two cells of the
same colour are separated by at least two cells, i.e. by ≥ r_max. Each sweep draws
a random offset of the grid (uniform within one cell) and a random order of the 27
colours, independently of the configuration. For each colour, ``ceil(N / cells)``
sub-steps are done; in a sub-step every cell of the colour picks a uniformly random
particle among those inside it and tries one move, all cells at once, each with its
own Metropolis test. A move that would take the particle out of its cell is
rejected. Then, within a sub-step,

* particles of different active cells stay ≥ r_max apart before and after their
  trial moves, so their energy changes do not involve each other and the joint
  acceptance factorises: the sub-step is a product of independent single-particle
  Metropolis updates;
* a cell's population cannot change during the sub-step (moves out of the cell
  are rejected and no other moving particle can enter), so the probability
  1/n_cell of picking a particle is the same for a move and its reverse, and the
  displacement distribution is symmetric: each update satisfies detailed balance
  with the (cage-restricted) Boltzmann distribution.

Composing such updates with a state-independent schedule (grid offset, colour order
and random numbers, all functions of the key and the step index) leaves that
distribution invariant; the random offsets make the scheme ergodic. The cage test
is a single-particle condition, so it does not couple the cells. Replicas are
independent chains (key ``fold_in(key, r)``) advanced together by ``jax.vmap``.

Neighbour lists
---------------

Energy changes use a fixed-capacity full neighbour list shared by all replicas,
built on the host (:func:`eignn_jax.physics.neighbours.neighbour_pairs`); a
list that needs more slots than it has is reallocated larger (and counted), never
truncated.

* Caged runs: every position a particle can take lies within R_i of r⁰_i, R_i the
  distance to the farthest vertex of its cell, so the pairs with
  |r⁰_ij| < 2.5 σ_ab + R_i + R_j hold every interaction of every caged
  configuration. That list is built once and never rebuilt. (Energies of trial
  positions outside the cage may be wrong, but those moves are rejected anyway.)
* Unconstrained runs (``constrain=False``, used to check the sampler): pairs within
  2.5 σ_ab + ``skin`` of one another in any replica. Before each sub-step the
  jitted loop checks 2 d_max + √3 δ < skin (d_max: largest displacement since the
  build), which keeps every pair within its cutoff, trial positions included, in
  the list; otherwise it stops *before* the sub-step, the host rebuilds the list
  and the same sub-step runs next with the same random numbers, so the trajectory
  does not depend on when rebuilds happen.

Numerics: trajectories are float32 displacements u_i = x_i − r⁰_i from the input,
and pair vectors are (r⁰_j − r⁰_i + shift · L) + (u_j − u_i) with the first term
computed in float64 on the host, so no global float64 is needed and round-off does
not grow with the coordinates. The cell grid is anchored at particle 0, so the chain
depends only on relative positions: translating the input (or re-wrapping it)
leaves the sampled displacements unchanged. Samples, averages and energies are
handled on the host in float64 between jitted chunks, so the compiled code does not
depend on the run length.

Units: lengths σ_AA, energies ε_AA, temperature ε_AA / k_B.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from eignn_jax.physics import kob_andersen, periodic
from eignn_jax.physics.kob_andersen import CUTOFF_FACTOR, EPSILON, MAX_CUTOFF, SIGMA
from eignn_jax.physics.neighbours import Capacity, NeighbourListOverflow, neighbour_pairs, pack_rows
from eignn_jax.physics.voronoi import voronoi_cages

__all__ = [
    "CageConfig",
    "CageResult",
    "cage_state",
]

# Cells are coloured modulo this per axis; with cells of side >= r_max / 2, two
# cells of the same colour are at least (_COLOURS_PER_AXIS − 1) cells = r_max apart.
_COLOURS_PER_AXIS = 3
_N_COLOURS = _COLOURS_PER_AXIS**3
# Image shifts of the union list are stored offset by this, in [0, 2 · offset).
_IMAGE_OFFSET = 64
# Distance given to padded neighbour slots: beyond every cutoff, so they add zero.
_FAR = 100.0


# ----------------------------------------------------------------------------
# Configuration and result
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CageConfig:
    """Parameters of :func:`cage_state` (see the module docstring for their origin).

    temperature: T (ε / k_B), the temperature of the configuration.
    step_size: δ (σ); each component of a trial displacement is uniform in [−δ, δ].
    sweeps: production sweeps per replica; one sweep is about N trial moves.
    equilibration_sweeps: sweeps per replica before the first sample.
    sample_interval: sweeps between samples (one at the end of every
        ``sample_interval``-th production sweep; trailing sweeps that would not end
        in a sample are not run).
    seed: seed of the default random key (``jax.random.PRNGKey(seed)``).
    replicas: independent chains run side by side from the input configuration,
        each with its own equilibration; the result averages all their samples.
    skin: extra range (σ) of the neighbour list beyond each cutoff 2.5 σ_ab in
        unconstrained runs (caged runs use a static list).
    constrain: True confines every particle to its initial Voronoi cell (the cage
        state); False samples the unconstrained liquid with the same code.
    keep_samples: also return every sample (``CageResult.trajectory``).
    energy_interval: the potential energy is recorded at every
        ``energy_interval``-th sample (it costs as much as ~N trial moves per replica).
    capacity_margin: a neighbour list is allocated with this many times the
        largest number of neighbours found when it is (re)allocated.
    """

    temperature: float
    step_size: float = 0.075
    sweeps: int = 1000
    equilibration_sweeps: int = 200
    sample_interval: int = 2
    seed: int = 0
    replicas: int = 8
    skin: float = 0.8
    constrain: bool = True
    keep_samples: bool = False
    energy_interval: int = 10
    capacity_margin: float = 1.2

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"CageConfig.temperature must be positive, got {self.temperature}")
        if not self.step_size > 0:
            raise ValueError(f"CageConfig.step_size must be positive, got {self.step_size}")
        if not self.skin > 0:
            raise ValueError(f"CageConfig.skin must be positive, got {self.skin}")
        # An unconstrained run's list is only usable while 2 d_max + √3 δ < skin;
        # with a skin this small it would be rebuilt almost every sub-step.
        if not self.constrain and not math.sqrt(3.0) * self.step_size < 0.5 * self.skin:
            raise ValueError(f"skin ({self.skin}) must exceed 2·√3·step_size "
                             f"({2 * math.sqrt(3.0) * self.step_size:.4g})")
        if self.energy_interval < 1:
            raise ValueError(f"CageConfig.energy_interval must be >= 1, got {self.energy_interval}")
        if self.replicas < 1:
            raise ValueError(f"CageConfig.replicas must be >= 1, got {self.replicas}")
        if self.sweeps < 1 or self.sample_interval < 1 or self.equilibration_sweeps < 0:
            raise ValueError("sweeps and sample_interval must be >= 1, equilibration_sweeps >= 0")
        if self.sweeps < self.sample_interval:
            raise ValueError(f"sweeps ({self.sweeps}) must be >= sample_interval "
                             f"({self.sample_interval}) to record any sample")
        if not self.capacity_margin >= 1.0:
            raise ValueError(f"capacity_margin must be >= 1, got {self.capacity_margin}")


@dataclasses.dataclass(frozen=True)
class CageResult:
    """Outcome of :func:`cage_state`.

    positions: [N, 3] float64, σ; average positions, each in the periodic image of
        its input position (input + mean unwrapped displacement).
    acceptance: accepted / attempted trial moves over the whole run (all replicas).
    sweeps: sweeps run per replica (equilibration + production).
    rejected_cage_moves: trial moves rejected because the trial position lay
        outside the particle's cage (0 when ``constrain`` is False).
    samples: configurations averaged (samples per replica × replicas).
    attempted_moves: trial moves in total.
    rejected_cell_moves: trial moves rejected for leaving their checkerboard cell.
    mean_energy: mean potential energy per particle over the recorded energies (ε).
    neighbour_builds: neighbour lists built (the first one included).
    capacity_reallocations: times a list outgrew its capacity and was reallocated.
    trajectory: [S, R, N, 3] float64, σ; every sample of every replica (unwrapped
        positions) when ``keep_samples`` is set, else None.
    sample_energies: [E, R] float64, ε; potential energy per particle of samples
        0, k, 2k, … (k = ``energy_interval``) of each replica.
    """

    positions: np.ndarray
    acceptance: float
    sweeps: int
    rejected_cage_moves: int
    samples: int = 0
    attempted_moves: int = 0
    rejected_cell_moves: int = 0
    mean_energy: float = float("nan")
    neighbour_builds: int = 0
    capacity_reallocations: int = 0
    trajectory: np.ndarray | None = None
    sample_energies: np.ndarray | None = None


# ----------------------------------------------------------------------------
# Checkerboard geometry and neighbour list (host)
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Grid:
    """Checkerboard cells: per-axis counts (multiples of 3) and the cells of each colour."""

    counts: tuple[int, int, int]
    active: np.ndarray  # [27, P] int32: cell ids of each colour

    @property
    def n_cells(self) -> int:
        return self.counts[0] * self.counts[1] * self.counts[2]


def _grid(box: np.ndarray) -> _Grid:
    """Largest grid with n_d a multiple of 3 and cell side ≥ r_max / 2 on every axis."""
    counts = tuple(int(_COLOURS_PER_AXIS * math.floor(2.0 * side / (_COLOURS_PER_AXIS * MAX_CUTOFF)))
                   for side in box)
    if min(counts) < _COLOURS_PER_AXIS:
        raise ValueError(f"box {box} too small: every side must be >= {1.5 * MAX_CUTOFF} σ "
                         "for the checkerboard updates")
    nx, ny, nz = counts
    ix, iy, iz = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    ids = ((ix * ny + iy) * nz + iz).ravel()
    c = _COLOURS_PER_AXIS
    colour = (((ix % c) * c + iy % c) * c + iz % c).ravel()
    active = np.stack([ids[colour == k] for k in range(_N_COLOURS)]).astype(np.int32)
    return _Grid(counts=counts, active=active)


class _Neighbours(NamedTuple):
    """Fixed-capacity full neighbour list shared by all replicas (pytree).

    index: [N, K] int32, neighbour j of each slot (padding: i itself).
    base: [N, K, 3] float32, σ; r⁰_j − r⁰_i + shift · L, so that a replica's pair
        vector is base + u_j − u_i (padding: a vector far beyond every cutoff).
    sigma2, epsilon, cutoff2: [N, K] float32; σ_ab², ε_ab and (2.5 σ_ab)² of each
        slot (padding: cutoff2 = 0, so it never counts), gathered per row instead of
        per pair from the type tables.
    reference: [R, N, 3] float32, σ; each replica's displacements at the build.
    """

    index: jax.Array
    base: jax.Array
    sigma2: jax.Array
    epsilon: jax.Array
    cutoff2: jax.Array
    reference: jax.Array


def _pad_neighbours(types, centres, others, base, capacity, reference):
    """Pack sorted pairs into a [N, capacity] _Neighbours; NeighbourListOverflow if too small."""
    n = len(types)
    index, slot = pack_rows(n, centres, others, capacity)
    padded_base = np.zeros((n, capacity, 3), dtype=np.float32)
    padded_base[..., 0] = _FAR
    padded_base[centres, slot] = base
    a, b = types[centres] - 1, types[others] - 1
    tables = {"sigma2": SIGMA**2, "epsilon": EPSILON, "cutoff2": (CUTOFF_FACTOR * SIGMA) ** 2}
    per_slot = {}
    for name, table in tables.items():
        values = np.ones((n, capacity), dtype=np.float32) if name == "sigma2" else \
            np.zeros((n, capacity), dtype=np.float32)
        values[centres, slot] = table[a, b]
        per_slot[name] = jnp.asarray(values)
    return _Neighbours(index=jnp.asarray(index), base=jnp.asarray(padded_base), **per_slot,
                       reference=jnp.asarray(reference, dtype=jnp.float32))


def _verlet_neighbours(origin, displacements, types, box, skin, capacity):
    """Ordered pairs with |r_ij| < 2.5 σ_ab + skin in any replica.

    origin: [N, 3] float64 (r⁰).  displacements: [R, N, 3] float (u of each replica).
    Each pair keeps the periodic image it has in the replica that found it; a pair
    found with different images in different replicas appears once per image
    (an extra image only adds a pair beyond range).
    """
    n = len(origin)
    width = 2 * _IMAGE_OFFSET
    keys = []
    for u in np.asarray(displacements, dtype=np.float64):
        current = origin + u
        centres, others, shifts = neighbour_pairs(current, box, MAX_CUTOFF + skin)
        sigma = SIGMA[types[centres] - 1, types[others] - 1]
        vectors = current[others] - current[centres] + shifts * box
        keep = np.sum(vectors**2, axis=1) < (CUTOFF_FACTOR * sigma + skin) ** 2
        # One int64 per (i, j, image), ordered like (i, j, image), for a fast union.
        image = shifts[keep].astype(np.int64) + _IMAGE_OFFSET
        if np.any(image < 0) or np.any(image >= width):
            raise ValueError("positions lie too many boxes away from one another")
        code = (image[:, 0] * width + image[:, 1]) * width + image[:, 2]
        pair = centres[keep].astype(np.int64) * n + others[keep]
        keys.append(pair * width**3 + code)
    keys = np.sort(np.concatenate(keys))
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    pair, code = np.divmod(keys, width**3)
    centres, others = np.divmod(pair, n)
    image = np.stack([code // width**2, (code // width) % width, code % width], axis=1) - _IMAGE_OFFSET
    base = origin[others] - origin[centres] + image * box
    return _pad_neighbours(types, centres, others, base, capacity, displacements)


def _cage_neighbours(origin, types, box, radius, replicas, capacity):
    """Static list for caged runs: pairs with |r⁰_ij| < 2.5 σ_ab + R_i + R_j.

    radius: [N] float64, σ; R_i bounds |u_i| for any position in the cage of i
    (its Voronoi cell), so a pair left out is beyond its cutoff for every caged
    configuration of every replica: the list never needs rebuilding.
    """
    n = len(origin)
    centres, others, shifts = neighbour_pairs(origin, box, MAX_CUTOFF + 2.0 * float(radius.max()))
    base = origin[others] - origin[centres] + shifts * box
    sigma = SIGMA[types[centres] - 1, types[others] - 1]
    reach = CUTOFF_FACTOR * sigma + radius[centres] + radius[others]
    keep = np.sum(base**2, axis=1) < reach**2
    return _pad_neighbours(types, centres[keep], others[keep], base[keep], capacity,
                           np.zeros((replicas, n, 3)))


# ----------------------------------------------------------------------------
# Monte Carlo (JAX)
# ----------------------------------------------------------------------------


class _Chain(NamedTuple):
    """State of the R replica chains between and within jitted chunks.

    step: int32, index of the next sub-step (the whole schedule is a function of it).
    u: [R, N, 3] float32, σ; displacements from the input positions (unwrapped).
    max_moved: float32, σ; largest |u − reference| of any particle of any replica
        since the list was built.
    attempted, accepted, cage_rejected, cell_rejected: int32 counters (all replicas).
    """

    step: jax.Array
    u: jax.Array
    max_moved: jax.Array
    attempted: jax.Array
    accepted: jax.Array
    cage_rejected: jax.Array
    cell_rejected: jax.Array


class _System(NamedTuple):
    """Static per-run arrays (pytree).

    cell_origin: [N, 3] float32, σ; r⁰_i − r⁰_0 wrapped into [0, L) (grid anchor: particle 0).
    box: [3] float32.  cell_side: [3] float32.
    active: [27, P] int32, cell ids of each colour.
    cage_vectors: [N, C, 3] float32; cage_half: [N, C] float32 (|v|² / 2, +inf on padding).
    """

    cell_origin: jax.Array
    box: jax.Array
    cell_side: jax.Array
    active: jax.Array
    cage_vectors: jax.Array
    cage_half: jax.Array


class _Sweep(NamedTuple):
    """What stays fixed during one sweep of one replica (moves never leave their cell).

    shift: [3] float32, σ; grid offset.  colours: [27] int32, colour order.
    cell3: [N, 3] int32, cell coordinates of every particle.
    order: [N] int32, particles sorted by cell.  start, count: [cells] int32, the
        slice of ``order`` holding each cell's particles.
    numbers: [27 · inner, P, 5] float32, uniform in [0, 1): per sub-step and active
        cell, the member pick, the three displacement components and the
        Metropolis draw (one generator call per sweep rather than per sub-step).
    """

    shift: jax.Array
    colours: jax.Array
    cell3: jax.Array
    order: jax.Array
    start: jax.Array
    count: jax.Array
    numbers: jax.Array


def _slot_energies(vectors, neighbours: _Neighbours, rows):
    """Pair energies [..., K] (ε) of pair vectors [..., K, 3] in list rows ``rows`` [...].

    The KA pair kernel (:func:`eignn_jax.physics.kob_andersen.lennard_jones`) with
    per-slot parameters (no square root, no per-pair type lookup): this is the
    innermost loop of the sampler.
    """
    r2 = jnp.sum(vectors * vectors, axis=-1)
    energy, _ = kob_andersen.lennard_jones(r2, neighbours.sigma2[rows], neighbours.epsilon[rows],
                                           r2 < neighbours.cutoff2[rows], forces=False)
    return energy


def _energy_per_particle(u, neighbours: _Neighbours):
    """Total potential energy / N (ε) at displacements u [N, 3] (list must be valid)."""
    n = u.shape[0]
    vectors = neighbours.base + u[neighbours.index] - u[:, None, :]
    energies = _slot_energies(vectors, neighbours, jnp.arange(n))
    # Each pair appears as (i, j) and (j, i).
    return 0.5 * jnp.sum(energies) / n


def _cells(x, shift, system: _System):
    """Integer cell coordinates [..., 3] of positions x [..., 3] (anchor frame), grid offset ``shift``."""
    counts = jnp.round(system.box / system.cell_side).astype(jnp.int32)
    wrapped = jnp.mod(x - shift, system.box)
    # mod() can return L itself for a tiny negative argument; clip to the last cell.
    return jnp.clip(jnp.floor(wrapped / system.cell_side).astype(jnp.int32), 0, counts - 1)


@functools.partial(jax.jit, static_argnames=("grid_counts", "inner", "constrain"))
def _run_chunk(chain: _Chain, neighbours: _Neighbours, system: _System, replica_keys, step_end,
               beta, step_size, skin, *, grid_counts, inner, constrain):
    """Advance all replicas until ``step_end`` or until the neighbour list would be unsafe.

    replica_keys: [R] PRNG keys, one independent stream per replica. The schedule
    of sub-step t is fixed by (key, t): sweep s = t // (27 · inner) draws a grid
    offset, a colour order and the random numbers of its sub-steps from
    (key, s), then runs ``inner`` sub-steps per colour. Returns the updated
    chain; ``chain.step < step_end`` means the list must be rebuilt before going
    on (the chain then resumes at the same sub-step, with the same numbers).
    skin = +inf marks a list that is valid for every reachable configuration.
    """
    n = chain.u.shape[1]
    per_sweep = _N_COLOURS * inner
    nx, ny, nz = grid_counts
    n_cells = nx * ny * nz
    margin = jnp.sqrt(3.0) * step_size

    def safe(c: _Chain):
        # Pairs beyond the list range at the build stay beyond the cutoff as long as
        # the two displacements since the build plus the trial step are below skin.
        return 2.0 * c.max_moved + margin < skin

    def start_sweep(u, key, step) -> _Sweep:
        # Also valid when resuming mid-sweep: membership has not changed since the
        # sweep began, and particles are listed per cell in index order.
        keys = jax.random.split(jax.random.fold_in(key, step // per_sweep), 3)
        shift = jax.random.uniform(keys[0], (3,), dtype=jnp.float32) * system.cell_side
        colours = jax.random.permutation(keys[1], _N_COLOURS).astype(jnp.int32)
        numbers = jax.random.uniform(keys[2], (per_sweep, system.active.shape[1], 5),
                                     dtype=jnp.float32)
        cell3 = _cells(system.cell_origin + u, shift, system)
        cell = (cell3[:, 0] * ny + cell3[:, 1]) * nz + cell3[:, 2]
        order = jnp.argsort(cell, stable=True).astype(jnp.int32)
        count = jnp.zeros(n_cells, jnp.int32).at[cell].add(1)
        start = (jnp.cumsum(count) - count).astype(jnp.int32)
        return _Sweep(shift, colours, cell3, order, start, count, numbers)

    def move(u, sweep: _Sweep, reference, step):
        """One sub-step of one replica: u [N, 3] → (u, largest move from reference, counts [4])."""
        colour = sweep.colours[(step % per_sweep) // inner]
        cells = system.active[colour]                  # [P] cells moving now
        numbers = sweep.numbers[step % per_sweep]
        # A uniformly random member of each active cell.
        count = sweep.count[cells]
        occupied = count > 0
        pick = jnp.minimum((numbers[:, 0] * count).astype(jnp.int32), jnp.maximum(count - 1, 0))
        i = sweep.order[jnp.minimum(sweep.start[cells] + pick, n - 1)]

        d = step_size * (2.0 * numbers[:, 1:4] - 1.0)
        u_old = u[i]
        u_new = u_old + d
        same_cell = jnp.all(_cells(system.cell_origin[i] + u_new, sweep.shift, system)
                            == sweep.cell3[i], axis=-1)
        if constrain:
            in_cage = jnp.all(jnp.einsum("pd,pkd->pk", u_new, system.cage_vectors[i])
                              < system.cage_half[i], axis=-1)
        else:
            in_cage = jnp.ones_like(same_cell)

        # Energy change of each moving particle with all its neighbours, which
        # (being within range) are not moving in this sub-step.
        vec_old = neighbours.base[i] + u[neighbours.index[i]] - u_old[:, None, :]   # [P, K, 3]
        vec_new = vec_old - d[:, None, :]
        delta = jnp.sum(_slot_energies(vec_new, neighbours, i)
                        - _slot_energies(vec_old, neighbours, i), axis=-1)
        # 1 − U lies in (0, 1], so its log is finite.
        accept = occupied & same_cell & in_cage & (jnp.log1p(-numbers[:, 4]) < -beta * delta)

        u = u.at[i].add(jnp.where(accept[:, None], d, 0.0))
        moved = jnp.sqrt(jnp.sum((u_new - reference[i]) ** 2, axis=-1))
        counts = jnp.stack([jnp.sum(occupied), jnp.sum(accept),
                            jnp.sum(occupied & same_cell & ~in_cage),
                            jnp.sum(occupied & ~same_cell)]).astype(jnp.int32)
        return u, jnp.max(jnp.where(accept, moved, 0.0)), counts

    def sub_step(c: _Chain, sweeps: _Sweep) -> _Chain:
        t = c.step
        u, moved, counts = jax.vmap(move, in_axes=(0, 0, 0, None))(c.u, sweeps, neighbours.reference, t)
        counts = jnp.sum(counts, axis=0)
        return c._replace(step=t + 1, u=u, max_moved=jnp.maximum(c.max_moved, jnp.max(moved)),
                          attempted=c.attempted + counts[0], accepted=c.accepted + counts[1],
                          cage_rejected=c.cage_rejected + counts[2],
                          cell_rejected=c.cell_rejected + counts[3])

    def run_sweep(c: _Chain) -> _Chain:
        sweeps = jax.vmap(start_sweep, in_axes=(0, 0, None))(c.u, replica_keys, c.step)
        sweep_end = jnp.minimum((c.step // per_sweep + 1) * per_sweep, step_end)
        return jax.lax.while_loop(lambda s: (s.step < sweep_end) & safe(s),
                                  lambda s: sub_step(s, sweeps), c)

    return jax.lax.while_loop(lambda c: (c.step < step_end) & safe(c), run_sweep, chain)


@jax.jit
def _energies(u, neighbours: _Neighbours):
    """[R] potential energy per particle (ε) of each replica at displacements u [R, N, 3]."""
    return jax.vmap(_energy_per_particle, in_axes=(0, None))(u, neighbours)


def cage_state(positions, types, box, config: CageConfig, key: jax.Array | None = None) -> CageResult:
    """Cage state of a Kob–Andersen configuration by cage-constrained Monte Carlo.

    positions: [N, 3] float, σ (any wrapping).  types: [N] int, 1 (A) or 2 (B).
    box: [3] float, σ (orthorhombic, periodic). Every side must exceed twice the
        neighbour-list range: 2 (2.5 + skin) σ unconstrained, 2 (2.5 + 2 max_i R_i) σ
        caged (≈ 8.6 σ for KA at density 1.2, i.e. N ≳ 800).
    config: temperature and Monte Carlo parameters.
    key: JAX PRNG key (raw ``PRNGKey`` or typed); None uses
        ``jax.random.PRNGKey(config.seed)``. The same key and inputs give the same
        result; replica r draws from ``fold_in(key, r)``.

    Returns a :class:`CageResult`; ``positions`` is the average over all samples of
    all replicas of the unwrapped trajectories started from the input, so each
    average lies in the periodic image of its input position. With
    ``config.constrain = False`` the same sampler runs without cages (for checks
    of the sampler itself).
    """
    origin, types, box = periodic.as_system(positions, types, box)
    n = len(origin)
    key = jax.random.PRNGKey(config.seed) if key is None else key
    replicas = config.replicas
    replica_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(replicas))

    grid = _grid(box)
    inner = -(-n // grid.n_cells)                      # ceil(N / cells): ~N moves per sweep
    n_samples = config.sweeps // config.sample_interval
    # Production ends with the last sample (trailing sweeps would not be used).
    total_sweeps = config.equilibration_sweeps + n_samples * config.sample_interval
    if total_sweeps * _N_COLOURS * inner >= 2**31:
        raise ValueError("run too long for the int32 step counter; use fewer sweeps")

    if config.constrain:
        cages = voronoi_cages(origin, box)
        cage_vectors = cages.vectors.astype(np.float32)
        half = 0.5 * np.sum(cages.vectors**2, axis=-1)
        cage_half = np.where(cages.mask, half, np.inf).astype(np.float32)
    else:
        cage_vectors = np.zeros((n, 1, 3), np.float32)
        cage_half = np.full((n, 1), np.inf, np.float32)
    # Grid frame anchored at particle 0: only relative positions enter the chain.
    relative = periodic.wrap(origin - origin[0], box, centred=False)
    system = _System(
        cell_origin=jnp.asarray(relative, jnp.float32), box=jnp.asarray(box, jnp.float32),
        cell_side=jnp.asarray(box / np.asarray(grid.counts), jnp.float32),
        active=jnp.asarray(grid.active), cage_vectors=jnp.asarray(cage_vectors),
        cage_half=jnp.asarray(cage_half))

    chain = _Chain(
        step=jnp.int32(0), u=jnp.zeros((replicas, n, 3), jnp.float32), max_moved=jnp.float32(0.0),
        attempted=jnp.int32(0), accepted=jnp.int32(0), cage_rejected=jnp.int32(0),
        cell_rejected=jnp.int32(0))

    def build(u, capacity):
        if config.constrain:
            return _cage_neighbours(origin, types, box, cages.radius, replicas, capacity)
        return _verlet_neighbours(origin, u, types, box, config.skin, capacity)

    # Samples are taken on the host at the end of every ``sample_interval``-th
    # production sweep: the jitted chunk stops there (sample buffers would make
    # every run length a new compilation).
    per_sweep = _N_COLOURS * inner
    sample_steps = [(config.equilibration_sweeps + k * config.sample_interval) * per_sweep
                    for k in range(1, n_samples + 1)]
    # A caged list is valid for every caged configuration: never unsafe, never rebuilt.
    reach = np.inf if config.constrain else config.skin
    capacity, builds, neighbours = Capacity(config.capacity_margin), 0, None
    total = np.zeros((n, 3))
    energies, trajectory, recorded = [], [], 0
    u_host = np.zeros((replicas, n, 3))
    while recorded < n_samples:
        if neighbours is None:
            try:
                # No slots before the first allocation: that build overflows and sizes the list.
                neighbours = build(u_host, capacity.capacity or 0)
            except NeighbourListOverflow as overflow:
                # More neighbours than slots: allocate a bigger list (JAX recompiles).
                neighbours = build(u_host, capacity.fit(overflow.n_pairs))
            builds += 1
            chain = chain._replace(max_moved=jnp.float32(0.0))
        target = sample_steps[recorded]
        chain = _run_chunk(chain, neighbours, system, replica_keys, jnp.int32(target),
                           jnp.float32(1.0 / config.temperature), jnp.float32(config.step_size),
                           jnp.float32(reach), grid_counts=grid.counts, inner=inner,
                           constrain=config.constrain)
        u_host = np.asarray(chain.u, dtype=np.float64)
        if int(chain.step) < target:
            neighbours = None                          # stopped early: rebuild, go on
            continue
        # The list still holds every interacting pair: the last sub-step started with
        # 2 d_max + √3 δ < skin and moved each particle by at most √3 δ (particles
        # that moved together are too far apart to interact).
        if recorded % config.energy_interval == 0:
            energies.append(np.asarray(_energies(chain.u, neighbours), dtype=np.float64))
        recorded += 1
        total += u_host.sum(axis=0)
        if config.keep_samples:
            trajectory.append(origin + u_host)

    samples = n_samples * replicas
    attempted = int(chain.attempted)
    energies = np.stack(energies)
    return CageResult(
        positions=origin + total / samples,
        acceptance=int(chain.accepted) / max(attempted, 1),
        sweeps=total_sweeps,
        rejected_cage_moves=int(chain.cage_rejected),
        samples=samples,
        attempted_moves=attempted,
        rejected_cell_moves=int(chain.cell_rejected),
        mean_energy=float(np.mean(energies)),
        neighbour_builds=builds,
        capacity_reallocations=capacity.reallocations,
        trajectory=np.stack(trajectory) if config.keep_samples else None,
        sample_energies=energies)
