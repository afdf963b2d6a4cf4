"""Benchmark: one training step (forward + backward + Adam update) of the paper-size EIGNN.

    python -m benchmarks.train_step                    # N = 1000 dev graphs
    python -m benchmarks.train_step --system ka4096    # one generated N = 4096 KA graph
    python -m benchmarks.train_step --replicate 2      # the dev box replicated 2×2×2 (N = 8000)
    python -m benchmarks.train_step --profile /tmp/trace   # + top operations of 3 profiled steps

Systems: 'dev' uses 4 embedded default-data configurations (N = 1000, T = 0.64) with their labels; 'ka4096'
one N = 4096 KA liquid at density 1.2 with its FIRE inherent structure
(``benchmarks.systems.ka_configuration``) and random targets (8 time scales; the cost of a
step does not depend on the label values).

Prints one JSON line per figure: medians over repeats, after a warm-up (compile) step.
With --profile, the JAX profiler traces 3 more steps and the top operations (thunk time per
step, summed over the CPU threads) are printed, by op and by module / named scope
(``benchmarks.profiling``).
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import time

import jax
import numpy as np

from benchmarks import profiling, systems
from eignn_jax import dataset, graph as graph_lib, training
from eignn_jax.feature_scales import fit_feature_scales
from eignn_jax.model import EIGNN, ModelConfig
from experiments.configs.default import DEFAULT_DATA


def prepare_step(model, graphs: list, seed: int = 0):
    """(jitted train step, initial state, padded one-graph batches) for ``model`` on ``graphs``:
    the training loop's optimizer (default ``TrainConfig``), padding and step."""
    optimizer = training.make_optimizer(training.TrainConfig(), steps_per_epoch=len(graphs))
    budget = graph_lib.padding_budget(graphs)
    batches = list(graph_lib.batches(graphs, budget, 1))
    state = training.init_state(model, optimizer, batches[0], seed=seed)
    return training.make_train_step(model, optimizer), state, batches


def time_steps(step, state, batches: list, repeats: int):
    """Run one step (compiling it), then ``repeats`` steady-state steps cycling over ``batches``.

    Returns (state, first step's wall seconds incl. compilation, per-step wall seconds,
    per-step CPU seconds). CPU time is the whole process's (all threads), so on a shared
    machine it shows what the step itself used when wall time is inflated by other jobs.
    """
    started = time.perf_counter()
    state, loss = step(state, batches[0])
    loss.block_until_ready()
    first = time.perf_counter() - started

    wall, cpu = [], []
    for k in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        state, loss = step(state, batches[k % len(batches)])
        loss.block_until_ready()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return state, first, wall, cpu


def benchmark_configurations(system: str, k: int, system_file: str | None) -> list[dataset.Configuration]:
    if system == "ka4096":
        if system_file and pathlib.Path(system_file).exists():
            return [dataset.load_configuration(system_file)]
        config = systems.ka_configuration(16)
        targets = np.random.default_rng(0).uniform(0.05, 2.0, size=(8, config.n_particles))
        config = dataclasses.replace(config, propensity=targets.astype(np.float32),
                                     times=np.geomspace(0.13, 40, 8))
        if system_file:
            dataset.write_configuration(system_file, config)
        return [config]
    files = dataset.list_configurations(DEFAULT_DATA)[:4]
    return [systems.replicate(dataset.load_configuration(f), k) for f in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=["dev", "ka4096"], default="dev")
    parser.add_argument("--replicate", type=int, default=1, help="tile the N=1000 dev box k×k×k")
    parser.add_argument("--system-file", default=None,
                        help="ka4096: read the system from this .npz if it exists, else write it there "
                             "(several runs then time the same graph)")
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", default=None, help="directory for a JAX profiler trace of 3 steps")
    parser.add_argument("--top", type=int, default=15, help="rows of the profile tables")
    args = parser.parse_args()

    configs = benchmark_configurations(args.system, args.replicate, args.system_file)
    graph_config = graph_lib.GraphConfig()
    graphs = [graph_lib.build_graph(c, graph_config) for c in configs]
    n, e = int(graphs[0].n_node[0]), int(graphs[0].n_edge[0])

    model_config = ModelConfig(width=args.width, num_layers=args.layers, l_max=2,
                               num_outputs=graphs[0].nodes["targets"].shape[1],
                               scales=fit_feature_scales(graphs))
    step, state, batches = prepare_step(EIGNN(model_config), graphs)
    load_before = os.getloadavg()
    state, first, times, cpu_times = time_steps(step, state, batches, args.repeats)
    print(json.dumps({
        "benchmark": "train_step", "system": args.system, "n_particles": n, "n_edges": e,
        "width": args.width, "layers": args.layers, "l_max": 2,
        "median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
        "median_cpu_s": round(statistics.median(cpu_times), 4),
        "load_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "first_step_s_incl_compile": round(first, 2), "compilations": step.traces,
        "steps": args.repeats, "devices": str(jax.devices()[0].platform)}), flush=True)

    if args.profile:
        steps = 3
        with jax.profiler.trace(args.profile):
            for k in range(steps):
                state, loss = step(state, batches[k % len(batches)])
            loss.block_until_ready()
        hlo = step.lower(state, batches[0]).compile().as_text()
        for by_scope in (False, True):
            for row in profiling.top_operations(args.profile, hlo, steps, args.top, by_scope):
                print(json.dumps({"benchmark": "profile", "by": "scope" if by_scope else "op", **row}))


if __name__ == "__main__":
    main()
