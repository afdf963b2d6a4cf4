"""L-BFGS energy minimisation with a backtracking strong-Wolfe line search, as a JAX state machine.

L-BFGS (Liu and Nocedal, Math. Program. 45, 503 (1989)) with the backtracking
strong-Wolfe line search of libLBFGS, keeping that library's defaults: memory m = 6,
sufficient-decrease constant c₁ = 1e-4, curvature constant c₂ = 0.9, step factors
0.5 (shrink) and 2.1 (grow), at most 40 trial steps per search. With g = −F, one
iteration is

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
backtracking strong-Wolfe search). Energies only decrease: every accepted step passes
the sufficient-decrease test. One pass of the jitted loop (:func:`steps`) is one energy
evaluation, line-search trials included, so a trial point is checked against the
force field's ``covers`` before it is evaluated.

The system is seen through a :class:`~eignn_jax.physics.descent.ForceField` and its
``model`` pytree (see :mod:`eignn_jax.physics.descent`). Units: lengths σ, energies ε,
forces ε/σ.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from eignn_jax.physics.descent import ForceField, MinimiserConfig, max_force

NAME = "L-BFGS"


@dataclasses.dataclass(frozen=True)
class LbfgsConfig(MinimiserConfig):
    """L-BFGS parameters (libLBFGS defaults).

    memory: number of (s, y) pairs kept (m).
    armijo: sufficient-decrease constant c₁ of the line search.
    wolfe: curvature constant c₂ of the strong Wolfe condition, armijo < wolfe < 1.
    max_linesearch: trial steps allowed per line search before it fails.

    The remaining fields are the driver's, :class:`~eignn_jax.physics.descent.MinimiserConfig`.
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


class LbfgsParameters(NamedTuple):
    """L-BFGS line-search constants as array scalars, so changing them does not recompile.

    armijo, wolfe: float (c₁, c₂); shrink, grow: float, step factors (0.5, 2.1);
    max_linesearch: int32.
    """

    armijo: jax.Array
    wolfe: jax.Array
    shrink: jax.Array
    grow: jax.Array
    max_linesearch: jax.Array


def parameters(config: LbfgsConfig, dtype=jnp.float32) -> LbfgsParameters:
    """The :class:`LbfgsParameters` of ``config`` with floats in ``dtype``."""
    scalar = lambda value: jnp.asarray(value, dtype=dtype)
    return LbfgsParameters(
        armijo=scalar(config.armijo), wolfe=scalar(config.wolfe), shrink=scalar(0.5),
        grow=scalar(2.1), max_linesearch=jnp.asarray(config.max_linesearch, jnp.int32),
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
    displaced: bool, the model does not cover the next trial point (a particle would
        be more than skin / 2 from where the neighbour list was built): it must be
        rebuilt before the point is evaluated.
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


def _direction(forces, s_history, y_history, sy_history, stored, next_slot):
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


def _check_trial(state: LbfgsState, force_field: ForceField, model) -> LbfgsState:
    """``state`` with ``displaced`` set for its next trial point and ``model``."""
    return state._replace(displaced=~force_field.covers(state.trial_positions, model))


def _search_from(state: LbfgsState, force_field: ForceField, model, use_memory) -> LbfgsState:
    """Begin a line search at ``state.positions`` along a fresh direction.

    use_memory: bool scalar. True: the L-BFGS direction from the stored pairs,
    first step 1. False, or no pair stored, or that direction not downhill: the
    memory is cleared and the search starts as libLBFGS's first iteration does,
    along the forces with step 1 / |F|.
    """
    direction = _direction(state.forces, state.s_history, state.y_history,
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
    return _check_trial(state, force_field, model)


@functools.partial(jax.jit, static_argnums=1)
def _restart(state: LbfgsState, force_field: ForceField, model, use_memory) -> LbfgsState:
    """Energy and forces recomputed at ``state.positions`` (model valid there), then a new search."""
    energy, forces = force_field.energy_and_forces(state.positions, model)
    state = state._replace(energy=energy, forces=forces, max_force=max_force(forces))
    return _search_from(state, force_field, model, use_memory)


_recheck = jax.jit(_check_trial, static_argnums=1)


def init(positions, force_field: ForceField, model, config: LbfgsConfig) -> LbfgsState:
    """L-BFGS with empty memory at ``positions`` ([N, 3] float, σ; its dtype sets the state's).

    force_field, model: the system (``model`` valid at ``positions``).
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
    return _restart(state, force_field, model, jnp.asarray(False))


def _step(state: LbfgsState, force_field: ForceField, model, p: LbfgsParameters) -> LbfgsState:
    """One energy evaluation of L-BFGS: a line-search trial, accepted or not (see the module docstring)."""
    trial = state.trial_positions
    energy, forces = force_field.energy_and_forces(trial, model)
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
        positions=trial, forces=forces, energy=energy, max_force=max_force(forces),
        s_history=state.s_history.at[slot].set(s), y_history=state.y_history.at[slot].set(y),
        sy_history=state.sy_history.at[slot].set(jnp.vdot(s, y)),
        stored=jnp.minimum(state.stored + 1, memory), next_slot=(slot + 1) % memory,
        iteration=state.iteration + 1)
    accepted = _search_from(moved, force_field, model, jnp.asarray(True))

    # Rejected: shrink the step when too high or overshot, grow it when still steep.
    trials = state.trials + 1
    factor = jnp.where(too_high | ~too_steep, p.shrink, p.grow)
    rejected = _check_trial(state._replace(step=state.step * factor, trials=trials,
                                           failed=trials >= p.max_linesearch), force_field, model)

    new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), accepted, rejected)
    return new._replace(evaluations=state.evaluations + 1)


@functools.partial(jax.jit, static_argnums=1)
def steps(state: LbfgsState, force_field: ForceField, model, parameters: LbfgsParameters,
          limit, tolerance) -> LbfgsState:
    """Advance L-BFGS until ``iteration == limit``, max |F| < ``tolerance``, ``displaced`` or ``failed``.

    state: :class:`LbfgsState`.  force_field, model: the system (``model`` valid at
    ``state.trial_positions``).  parameters: :class:`LbfgsParameters`.
    limit: int, absolute count of accepted steps to stop at.  tolerance: float, ε/σ.
    Each pass of the loop evaluates one trial point. Returns the new state, or
    ``state`` unchanged if it should not advance (NaN max |F| included).
    """
    def keep_going(s):
        return (s.iteration < limit) & (s.max_force >= tolerance) & ~s.displaced & ~s.failed

    return jax.lax.while_loop(
        keep_going, lambda s: _step(s, force_field, model, parameters), state)


# How the driver of eignn_jax.physics.minimise runs L-BFGS (see its _Driver).

def rebuild_at(state: LbfgsState):
    """[N, 3], σ: where the next model must be valid (the next trial point)."""
    return state.trial_positions


def rebuilt(state: LbfgsState, force_field: ForceField, model, config: LbfgsConfig) -> LbfgsState:
    """``state`` once ``model`` (valid at its next trial point) replaces the old one."""
    return _recheck(state, force_field, model)


def resume(state: LbfgsState, force_field: ForceField, model, config: LbfgsConfig,
           restart: bool = False) -> LbfgsState:
    """``state`` with energy and forces recomputed at its positions, on a new search.

    restart=False keeps the memory (the one built in float32 is a good Hessian model for
    the float64 phase); True, after a failed search, starts again from steepest
    descent, as if from scratch.
    """
    return _restart(state, force_field, model, jnp.asarray(not restart))


def failed(state: LbfgsState):
    """bool scalar: no progress is possible without :func:`resume` with ``restart``."""
    return state.failed
