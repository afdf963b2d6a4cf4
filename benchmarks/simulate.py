"""Benchmark: the propensity generator (experiments.simulate) against OpenMM's raw step rate.

    python -m benchmarks.simulate                      # N = 1000, R = 8, t <= 40, 2 workers
    python -m benchmarks.simulate --part runs          # only the iso-configurational runs

Needs the extra ``[sim]``. Run it on a quiet machine: every figure is a wall time.

1. ``raw``: each of ``--workers`` processes, started together, builds a one-thread NVE
   context on the configuration and times one ``integrator.step(S)`` call with no Python
   in between (S = the steps of one run). Their mean rate r (steps/s per process) is what
   OpenMM alone achieves under the same load. The same for the chain's Langevin
   integrator (rate r_L; it draws random numbers every step and is slower).
2. ``runs``: the R runs of one configuration, as ``generate`` submits them
   (``iso_configurational_run`` through the same process pool), timed from the first
   submission to the last result; repeated ``--repeats`` times on the warm pool. Ideal
   time R · S / (W · r); overhead = measured / ideal − 1. It contains the Python round
   trips, velocity draws, position reads, the bond-breaking analysis and the pickling of
   the results. ``overhead_beyond_stepping`` compares the same wall time with the time the
   runs spent inside ``integrator.step()`` (summed, over W): on a machine shared with other
   jobs, whose speed drifts between measurements, it is the steadier figure.
3. ``pipeline``: the whole command (``experiments.simulate``, one-thread chain, a
   configuration every ``--spacing`` τ_α, no equilibration) for 1 and for 1 + ``--configs``
   configurations, each in a temporary folder; the time per configuration is the
   difference of the two wall times over ``--configs``. Ideal: (R · S + chain steps per
   configuration) / (W · r), with the chain's steps at r_L. The rest is the inherent-structure
   minimisation (JAX, in the main process, competing for the same cores; its time alone
   is printed too), the file writing and the Python around them.

``--part threads`` (not in ``all``): one context stepped alone, then two stepped at once by
two threads of one process; a total near twice the single rate means ``step()`` releases the
GIL, so threaded Dask workers run in parallel.

The configuration is ``initial_positions`` of an embedded default-data file (KA 80:20,
N = 1000, T = 0.64).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from eignn_jax import dataset
from eignn_jax.physics import md

DEV_FILE = pathlib.Path(__file__).resolve().parents[1] / "eignn_jax" / "default_data" / "N1000T0.64_1.npz"


def raw_rate(task: md.RunTask, integrator: str = "verlet", warmup: int = 200) -> float:
    """Steps per second of one ``integrator.step(steps[-1])`` call on a fresh one-thread context.

    integrator: "verlet" (the NVE runs) or "langevin" (the chain, ``LangevinMiddleIntegrator``
    at the task's temperature, friction 1 / τ).
    """
    import openmm

    if integrator == "verlet":
        stepper = openmm.VerletIntegrator(task.dt)
    else:
        stepper = openmm.LangevinMiddleIntegrator(md.kelvin(task.temperature), 1.0, task.dt)
    context = md.make_context(md.build_system(task.types, task.box), stepper, task.platform, task.threads)
    context.setPositions(np.asarray(task.positions, np.float64))
    rng = np.random.default_rng(list(task.seed))
    context.setVelocities(md.maxwell_boltzmann(len(task.positions), task.temperature, rng))
    stepper.step(warmup)
    steps = int(task.steps[-1])
    started = time.perf_counter()
    stepper.step(steps)
    return steps / (time.perf_counter() - started)


def threaded_rates(task: md.RunTask, steps: int = 3000) -> tuple[float, float]:
    """(steps/s of one context alone, total steps/s of two contexts stepped by two threads
    of this process at once): whether ``step()`` releases the GIL, as threaded Dask
    workers need."""
    import threading

    import openmm

    pairs = []
    for k in range(2):
        integrator = openmm.VerletIntegrator(task.dt)
        context = md.make_context(md.build_system(task.types, task.box), integrator, task.platform, 1)
        context.setPositions(np.asarray(task.positions, np.float64))
        context.setVelocities(md.maxwell_boltzmann(len(task.positions), task.temperature,
                                                    np.random.default_rng([k])))
        integrator.step(100)
        pairs.append((context, integrator))
    started = time.perf_counter()
    pairs[0][1].step(steps)
    alone = steps / (time.perf_counter() - started)
    threads = [threading.Thread(target=integrator.step, args=(steps,)) for _, integrator in pairs]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return alone, 2 * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "runs", "pipeline", "threads"], default="all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=8, help="R, NVE runs per configuration")
    parser.add_argument("--times", default=",".join(f"{t:g}" for t in md.DEFAULT_TIMES))
    parser.add_argument("--repeats", type=int, default=2, help="configurations timed in part runs")
    parser.add_argument("--configs", type=int, default=3, help="pipeline: extra configurations timed")
    parser.add_argument("--spacing", type=float, default=10.0, help="pipeline: tau_alpha between configurations")
    args = parser.parse_args()

    config = dataset.load_configuration(DEV_FILE)
    protocol = md.Protocol(n=config.n_particles, runs=args.runs,
                           times=tuple(float(t) for t in args.times.split(",")))
    steps = tuple(int(s) for s in protocol.steps)

    def task(index: int, run: int) -> md.RunTask:
        return protocol.run_task(config.positions, (0, index, run), types=config.types, box=config.box)

    header = {"n": protocol.n, "runs": protocol.runs, "steps_per_run": steps[-1], "workers": args.workers,
              "engine": md.engine_version()}
    if args.part == "threads":
        alone, together = threaded_rates(task(0, 0))
        print(json.dumps({"benchmark": "simulate.threads", "n": protocol.n, "engine": md.engine_version(),
                          "one_thread_steps_per_s": round(alone), "two_threads_steps_per_s_total": round(together)}))
        return
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=spawn) as pool:
        rates = list(pool.map(raw_rate, [task(0, w) for w in range(args.workers)]))
        chain_rates = list(pool.map(raw_rate, [task(0, w) for w in range(args.workers)],
                                    ["langevin"] * args.workers))
        rate, chain_rate = statistics.mean(rates), statistics.mean(chain_rates)
        print(json.dumps({"benchmark": "simulate.raw", **header,
                          "verlet_steps_per_s_per_process": [round(r) for r in rates],
                          "langevin_steps_per_s_per_process": [round(r) for r in chain_rates]}), flush=True)
        if args.part in ("all", "runs"):
            ideal = protocol.runs * steps[-1] / (args.workers * rate)
            walls, stepping = [], []
            for repeat in range(args.repeats + 1):          # the first builds each worker's engine
                started = time.perf_counter()
                results = list(pool.map(md.iso_configurational_run,
                                        [task(repeat + 1, run) for run in range(protocol.runs)]))
                walls.append(time.perf_counter() - started)
                stepping.append(sum(r.md_seconds for r in results) / args.workers)
            steady = statistics.median(walls[1:]) if len(walls) > 1 else walls[0]
            # Against the time the same runs spent inside integrator.step(): insensitive to
            # the machine's speed drifting between the raw measurement and the runs.
            beyond_stepping = statistics.median(w / m - 1 for w, m in zip(walls[1:], stepping[1:]))
            print(json.dumps({"benchmark": "simulate.runs", **header, "first_configuration_s": round(walls[0], 2),
                              "configuration_s": [round(w, 2) for w in walls[1:]], "ideal_s": round(ideal, 2),
                              "overhead": round(steady / ideal - 1, 4),
                              "overhead_beyond_stepping": round(beyond_stepping, 4),
                              "md_share_in_tasks": round(sum(r.md_seconds for r in results)
                                                         / sum(r.seconds for r in results), 4)}), flush=True)

    if args.part in ("all", "pipeline"):
        # Whole commands for 1 and 1 + --configs configurations: the difference of their wall
        # times is --configs configurations in steady state, without start-up (imports, JAX
        # compilation, melting) and without the last configuration's drain.
        walls = {}
        for configs in (1, 1 + args.configs):
            with tempfile.TemporaryDirectory() as folder:
                out = pathlib.Path(folder) / "data"
                command = [sys.executable, "-m", "experiments.simulate", "--out", str(out), "--temperature",
                           f"{protocol.temperature:g}", "--configs", str(configs), "--runs", str(protocol.runs),
                           "--times", args.times, "--equilibrate", "0", "--spacing", f"{args.spacing:g}",
                           "--workers", str(args.workers)]
                started = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                               cwd=pathlib.Path(__file__).parents[1])
                walls[configs] = time.perf_counter() - started
                chain_steps = json.loads((out / "meta.json").read_text())["protocol"]["spacing"] / protocol.dt
        per_configuration = (walls[1 + args.configs] - walls[1]) / args.configs
        ideal = (protocol.runs * steps[-1] / rate + chain_steps / chain_rate) / args.workers
        # The inherent-structure minimisation of one configuration, alone on the machine.
        from eignn_jax import equilibrium
        equilibrium.compute(config, "inherent")                       # compiles
        started = time.perf_counter()
        equilibrium.compute(config, "inherent")
        inherent_s = time.perf_counter() - started
        print(json.dumps({"benchmark": "simulate.pipeline", **header, "chain_steps_per_configuration":
                          round(chain_steps), "command_s": {str(k): round(v, 1) for k, v in walls.items()},
                          "configuration_s": round(per_configuration, 2), "ideal_s": round(ideal, 2),
                          "overhead": round(per_configuration / ideal - 1, 4),
                          "inherent_structure_s_alone": round(inherent_s, 2)}), flush=True)

if __name__ == "__main__":
    main()
