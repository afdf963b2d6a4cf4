"""Benchmark: inherent structures (eignn_jax.physics.minimise.inherent_structure), FIRE or L-BFGS.

    python -m benchmarks.inherent_structure              # N = 1000 and N = 4096, default method
    python -m benchmarks.inherent_structure --repeats 5 --method lbfgs

Systems:

* N = 1000: ``initial_positions`` of an embedded configuration (KA 80:20, T = 0.64,
  density 1.2, equilibrated by OpenMM).
* N = 4096 (the GlassBench size): no such configuration ships with the project,
  so one is made by ``benchmarks.systems.ka_liquid``: a 16³ simple-cubic lattice
  at density 1.2 with random 80:20 types and a small random jitter, melted by
  Langevin MD at T = 2.0 (500 steps, 2.5 τ), then run at T = 0.64 (``--md-steps``,
  default 2000 steps = 10 τ).
  The result is a liquid-like but not equilibrated T = 0.64 start (its potential
  energy per particle is printed; the equilibrated N = 1000 dev start is lower).

Prints one JSON line per system: the first (compile + run) wall time, the median
wall time over ``--repeats`` further runs, iterations (total and float64), energy
evaluations, the final max |F| and the energy per particle.
"""

import argparse
import json
import os
import statistics
import time

import jax
import numpy as np

from benchmarks.systems import ka_liquid
from eignn_jax import dataset
from eignn_jax.physics import kob_andersen, minimise
from experiments.configs.default import DEFAULT_DATA

DEV_FILE = str(DEFAULT_DATA / "N1000T0.64_1.npz")


def measure(name: str, description: str, positions, types, box, repeats: int,
            method: str = minimise.DEFAULT_METHOD) -> dict:
    """Time inherent_structure on one system (positions [N, 3] σ, types [N] 1/2, box [3] σ):
    a first run (compilation included), then ``repeats`` more; the JSON row."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = minimise.inherent_structure(positions, types, box, method=method)
    first, first_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    times, cpu_times = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = minimise.inherent_structure(positions, types, box, method=method)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    start_energy = float(np.mean(kob_andersen.per_particle_energy(positions, types, box)))
    device = jax.devices()[0]
    return {
        "benchmark": "inherent_structure",
        "system": name,
        "method": method,
        "start": description,
        "n_particles": int(len(types)),
        "start_energy_per_particle": round(start_energy, 4),
        "first_run_s": round(first, 2),
        "first_run_cpu_s": round(first_cpu, 2),
        "median_s": round(statistics.median(times), 2) if times else None,
        "median_cpu_s": round(statistics.median(cpu_times), 2) if cpu_times else None,
        "repeats": repeats,
        "iterations": result.iterations,
        "float64_iterations": result.float64_iterations,
        "evaluations": result.evaluations,
        "neighbour_rebuilds": result.neighbour_rebuilds,
        "max_force": float(f"{result.max_force:.3g}"),
        "energy_per_particle": round(result.energy_per_particle, 6),
        "device": device.platform,
        "device_kind": device.device_kind,
        "load_1min": round(os.getloadavg()[0], 2),
    }


def run(name: str, description: str, positions, types, box, repeats: int,
        method: str = minimise.DEFAULT_METHOD) -> None:
    """Time inherent_structure on one system and print its JSON line (:func:`measure`)."""
    print(json.dumps(measure(name, description, positions, types, box, repeats, method)), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dev-file", default=DEV_FILE)
    parser.add_argument("--md-steps", type=int, default=2000,
                        help="Langevin steps (dt 0.005) at T=0.64 after melting, for N=4096")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=sorted(minimise.METHODS), default=minimise.DEFAULT_METHOD)
    args = parser.parse_args(argv)

    config = dataset.load_configuration(args.dev_file)
    run("dev_N1000", f"initial_positions of {args.dev_file} (equilibrated, T=0.64)",
        config.positions, config.types, config.box, args.repeats, args.method)

    liquid, types, box = ka_liquid(16, args.seed, args.md_steps)
    run("generated_N4096",
        f"jittered 16^3 lattice, random 80:20 types, Langevin MD 500 steps at T=2.0 "
        f"then {args.md_steps} at T=0.64 (dt=0.005): liquid-like, not equilibrated",
        liquid, types, box, args.repeats, args.method)


if __name__ == "__main__":
    main()
