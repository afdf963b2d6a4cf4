"""Benchmark: graph building and one training step (forward + backward + Adam update).

    python -m benchmarks.train_step                    # N = 1000 dev graphs, paper model
    python -m benchmarks.train_step --replicate 2      # the box replicated 2×2×2 (N = 8000)
    python -m benchmarks.train_step --profile /tmp/trace   # also write a JAX profiler trace

Prints one JSON line per figure: medians over repeats, after a warm-up (compile) step.
"""

import argparse
import dataclasses
import json
import statistics
import time

import jax
import numpy as np

from benchmarks.systems import replicate
from eignn_jax import dataset, graph as graph_lib, training
from eignn_jax.model import EIGNN, ModelConfig
from experiments.configs.default import DEFAULT_DATA


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicate", type=int, default=1, help="tile the N=1000 box k×k×k")
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", default=None, help="directory for a JAX profiler trace of 3 steps")
    args = parser.parse_args()

    files = dataset.list_configurations(DEFAULT_DATA)[:4]
    configs = [replicate(dataset.load_configuration(f), args.replicate) for f in files]
    graph_config = graph_lib.GraphConfig()
    build = median_seconds(lambda: graph_lib.build_graph(configs[0], graph_config), max(3, args.repeats // 2))
    graphs = [graph_lib.build_graph(c, graph_config) for c in configs]
    n, e = int(graphs[0].n_node[0]), int(graphs[0].n_edge[0])
    print(json.dumps({"benchmark": "graph_build", "n_particles": n, "n_edges": e, "median_s": round(build, 4)}))

    model_config = ModelConfig(width=args.width, num_layers=args.layers, l_max=2,
                               num_outputs=graphs[0].nodes["targets"].shape[1],
                               scales=graph_lib.fit_feature_scales(graphs))
    model = EIGNN(model_config)
    optimizer = training.make_optimizer(training.TrainConfig(), steps_per_epoch=len(graphs))
    budget = graph_lib.padding_budget(graphs)
    batches = list(graph_lib.batches(graphs, budget, 1))
    state = training.init_state(model, optimizer, batches[0], seed=0)
    step = training.make_train_step(model, optimizer)

    started = time.perf_counter()
    state, loss = step(state, batches[0])
    loss.block_until_ready()
    first = time.perf_counter() - started

    times = []
    for k in range(args.repeats):
        started = time.perf_counter()
        state, loss = step(state, batches[k % len(batches)])
        loss.block_until_ready()
        times.append(time.perf_counter() - started)
    print(json.dumps({
        "benchmark": "train_step", "n_particles": n, "n_edges": e, "width": args.width,
        "layers": args.layers, "l_max": 2, "median_s": round(statistics.median(times), 4),
        "first_step_s_incl_compile": round(first, 2), "compilations": step.traces,
        "steps": args.repeats, "devices": str(jax.devices()[0].platform)}))

    if args.profile:
        with jax.profiler.trace(args.profile):
            for k in range(3):
                state, loss = step(state, batches[k % len(batches)])
            loss.block_until_ready()
        print(json.dumps({"benchmark": "profile", "trace_dir": args.profile}))


if __name__ == "__main__":
    main()
