"""Kob–Andersen systems for the benchmarks: a generated liquid of any cubic size and
an embedded configuration tiled to a larger periodic box.

* :func:`ka_liquid`: a jittered simple-cubic lattice at density 1.2 with random 80:20
  types, melted by Langevin MD at T = 2.0 (500 steps, 2.5 τ) and then run at T = 0.64
  (``md_steps``, default 2000 steps = 10 τ): liquid-like but not equilibrated.
* :func:`ka_configuration`: that liquid plus its FIRE inherent structure, as a
  :class:`eignn_jax.dataset.Configuration` (unlabelled).
* :func:`replicate`: a configuration tiled k×k×k (N → k³ N).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from eignn_jax import dataset
from eignn_jax.physics import kob_andersen, minimise, neighbours
from eignn_jax.physics.periodic import wrap


def lattice_start(n_side: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jittered simple-cubic lattice at density 1.2 with random 80:20 types.

    Returns positions [n_side³, 3] float64 σ, types [n_side³] int32 (1/2), box [3] float64 σ.
    """
    rng = np.random.default_rng(seed)
    n = n_side**3
    box = kob_andersen.box_from_density(n)
    spacing = box[0] / n_side
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (grid + 0.5) * spacing + rng.normal(scale=0.03, size=(n, 3))
    types = np.ones(n, np.int32)
    types[rng.choice(n, size=n // 5, replace=False)] = 2
    return positions, types, box


@jax.jit
def _langevin_steps(positions, velocities, key, types, box, pairs, temperature, n_steps):
    """BAOAB Langevin dynamics (unit mass, friction 1/τ, dt 0.005 τ) for n_steps steps.

    ``pairs``: a :class:`~eignn_jax.physics.neighbours.HalfList`. Stops early once a
    particle has moved more than a quarter of its skin, half of what the list covers, so
    that the force of the step after the last check also comes from a valid list; the
    caller then rebuilds it. Returns (positions, velocities, key, steps done).
    """
    dt, friction = 0.005, 1.0
    decay = jnp.exp(-friction * dt)
    noise = jnp.sqrt(temperature * (1.0 - decay**2))

    early = pairs._replace(half_skin=0.5 * pairs.half_skin)

    def keep_going(carry):
        x, _, _, _, step = carry
        return (step < n_steps) & neighbours.covers(x, early)

    def step(carry):
        x, v, f, key, k = carry
        key, sub = jax.random.split(key)
        v = v + 0.5 * dt * f
        x = x + 0.5 * dt * v
        v = decay * v + noise * jax.random.normal(sub, v.shape, v.dtype)
        x = x + 0.5 * dt * v
        _, f = kob_andersen.energy_and_forces(x, types, box, pairs)
        v = v + 0.5 * dt * f
        return x, v, f, key, k + 1

    _, forces = kob_andersen.energy_and_forces(positions, types, box, pairs)
    x, v, _, key, done = jax.lax.while_loop(
        keep_going, step, (positions, velocities, forces, key, jnp.asarray(0, jnp.int32)))
    return x, v, key, done


def langevin(positions, types, box, temperature: float, n_steps: int, seed: int) -> np.ndarray:
    """Run ``n_steps`` Langevin steps at ``temperature`` (ε); returns positions [N, 3] float64 σ."""
    # A wide skin: a hot liquid moves fast, and each host rebuild costs ~30 steps.
    skin = 1.0
    x = jnp.asarray(positions, jnp.float32)
    rng = np.random.default_rng(seed)
    v = jnp.asarray(rng.normal(scale=np.sqrt(temperature), size=positions.shape), jnp.float32)
    key = jax.random.PRNGKey(seed)
    done = 0
    box32 = jnp.asarray(box, jnp.float32)
    capacity = 1
    while done < n_steps:
        host = np.asarray(x, np.float64)
        try:
            pairs = minimise.ka_model(host, types, box, skin, capacity).pairs
        except neighbours.NeighbourListOverflow as overflow:
            # A coarse slot grid with room to spare: few distinct shapes, few compilations.
            capacity = neighbours.padded_capacity(overflow.n_pairs, 1.2)
            pairs = minimise.ka_model(host, types, box, skin, capacity).pairs
        x, v, key, steps = _langevin_steps(x, v, key, jnp.asarray(types), box32, pairs,
                                           jnp.float32(temperature), jnp.int32(n_steps - done))
        done += int(steps)
    return np.asarray(x, np.float64)


def ka_liquid(n_side: int, seed: int = 0, md_steps: int = 2000
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A KA liquid of n_side³ particles at density 1.2 (see the module docstring).

    Returns positions [N, 3] float64 σ, types [N] int32 (1/2), box [3] float64 σ.
    """
    positions, types, box = lattice_start(n_side, seed)
    hot = langevin(positions, types, box, 2.0, 500, seed)
    return langevin(hot, types, box, 0.64, md_steps, seed + 1), types, box


def ka_configuration(n_side: int, seed: int = 0, md_steps: int = 2000) -> dataset.Configuration:
    """:func:`ka_liquid` with its FIRE inherent structure, as an unlabelled Configuration."""
    positions, types, box = ka_liquid(n_side, seed, md_steps)
    inherent = minimise.inherent_structure(positions, types, box).positions
    # Stored as in GlassBench files: positions in the centred box [−L/2, L/2), each
    # equilibrium position in the periodic image nearest its initial one.
    wrapped = wrap(positions, box)
    return dataset.Configuration(path="", types=types, positions=wrapped, box=box,
                                 inherent=wrapped + wrap(inherent - positions, box))


def replicate(config: dataset.Configuration, k: int) -> dataset.Configuration:
    """The configuration tiled k×k×k (N → k³ N): a larger, still physical, periodic system.

    Copy c of particle i sits at x_i + c·L in every structure. The equilibrium structures
    are first moved to the periodic image nearest the initial position: a file may store
    them in another image of the small box (a particle wrapped across the boundary), and
    tiling that as is would pair copy c's initial position with copy c ± 1's equilibrium one.
    """
    if k == 1:
        return config
    box = np.asarray(config.box, np.float64)
    positions = np.asarray(config.positions, np.float64)
    offsets = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 1, 3) * box

    def tile(x):
        return (x[None] + offsets).reshape(-1, 3) - box * (k - 1) / 2

    def tile_equilibrium(x):
        if x is None:
            return None
        return tile(positions + wrap(np.asarray(x, np.float64) - positions, box))

    return dataclasses.replace(
        config, types=np.tile(config.types, k ** 3), positions=tile(positions),
        inherent=tile_equilibrium(config.inherent), cage=tile_equilibrium(config.cage), box=box * k,
        propensity=None if config.propensity is None else np.tile(config.propensity, (1, k ** 3)))
