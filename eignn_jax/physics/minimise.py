"""Inherent structures: energy minimisation of Kob–Andersen configurations, by L-BFGS or FIRE.

:func:`inherent_structure` drives one of two minimisers, each a JAX state machine in a
module of its own: :mod:`eignn_jax.physics.lbfgs` (``method="lbfgs"``, the default,
``DEFAULT_METHOD``) and :mod:`eignn_jax.physics.fire` (``"fire"``). Both end at
max_i |F_i| < 1e-4 ε/σ, but not always in the same minimum: which basin a
configuration ends in depends on the path taken down to it.

L-BFGS with libLBFGS's backtracking strong-Wolfe search is what OpenMM's
LocalEnergyMinimizer runs; the dev set was made with OpenMM (its ``meta.json``), and
following this path lands in the shipped inherent structure's basin far more often than
FIRE does: on the 32-file ``ka3d_T064_N1000`` dev set, 24 agree within 1e-3 ε per
particle against FIRE's 8 (``python -m benchmarks.inherent_structure_devset --method …``).
The rest is not a tuning matter: displacing the starting positions by 1e-7 σ already
moves the L-BFGS result to another minimum for a few of the 32 files.

Layout of the computation:

* The energy is the KA potential of :mod:`eignn_jax.physics.kob_andersen`
  (:data:`KA_FORCE_FIELD`), evaluated on a fixed-capacity half neighbour list
  (:class:`~eignn_jax.physics.neighbours.HalfList`) built on the host. Positions are
  never re-wrapped during a minimisation, so the list's image shifts stay valid.
* The minimisers stop whenever the list no longer covers the next evaluation
  (a particle more than half the skin from where the list was built); the driver then
  rebuilds it and goes on. A list that outgrows its capacity is reallocated larger
  (and JAX recompiles), never truncated.
* The driver runs in float32 until max |F| < ``float32_tolerance`` (or float32 stops
  making progress: for L-BFGS, a failed line search, as float32 energies cannot resolve
  the small decreases near a minimum), then continues in float64, enabled only
  locally, to ``force_tolerance``. L-BFGS keeps its memory across the switch.

Units: lengths σ_AA, energies ε_AA, forces ε_AA/σ_AA, time σ_AA √(m/ε_AA) with m = 1.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from eignn_jax.physics import fire, kob_andersen, lbfgs, neighbours, periodic
from eignn_jax.physics.descent import ForceField, MinimisationError, MinimiserConfig
from eignn_jax.physics.fire import FireConfig
from eignn_jax.physics.lbfgs import LbfgsConfig

__all__ = [
    "DEFAULT_METHOD",
    "FireConfig",
    "KA_FORCE_FIELD",
    "KaModel",
    "LbfgsConfig",
    "METHODS",
    "MinimisationError",
    "MinimisationResult",
    "MinimiserConfig",
    "inherent_structure",
    "ka_model",
]

# The minimisers of inherent_structure(method=...), by name, with their config types.
METHODS = {"lbfgs": LbfgsConfig, "fire": FireConfig}
_MODULES = {"lbfgs": lbfgs, "fire": fire}
# L-BFGS: on the dev set it lands in the reference minimum 3× as often as FIRE (24 vs 8 of
# 32 files), in a third of the time (benchmarks/inherent_structure*.py).
DEFAULT_METHOD = "lbfgs"


class KaModel(NamedTuple):
    """What the KA force field needs besides the positions; a pytree of arrays.

    types: [N] int32, 1/2.  box: [3] float, σ.  pairs: the half neighbour list.
    """

    types: jax.Array
    box: jax.Array
    pairs: neighbours.HalfList


KA_FORCE_FIELD = ForceField(
    energy_and_forces=lambda positions, model: kob_andersen.energy_and_forces(
        positions, model.types, model.box, model.pairs),
    covers=lambda positions, model: neighbours.covers(positions, model.pairs),
)
"""The Kob–Andersen energy surface on a :class:`KaModel`, as the minimisers see it."""


def ka_model(positions, types, box, skin: float, capacity: int, dtype=jnp.float32) -> KaModel:
    """The :class:`KaModel` of a configuration, its half list padded to ``capacity`` pairs.

    positions: [N, 3] float, σ (any periodic images; the list's shifts refer to exactly
    these images).  types: [N] int, 1/2.  box: [3] float, σ.  skin: σ.
    capacity: pair slots.  dtype: float dtype of the box and the list's reference.
    Raises :class:`~eignn_jax.physics.neighbours.NeighbourListOverflow` if more than
    ``capacity`` pairs are in range (nothing is ever dropped), ValueError if the box is
    shorter than 2 (2.5 σ_AA + skin) along some side or the inputs are malformed.
    """
    positions, types, box = periodic.as_system(positions, types, box)
    return _ka_model(positions, types, box, skin, lambda pairs: capacity, dtype)


def _ka_model(positions, types, box, skin: float, capacity_for, dtype) -> KaModel:
    """:func:`ka_model` of checked inputs ([N, 3] float64, [N] int32, [3] float64);
    ``capacity_for(pairs found)`` gives the slot count."""
    centres, others, shifts = neighbours.half_pairs(positions, types, box, kob_andersen.interaction_ranges(skin))
    pairs = neighbours.half_list(centres, others, shifts, positions, skin, capacity_for(len(centres)), dtype)
    return KaModel(jnp.asarray(types), jnp.asarray(box, dtype), pairs)


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


@dataclasses.dataclass
class _Driver:
    """Host-side bookkeeping of one minimisation: neighbour lists and counters.

    minimiser: the module of the method (:mod:`~eignn_jax.physics.fire` or
    :mod:`~eignn_jax.physics.lbfgs`), used through its ``init``, ``steps``,
    ``parameters``, ``rebuild_at``, ``rebuilt``, ``resume`` and ``failed``.
    """

    minimiser: object
    types: np.ndarray
    box: np.ndarray
    config: MinimiserConfig
    capacity: neighbours.Capacity
    rebuilds: int = 0

    def build(self, positions, dtype) -> KaModel:
        """The model at ``positions`` ([N, 3] float64), its list grown if it would overflow."""
        return _ka_model(positions, self.types, self.box, self.config.skin, self.capacity.fit, dtype)

    def start(self, positions, dtype):
        """Initial state and model at ``positions`` ([N, 3] float64), in ``dtype``."""
        model = self.build(positions, dtype)
        state = self.minimiser.init(jnp.asarray(positions, dtype), KA_FORCE_FIELD, model, self.config)
        return state, model

    def resume(self, state, dtype, restart: bool = False):
        """``state`` (already in ``dtype``) on a new model built at its positions, ready to go on."""
        model = self.build(np.asarray(state.positions, np.float64), dtype)
        return self.minimiser.resume(state, KA_FORCE_FIELD, model, self.config, restart), model

    def run(self, state, model: KaModel, tolerance: float, patience: int | None,
            restart_on_failure: bool):
        """Run chunks of the minimiser until max |F| < tolerance (or it stops progressing).

        Stops early at a failure (L-BFGS: a line search without an acceptable step)
        unless ``restart_on_failure``, in which case the method restarts, and stops
        only when a restart fails before any step is accepted. With ``patience``,
        also stops at a stall: max |F| found below 10 × tolerance at every check
        (chunk end) for ``patience`` iterations without reaching the tolerance.

        Returns the last state and its model; the caller judges convergence.
        """
        dtype = state.positions.dtype
        minimiser = self.minimiser
        parameters = minimiser.parameters(self.config, dtype)
        stalled_since = None
        restarted_at = None
        while True:
            max_force, iteration, displaced, failed = jax.device_get(
                (state.max_force, state.iteration, state.displaced, minimiser.failed(state)))
            if displaced:
                # Forces from a list that does not cover the configuration may miss
                # pairs: rebuild before the next evaluation, and judge convergence
                # only on forces from a valid list.
                model = self.build(np.asarray(minimiser.rebuild_at(state), np.float64), dtype)
                state = minimiser.rebuilt(state, KA_FORCE_FIELD, model, self.config)
                self.rebuilds += 1
                continue
            if not np.isfinite(max_force):
                raise MinimisationError(
                    f"{minimiser.NAME} forces became non-finite after {iteration} iterations "
                    "(overlapping particles?)")
            if max_force < tolerance or iteration >= self.config.max_iterations:
                return state, model
            if failed:
                if not restart_on_failure or restarted_at == iteration:
                    return state, model
                restarted_at = iteration
                state, model = self.resume(state, dtype, restart=True)
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
                    return state, model
            limit = min(iteration + self.config.chunk, self.config.max_iterations)
            state = minimiser.steps(state, KA_FORCE_FIELD, model, parameters,
                                    jnp.asarray(limit, jnp.int32), jnp.asarray(tolerance, dtype))


def _as_float64(tree):
    """Cast the floating leaves of a pytree to float64 (x64 must be enabled)."""
    return jax.tree.map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _method_and_config(config: MinimiserConfig | None, method: str | None):
    """(the minimiser's module, its config, its name) for the arguments of :func:`inherent_structure`."""
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
    return _MODULES[method], config, method


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
    giving the max |F| reached; ValueError for malformed inputs.
    """
    minimiser, config, name = _method_and_config(config, method)
    positions, types, box = periodic.as_system(positions, types, box)
    # Wrap once into [0, L): small coordinates keep float32 resolution at ~1e-6 σ.
    # Afterwards nothing is re-wrapped, so neighbour-list shifts stay valid.
    start = periodic.wrap(positions, box, centred=False)
    capacity = neighbours.Capacity(config.capacity_margin, config.initial_capacity)
    driver = _Driver(minimiser, types, box, config, capacity)

    state, model = driver.start(start, jnp.float32)
    state, model = driver.run(state, model, max(config.float32_tolerance, config.force_tolerance),
                              patience=config.float32_patience, restart_on_failure=False)
    float32_iterations = int(state.iteration)

    with jax.enable_x64(True):
        state, model = driver.resume(_as_float64(state), jnp.float64)
        state, model = driver.run(state, model, config.force_tolerance, patience=None,
                                  restart_on_failure=True)
        max_force = float(state.max_force)
        iterations = int(state.iteration)
        if not max_force < config.force_tolerance:
            raise MinimisationError(
                f"{minimiser.NAME} did not converge within max_iterations={config.max_iterations}"
                f"{'' if iterations >= config.max_iterations else ' (no downhill step found)'}: "
                f"max |F| = {max_force:.3e} ε/σ after {iterations} iterations, "
                f"tolerance {config.force_tolerance:.1e}")
        final = np.asarray(state.positions, np.float64)
        # L-BFGS may hold a list built around its next trial point: the final
        # energy gets a list built where the minimum is.
        energy, _ = _energy_and_forces(state.positions, driver.build(final, jnp.float64))
        energy = float(energy)
        evaluations = int(getattr(state, "evaluations", iterations))

    return MinimisationResult(
        positions=positions + (final - start),
        energy_per_particle=energy / len(positions),
        max_force=max_force,
        iterations=iterations,
        float64_iterations=iterations - float32_iterations,
        neighbour_rebuilds=driver.rebuilds,
        neighbour_capacity=capacity.capacity,
        capacity_reallocations=capacity.reallocations,
        evaluations=evaluations,
        method=name,
    )


_energy_and_forces = jax.jit(KA_FORCE_FIELD.energy_and_forces)
