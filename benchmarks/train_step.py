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
Beside the times: user and system CPU seconds and minor page faults per step (the whole
process, ``resource.getrusage``); XLA's cost analysis of the compiled step (``xla_flops``,
``xla_bytes_accessed``: the bytes its HLO operations read and write, counted as if nothing
stayed in cache; ``xla_temp_bytes``: its scratch buffers); and, unless --no-bandwidth, the
memory roofline: the triad bandwidth of the device (``benchmarks.memory``) and
``memory_roofline_fraction`` = (bytes accessed / triad bandwidth) / median step time, the
share of the step that moving its bytes at full bandwidth would take (1 = memory-bound at
the triad's rate). XLA's count assumes no operand stays in cache and ignores that gathers
and scatters move whole cache lines, so the fraction is a guide, not a measurement.
With --compilation-cache DIR the first step loads the compiled step from JAX's persistent
cache if an earlier run wrote it there (``first_step_cache`` counts its hits and writes,
``init_cache`` those of the initial state, made under one jit), and the traced program of the
step is loaded from the cache's ``traced/`` folder (``traced_programs_loaded``: 1) unless
--no-traced-programs.
With --profile, the JAX profiler traces 3 more steps and the top operations (thunk time per
step, summed over the CPU threads) are printed, by op and by module / named scope
(``benchmarks.profiling``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import resource
import statistics
import time

import jax
import numpy as np

from benchmarks import memory, profiling, systems
from eignn_jax import compilation, dataset, graph as graph_lib, parallel, training
from eignn_jax.feature_scales import fit_feature_scales
from eignn_jax.model import EIGNN, ModelConfig
from experiments import common
from experiments.configs.default import DEFAULT_DATA


def prepare_step(model, graphs: list, seed: int = 0, edge_mesh=None):
    """(jitted train step, initial state, padded one-graph batches) for ``model`` on ``graphs``:
    the training loop's optimizer (default ``TrainConfig``), padding, initial state and step.

    edge_mesh: split each graph's edges over this mesh's devices (``train.edge_parallel``).
    """
    train_config = training.TrainConfig(seed=seed)
    optimizer = training.make_optimizer(train_config, steps_per_epoch=len(graphs))
    budget = graph_lib.padding_budget(graphs)
    batches = list(graph_lib.batches(graphs, budget, 1))
    # Used only when the compilation cache is on (--compilation-cache), for models with a config
    # (benchmarks.cost also times wrapped models, which are traced every time).
    config = getattr(model, "config", None)
    keys = {kind: None if config is None else
            training.program_key(f"benchmark {kind}", config, train_config, len(graphs))
            for kind in ("init_state", "train_step")}
    state = training.init_state(model, optimizer, batches[0], seed, keys["init_state"])
    if edge_mesh is not None:
        state = parallel.replicate(jax.device_get(state), edge_mesh)
        batches = [parallel.place_edge_sharded(b, edge_mesh) for b in batches]
    return (training.make_train_step(model, optimizer, seed, edge_mesh=edge_mesh, program_key=keys["train_step"]),
            state, batches)


@dataclasses.dataclass(frozen=True)
class StepTimes:
    """What :func:`measure_steps` measured. Seconds; CPU figures are the whole process's
    (all threads), so on a shared machine they show what the step itself used."""
    first_s: float              # the first step, compilation (or cache load) included
    first_cpu_s: float          # its CPU seconds (user + system)
    process_cpu_s_to_first: float   # CPU seconds from process start to the end of the first step
    wall_s: list[float]         # per timed step
    cpu_s: list[float]          # per timed step, user + system
    user_s_per_step: float      # mean over the timed steps (getrusage)
    system_s_per_step: float
    minor_faults_per_step: float


def measure_steps(step, state, batches: list, repeats: int) -> tuple[object, StepTimes]:
    """Run one step (compiling it), then ``repeats`` steady-state steps cycling over ``batches``.

    Returns (state after the last step, :class:`StepTimes`). Minor page faults are first
    touches of memory the process had not mapped: many per step mean buffers are mapped
    afresh every step.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    state, loss = step(state, batches[0])
    loss.block_until_ready()
    first, first_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    process_cpu = time.process_time()      # since the process started: imports, graphs, init, step

    wall, cpu = [], []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for k in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        state, loss = step(state, batches[k % len(batches)])
        loss.block_until_ready()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    after = resource.getrusage(resource.RUSAGE_SELF)
    per_step = max(repeats, 1)
    return state, StepTimes(first, first_cpu, process_cpu, wall, cpu, (after.ru_utime - before.ru_utime) / per_step,
                            (after.ru_stime - before.ru_stime) / per_step,
                            (after.ru_minflt - before.ru_minflt) / per_step)


def time_steps(step, state, batches: list, repeats: int):
    """:func:`measure_steps` as (state, first step's wall seconds incl. compilation, per-step wall
    seconds, per-step CPU seconds)."""
    state, times = measure_steps(step, state, batches, repeats)
    return state, times.first_s, times.wall_s, times.cpu_s


def cost_analysis(compiled) -> dict:
    """XLA's cost analysis of a compiled function: {'flops', 'bytes_accessed', 'temp_bytes'}.

    compiled: a ``jax.stages.Compiled`` (``jitted.lower(*args).compile()``). 'bytes_accessed'
    sums the operands and results of every HLO operation (fusions as one), so it counts
    memory traffic as if no operation found its inputs in cache. Values are floats, None
    where the backend gives none. ``cost_analysis()`` returns a dict in jax ≥ 0.4.30 and a
    one-element list of dicts before; both are read.
    """
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    try:
        temp = float(compiled.memory_analysis().temp_size_in_bytes)
    except (AttributeError, TypeError, NotImplementedError):     # backends without it
        temp = None
    flops, traffic = analysis.get("flops"), analysis.get("bytes accessed")
    return {"flops": None if flops is None else float(flops),
            "bytes_accessed": None if traffic is None else float(traffic), "temp_bytes": temp}


def roofline_fraction(bytes_accessed: float | None, bandwidth_gb_s: float | None, step_s: float) -> float | None:
    """(bytes_accessed / bandwidth) / step_s: the share of a step that moving its bytes at the
    measured bandwidth would take. bytes_accessed in bytes, bandwidth in 10⁹ B/s, step_s in
    seconds; None when a figure is missing or not positive."""
    if not bytes_accessed or not bandwidth_gb_s or bandwidth_gb_s <= 0 or step_s <= 0:
        return None
    return bytes_accessed / (bandwidth_gb_s * 1e9) / step_s


def roofline_fields(compiled, median_s: float, bandwidth_gb_s: float | None) -> dict:
    """The JSON fields of the cost analysis and the memory roofline of ``compiled``."""
    cost = cost_analysis(compiled)
    fraction = roofline_fraction(cost["bytes_accessed"], bandwidth_gb_s, median_s)
    return {"xla_flops": cost["flops"], "xla_bytes_accessed": cost["bytes_accessed"],
            "xla_temp_bytes": cost["temp_bytes"],
            "gflop_s": None if not cost["flops"] else round(cost["flops"] / median_s / 1e9, 2),
            "triad_gb_s": bandwidth_gb_s,
            "memory_roofline_fraction": None if fraction is None else round(fraction, 4)}


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


def _hits_and_writes(events) -> dict:
    """The persistent cache's hits and writes (``compilation.cache_events``), as JSON."""
    return {"hits": events["cache_hits"], "writes": events["cache_misses"]}


def dev_graphs(system: str = "dev", replicate: int = 1, system_file: str | None = None) -> list:
    """The benchmark's graphs (numpy ``jraph.GraphsTuple``s; see the module docstring)."""
    graph_config = graph_lib.GraphConfig()
    return [graph_lib.build_graph(c, graph_config) for c in benchmark_configurations(system, replicate, system_file)]


def benchmark(graphs: list, layers: int = 7, width: int = 32, repeats: int = 10, bandwidth: bool = True,
              triad_mib: float | None = None, edge_parallel: bool = False) -> tuple[dict, object, object, list]:
    """Time the train step of an EIGNN (``layers``, ``width``, ℓ_max 2) on ``graphs``.

    Returns (the JSON row, the jitted step, the state after the timed steps, the padded
    batches). bandwidth: also measure the triad (``benchmarks.memory.triad_bandwidth``, 'jax',
    3 × ``triad_mib`` MiB, None: its default for the device; after the steps, so that it does
    not disturb them) for the roofline. edge_parallel: split the edges over all local devices
    (on a CPU, call ``parallel.request_host_devices`` before JAX starts).
    """
    n, e = int(graphs[0].n_node[0]), int(graphs[0].n_edge[0])
    model_config = ModelConfig(width=width, num_layers=layers, l_max=2,
                               num_outputs=graphs[0].nodes["targets"].shape[1],
                               scales=fit_feature_scales(graphs))
    init_cpu_started = time.process_time()
    with compilation.cache_events() as init_events:
        step, state, batches = prepare_step(EIGNN(model_config), graphs,
                                            edge_mesh=parallel.edge_mesh() if edge_parallel else None)
    init_cpu = time.process_time() - init_cpu_started
    load_before = os.getloadavg()
    with compilation.cache_events() as step_events:
        state, times = measure_steps(step, state, batches, repeats)
    median = statistics.median(times.wall_s)
    # The same program as the steps ran: jit's in-memory cache returns it without compiling.
    compiled = step.lower(state, batches[0]).compile()
    bandwidth_gb_s = memory.triad_bandwidth("jax", triad_mib)["gb_s"] if bandwidth else None
    device = jax.devices()[0]
    row = {
        "benchmark": "train_step", "n_particles": n, "n_edges": e,
        "width": width, "layers": layers, "l_max": 2,
        "median_s": round(median, 4), "min_s": round(min(times.wall_s), 4),
        "median_cpu_s": round(statistics.median(times.cpu_s), 4),
        "user_s_per_step": round(times.user_s_per_step, 4),
        "system_s_per_step": round(times.system_s_per_step, 4),
        "minor_faults_per_step": round(times.minor_faults_per_step, 1),
        "load_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "first_step_s_incl_compile": round(times.first_s, 2), "first_step_cpu_s": round(times.first_cpu_s, 2),
        "process_cpu_s_to_first_step": round(times.process_cpu_s_to_first, 2),
        "compilations": step.traces,
        "init_cpu_s": round(init_cpu, 2), "init_cache": _hits_and_writes(init_events),
        "first_step_cache": _hits_and_writes(step_events),
        "traced_programs_loaded": step.loaded,
        "steps": repeats, "devices": str(device.platform), "device_kind": device.device_kind,
        "edge_parallel_devices": len(jax.local_devices()) if edge_parallel else 0,
        **roofline_fields(compiled, median, bandwidth_gb_s)}
    return row, step, state, batches


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=["dev", "ka4096"], default="dev")
    parser.add_argument("--replicate", type=int, default=1, help="tile the N=1000 dev box k×k×k")
    parser.add_argument("--system-file", default=None,
                        help="ka4096: read the system from this .npz if it exists, else write it there "
                             "(several runs then time the same graph)")
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-bandwidth", action="store_true",
                        help="skip the triad (memory bandwidth) and so the roofline fraction")
    parser.add_argument("--triad-mib", type=float, default=None,
                        help=f"size of each triad array, MiB (default {memory.DEFAULT_MIB}; "
                             f"{memory.ACCELERATOR_MIB} on a GPU)")
    parser.add_argument("--compilation-cache", default=None, metavar="DIR",
                        help="use JAX's persistent compilation cache in DIR (default: off, so that the "
                             "first step shows the compile time)")
    parser.add_argument("--no-traced-programs", action="store_true",
                        help="with --compilation-cache: XLA's cache only, every process traces the step "
                             "(as before the traced-program cache)")
    parser.add_argument("--edge-parallel", action="store_true",
                        help="split each graph's edges over the CPU cores as host devices (train.edge_parallel)")
    parser.add_argument("--profile", default=None, help="directory for a JAX profiler trace of 3 steps")
    parser.add_argument("--top", type=int, default=15, help="rows of the profile tables")
    common.add_memory_reuse_argument(parser, default=True)
    args = parser.parse_args(argv)
    memory_reuse = common.start_memory_reuse(args)
    if args.edge_parallel:
        parallel.request_host_devices()      # before JAX starts its CPU backend
    cache = None
    if args.compilation_cache:
        cache = compilation.enable_persistent_cache(args.compilation_cache,
                                                    traced_programs=not args.no_traced_programs)

    graphs = dev_graphs(args.system, args.replicate, args.system_file)
    row, step, state, batches = benchmark(graphs, args.layers, args.width, args.repeats,
                                          bandwidth=not args.no_bandwidth, triad_mib=args.triad_mib,
                                          edge_parallel=args.edge_parallel)
    print(json.dumps({"benchmark": "train_step", "system": args.system, **row, "memory_reuse": memory_reuse,
                      "compilation_cache": None if cache is None else str(cache)}), flush=True)

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
