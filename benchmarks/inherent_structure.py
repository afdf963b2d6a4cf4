"""Benchmark: inherent structures by FIRE (eignn_jax.minimise.inherent_structure).

    python -m benchmarks.inherent_structure              # N = 1000 and N = 4096
    python -m benchmarks.inherent_structure --repeats 5

Systems:

* N = 1000: ``initial_positions`` of a dev configuration (KA 80:20, T = 0.64,
  density 1.2, equilibrated by OpenMM).
* N = 4096 (the GlassBench size): no such configuration ships with the project,
  so one is made here: a 16³ simple-cubic lattice at density 1.2 with random
  80:20 types and a small random jitter, melted by Langevin MD at T = 2.0 (500
  steps, 2.5 τ), then run at T = 0.64 (``--md-steps``, default 2000 steps = 10 τ).
  The result is a liquid-like but not equilibrated T = 0.64 start (its potential
  energy per particle is printed; the equilibrated N = 1000 dev start is lower).

Prints one JSON line per system: the first (compile + run) wall time, the median
wall time over ``--repeats`` further runs, FIRE iterations (total and float64),
the final max |F| and the energy per particle.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from eignn_jax import dataset, minimise, potential

DEV_FILE = "eignn_jax/default_data/N1000T0.64_1.npz"


def lattice_start(n_side: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jittered simple-cubic lattice at density 1.2 with random 80:20 types.

    Returns positions [n_side³, 3] float64 σ, types [n_side³] int32 (1/2), box [3] float64 σ.
    """
    rng = np.random.default_rng(seed)
    n = n_side**3
    box = dataset.box_from_density(n)
    spacing = box[0] / n_side
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (grid + 0.5) * spacing + rng.normal(scale=0.03, size=(n, 3))
    types = np.ones(n, np.int32)
    types[rng.choice(n, size=n // 5, replace=False)] = 2
    return positions, types, box


@jax.jit
def _langevin_steps(positions, velocities, key, types, box, pairs, temperature, n_steps):
    """BAOAB Langevin dynamics (unit mass, friction 1/τ, dt 0.005 τ) for n_steps steps.

    ``pairs`` must have been built with a 1 σ skin. Stops early once a particle
    has moved more than 0.25 σ (a quarter of the skin), so that every force,
    including the one after that last step, comes from a valid list; the caller
    then rebuilds it. Returns (positions, velocities, key, steps done).
    """
    dt, friction = 0.005, 1.0
    decay = jnp.exp(-friction * dt)
    noise = jnp.sqrt(temperature * (1.0 - decay**2))

    def keep_going(carry):
        x, _, _, _, step = carry
        return (step < n_steps) & ~minimise.needs_rebuild(pairs, x, 0.5)

    def step(carry):
        x, v, f, key, k = carry
        key, sub = jax.random.split(key)
        v = v + 0.5 * dt * f
        x = x + 0.5 * dt * v
        v = decay * v + noise * jax.random.normal(sub, v.shape, v.dtype)
        x = x + 0.5 * dt * v
        _, f = minimise.ka_energy_and_forces(x, types, box, pairs)
        v = v + 0.5 * dt * f
        return x, v, f, key, k + 1

    _, forces = minimise.ka_energy_and_forces(positions, types, box, pairs)
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
            pairs = minimise.build_neighbour_list(host, types, box, skin, capacity)
        except minimise.NeighbourListOverflow as overflow:
            capacity = int(overflow.n_pairs * 1.2)
            pairs = minimise.build_neighbour_list(host, types, box, skin, capacity)
        x, v, key, steps = _langevin_steps(x, v, key, jnp.asarray(types), box32, pairs,
                                           jnp.float32(temperature), jnp.int32(n_steps - done))
        done += int(steps)
    return np.asarray(x, np.float64)


def run(name: str, description: str, positions, types, box, repeats: int) -> None:
    """Time inherent_structure on one system and print its JSON line."""
    started = time.perf_counter()
    result = minimise.inherent_structure(positions, types, box)
    first = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = minimise.inherent_structure(positions, types, box)
        times.append(time.perf_counter() - started)
    start_energy = float(np.mean(potential.per_particle_energy(positions, types, box)))
    print(json.dumps({
        "system": name,
        "start": description,
        "n_particles": int(len(types)),
        "start_energy_per_particle": round(start_energy, 4),
        "first_run_s": round(first, 2),
        "median_s": round(statistics.median(times), 2),
        "repeats": repeats,
        "iterations": result.iterations,
        "float64_iterations": result.float64_iterations,
        "neighbour_rebuilds": result.neighbour_rebuilds,
        "max_force": float(f"{result.max_force:.3g}"),
        "energy_per_particle": round(result.energy_per_particle, 6),
        "device": jax.devices()[0].platform,
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dev-file", default=DEV_FILE)
    parser.add_argument("--md-steps", type=int, default=2000,
                        help="Langevin steps (dt 0.005) at T=0.64 after melting, for N=4096")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = dataset.load_configuration(args.dev_file)
    run("dev_N1000", f"initial_positions of {args.dev_file} (equilibrated, T=0.64)",
        config.positions, config.types, config.box, args.repeats)

    positions, types, box = lattice_start(16, args.seed)
    hot = langevin(positions, types, box, 2.0, 500, args.seed)
    liquid = langevin(hot, types, box, 0.64, args.md_steps, args.seed + 1)
    run("generated_N4096",
        f"jittered 16^3 lattice, random 80:20 types, Langevin MD 500 steps at T=2.0 "
        f"then {args.md_steps} at T=0.64 (dt=0.005): liquid-like, not equilibrated",
        liquid, types, box, args.repeats)


if __name__ == "__main__":
    main()
