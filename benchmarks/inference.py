"""Benchmark: inference (graph building + forward pass) from N = 10³ to 10⁶ particles.

    python -m benchmarks.inference                       # N = 1000, 4096 and 10⁶
    python -m benchmarks.inference --sizes 1000 4096     # a subset
    python -m benchmarks.inference --workdir runs/ka_dev # a trained run's parameters

Systems: N = 1000 is an embedded default-data configuration; N = 4096 a generated KA liquid with its FIRE
inherent structure (``benchmarks.systems.ka_configuration``); N = 1 000 000 that
configuration replicated 10×10×10. Without ``--workdir`` the model (paper size: width 32,
7 layers, ℓ_max = 2) has freshly initialised parameters, which cost the same to evaluate.
Graphs too large to process at once are processed in chunks of edges, as
``experiments.predict`` does (``eignn_jax.model.for_graph_size``), so memory stays O(N)
plus one chunk.

Each size runs in its own subprocess so that its peak resident memory (VmHWM) is its own.
Prints one JSON line per size: graph-building time, first forward pass (including
compilation), median forward time over repeats, each with its CPU seconds (this process, all
threads: CPU / wall is the number of cores kept busy), particles per second, peak memory (read
before the triad below runs), XLA's cost analysis of the compiled forward pass and, unless
--no-bandwidth, the memory roofline fraction (see ``benchmarks.train_step``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from experiments.configs.default import DEFAULT_DATA


def peak_memory_gib() -> float:
    """Peak resident memory of this process (VmHWM), GiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def configuration_of_size(n: int):
    from benchmarks import systems
    from eignn_jax import dataset
    dev = dataset.load_configuration(DEFAULT_DATA / "N1000T0.64_1.npz")
    if n == 4096:
        return systems.ka_configuration(16)
    k = round((n / dev.n_particles) ** (1 / 3))
    if dev.n_particles * k**3 != n:
        raise SystemExit(f"--sizes: {n} is neither 4096 nor 1000·k³")
    return systems.replicate(dev, k)


def measure(n: int, repeats: int = 5, workdir: str | None = None, width: int = 32, layers: int = 7,
            bandwidth: bool = True) -> dict:
    """Build the graph of an N = ``n`` system and time the forward pass on it; the JSON row.

    workdir: a trained run whose parameters (and model config) to use; else a fresh EIGNN of
    ``width`` and ``layers`` (ℓ_max 2). Timed: the first pass (compilation included), then
    the median of ``repeats`` (1 above N = 10⁵). bandwidth: add the triad and the roofline
    fraction. Raises SystemExit for an ``n`` that is neither 4096 nor 1000·k³.
    """
    import jax
    from benchmarks import memory
    from benchmarks.train_step import roofline_fields
    from eignn_jax import experiment, graph as graph_lib
    from eignn_jax.feature_scales import fit_feature_scales
    from eignn_jax.model import EIGNN, ModelConfig, for_graph_size

    config = configuration_of_size(n)
    started, cpu_started = time.perf_counter(), time.process_time()
    graph = graph_lib.build_graph(config, graph_lib.GraphConfig())
    build_s, build_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    n_edges = int(graph.n_edge[0])
    if workdir:
        run = experiment.load_trained(workdir)
        model_config, params = run.config.model, run.params
    else:
        model_config = ModelConfig(width=width, num_layers=layers, num_outputs=8,
                                   scales=fit_feature_scales([graph]))
        params = None
    model_config = for_graph_size(model_config, n_edges)
    chunk = model_config.edge_chunk
    graph = graph._replace(nodes={**graph.nodes, "targets": np.zeros((n, model_config.num_outputs), np.float32)})
    padded = graph_lib.pad_graph(graph, graph_lib.padding_budget([graph]))
    del graph
    model = EIGNN(model_config)
    if params is None:
        params = jax.jit(model.init)(jax.random.PRNGKey(0), padded)    # one compilation, not one per operation
    forward = jax.jit(model.apply)
    started, cpu_started = time.perf_counter(), time.process_time()
    forward(params, padded).block_until_ready()
    first_s, first_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    times, cpu_times = [], []
    for _ in range(repeats if n <= 10**5 else 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        forward(params, padded).block_until_ready()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    median = statistics.median(times)
    peak = peak_memory_gib()        # before the triad's arrays raise it
    compiled = forward.lower(params, padded).compile()      # jit's in-memory cache: no recompilation
    bandwidth_gb_s = memory.triad_bandwidth("jax")["gb_s"] if bandwidth else None
    device = jax.devices()[0]
    return {"benchmark": "inference", "n_particles": n, "n_edges": n_edges, "edge_chunk": chunk,
            "graph_build_s": round(build_s, 3), "graph_build_cpu_s": round(build_cpu_s, 3),
            "first_forward_s_incl_compile": round(first_s, 2),
            "first_forward_cpu_s": round(first_cpu_s, 2),
            "forward_median_s": round(median, 4), "forward_median_cpu_s": round(statistics.median(cpu_times), 4),
            "repeats": len(times),
            "particles_per_s": round(n / median), "peak_memory_gib": round(peak, 2),
            "trained_params": bool(workdir), "devices": device.platform, "device_kind": device.device_kind,
            "width": model_config.width, "layers": model_config.num_layers,
            **roofline_fields(compiled, median, bandwidth_gb_s)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4096, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", default=None, help="trained run whose parameters to use")
    parser.add_argument("--width", type=int, default=32, help="without --workdir")
    parser.add_argument("--layers", type=int, default=7, help="without --workdir")
    parser.add_argument("--no-bandwidth", action="store_true",
                        help="skip the triad (memory bandwidth) and so the roofline fraction")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process
    from experiments import common
    common.add_memory_reuse_argument(parser, default=False)
    args = parser.parse_args(argv)
    if args.one is not None:
        memory_reuse = common.start_memory_reuse(args)
        print(json.dumps({**measure(args.one, args.repeats, args.workdir, args.width, args.layers,
                                    bandwidth=not args.no_bandwidth), "memory_reuse": memory_reuse}), flush=True)
        return
    passthrough = list(sys.argv[1:] if argv is None else argv)
    for n in args.sizes:
        result = subprocess.run([sys.executable, "-m", "benchmarks.inference", *passthrough, "--one", str(n)],
                                capture_output=True, text=True)
        lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
        if result.returncode != 0 or not lines:
            print(json.dumps({"benchmark": "inference", "n_particles": n, "error": result.stderr[-2000:]}))
        else:
            print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
