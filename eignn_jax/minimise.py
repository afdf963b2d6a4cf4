"""Inherent structures: energy minimisation of Kob–Andersen configurations, by FIRE or L-BFGS.

The energy is the truncated and shifted KA potential of :mod:`eignn_jax.potential`
(cutoff 2.5 σ_ab). Two minimisers share one driver (:func:`inherent_structure`,
``method="lbfgs"`` (the default, ``DEFAULT_METHOD``) or ``"fire"``); both end at
max_i |F_i| < 1e-4 ε/σ, but not always in the same minimum: which basin a
configuration ends in depends on the path taken down to it.

**L-BFGS** (Liu and Nocedal, Math. Program. 45, 503 (1989)) with the
backtracking strong-Wolfe line search of libLBFGS, keeping that library's
defaults: memory m = 6, sufficient-decrease constant c₁ = 1e-4, curvature
constant c₂ = 0.9, step factors 0.5 (shrink) and 2.1 (grow), at most 40 trial
steps per search. With g = −F, one iteration is

    d = −H g                          (two-loop recursion over the last m pairs
                                       s = x_{k+1} − x_k, y = g_{k+1} − g_k,
                                       H₀ = (s·y / y·y) I from the newest pair)
    try a = 1 (first iteration: d = −g, a = 1/|g|):
        E(x + a d) > E(x) + c₁ a g·d          → a ← 0.5 a   (too high)
        else g(x + a d)·d < c₂ g·d            → a ← 2.1 a   (still steep)
        else g(x + a d)·d > −c₂ g·d           → a ← 0.5 a   (overshot)
        else accept x ← x + a d
    no accepted step within 40 trials: the search fails.

These are the algorithm and settings of OpenMM's LocalEnergyMinimizer (libLBFGS,
backtracking strong-Wolfe search); the dev set was made with OpenMM (its
``meta.json``), and following this path lands in the shipped inherent structure's
basin far more often than FIRE does: on the 32-file ``ka3d_T064_N1000`` dev set,
24 agree within 1e-3 ε per particle against FIRE's 8
(``python -m benchmarks.inherent_structure_devset --method …``). The rest is
not a tuning matter: displacing the starting positions by 1e-7 σ already moves
the L-BFGS result to another minimum for a few of the 32 files. Energies only
decrease: every accepted step passes the sufficient-decrease test.

**FIRE** (Bitzek, Koskinen, Gähler, Moseler and Gumbsch, Phys. Rev. Lett. 97,
170201 (2006)), with the standard parameters

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
steepest descent with step dt². Its inertia carries it across ridges that the
line-searched L-BFGS path does not cross.

Layout of the computation:

* Each minimiser is a pure JAX state machine: a state pytree (:class:`LbfgsState`,
  :class:`FireState`) and a jitted ``lax.while_loop`` (:func:`lbfgs_steps`,
  :func:`fire_steps`) that advances it until an iteration limit, until
  max |F| < tolerance, or until the neighbour list no longer covers the next
  energy evaluation (L-BFGS: one loop body is one evaluation, line-search trials
  included, so a trial step is checked before it is evaluated).
* Forces come from a fixed-capacity *half* neighbour list (:class:`NeighbourList`):
  each unordered pair i < j appears once, padded to capacity C with a mask, and
  carries an integer image shift so its vector is ``x_j − x_i + shift · L``.
  Positions are never re-wrapped during a minimisation, so the shifts stay valid.
  The list is built on the host (matscipy's cell-list search)
  and rebuilt between calls of the loop once a particle of the next evaluated
  configuration would be more than half the skin from where the list was built;
  more pairs than capacity raises :class:`NeighbourListOverflow`, upon which
  :func:`inherent_structure` reallocates a bigger list (and JAX recompiles).
* :func:`inherent_structure` runs in float32 until max |F| < ``float32_tolerance``
  (or float32 stops making progress: for L-BFGS, a failed line search, as float32
  energies cannot resolve the small decreases near a minimum), then continues in
  float64, enabled only locally, to ``force_tolerance``. L-BFGS keeps its memory
  across the switch.

Units: lengths σ_AA, energies ε_AA, forces ε_AA/σ_AA, time (σ_AA √(m/ε_AA)) with m = 1.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matscipy.neighbours import neighbour_list

from eignn_jax.neighbours import padded_capacity
from eignn_jax.potential import KA_CUTOFF_FACTOR, KA_EPSILON, KA_MAX_CUTOFF, KA_SHIFT_PER_EPSILON, KA_SIGMA

__all__ = [
    "DEFAULT_METHOD",
    "FireConfig",
    "FireParameters",
    "FireState",
    "LbfgsConfig",
    "LbfgsParameters",
    "LbfgsState",
    "METHODS",
    "MinimisationError",
    "MinimisationResult",
    "MinimiserConfig",
    "NeighbourList",
    "NeighbourListOverflow",
    "build_neighbour_list",
    "fire_parameters",
    "fire_steps",
    "inherent_structure",
    "init_fire_state",
    "init_lbfgs_state",
    "ka_energy_and_forces",
    "lbfgs_parameters",
    "lbfgs_steps",
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
class MinimiserConfig:
    """Parameters of :func:`inherent_structure` common to both minimisers.

    Convergence:
        force_tolerance: stop when max_i |F_i| < this (ε/σ), checked in float64.
        float32_tolerance: leave the float32 phase when max_i |F_i| drops below this.
            Float32 round-off puts a floor near 3e-4 under max |F| for KA systems
            of 10³–10⁴ particles; 1e-3 is reached reliably by FIRE, and is late
            enough that the costlier float64 phase is only a final polish (~10²
            iterations) rather than, as with 1e-2 (which FIRE also crosses
            transiently in mid-descent), thousands. L-BFGS usually leaves earlier,
            when its line search fails on float32 round-off.
        float32_patience: also leave it after this many iterations with max |F|
            between float32_tolerance and 10 × that (the float32 stall).
        max_iterations: iterations allowed in total (both phases; for L-BFGS,
            accepted steps); exceeding them raises :class:`MinimisationError`.
        chunk: iterations per call of the jitted loop (K); between calls the host
            checks convergence and rebuilds the neighbour list.

    Neighbour list:
        skin: extra range (σ) of the list beyond each pair's cutoff 2.5 σ_ab;
            the list is rebuilt before any particle would be evaluated more than
            skin / 2 from where it was at the build.
        capacity_margin: a list is allocated with room for this many times the
            pairs found when it is (re)allocated. Padding slots cost as much as
            real pairs, and the pair count of a KA system at fixed density moves
            by well under 1% between a liquid and its inherent structure.
        initial_capacity: capacity of the first list (pairs); None sizes it from
            the first build with ``capacity_margin``.
    """

    skin: float = 0.3
    force_tolerance: float = 1e-4
    float32_tolerance: float = 1e-3
    float32_patience: int = 1000
    max_iterations: int = 50_000
    chunk: int = 1000
    capacity_margin: float = 1.05
    initial_capacity: int | None = None

    def __post_init__(self):
        positive = ("skin", "force_tolerance", "float32_tolerance", "max_iterations", "chunk",
                    "float32_patience")
        self._check_positive(positive)
        if not self.capacity_margin >= 1.0:
            raise ValueError(f"capacity_margin must be >= 1, got {self.capacity_margin}")
        if self.initial_capacity is not None and self.initial_capacity < 1:
            raise ValueError(f"initial_capacity must be >= 1, got {self.initial_capacity}")

    def _check_positive(self, names):
        for name in names:
            if not getattr(self, name) > 0:
                raise ValueError(f"{type(self).__name__}.{name} must be positive, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class FireConfig(MinimiserConfig):
    """FIRE parameters of :func:`inherent_structure` (Bitzek et al. 2006, standard values).

    dt_start: initial time step (τ).
    dt_max: largest time step (τ); the standard choice is 10 dt_start.
    n_min: number of P > 0 steps before dt may grow again (N_min).
    f_inc, f_dec: factors by which dt grows / shrinks.
    alpha_start, f_alpha: initial velocity-mixing weight α and its decay factor.

    The remaining fields are those of :class:`MinimiserConfig`.
    """

    dt_start: float = 0.01
    dt_max: float = 0.1
    n_min: int = 5
    f_inc: float = 1.1
    f_dec: float = 0.5
    alpha_start: float = 0.1
    f_alpha: float = 0.99

    def __post_init__(self):
        super().__post_init__()
        self._check_positive(("dt_start", "dt_max", "f_inc", "f_dec"))
        if self.dt_max < self.dt_start:
            raise ValueError(f"dt_max ({self.dt_max}) must be >= dt_start ({self.dt_start})")
        if not 0.0 < self.alpha_start <= 1.0 or not 0.0 < self.f_alpha <= 1.0:
            raise ValueError("alpha_start and f_alpha must lie in (0, 1]")
        if self.n_min < 0:
            raise ValueError(f"n_min must be >= 0, got {self.n_min}")


@dataclasses.dataclass(frozen=True)
class LbfgsConfig(MinimiserConfig):
    """L-BFGS parameters of :func:`inherent_structure` (libLBFGS defaults).

    memory: number of (s, y) pairs kept (m).
    armijo: sufficient-decrease constant c₁ of the line search.
    wolfe: curvature constant c₂ of the strong Wolfe condition, armijo < wolfe < 1.
    max_linesearch: trial steps allowed per line search before it fails.

    The remaining fields are those of :class:`MinimiserConfig`.
    """

    memory: int = 6
    armijo: float = 1e-4
    wolfe: float = 0.9
    max_linesearch: int = 40

    def __post_init__(self):
        super().__post_init__()
        self._check_positive(("memory", "armijo", "max_linesearch"))
        if not self.armijo < self.wolfe < 1.0:
            raise ValueError(f"need armijo < wolfe < 1, got armijo={self.armijo}, wolfe={self.wolfe}")


# The minimisers of inherent_structure(method=...), by name, with their config types.
METHODS = {"lbfgs": LbfgsConfig, "fire": FireConfig}
# L-BFGS: on the dev set it lands in the reference minimum 3× as often as FIRE (24 vs 8 of
# 32 files), in a third of the time (benchmarks/inherent_structure*.py).
DEFAULT_METHOD = "lbfgs"


@dataclasses.dataclass(frozen=True)
class MinimisationResult:
    """Outcome of :func:`inherent_structure`.

    positions: [N, 3] float64, σ; the inherent structure, each particle in the
        same periodic image as its input position (input + total displacement).
    energy_per_particle: float, ε; total potential energy / N, evaluated in float64.
    max_force: float, ε/σ; max_i |F_i| at ``positions``, float64.
    iterations: iterations in total (FIRE steps; L-BFGS accepted steps).
    float64_iterations: of which in the float64 phase.
    neighbour_rebuilds: rebuilds of the neighbour list because a particle moved
        (or, for an L-BFGS trial point, would move) more than skin / 2; the builds
        that start the float32 and float64 phases and L-BFGS restarts are not counted.
    neighbour_capacity: capacity (pairs) of the final neighbour list.
    capacity_reallocations: times the list overflowed and was reallocated larger.
    evaluations: energy and force evaluations in the minimisation loops (FIRE:
        one per iteration; L-BFGS: one per line-search trial).
    method: ``"lbfgs"`` or ``"fire"``.
    """

    positions: np.ndarray
    energy_per_particle: float
    max_force: float
    iterations: int
    float64_iterations: int
    neighbour_rebuilds: int
    neighbour_capacity: int = 0
    capacity_reallocations: int = 0
    evaluations: int = 0
    method: str = "fire"


class MinimisationError(RuntimeError):
    """The minimiser did not reach the force tolerance (iteration budget spent, no downhill step, or forces not finite)."""


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
# L-BFGS state machine
# ----------------------------------------------------------------------------


class LbfgsParameters(NamedTuple):
    """L-BFGS line-search constants as array scalars, so changing them does not recompile.

    armijo, wolfe: float (c₁, c₂); shrink, grow: float, step factors (0.5, 2.1);
    max_linesearch: int32; half_skin: float, σ, the displacement from the list's
    build positions beyond which an evaluation would need a new list.
    """

    armijo: jax.Array
    wolfe: jax.Array
    shrink: jax.Array
    grow: jax.Array
    max_linesearch: jax.Array
    half_skin: jax.Array


def lbfgs_parameters(config: LbfgsConfig, dtype=jnp.float32) -> LbfgsParameters:
    """The :class:`LbfgsParameters` of ``config`` with floats in ``dtype``."""
    scalar = lambda value: jnp.asarray(value, dtype=dtype)
    return LbfgsParameters(
        armijo=scalar(config.armijo), wolfe=scalar(config.wolfe), shrink=scalar(0.5),
        grow=scalar(2.1), max_linesearch=jnp.asarray(config.max_linesearch, jnp.int32),
        half_skin=scalar(0.5 * config.skin),
    )


class LbfgsState(NamedTuple):
    """State of an L-BFGS minimisation; a pytree of arrays.

    positions: [N, 3] float, σ, the last accepted point x.
    forces: [N, 3] float, ε/σ, at x (the gradient is g = −forces).
    energy: scalar, ε, at x.  max_force: scalar, max_i |F_i| at x.
    direction: [N, 3] float, σ, the search direction d (a descent direction).
    step: scalar, the line-search step a of the next trial point x + a d.
    slope: scalar, g·d at x (negative).
    trials: int32, trial points evaluated in the current line search.
    s_history, y_history: [m, N, 3] float, the last m accepted steps s and
        gradient changes y, in a ring buffer.  sy_history: [m] float, s·y of each.
    stored: int32, pairs held (≤ m).  next_slot: int32, ring index of the next pair.
    iteration: int32, accepted steps.  evaluations: int32, energy evaluations.
    displaced: bool, the next trial point has a particle more than skin / 2 from
        where the neighbour list was built: the list must be rebuilt before it is
        evaluated.
    failed: bool, the line search ran out of trials, or the direction is not
        downhill (round-off): no progress is possible from this state as it is.
    """

    positions: jax.Array
    forces: jax.Array
    energy: jax.Array
    max_force: jax.Array
    direction: jax.Array
    step: jax.Array
    slope: jax.Array
    trials: jax.Array
    s_history: jax.Array
    y_history: jax.Array
    sy_history: jax.Array
    stored: jax.Array
    next_slot: jax.Array
    iteration: jax.Array
    evaluations: jax.Array
    displaced: jax.Array
    failed: jax.Array

    @property
    def trial_positions(self):
        """[N, 3], σ: where the line search evaluates next, x + a d."""
        return self.positions + self.step * self.direction


def _lbfgs_direction(forces, s_history, y_history, sy_history, stored, next_slot):
    """The L-BFGS direction d = −H g for g = −forces (two-loop recursion).

    With no stored pair, d = forces (H = I). Pairs are visited newest to oldest,
    then back; H₀ = (s·y / y·y) I from the newest pair.
    """
    memory = s_history.shape[0]
    dtype = forces.dtype

    def newest_first(i, carry):
        d, alphas = carry
        slot = (next_slot - 1 - i) % memory
        used = i < stored
        alpha = jnp.where(used, jnp.vdot(s_history[slot], d) / jnp.where(used, sy_history[slot], 1.0), 0.0)
        return d - alpha * y_history[slot], alphas.at[slot].set(alpha)

    d, alphas = jax.lax.fori_loop(0, memory, newest_first, (forces, jnp.zeros(memory, dtype)))
    newest = (next_slot - 1) % memory
    yy = jnp.vdot(y_history[newest], y_history[newest])
    d = d * jnp.where(stored > 0, sy_history[newest] / jnp.where(stored > 0, yy, 1.0), 1.0)

    def oldest_first(i, d):
        slot = (next_slot - stored + i) % memory
        used = i < stored
        beta = jnp.where(used, jnp.vdot(y_history[slot], d) / jnp.where(used, sy_history[slot], 1.0), 0.0)
        return d + jnp.where(used, alphas[slot] - beta, 0.0) * s_history[slot]

    return jax.lax.fori_loop(0, memory, oldest_first, d)


def _check_trial(state: LbfgsState, pairs: NeighbourList, half_skin) -> LbfgsState:
    """``state`` with ``displaced`` set for its next trial point and ``pairs``."""
    moved = jnp.max(jnp.sum((state.trial_positions - pairs.reference) ** 2, axis=-1))
    return state._replace(displaced=moved > half_skin * half_skin)


def _lbfgs_search_from(state: LbfgsState, pairs: NeighbourList, half_skin, use_memory) -> LbfgsState:
    """Begin a line search at ``state.positions`` along a fresh direction.

    use_memory: bool scalar. True: the L-BFGS direction from the stored pairs,
    first step 1. False, or no pair stored, or that direction not downhill: the
    memory is cleared and the search starts as libLBFGS's first iteration does,
    along the forces with step 1 / |F|.
    """
    direction = _lbfgs_direction(state.forces, state.s_history, state.y_history,
                                 state.sy_history, state.stored, state.next_slot)
    slope = -jnp.vdot(state.forces, direction)
    keep = use_memory & (state.stored > 0) & (slope < 0.0)
    force_norm = jnp.sqrt(jnp.vdot(state.forces, state.forces))
    one = jnp.ones_like(state.step)
    state = state._replace(
        direction=jnp.where(keep, direction, state.forces),
        step=jnp.where(keep, one, one / force_norm),
        slope=jnp.where(keep, slope, -force_norm * force_norm),
        trials=jnp.asarray(0, jnp.int32),
        stored=jnp.where(keep, state.stored, 0),
        failed=~(force_norm > 0.0),
    )
    return _check_trial(state, pairs, half_skin)


@jax.jit
def _lbfgs_restart(state: LbfgsState, types, box, pairs: NeighbourList, half_skin,
                   use_memory) -> LbfgsState:
    """Energy and forces recomputed at ``state.positions`` (list valid there), then a new search."""
    energy, forces = ka_energy_and_forces(state.positions, types, box, pairs)
    state = state._replace(energy=energy, forces=forces, max_force=_max_force(forces))
    return _lbfgs_search_from(state, pairs, half_skin, use_memory)


_lbfgs_recheck = jax.jit(_check_trial)


def init_lbfgs_state(positions, types, box, pairs: NeighbourList, config: LbfgsConfig) -> LbfgsState:
    """L-BFGS with empty memory at ``positions`` ([N, 3] float, σ; its dtype sets the state's).

    types: [N] int, 1/2.  box: [3] float, σ.  pairs: list built for ``positions``.
    The first search runs along the forces with step 1 / |F|.
    """
    positions = jnp.asarray(positions)
    dtype = positions.dtype
    history = jnp.zeros((config.memory,) + positions.shape, dtype)
    state = LbfgsState(
        positions=positions, forces=jnp.zeros_like(positions), energy=jnp.asarray(0.0, dtype),
        max_force=jnp.asarray(jnp.inf, dtype), direction=jnp.zeros_like(positions),
        step=jnp.asarray(1.0, dtype), slope=jnp.asarray(0.0, dtype),
        trials=jnp.asarray(0, jnp.int32), s_history=history, y_history=history,
        sy_history=jnp.zeros(config.memory, dtype), stored=jnp.asarray(0, jnp.int32),
        next_slot=jnp.asarray(0, jnp.int32), iteration=jnp.asarray(0, jnp.int32),
        evaluations=jnp.asarray(0, jnp.int32), displaced=jnp.asarray(False),
        failed=jnp.asarray(False),
    )
    return _lbfgs_restart(state, jnp.asarray(types), jnp.asarray(box, dtype), pairs,
                          jnp.asarray(0.5 * config.skin, dtype), jnp.asarray(False))


def _lbfgs_step(state: LbfgsState, types, box, pairs: NeighbourList, p: LbfgsParameters) -> LbfgsState:
    """One energy evaluation of L-BFGS: a line-search trial, accepted or not (see the module docstring)."""
    trial = state.trial_positions
    energy, forces = ka_energy_and_forces(trial, types, box, pairs)
    slope = -jnp.vdot(forces, state.direction)
    # Written so that a NaN energy (overlapping particles) counts as too high.
    too_high = ~(energy <= state.energy + state.step * p.armijo * state.slope)
    too_steep = slope < p.wolfe * state.slope
    overshot = slope > -p.wolfe * state.slope
    accept = ~too_high & ~too_steep & ~overshot

    # Accepted: store the pair (s, y) and begin the next search along −H g.
    s = trial - state.positions
    y = state.forces - forces
    slot = state.next_slot
    memory = state.s_history.shape[0]
    moved = state._replace(
        positions=trial, forces=forces, energy=energy, max_force=_max_force(forces),
        s_history=state.s_history.at[slot].set(s), y_history=state.y_history.at[slot].set(y),
        sy_history=state.sy_history.at[slot].set(jnp.vdot(s, y)),
        stored=jnp.minimum(state.stored + 1, memory), next_slot=(slot + 1) % memory,
        iteration=state.iteration + 1)
    accepted = _lbfgs_search_from(moved, pairs, p.half_skin, jnp.asarray(True))

    # Rejected: shrink the step when too high or overshot, grow it when still steep.
    trials = state.trials + 1
    factor = jnp.where(too_high | ~too_steep, p.shrink, p.grow)
    rejected = _check_trial(state._replace(step=state.step * factor, trials=trials,
                                           failed=trials >= p.max_linesearch), pairs, p.half_skin)

    new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), accepted, rejected)
    return new._replace(evaluations=state.evaluations + 1)


@jax.jit
def lbfgs_steps(state: LbfgsState, types, box, pairs: NeighbourList, parameters: LbfgsParameters,
                limit, tolerance) -> LbfgsState:
    """Advance L-BFGS until ``iteration == limit``, max |F| < ``tolerance``, ``displaced`` or ``failed``.

    state: :class:`LbfgsState`.  types: [N] int32, 1/2.  box: [3] float, σ (state dtype).
    pairs: list valid for ``state.trial_positions``.  parameters: :class:`LbfgsParameters`.
    limit: int, absolute count of accepted steps to stop at.  tolerance: float, ε/σ.
    Each pass of the loop evaluates one trial point. Returns the new state, or
    ``state`` unchanged if it should not advance (NaN max |F| included).
    """
    def keep_going(s):
        return (s.iteration < limit) & (s.max_force >= tolerance) & ~s.displaced & ~s.failed

    return jax.lax.while_loop(
        keep_going, lambda s: _lbfgs_step(s, types, box, pairs, parameters), state)


# ----------------------------------------------------------------------------
# Host driver
# ----------------------------------------------------------------------------


class _Method(NamedTuple):
    """How the shared driver runs one minimiser.

    parameters(config, dtype): its array-scalar constants.
    start(positions, types, box, pairs, config): the initial state.
    steps: its jitted loop, (state, types, box, pairs, parameters, limit, tolerance) → state.
    rebuild_at(state): [N, 3] positions the next neighbour list must be built around.
    rebuilt(state, types, box, pairs, parameters): the state once that list replaces the old.
    resume(state, types, box, pairs, parameters): the state with energy and forces
        recomputed at its positions (``pairs`` built there), ready to go on: at the
        switch to float64 and after a failure.
    restart(...): as ``resume``, after a failure (None: the method cannot fail).
    failed(state): bool scalar, no progress possible without ``restart``.
    """

    name: str
    parameters: Callable
    start: Callable
    steps: Callable
    rebuild_at: Callable
    rebuilt: Callable
    resume: Callable
    restart: Callable | None
    failed: Callable


_FIRE = _Method(
    name="FIRE",
    parameters=fire_parameters,
    start=init_fire_state,
    steps=fire_steps,
    rebuild_at=lambda state: state.positions,
    rebuilt=lambda state, types, box, pairs, p: _refresh(state, types, box, pairs, p.half_skin),
    resume=lambda state, types, box, pairs, p: _refresh(state, types, box, pairs, p.half_skin),
    restart=None,
    failed=lambda state: False,
)

_LBFGS = _Method(
    name="L-BFGS",
    parameters=lbfgs_parameters,
    start=init_lbfgs_state,
    steps=lbfgs_steps,
    rebuild_at=lambda state: state.trial_positions,
    rebuilt=lambda state, types, box, pairs, p: _lbfgs_recheck(state, pairs, p.half_skin),
    # The memory built in float32 is a good Hessian model for the float64 phase.
    resume=lambda state, types, box, pairs, p: _lbfgs_restart(
        state, types, box, pairs, p.half_skin, jnp.asarray(True)),
    # A failed search: start again from steepest descent, as if from scratch.
    restart=lambda state, types, box, pairs, p: _lbfgs_restart(
        state, types, box, pairs, p.half_skin, jnp.asarray(False)),
    failed=lambda state: state.failed,
)


@dataclasses.dataclass
class _Driver:
    """Host-side bookkeeping of one minimisation: neighbour lists and counters."""

    method: _Method
    types: np.ndarray
    box: np.ndarray
    config: MinimiserConfig
    capacity: int | None = None
    rebuilds: int = 0
    reallocations: int = 0

    def build(self, positions, dtype) -> NeighbourList:
        """A list for ``positions`` ([N, 3] float64), reallocated larger on overflow."""
        centres, neighbours, shifts = _half_pairs(positions, self.types, self.box, self.config.skin)
        if self.capacity is None or len(centres) > self.capacity:
            # A new capacity means new array shapes, so JAX compiles the loop again;
            # the margin and the coarse grid keep that rare as the pair count
            # fluctuates, within one run and from one configuration to the next.
            self.reallocations += self.capacity is not None
            self.capacity = padded_capacity(len(centres), self.config.capacity_margin)
        return _pad_pairs(centres, neighbours, shifts, positions, self.capacity, dtype)

    def start(self, positions, dtype):
        """Initial state and list at ``positions`` ([N, 3] float64), in ``dtype``."""
        pairs = self.build(positions, dtype)
        state = self.method.start(jnp.asarray(positions, dtype), self.types, self.box, pairs, self.config)
        return state, pairs

    def resume(self, state, dtype, restart: bool = False):
        """``state`` (already in ``dtype``) on a new list built at its positions, ready to go on."""
        pairs = self.build(np.asarray(state.positions, np.float64), dtype)
        again = self.method.restart if restart else self.method.resume
        state = again(state, jnp.asarray(self.types), jnp.asarray(self.box, dtype), pairs,
                      self.method.parameters(self.config, dtype))
        return state, pairs

    def run(self, state, pairs: NeighbourList, tolerance: float, patience: int | None,
            restart_on_failure: bool):
        """Run chunks of the minimiser until max |F| < tolerance (or it stops progressing).

        Stops early at a failure (L-BFGS: a line search without an acceptable step)
        unless ``restart_on_failure``, in which case the method restarts, and stops
        only when a restart fails before any step is accepted. With ``patience``,
        also stops at a stall: max |F| found below 10 × tolerance at every check
        (chunk end) for ``patience`` iterations without reaching the tolerance.

        Returns the last state and its list; the caller judges convergence.
        """
        dtype = state.positions.dtype
        types = jnp.asarray(self.types)
        box = jnp.asarray(self.box, dtype)
        parameters = self.method.parameters(self.config, dtype)
        stalled_since = None
        restarted_at = None
        while True:
            max_force, iteration, displaced, failed = jax.device_get(
                (state.max_force, state.iteration, state.displaced, self.method.failed(state)))
            if displaced:
                # Forces from a list that does not cover the configuration may miss
                # pairs: rebuild before the next evaluation, and judge convergence
                # only on forces from a valid list.
                pairs = self.build(np.asarray(self.method.rebuild_at(state), np.float64), dtype)
                state = self.method.rebuilt(state, types, box, pairs, parameters)
                self.rebuilds += 1
                continue
            if not np.isfinite(max_force):
                raise MinimisationError(
                    f"{self.method.name} forces became non-finite after {iteration} iterations "
                    "(overlapping particles?)")
            if max_force < tolerance or iteration >= self.config.max_iterations:
                return state, pairs
            if failed:
                if not restart_on_failure or restarted_at == iteration:
                    return state, pairs
                restarted_at = iteration
                state, pairs = self.resume(state, dtype, restart=True)
                continue
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
            state = self.method.steps(state, types, box, pairs, parameters,
                                      jnp.asarray(limit, jnp.int32), jnp.asarray(tolerance, dtype))


def _as_float64(tree):
    """Cast the floating leaves of a pytree to float64 (x64 must be enabled)."""
    return jax.tree.map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _method_and_config(config: MinimiserConfig | None, method: str | None):
    """(the :class:`_Method`, its config, its name) for the arguments of :func:`inherent_structure`."""
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown minimisation method {method!r}; expected one of {sorted(METHODS)}")
    if config is None:
        method = DEFAULT_METHOD if method is None else method
        config = METHODS[method]()
    else:
        matching = [name for name, kind in METHODS.items() if isinstance(config, kind)]
        if not matching:
            raise TypeError(f"config must be one of {[k.__name__ for k in METHODS.values()]}, "
                            f"got {type(config).__name__}")
        if method is not None and method != matching[0]:
            raise ValueError(f"method={method!r} does not match a {type(config).__name__}")
        method = matching[0]
    return {"lbfgs": _LBFGS, "fire": _FIRE}[method], config, method


def inherent_structure(positions, types, box, config: MinimiserConfig | None = None, *,
                       method: str | None = None) -> MinimisationResult:
    """Minimise the KA energy from ``positions``: the inherent structure.

    positions: [N, 3] float, σ, any periodic images.  types: [N] int, 1 (A) / 2 (B).
    box: [3] float, σ, orthorhombic periodic box (every side > 2 (2.5 + skin) σ).
    config: :class:`LbfgsConfig` or :class:`FireConfig`; its type picks the method.
    method: ``"lbfgs"`` or ``"fire"``, to pick the method with its default config
        (must agree with ``config`` if both are given). Neither: ``DEFAULT_METHOD``.

    Runs in float32 until max |F| < ``config.float32_tolerance`` (or float32 makes
    no more progress), then in float64 until max |F| < ``config.force_tolerance``.
    Raises :class:`MinimisationError` if that is not reached within
    ``config.max_iterations`` iterations (or, for L-BFGS, no step can be found),
    giving the max |F| reached.
    """
    minimiser, config, name = _method_and_config(config, method)
    positions, types, box = _validate(positions, types, box)
    # Wrap once into [0, L): small coordinates keep float32 resolution at ~1e-6 σ.
    # Afterwards nothing is re-wrapped, so neighbour-list shifts stay valid.
    start = positions - box * np.floor(positions / box)
    driver = _Driver(minimiser, types, box, config, capacity=config.initial_capacity)

    state, pairs = driver.start(start, jnp.float32)
    state, pairs = driver.run(state, pairs, max(config.float32_tolerance, config.force_tolerance),
                              patience=config.float32_patience, restart_on_failure=False)
    float32_iterations = int(state.iteration)

    with jax.enable_x64(True):
        state, pairs = driver.resume(_as_float64(state), jnp.float64)
        state, pairs = driver.run(state, pairs, config.force_tolerance, patience=None,
                                  restart_on_failure=True)
        max_force = float(state.max_force)
        iterations = int(state.iteration)
        if not max_force < config.force_tolerance:
            raise MinimisationError(
                f"{minimiser.name} did not converge within max_iterations={config.max_iterations}"
                f"{'' if iterations >= config.max_iterations else ' (no downhill step found)'}: "
                f"max |F| = {max_force:.3e} ε/σ after {iterations} iterations, "
                f"tolerance {config.force_tolerance:.1e}")
        final = np.asarray(state.positions, np.float64)
        # L-BFGS may hold a list built around its next trial point: the final
        # energy gets a list built where the minimum is.
        pairs = driver.build(final, jnp.float64)
        energy, _ = _energy_and_forces(state.positions, jnp.asarray(types),
                                       jnp.asarray(box, jnp.float64), pairs)
        energy = float(energy)
        evaluations = int(getattr(state, "evaluations", iterations))

    return MinimisationResult(
        positions=positions + (final - start),
        energy_per_particle=energy / len(positions),
        max_force=max_force,
        iterations=iterations,
        float64_iterations=iterations - float32_iterations,
        neighbour_rebuilds=driver.rebuilds,
        neighbour_capacity=driver.capacity,
        capacity_reallocations=driver.reallocations,
        evaluations=evaluations,
        method=name,
    )
