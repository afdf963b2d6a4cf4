"""Benchmark: graph building (eignn_jax.graph.build_graph) from N = 10³ to 10⁶.

    python -m benchmarks.graph_build                       # k = 1 2 3 5 10, and N = 4096
    python -m benchmarks.graph_build --factors 1 2 --repeats 3 --no-n4096

Systems:

* the embedded configuration ``N1000T0.64_1.npz`` (initial positions and stored inherent
  structure) tiled k×k×k (``benchmarks.systems.replicate``): N = 1000 k³, a physical
  periodic system with the density and neighbour counts of the original;
* one generated N = 4096 liquid (``benchmarks.systems.ka_configuration``: melted
  16³ lattice, Langevin MD at T = 0.64, FIRE inherent structure), the GlassBench size.

Every size runs in a fresh subprocess: it builds an N = 1000 graph first (imports and
first-call costs), then times ``--repeats`` builds (``--big-repeats`` from
``--big-n`` particles on) with the default GraphConfig (cutoff 2 σ, inherent
structure). The peak resident memory increase is the growth of VmHWM during the
first timed build over the resident size just before it (the high-water mark is
reset through /proc/self/clear_refs; without it, ru_maxrss is used). Memory the
allocator kept from earlier work is reused without growing the RSS (so the N = 4096
line, which runs after the system is made, shows little), hence also the peak of
memory allocated during one more, untimed, build under tracemalloc. Both include the
returned graph.

Prints one JSON line per size (median wall and CPU time, edges, edges per particle,
µs per particle from the wall time, peak memory) and a last line with the
least-squares slope of log(time) against log(N) over the tiled sizes (1 = linear),
over all of them and over N ≥ 10⁴, for wall and for CPU time (the CPU time is the
steadier one on a machine shared with other work).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np

DEV_FILE = "eignn_jax/default_data/N1000T0.64_1.npz"
# Dense N×N preprocessing of the public PyTorch code, one N = 4096 configuration.
REFERENCE_N4096_S = 9.9


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kib() -> int:
    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(config, repeats: int) -> dict:
    """Time build_graph on one configuration; peak RSS from the first timed build."""
    from eignn_jax import graph as graph_lib

    graph_config = graph_lib.GraphConfig()
    times, cpu_times = [], []
    peak_increase_kib = None
    n_edges = None
    for k in range(repeats):
        graph = None
        if k == 0:
            exact = _reset_peak()
            before = _status_kib("VmRSS") if exact else _peak_kib()
        started, cpu_started = time.perf_counter(), time.process_time()
        graph = graph_lib.build_graph(config, graph_config)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
        if k == 0:
            peak_increase_kib = _peak_kib() - before
            n_edges = int(graph.n_edge[0])
        del graph
    # One more, untimed, build under tracemalloc: the peak of memory allocated during
    # the build (numpy arrays included), whatever the allocator had kept from before.
    tracemalloc.start()
    graph_lib.build_graph(config, graph_config)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = config.n_particles
    median = statistics.median(times)
    return {
        "n_particles": n,
        "n_edges": n_edges,
        "edges_per_particle": round(n_edges / n, 2),
        "median_s": round(median, 4),
        "min_s": round(min(times), 4),
        "median_cpu_s": round(statistics.median(cpu_times), 4),
        "repeats": repeats,
        "us_per_particle": round(1e6 * median / n, 3),
        "peak_rss_increase_mib": round(peak_increase_kib / 1024, 1),
        "peak_allocated_mib": round(traced_peak / 2**20, 1),
    }


def worker(args) -> None:
    """One size, in this (fresh) process; prints its JSON line."""
    from benchmarks.systems import ka_configuration, replicate
    from eignn_jax import dataset, graph as graph_lib

    dev = dataset.load_configuration(args.dev_file)
    graph_lib.build_graph(dev, graph_lib.GraphConfig())  # first-call costs
    if args.worker == "n4096":
        started = time.perf_counter()
        config = ka_configuration(16, args.seed, args.md_steps)
        made = time.perf_counter() - started
        system = {"system": "generated_N4096",
                  "start": f"16^3 lattice, Langevin MD 500 steps T=2.0 + {args.md_steps} "
                           f"steps T=0.64, FIRE inherent structure", "make_system_s": round(made, 1)}
    else:
        k = int(args.worker)
        config = replicate(dev, k)
        system = {"system": f"dev_N1000_x{k}^3", "replicate": k}
    repeats = args.big_repeats if config.n_particles >= args.big_n else args.repeats
    result = {**system, **measure(config, repeats)}
    if args.worker == "n4096":
        result["speedup_vs_dense_9.9s"] = round(REFERENCE_N4096_S / result["median_s"], 1)
    print(json.dumps(result), flush=True)


def slope(ns, ts) -> float:
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 3, 5, 10],
                        help="replication factors k (N = 1000 k³)")
    parser.add_argument("--repeats", type=int, default=5, help="timed builds per size")
    parser.add_argument("--big-repeats", type=int, default=2, help="timed builds from --big-n on")
    parser.add_argument("--big-n", type=int, default=100_000)
    parser.add_argument("--no-n4096", dest="n4096", action="store_false",
                        help="skip the generated N=4096 system")
    parser.add_argument("--md-steps", type=int, default=2000,
                        help="Langevin steps at T=0.64 for the N=4096 system")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dev-file", default=DEV_FILE)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        worker(args)
        return

    common = ["--repeats", str(args.repeats), "--big-repeats", str(args.big_repeats),
              "--big-n", str(args.big_n), "--md-steps", str(args.md_steps),
              "--seed", str(args.seed), "--dev-file", args.dev_file]
    sizes = [str(k) for k in args.factors] + (["n4096"] if args.n4096 else [])
    tiled = []
    for size in sizes:
        out = subprocess.run([sys.executable, "-m", "benchmarks.graph_build", "--worker", size, *common],
                             check=True, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")})
        line = out.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        if size != "n4096":
            tiled.append(json.loads(line))
    if len(tiled) >= 2:
        ns = [r["n_particles"] for r in tiled]
        summary = {"fit": "log(time) vs log(N), tiled dev systems", "n": ns}
        for name, key in (("wall", "median_s"), ("cpu", "median_cpu_s")):
            ts = [r[key] for r in tiled]
            summary[f"slope_{name}"] = round(slope(ns, ts), 3)
            large = [(n, t) for n, t in zip(ns, ts) if n >= 10_000]
            if len(large) >= 2:
                summary[f"slope_{name}_n_ge_1e4"] = round(slope(*zip(*large)), 3)
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
