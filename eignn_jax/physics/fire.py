"""FIRE energy minimisation as a JAX state machine.

FIRE (Bitzek, Koskinen, Gähler, Moseler and Gumbsch, Phys. Rev. Lett. 97, 170201
(2006)), with the standard parameters

    dt_max = 10 dt_start, N_min = 5, f_inc = 1.1, f_dec = 0.5,
    α_start = 0.1, f_α = 0.99,

and unit masses. One FIRE iteration (:func:`steps` runs them) is

    P = F(x) · v                      (v: velocity of the previous step)
    P ≥ 0:  if more than N_min steps since the last P < 0:
                dt ← min(f_inc dt, dt_max),  α ← f_α α
    P < 0:  v ← 0,  dt ← f_dec dt,  α ← α_start
    v ← v + dt F(x)                   (kick, semi-implicit Euler)
    v ← (1 − α) v + α |v| F̂           (FIRE mixing)
    x ← x + dt v                      (drift)

where F, v and x are 3N-vectors (|v| and F̂ use the norm over all particles).
Starting from rest, a step is v = dt F and x ← x + dt² F whatever α is: plain
steepest descent with step dt². Its inertia carries it across ridges that a
line-searched L-BFGS path does not cross.

The system is seen through a :class:`~eignn_jax.physics.descent.ForceField` and its
``model`` pytree (see :mod:`eignn_jax.physics.descent`). Units: lengths σ, energies ε,
forces ε/σ, time τ = σ √(m/ε) with m = 1.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from eignn_jax.physics.descent import ForceField, MinimiserConfig, max_force

NAME = "FIRE"


@dataclasses.dataclass(frozen=True)
class FireConfig(MinimiserConfig):
    """FIRE parameters (Bitzek et al. 2006, standard values).

    dt_start: initial time step (τ).
    dt_max: largest time step (τ); the standard choice is 10 dt_start.
    n_min: number of P > 0 steps before dt may grow again (N_min).
    f_inc, f_dec: factors by which dt grows / shrinks.
    alpha_start, f_alpha: initial velocity-mixing weight α and its decay factor.

    The remaining fields are the driver's, :class:`~eignn_jax.physics.descent.MinimiserConfig`.
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


class FireParameters(NamedTuple):
    """FIRE constants as array scalars, so changing them does not recompile.

    dt_max (τ), f_inc, f_dec, alpha_start, f_alpha: float; n_min: int32.
    """

    dt_max: jax.Array
    n_min: jax.Array
    f_inc: jax.Array
    f_dec: jax.Array
    alpha_start: jax.Array
    f_alpha: jax.Array


def parameters(config: FireConfig, dtype=jnp.float32) -> FireParameters:
    """The :class:`FireParameters` of ``config`` with floats in ``dtype``."""
    scalar = lambda value: jnp.asarray(value, dtype=dtype)
    return FireParameters(
        dt_max=scalar(config.dt_max), n_min=jnp.asarray(config.n_min, jnp.int32),
        f_inc=scalar(config.f_inc), f_dec=scalar(config.f_dec),
        alpha_start=scalar(config.alpha_start), f_alpha=scalar(config.f_alpha),
    )


class FireState(NamedTuple):
    """State of a FIRE minimisation; a pytree of arrays.

    positions: [N, 3] float, σ.  velocities: [N, 3] float, σ/τ.
    forces: [N, 3] float, ε/σ, at ``positions``.  max_force: scalar, max_i |F_i|.
    dt: scalar, τ.  alpha: scalar, mixing weight α.
    n_positive: int32, consecutive steps with P ≥ 0 (since the last P < 0).
    iteration: int32, FIRE iterations done.
    displaced: bool, the model no longer covers ``positions`` (a particle moved more
        than skin / 2 since the neighbour list was built), so ``forces`` may be
        incomplete and the model must be rebuilt.
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


@functools.partial(jax.jit, static_argnums=1)
def refresh(state: FireState, force_field: ForceField, model) -> FireState:
    """``state`` with forces, max |F| and ``displaced`` recomputed for ``model``."""
    _, forces = force_field.energy_and_forces(state.positions, model)
    return state._replace(forces=forces, max_force=max_force(forces),
                          displaced=~force_field.covers(state.positions, model))


def init(positions, force_field: ForceField, model, config: FireConfig) -> FireState:
    """FIRE at rest at ``positions`` ([N, 3] float, σ; its dtype sets the state's).

    force_field, model: the system (``model`` valid at ``positions``).
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
    return refresh(state, force_field, model)


def _step(state: FireState, force_field: ForceField, model, p: FireParameters) -> FireState:
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

    _, forces = force_field.energy_and_forces(positions, model)
    return FireState(
        positions=positions, velocities=velocities, forces=forces,
        max_force=max_force(forces), dt=dt, alpha=alpha, n_positive=n_positive,
        iteration=state.iteration + 1, displaced=~force_field.covers(positions, model),
    )


@functools.partial(jax.jit, static_argnums=1)
def steps(state: FireState, force_field: ForceField, model, parameters: FireParameters,
          limit, tolerance) -> FireState:
    """Advance FIRE until ``iteration == limit``, max |F| < ``tolerance`` or ``displaced``.

    state: :class:`FireState`.  force_field, model: the system (``model`` valid at
    ``state.positions``).  parameters: :class:`FireParameters`.
    limit: int, absolute iteration count to stop at.  tolerance: float, ε/σ.
    Returns the new state. Also stops at once (returns ``state`` unchanged) if it is
    already converged, displaced or its forces are not finite (NaN fails every
    comparison, so such a state never enters the loop).
    """
    def keep_going(s):
        return (s.iteration < limit) & (s.max_force >= tolerance) & ~s.displaced

    return jax.lax.while_loop(
        keep_going, lambda s: _step(s, force_field, model, parameters), state)


# How the driver of eignn_jax.physics.minimise runs FIRE (see its _Driver).

def rebuild_at(state: FireState):
    """[N, 3], σ: where the next model must be valid (the current positions)."""
    return state.positions


def rebuilt(state: FireState, force_field: ForceField, model, config: FireConfig) -> FireState:
    """``state`` once ``model`` (valid at its positions) replaces the old one."""
    return refresh(state, force_field, model)


def resume(state: FireState, force_field: ForceField, model, config: FireConfig,
           restart: bool = False) -> FireState:
    """``state`` with forces recomputed at its positions, ready to go on (FIRE cannot fail)."""
    return refresh(state, force_field, model)


def failed(state: FireState):
    """FIRE always makes progress: False."""
    return False
