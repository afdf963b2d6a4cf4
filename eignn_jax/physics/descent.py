"""What the energy minimisers share: the force-field interface and the driver's settings.

A minimiser (:mod:`eignn_jax.physics.fire`, :mod:`eignn_jax.physics.lbfgs`) is a pure
JAX state machine: ``init`` builds a state pytree, ``steps`` advances it in a jitted
``lax.while_loop``. It sees the system only through a :class:`ForceField` and an opaque
pytree ``model`` handed to the force field's functions (for Kob–Andersen: the types, the
box and a neighbour list), as jax-md's minimisers see only an energy function. The host
driver of :mod:`eignn_jax.physics.minimise` rebuilds ``model`` when the force field says
it no longer covers the positions.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax.numpy as jnp


class ForceField(NamedTuple):
    """A potential energy surface as the minimisers evaluate it; hashable (a static argument).

    energy_and_forces(positions [N, 3], model) → (energy scalar ε, forces [N, 3] ε/σ),
        jittable, in the dtype of ``positions``.
    covers(positions [N, 3], model) → bool scalar, jittable: whether ``model`` (e.g. a
        neighbour list with a skin) still gives exact energies at ``positions``. The
        minimisers never evaluate where it is False; they stop and let the driver rebuild.
    """

    energy_and_forces: Callable
    covers: Callable


class MinimisationError(RuntimeError):
    """The minimiser did not reach the force tolerance (iteration budget spent, no downhill step, or forces not finite)."""


def max_force(forces):
    """max_i |F_i| of [N, 3] forces (scalar, ε/σ)."""
    return jnp.sqrt(jnp.max(jnp.sum(forces * forces, axis=-1)))


@dataclasses.dataclass(frozen=True)
class MinimiserConfig:
    """Settings of the minimisation driver common to every minimiser.

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
