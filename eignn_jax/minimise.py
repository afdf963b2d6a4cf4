"""Inherent structures: FIRE energy minimisation of Kob–Andersen configurations.

The energy is the truncated and shifted KA potential of :mod:`eignn_jax.potential`
(cutoff 2.5 σ_ab). It is minimised with FIRE (Bitzek, Koskinen, Gähler, Moseler
and Gumbsch, Phys. Rev. Lett. 97, 170201 (2006)), with the standard parameters

    dt_max = 10 dt_start, N_min = 5, f_inc = 1.1, f_dec = 0.5,
    α_start = 0.1, f_α = 0.99,

and unit masses. One FIRE iteration, as implemented in :func:`fire_steps`, is

    P = F(x) · v                      (v: velocity of the previous step)
    P ≥ 0:  if more than N_min steps since the last P < 0:
                dt ← min(f_inc dt, dt_max),  α ← f_α α
    P < 0:  v ← 0,  dt ← f_dec dt,  α ← α_start
    v ← v + dt F(x)                   (kick, semi-implicit Euler)
    v ← (1 − α) v + α |v| F̂           (FIRE mixing)
    x ← x + dt v                      (drift)

where F, v and x are 3N-vectors (|v| and F̂ use the norm over all particles).
Starting from rest, a step is v = dt F and x ← x + dt² F whatever α is: plain
steepest descent with step dt².

Layout of the computation:

* The minimiser is a pure JAX state machine: a :class:`FireState` pytree and the
  jitted :func:`fire_steps`, a ``lax.while_loop`` that advances it until a step
  limit, until max |F| < tolerance, or until some particle has moved more than
  half the neighbour-list skin since the list was built.
* Forces come from a fixed-capacity *half* neighbour list (:class:`NeighbourList`):
  each unordered pair i < j appears once, padded to capacity C with a mask, and
  carries an integer image shift so its vector is ``x_j − x_i + shift · L``.
  Positions are never re-wrapped during a minimisation, so the shifts stay valid.
  The list is built on the host (matscipy's cell-list search)
  and rebuilt between calls of :func:`fire_steps` when needed; more pairs than
  capacity raises :class:`NeighbourListOverflow`, upon which
  :func:`inherent_structure` reallocates a bigger list (and JAX recompiles).
* :func:`inherent_structure` runs in float32 until max |F| < ``float32_tolerance``
  (or float32 stops making progress), then continues in float64, enabled only
  locally, to ``force_tolerance``.

Units: lengths σ_AA, energies ε_AA, forces ε_AA/σ_AA, time (σ_AA √(m/ε_AA)) with m = 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matscipy.neighbours import neighbour_list

from eignn_jax.potential import KA_CUTOFF_FACTOR, KA_EPSILON, KA_MAX_CUTOFF, KA_SHIFT_PER_EPSILON, KA_SIGMA

__all__ = [
    "FireConfig",
    "FireParameters",
    "FireState",
    "MinimisationError",
    "MinimisationResult",
    "NeighbourList",
    "NeighbourListOverflow",
    "build_neighbour_list",
    "fire_parameters",
    "fire_steps",
    "inherent_structure",
    "init_fire_state",
    "ka_energy_and_forces",
    "needs_rebuild",
]

# A pair's parameters depend only on type_i + type_j − 2 (0 = AA, 1 = AB, 2 = BB)
# because the KA tables are symmetric; three-entry tables indexed this way cost
# one small gather per pair instead of a 2-D lookup.
_KIND_SIGMA = np.array([KA_SIGMA[0, 0], KA_SIGMA[0, 1], KA_SIGMA[1, 1]])
_KIND_EPSILON = np.array([KA_EPSILON[0, 0], KA_EPSILON[0, 1], KA_EPSILON[1, 1]])


# ----------------------------------------------------------------------------
# Configuration and results
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FireConfig:
    """Parameters of :func:`inherent_structure`.

    FIRE (Bitzek et al. 2006, standard values):
        dt_start: initial time step (τ).
        dt_max: largest time step (τ); the standard choice is 10 dt_start.
        n_min: number of P > 0 steps before dt may grow again (N_min).
        f_inc, f_dec: factors by which dt grows / shrinks.
        alpha_start, f_alpha: initial velocity-mixing weight α and its decay factor.

    Convergence:
        force_tolerance: stop when max_i |F_i| < this (ε/σ), checked in float64.
        float32_tolerance: leave the float32 phase when max_i |F_i| drops below this.
            Float32 round-off puts a floor near 3e-4 under max |F| for KA systems
            of 10³–10⁴ particles; 1e-3 is reached reliably, and is late enough
            that the costlier float64 phase is only a final polish (~10²
            iterations) rather than, as with 1e-2 (which FIRE also crosses
            transiently in mid-descent), thousands.
        float32_patience: also leave it after this many iterations with max |F|
            between float32_tolerance and 10 × that (the float32 stall).
        max_iterations: FIRE iterations allowed in total (both phases); exceeding
            them raises :class:`MinimisationError`.
        chunk: iterations per call of the jitted loop (K); between calls the host
            checks convergence and rebuilds the neighbour list.

    Neighbour list:
        skin: extra range (σ) of the list beyond each pair's cutoff 2.5 σ_ab;
            the list is rebuilt once any particle has moved more than skin / 2.
        capacity_margin: a list is allocated with room for this many times the
            pairs found when it is (re)allocated. Padding slots cost as much as
            real pairs, and the pair count of a KA system at fixed density moves
            by well under 1% between a liquid and its inherent structure.
        initial_capacity: capacity of the first list (pairs); None sizes it from
            the first build with ``capacity_margin``.
    """

    dt_start: float = 0.01
    dt_max: float = 0.1
    n_min: int = 5
    f_inc: float = 1.1
    f_dec: float = 0.5
    alpha_start: float = 0.1
    f_alpha: float = 0.99
    skin: float = 0.3
    force_tolerance: float = 1e-4
    float32_tolerance: float = 1e-3
    float32_patience: int = 1000
    max_iterations: int = 50_000
    chunk: int = 1000
    capacity_margin: float = 1.05
    initial_capacity: int | None = None

    def __post_init__(self):
        positive = ("dt_start", "dt_max", "f_inc", "f_dec", "skin", "force_tolerance",
                    "float32_tolerance", "max_iterations", "chunk", "float32_patience")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"FireConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dt_max < self.dt_start:
            raise ValueError(f"dt_max ({self.dt_max}) must be >= dt_start ({self.dt_start})")
        if not 0.0 < self.alpha_start <= 1.0 or not 0.0 < self.f_alpha <= 1.0:
            raise ValueError("alpha_start and f_alpha must lie in (0, 1]")
        if self.n_min < 0:
            raise ValueError(f"n_min must be >= 0, got {self.n_min}")
        if not self.capacity_margin >= 1.0:
            raise ValueError(f"capacity_margin must be >= 1, got {self.capacity_margin}")
        if self.initial_capacity is not None and self.initial_capacity < 1:
            raise ValueError(f"initial_capacity must be >= 1, got {self.initial_capacity}")


@dataclasses.dataclass(frozen=True)
class MinimisationResult:
    """Outcome of :func:`inherent_structure`.

    positions: [N, 3] float64, σ; the inherent structure, each particle in the
        same periodic image as its input position (input + total displacement).
    energy_per_particle: float, ε; total potential energy / N, evaluated in float64.
    max_force: float, ε/σ; max_i |F_i| at ``positions``, float64.
    iterations: FIRE iterations in total.
    float64_iterations: of which in the float64 phase.
    neighbour_rebuilds: rebuilds of the neighbour list because a particle moved
        more than skin / 2 (the initial build is not counted).
    neighbour_capacity: capacity (pairs) of the final neighbour list.
    capacity_reallocations: times the list overflowed and was reallocated larger.
    """

    positions: np.ndarray
    energy_per_particle: float
    max_force: float
    iterations: int
    float64_iterations: int
    neighbour_rebuilds: int
    neighbour_capacity: int = 0
    capacity_reallocations: int = 0


class MinimisationError(RuntimeError):
    """FIRE did not reach the force tolerance (iteration budget spent, or forces not finite)."""


class NeighbourListOverflow(RuntimeError):
    """More pairs within range than the neighbour list can hold.

    Attributes ``n_pairs`` (pairs found) and ``capacity`` (pairs the list holds).
    """

    def __init__(self, n_pairs: int, capacity: int):
        super().__init__(n_pairs, capacity)
        self.n_pairs = n_pairs
        self.capacity = capacity

    def __str__(self) -> str:
        return f"{self.n_pairs} pairs within range exceed the neighbour-list capacity {self.capacity}"


# ----------------------------------------------------------------------------
# Neighbour list
# ----------------------------------------------------------------------------


class NeighbourList(NamedTuple):
    """Fixed-capacity half neighbour list; a pytree of arrays.

    centres: [C] int32, i of each pair, non-decreasing (padding uses N − 1 so the
        order holds, which lets the force scatter assume sorted indices).
    neighbours: [C] int32, j of each pair, i < j for real pairs.
    shifts: [C, 3] int32, image shift; the pair vector (σ) is
        ``positions[j] − positions[i] + shifts · box`` for the positions the list
        was built from and any continuous motion of them.
    mask: [C] bool, True for real pairs, False for padding.
    reference: [N, 3] float, σ; positions at the build, for the rebuild test.

    Real pairs are all i < j with |r_ij| < 2.5 σ_ab + skin at the build. While no
    particle has moved more than skin / 2 since then, every pair within its
    cutoff is in the list.
    """

    centres: jax.Array
    neighbours: jax.Array
    shifts: jax.Array
    mask: jax.Array
    reference: jax.Array

    @property
    def capacity(self) -> int:
        """C, the number of pair slots."""
        return int(self.centres.shape[0])


def _validate(positions, types, box):
    """Check and convert the inputs: ([N, 3] float64, [N] int32, [3] float64)."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain non-finite values")
    types = np.asarray(types)
    if types.shape != (len(positions),):
        raise ValueError(f"types must have shape [{len(positions)}], got {types.shape}")
    if not np.all((types == 1) | (types == 2)):
        raise ValueError("types must be 1 (A) or 2 (B)")
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (3,) or not np.all(np.isfinite(box) & (box > 0)):
        raise ValueError(f"box must be 3 positive side lengths, got {box}")
    return positions, types.astype(np.int32), box


def _half_pairs(positions, types, box, skin):
    """All pairs i < j with |r_ij| < 2.5 σ_ab + skin (numpy, float64 geometry).

    positions: [N, 3] float64, σ (any periodic images).  types: [N] int32, 1/2.
    box: [3] float64, σ.  skin: σ.
    Returns (centres [P] int32, neighbours [P] int32, shifts [P, 3] int32),
    sorted by centre, with ``positions[j] − positions[i] + shifts · box`` the
    pair vector.
    """
    if np.any(box <= 2.0 * (KA_MAX_CUTOFF + skin)):
        raise ValueError(
            f"box {box} too small for cutoff {KA_MAX_CUTOFF} + skin {skin}: every side must "
            f"exceed {2.0 * (KA_MAX_CUTOFF + skin):.4g} σ so each pair has a single image in "
            "range; reduce the skin")
    # matscipy is called directly rather than through neighbours.neighbour_pairs:
    # a rebuild sits on the minimiser's critical path, and the ordered (i, j) and
    # (j, i) list that function sorts and filters costs twice the search itself.
    # Per-kind ranges (2.5 σ_ab + skin) keep AB and BB pairs out beyond their reach.
    reach = {(a, b): KA_CUTOFF_FACTOR * float(KA_SIGMA[a - 1, b - 1]) + skin
             for a in (1, 2) for b in (1, 2)}
    centres, neighbours, shifts = neighbour_list(
        "ijS", positions=positions, cell=np.diag(box), pbc=[True, True, True],
        numbers=types, cutoff=reach)
    upper = centres < neighbours
    centres = centres[upper].astype(np.int32)
    neighbours = neighbours[upper].astype(np.int32)
    shifts = shifts[upper].astype(np.int32)
    # The force scatter is compiled for sorted centres; matscipy documents that
    # order, and this cheap check keeps a wrong result impossible if it changes.
    if np.any(np.diff(centres) < 0):
        order = np.argsort(centres, kind="stable")
        centres, neighbours, shifts = centres[order], neighbours[order], shifts[order]
    return centres, neighbours, shifts


def _pad_pairs(centres, neighbours, shifts, positions, capacity: int, dtype) -> NeighbourList:
    """Pad a half list (numpy, P <= capacity pairs) to ``capacity`` slots as a :class:`NeighbourList`."""
    pad = capacity - len(centres)
    last = len(positions) - 1
    return NeighbourList(
        centres=jnp.asarray(np.concatenate([centres, np.full(pad, last, np.int32)])),
        neighbours=jnp.asarray(np.concatenate([neighbours, np.full(pad, last, np.int32)])),
        shifts=jnp.asarray(np.concatenate([shifts, np.zeros((pad, 3), np.int32)])),
        mask=jnp.asarray(np.arange(capacity) < len(centres)),
        reference=jnp.asarray(positions, dtype=dtype),
    )


def build_neighbour_list(positions, types, box, skin: float, capacity: int,
                         dtype=jnp.float32) -> NeighbourList:
    """Half neighbour list of a KA configuration, padded to ``capacity`` pairs.

    positions: [N, 3] float, σ (any periodic images; the shifts refer to exactly
    these images).  types: [N] int, 1/2.  box: [3] float, σ.  skin: σ.
    capacity: number of pair slots C.  dtype: float dtype of ``reference``.

    Raises :class:`NeighbourListOverflow` if more than ``capacity`` pairs are in
    range (nothing is ever dropped), ValueError if the box is shorter than
    2 (2.5 σ_AA + skin) along some side.
    """
    positions, types, box = _validate(positions, types, box)
    centres, neighbours, shifts = _half_pairs(positions, types, box, float(skin))
    if len(centres) > capacity:
        raise NeighbourListOverflow(len(centres), int(capacity))
    return _pad_pairs(centres, neighbours, shifts, positions, int(capacity), dtype)


def needs_rebuild(pairs: NeighbourList, positions, skin: float):
    """Whether some particle has moved more than skin / 2 since ``pairs`` was built.

    pairs: the list.  positions: [N, 3] float, σ (same images as at the build).
    skin: σ, the skin the list was built with.  Returns a bool scalar (jnp).
    """
    moved = jnp.sum((positions - pairs.reference) ** 2, axis=-1)
    return jnp.max(moved) > (0.5 * skin) ** 2


# ----------------------------------------------------------------------------
# Energy and forces
# ----------------------------------------------------------------------------


def ka_energy_and_forces(positions, types, box, pairs: NeighbourList):
    """Total KA energy and forces from a half neighbour list; jittable.

    positions: [N, 3] float, σ, in the images ``pairs`` was built for.
    types: [N] int, 1/2.  box: [3] float, σ.  pairs: :class:`NeighbourList`.
    Returns (energy: scalar, ε; forces: [N, 3], ε/σ), in the dtype of ``positions``.

    Each unordered pair is stored once, so it contributes its full energy
    V_ab(r) once and equal and opposite forces to its two particles. Pairs in the
    list but beyond their cutoff (the skin) and padding slots contribute nothing.
    """
    positions = jnp.asarray(positions)
    dtype = positions.dtype
    types = jnp.asarray(types)
    box = jnp.asarray(box, dtype=dtype)
    centres, neighbours = pairs.centres, pairs.neighbours
    # Rows of four numbers (x, y, z, 0): XLA's CPU gathers and scatters run
    # markedly faster (~30% for the whole function) on 4-wide rows than on 3-wide.
    padded = jnp.pad(positions, ((0, 0), (0, 1)))
    offsets = jnp.pad(pairs.shifts.astype(dtype) * box, ((0, 0), (0, 1)))
    # Indices come from our own list, so bounds checks (clamping) can be skipped.
    x_i = padded.at[centres].get(mode="promise_in_bounds", indices_are_sorted=True)
    x_j = padded.at[neighbours].get(mode="promise_in_bounds")
    vectors = x_j - x_i + offsets

    kind = (types.at[centres].get(mode="promise_in_bounds", indices_are_sorted=True)
            + types.at[neighbours].get(mode="promise_in_bounds") - 2)
    sigma = jnp.asarray(_KIND_SIGMA, dtype)[kind]
    epsilon = jnp.asarray(_KIND_EPSILON, dtype)[kind]
    sigma2 = sigma * sigma

    r2 = jnp.sum(vectors * vectors, axis=-1)
    inside = pairs.mask & (r2 < (KA_CUTOFF_FACTOR**2) * sigma2)
    # Masked slots may have r = 0 (padding is a self-pair); evaluating them at
    # r = 1 keeps both branches of where() finite.
    inv_r2 = 1.0 / jnp.where(inside, r2, 1.0)
    s6 = (sigma2 * inv_r2) ** 3
    s12 = s6 * s6
    pair_energy = jnp.where(inside, 4.0 * epsilon * (s12 - s6) - epsilon * KA_SHIFT_PER_EPSILON, 0.0)
    # −(dV/dr)/r · r_ij: the force on i from j (pushes i away from j when repulsive).
    scale = jnp.where(inside, 4.0 * epsilon * (6.0 * s6 - 12.0 * s12) * inv_r2, 0.0)
    on_centre = scale[:, None] * vectors

    forces = jnp.zeros_like(padded)
    forces = forces.at[centres].add(on_centre, mode="promise_in_bounds", indices_are_sorted=True)
    forces = forces.at[neighbours].add(-on_centre, mode="promise_in_bounds")
    return jnp.sum(pair_energy), forces[:, :3]


_energy_and_forces = jax.jit(ka_energy_and_forces)


def _max_force(forces):
    """max_i |F_i| of [N, 3] forces (scalar, ε/σ)."""
    return jnp.sqrt(jnp.max(jnp.sum(forces * forces, axis=-1)))


# ----------------------------------------------------------------------------
# FIRE state machine
# ----------------------------------------------------------------------------


class FireParameters(NamedTuple):
    """FIRE constants as array scalars, so changing them does not recompile.

    dt_max (τ), f_inc, f_dec, alpha_start, f_alpha: float; n_min: int32;
    half_skin: float, σ, the displacement that invalidates the neighbour list.
    """

    dt_max: jax.Array
    n_min: jax.Array
    f_inc: jax.Array
    f_dec: jax.Array
    alpha_start: jax.Array
    f_alpha: jax.Array
    half_skin: jax.Array


def fire_parameters(config: FireConfig, dtype=jnp.float32) -> FireParameters:
    """The :class:`FireParameters` of ``config`` with floats in ``dtype``."""
    scalar = lambda value: jnp.asarray(value, dtype=dtype)
    return FireParameters(
        dt_max=scalar(config.dt_max), n_min=jnp.asarray(config.n_min, jnp.int32),
        f_inc=scalar(config.f_inc), f_dec=scalar(config.f_dec),
        alpha_start=scalar(config.alpha_start), f_alpha=scalar(config.f_alpha),
        half_skin=scalar(0.5 * config.skin),
    )


class FireState(NamedTuple):
    """State of a FIRE minimisation; a pytree of arrays.

    positions: [N, 3] float, σ.  velocities: [N, 3] float, σ/τ.
    forces: [N, 3] float, ε/σ, at ``positions``.  max_force: scalar, max_i |F_i|.
    dt: scalar, τ.  alpha: scalar, mixing weight α.
    n_positive: int32, consecutive steps with P ≥ 0 (since the last P < 0).
    iteration: int32, FIRE iterations done.
    displaced: bool, some particle moved more than skin / 2 since the neighbour
        list was built, so ``forces`` may be incomplete and the list must be rebuilt.
    """

    positions: jax.Array
    velocities: jax.Array
    forces: jax.Array
    max_force: jax.Array
    dt: jax.Array
    alpha: jax.Array
    n_positive: jax.Array
    iteration: jax.Array
    displaced: jax.Array


@jax.jit
def _refresh(state: FireState, types, box, pairs: NeighbourList, half_skin) -> FireState:
    """``state`` with forces, max |F| and ``displaced`` recomputed for ``pairs``."""
    _, forces = ka_energy_and_forces(state.positions, types, box, pairs)
    moved = jnp.max(jnp.sum((state.positions - pairs.reference) ** 2, axis=-1))
    return state._replace(forces=forces, max_force=_max_force(forces),
                          displaced=moved > half_skin * half_skin)


def init_fire_state(positions, types, box, pairs: NeighbourList, config: FireConfig) -> FireState:
    """FIRE at rest at ``positions`` ([N, 3] float, σ; its dtype sets the state's).

    types: [N] int, 1/2.  box: [3] float, σ.  pairs: list built for ``positions``.
    """
    positions = jnp.asarray(positions)
    dtype = positions.dtype
    state = FireState(
        positions=positions, velocities=jnp.zeros_like(positions),
        forces=jnp.zeros_like(positions), max_force=jnp.asarray(jnp.inf, dtype),
        dt=jnp.asarray(config.dt_start, dtype), alpha=jnp.asarray(config.alpha_start, dtype),
        n_positive=jnp.asarray(0, jnp.int32), iteration=jnp.asarray(0, jnp.int32),
        displaced=jnp.asarray(False),
    )
    return _refresh(state, jnp.asarray(types), jnp.asarray(box, dtype), pairs,
                    jnp.asarray(0.5 * config.skin, dtype))


def _fire_step(state: FireState, types, box, pairs: NeighbourList, p: FireParameters) -> FireState:
    """One FIRE iteration (see the module docstring)."""
    forces = state.forces
    # The power uses the velocity that carried the system here, before this
    # step's kick: adding dt F first would add dt |F|² > 0 and hide uphill motion
    # exactly when forces are large.
    power = jnp.vdot(forces, state.velocities)
    # P = 0 only happens at rest (start, or just after a reset); counting it as
    # uphill would halve dt on the very first step for no reason.
    uphill = power < 0.0
    n_positive = jnp.where(uphill, 0, state.n_positive + 1)
    accelerate = ~uphill & (n_positive > p.n_min)
    dt = jnp.where(uphill, state.dt * p.f_dec,
                   jnp.where(accelerate, jnp.minimum(state.dt * p.f_inc, p.dt_max), state.dt))
    alpha = jnp.where(uphill, p.alpha_start,
                      jnp.where(accelerate, state.alpha * p.f_alpha, state.alpha))

    velocities = jnp.where(uphill, jnp.zeros_like(state.velocities), state.velocities) + dt * forces
    force_norm = jnp.sqrt(jnp.vdot(forces, forces))
    velocity_norm = jnp.sqrt(jnp.vdot(velocities, velocities))
    # Guard the direction F̂ against F = 0 (then the mix is moot).
    direction = forces / jnp.maximum(force_norm, jnp.finfo(forces.dtype).tiny)
    velocities = (1.0 - alpha) * velocities + alpha * velocity_norm * direction
    positions = state.positions + dt * velocities

    _, forces = ka_energy_and_forces(positions, types, box, pairs)
    moved = jnp.max(jnp.sum((positions - pairs.reference) ** 2, axis=-1))
    return FireState(
        positions=positions, velocities=velocities, forces=forces,
        max_force=_max_force(forces), dt=dt, alpha=alpha, n_positive=n_positive,
        iteration=state.iteration + 1, displaced=moved > p.half_skin * p.half_skin,
    )


@jax.jit
def fire_steps(state: FireState, types, box, pairs: NeighbourList, parameters: FireParameters,
               limit, tolerance) -> FireState:
    """Advance FIRE until ``iteration == limit``, max |F| < ``tolerance`` or ``displaced``.

    state: :class:`FireState`.  types: [N] int32, 1/2.  box: [3] float, σ (state dtype).
    pairs: list valid for ``state.positions``.  parameters: :class:`FireParameters`.
    limit: int, absolute iteration count to stop at.  tolerance: float, ε/σ.
    Returns the new state. Also stops at once (returns ``state`` unchanged) if
    it is already converged, displaced or its forces are not finite (NaN fails
    every comparison, so such a state never enters the loop).
    """
    def keep_going(s):
        return (s.iteration < limit) & (s.max_force >= tolerance) & ~s.displaced

    return jax.lax.while_loop(
        keep_going, lambda s: _fire_step(s, types, box, pairs, parameters), state)


# ----------------------------------------------------------------------------
# Host driver
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class _Driver:
    """Host-side bookkeeping of one minimisation: neighbour lists and counters."""

    types: np.ndarray
    box: np.ndarray
    config: FireConfig
    capacity: int | None = None
    rebuilds: int = 0
    reallocations: int = 0

    def build(self, positions, dtype) -> NeighbourList:
        """A list for ``positions`` ([N, 3] float64), reallocated larger on overflow."""
        centres, neighbours, shifts = _half_pairs(positions, self.types, self.box, self.config.skin)
        if self.capacity is None or len(centres) > self.capacity:
            # A new capacity means new array shapes, so JAX compiles the loop again;
            # the margin keeps that rare as the pair count fluctuates.
            self.reallocations += self.capacity is not None
            self.capacity = max(1, math.ceil(len(centres) * self.config.capacity_margin))
        return _pad_pairs(centres, neighbours, shifts, positions, self.capacity, dtype)

    def run(self, state: FireState, pairs: NeighbourList, tolerance: float,
            patience: int | None) -> tuple[FireState, NeighbourList]:
        """Run chunks of FIRE until max |F| < tolerance (or, with ``patience``, a stall).

        A stall: max |F| found below 10 × tolerance at every check (chunk end)
        for ``patience`` iterations without reaching the tolerance.

        Returns the last state and its list; the caller judges convergence.
        """
        dtype = state.positions.dtype
        types = jnp.asarray(self.types)
        box = jnp.asarray(self.box, dtype)
        parameters = fire_parameters(self.config, dtype)
        stalled_since = None
        while True:
            max_force, iteration, displaced = jax.device_get(
                (state.max_force, state.iteration, state.displaced))
            if displaced:
                # Forces of a displaced state may miss pairs: rebuild first, and
                # judge convergence only on forces from a valid list.
                pairs = self.build(np.asarray(state.positions, np.float64), dtype)
                state = _refresh(state, types, box, pairs, parameters.half_skin)
                self.rebuilds += 1
                continue
            if not np.isfinite(max_force):
                raise MinimisationError(
                    f"FIRE forces became non-finite after {iteration} iterations "
                    "(overlapping particles?)")
            if max_force < tolerance or iteration >= self.config.max_iterations:
                return state, pairs
            if patience is not None:
                # A stall is judged only close to the target: far from it, long
                # stretches without progress are FIRE creeping through flat
                # regions of the landscape, which float64 would not speed up.
                if max_force >= 10.0 * tolerance:
                    stalled_since = None
                elif stalled_since is None:
                    stalled_since = iteration
                elif iteration - stalled_since >= patience:
                    return state, pairs
            limit = min(iteration + self.config.chunk, self.config.max_iterations)
            state = fire_steps(state, types, box, pairs, parameters,
                               jnp.asarray(limit, jnp.int32), jnp.asarray(tolerance, dtype))


def _as_float64(tree):
    """Cast the floating leaves of a pytree to float64 (x64 must be enabled)."""
    return jax.tree.map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def inherent_structure(positions, types, box, config: FireConfig = FireConfig()) -> MinimisationResult:
    """Minimise the KA energy from ``positions`` with FIRE: the inherent structure.

    positions: [N, 3] float, σ, any periodic images.  types: [N] int, 1 (A) / 2 (B).
    box: [3] float, σ, orthorhombic periodic box (every side > 2 (2.5 + skin) σ).
    config: :class:`FireConfig`.

    Runs in float32 until max |F| < ``config.float32_tolerance`` (or float32 makes
    no more progress), then in float64 until max |F| < ``config.force_tolerance``.
    Raises :class:`MinimisationError` if that is not reached within
    ``config.max_iterations`` iterations, giving the max |F| reached.
    """
    positions, types, box = _validate(positions, types, box)
    # Wrap once into [0, L): small coordinates keep float32 resolution at ~1e-6 σ.
    # Afterwards nothing is re-wrapped, so neighbour-list shifts stay valid.
    start = positions - box * np.floor(positions / box)
    driver = _Driver(types, box, config, capacity=config.initial_capacity)

    pairs = driver.build(start, jnp.float32)
    state = init_fire_state(jnp.asarray(start, jnp.float32), types, box, pairs, config)
    state, pairs = driver.run(state, pairs, max(config.float32_tolerance, config.force_tolerance),
                              patience=config.float32_patience)
    float32_iterations = int(state.iteration)

    with jax.enable_x64(True):
        # The float32 list stays valid (same reference, same images); only dtypes change.
        pairs = _as_float64(pairs)
        box64 = jnp.asarray(box, jnp.float64)
        state = _refresh(_as_float64(state), jnp.asarray(types), box64, pairs,
                         jnp.asarray(0.5 * config.skin, jnp.float64))
        state, pairs = driver.run(state, pairs, config.force_tolerance, patience=None)
        max_force = float(state.max_force)
        iterations = int(state.iteration)
        if not max_force < config.force_tolerance:
            raise MinimisationError(
                f"FIRE did not converge within max_iterations={config.max_iterations}: "
                f"max |F| = {max_force:.3e} ε/σ after {iterations} iterations, "
                f"tolerance {config.force_tolerance:.1e}")
        energy, _ = _energy_and_forces(state.positions, jnp.asarray(types), box64, pairs)
        final = np.asarray(state.positions, np.float64)
        energy = float(energy)

    return MinimisationResult(
        positions=positions + (final - start),
        energy_per_particle=energy / len(positions),
        max_force=max_force,
        iterations=iterations,
        float64_iterations=iterations - float32_iterations,
        neighbour_rebuilds=driver.rebuilds,
        neighbour_capacity=driver.capacity,
        capacity_reallocations=driver.reallocations,
    )
