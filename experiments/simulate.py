"""Generate Kob–Andersen configurations with iso-configurational propensities (OpenMM).

    python -m experiments.simulate --out data/sim_T064 --temperature 0.64 --configs 20
    python -m experiments.simulate --out data/sim_T056 --temperature 0.56 --tau-alpha 22.6 --workers 2
    python -m experiments.simulate --check --temperature 0.64          # validation report
    python -m experiments.simulate --check-data FOLDER --configs 12    # tau_alpha of a data set

Needs the optional extra: pip install 'eignn_jax[sim]'. One Markov chain (melt, equilibrate
for --equilibrate τ_α, then one configuration every --spacing τ_α, Langevin) feeds --runs NVE
runs per configuration, spread over --workers local processes (or the workers of a Dask
cluster with --scheduler). Each configuration is written, atomically, as
N{n}T{T}_{i}.npz in the GlassBench layout (types, initial_positions,
initial_positions_inherent from eignn_jax.minimise, md_prop, md_disp, bb_prop, times, box),
with a meta.json holding every parameter and the engine version. Existing files are
skipped and the chain resumes from its checkpoint (<out>/.simulate/chain.npz), so a killed
run continues where it stopped when started again with the same arguments.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import pathlib
import shlex
import sys
import time

import numpy as np

from eignn_jax import simulate as sim

# Meta keys that must agree when a folder is resumed (everything that changes the data).
CHAIN_FILE = pathlib.Path(".simulate") / "chain.npz"


def file_name(protocol: sim.Protocol, index: int) -> str:
    return f"N{protocol.n}T{protocol.temperature:g}_{index}.npz"


def meta_for(protocol: sim.Protocol, configs: int, tau_alpha: float, threads: dict) -> dict:
    """meta.json of a data set: the dev set's keys, then the full protocol.

    ``threads``: OpenMM CPU threads of the chain and of each run (None: all cores); with one
    thread each, the same command on the same OpenMM build remakes the files bit for bit.
    """
    return {
        "n": protocol.n,
        "rho": protocol.density,
        "T": protocol.temperature,
        "box": float(protocol.box[0]),
        "runs": protocol.runs,
        "times": protocol.sample_times.tolist(),
        "dt": protocol.dt,
        "seed": protocol.seed,
        "engine": sim.engine_version(protocol.platform),
        "types": "1=A,2=B as GlassBench",
        "configurations": configs,
        "tau_alpha_assumed": tau_alpha,
        "protocol": dataclasses.asdict(protocol),
        "threads": threads,
        "thermostat": "LangevinMiddleIntegrator (chain only); NVE velocity Verlet for the runs",
        "md_prop": "mean over runs of |r_i(t) - r_i(0)|, unwrapped, [T, N]",
        "md_disp": "mean over runs of r_i(t) - r_i(0), [T, N, 3]",
        "bb_prop": (f"mean over runs of the fraction of i's bonds (r_ij(0) < {protocol.bond_in} sigma_ab) "
                    f"with r_ij(t) > {protocol.bond_out} sigma_ab, [T, N]"),
        "initial_positions_inherent": "eignn_jax.minimise.inherent_structure (default method), max |F| < 1e-4",
    }


def prepare_folder(out: pathlib.Path, protocol: sim.Protocol, configs: int, tau_alpha: float, threads: dict) -> None:
    """Create ``out`` with meta.json, or check that an existing meta.json has the same protocol."""
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("protocol") != json.loads(json.dumps(dataclasses.asdict(protocol))):
            raise SystemExit(f"error: {out} was made with another protocol ({meta_path}); "
                             "use a new --out or the same arguments")
        if old.get("configurations", 0) >= configs:
            return
    meta = meta_for(protocol, configs, tau_alpha, threads)
    meta["command"] = "python -m experiments.simulate " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    from eignn_jax import files
    files.atomic_write(meta_path, json.dumps(meta, indent=1) + "\n")


class Chain:
    """The equilibrium Markov chain, checkpointed after every segment.

    State: positions/velocities [N, 3], time spent at T (τ), and the sampled configurations
    so far (positions [k, N, 3], wrapped). Segments are at most one spacing long and each
    gets its own thermostat seed, so resuming from a checkpoint reproduces the same chain up
    to the nondeterminism of the engine's float summation.
    """

    def __init__(self, path: pathlib.Path, protocol: sim.Protocol, threads: int | None, log=print):
        self.path, self.protocol, self.threads, self.log = path, protocol, threads, log
        self.system = None
        if path.exists():
            with np.load(path) as data:
                self.positions = data["positions"]
                self.velocities = data["velocities"]
                self.time_at_t = float(data["time_at_t"])
                self.samples = list(data["samples"])
            log(f"chain resumed: {self.time_at_t:g} τ at T, {len(self.samples)} configuration(s) sampled")
        else:
            self.positions = self.velocities = None
            self.time_at_t, self.samples = 0.0, []

    def _system(self):
        if self.system is None:
            self.system = sim.build_system(self.protocol.types, self.protocol.box)
        return self.system

    def _save(self) -> None:
        from eignn_jax import files
        self.path.parent.mkdir(parents=True, exist_ok=True)
        n = self.protocol.n
        samples = np.asarray(self.samples).reshape(-1, n, 3)
        files.atomic_savez(self.path, {"positions": self.positions, "velocities": self.velocities,
                                       "time_at_t": np.float64(self.time_at_t), "samples": samples})

    def _advance(self, duration: float) -> None:
        p = self.protocol
        segment = int(round(self.time_at_t / p.dt))  # a seed per starting point
        self.positions, self.velocities = sim.langevin_segment(
            self._system(), self.positions, self.velocities, p.temperature, duration, p,
            sim._seed(p.seed, 4, segment), self.threads)
        self.time_at_t += duration

    def sample(self, index: int) -> np.ndarray:
        """Configuration ``index`` (1-based) [N, 3] float64, wrapped; runs the chain as far as needed."""
        p = self.protocol
        if self.positions is None:
            self.log(f"melting: lattice, minimisation, {p.melt_time:g} τ at T = {p.melt_temperature:g}")
            self.positions, self.velocities = sim.melt(self._system(), p, self.threads)
            self._save()
        while self.time_at_t < p.equilibration_time - 1e-9:
            started = time.perf_counter()
            self._advance(min(p.spacing, p.equilibration_time - self.time_at_t))
            self._save()
            self.log(f"equilibrating: {self.time_at_t:g}/{p.equilibration_time:g} τ at T = {p.temperature:g} "
                     f"({time.perf_counter() - started:.0f} s)")
        while len(self.samples) < index:
            if self.samples:
                self._advance(p.spacing)
            self.samples.append(sim.wrap(self.positions, p.box))
            self._save()
        return self.samples[index - 1]


class _Serial(concurrent.futures.Executor):
    """Runs tasks in this process when they are submitted (--workers 0)."""

    def submit(self, fn, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


@contextlib.contextmanager
def executor_for(workers: int, scheduler: str | None):
    """The executor of the NVE runs: a Dask cluster's workers (``scheduler``), this process
    (``workers`` = 0) or local processes (spawned, not forked: this process runs JAX).

    On leaving, local processes finish or drop their queued runs; a Dask client is closed,
    which makes the scheduler forget the runs it still holds for us.
    """
    if scheduler:
        try:
            from dask.distributed import Client
        except ImportError as error:
            raise SystemExit("error: --scheduler needs dask.distributed: pip install 'eignn_jax[sim]'") from error
        client = Client(scheduler)
        try:
            # pure=False: every run is its own task, even if two had equal arguments.
            yield client.get_executor(pure=False)
        finally:
            client.close()
    elif workers == 0:
        yield _Serial()
    else:
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def finish(path: pathlib.Path, protocol: sim.Protocol, positions, inherent, results) -> dict:
    """Average the runs of one configuration and write its file; returns timing figures."""
    from eignn_jax import dataset
    displacements = np.stack([r.displacements for r in results])  # [R, T, N, 3]
    broken = np.stack([r.broken for r in results])
    config = dataset.Configuration(
        path="",
        types=protocol.types,
        positions=positions,
        box=protocol.box,
        inherent=inherent,
        propensity=np.linalg.norm(displacements, axis=-1).mean(axis=0).astype(np.float32),
        times=protocol.sample_times,
        extras={"md_disp": displacements.mean(axis=0).astype(np.float32),
                "bb_prop": broken.mean(axis=0).astype(np.float32)},
    )
    dataset.write_configuration(path, config)
    return {"md_seconds": sum(r.md_seconds for r in results), "task_seconds": sum(r.seconds for r in results)}


def generate(args, protocol: sim.Protocol, tau_alpha: float) -> None:
    out = pathlib.Path(args.out)
    prepare_folder(out, protocol, args.configs, tau_alpha,
                   {"chain": args.chain_threads or None, "runs": args.run_threads})
    todo = [i for i in range(1, args.configs + 1) if not (out / file_name(protocol, i)).exists()]
    done_before = args.configs - len(todo)
    if not todo:
        print(f"all {args.configs} configurations already in {out}", flush=True)
        return
    print(f"{done_before} configuration(s) already done; {len(todo)} to go", flush=True)
    with executor_for(args.workers, args.scheduler) as executor:
        _run_all(args, protocol, out, todo, executor)


def _run_all(args, protocol: sim.Protocol, out: pathlib.Path, todo: list[int], executor) -> None:
    """Walk the chain to every configuration in ``todo``, hand its runs to ``executor`` and
    write each configuration's file as soon as all its runs are back."""
    from eignn_jax import dataset, equilibrium

    chain = Chain(out / CHAIN_FILE, protocol, args.chain_threads or None)
    pending: dict[int, tuple] = {}

    def collect(block: bool) -> None:
        for index in sorted(pending):
            positions, inherent, futures, started = pending[index]
            if not block and not all(f.done() for f in futures):
                continue
            results = [f.result() for f in futures]
            timing = finish(out / file_name(protocol, index), protocol, positions, inherent, results)
            del pending[index]
            summary = {"md_seconds_per_run": round(timing["md_seconds"] / len(results), 2),
                       "task_seconds_per_run": round(timing["task_seconds"] / len(results), 2),
                       "wall_seconds": round(time.perf_counter() - started, 1)}
            print(f"[{index}/{args.configs}] {file_name(protocol, index)}: {json.dumps(summary)}", flush=True)

    for index in range(1, max(todo) + 1):
        positions = chain.sample(index)
        if index not in todo:
            continue
        started = time.perf_counter()
        futures = [executor.submit(sim.iso_configurational_run,
                                   protocol.run_task(positions, (protocol.seed, index, run), args.run_threads))
                   for run in range(protocol.runs)]
        # While the runs go, this process finds the inherent structure (JAX).
        probe = dataset.Configuration(path="", types=protocol.types, positions=positions, box=protocol.box)
        inherent, _ = equilibrium.compute(probe, "inherent")
        pending[index] = (positions, inherent, futures, started)
        collect(block=False)
    collect(block=True)


def check_data_folder(args, protocol: sim.Protocol, tau_alpha: float) -> dict:
    """τ_α from ``args.runs`` NVE runs at each of the first ``args.configs`` files of
    ``args.check_data`` (fresh velocities at the protocol's temperature, 8 τ_α long)."""
    from eignn_jax import dataset
    paths = dataset.list_configurations(args.check_data)[:args.configs]
    if not paths:
        raise SystemExit(f"error: no configuration files in {args.check_data}")
    configurations = [dataset.load_configuration(p) for p in paths]
    steps = sim.log_spaced_steps(8.0 * tau_alpha, samples=30, dt=protocol.dt)
    tasks = [protocol.run_task(c.positions, (protocol.seed, k, run), args.run_threads, steps, c.types, c.box)
             for k, c in enumerate(configurations) for run in range(args.runs)]
    with executor_for(args.workers, args.scheduler) as executor:
        results = [f.result() for f in [executor.submit(sim.iso_configurational_run, t) for t in tasks]]
    report = sim.relaxation_report(steps, protocol.dt, results, [t.types for t in tasks],
                                   [t.seed[1] for t in tasks])
    return {"folder": str(args.check_data), "files": len(paths), "temperature": protocol.temperature,
            "engine": sim.engine_version(protocol.platform), **report}


def write_report(path: str | None, report: dict) -> None:
    """Write a --check / --check-data report as JSON (atomically) if a path was given."""
    if path:
        from eignn_jax import files
        files.atomic_write(path, json.dumps(report, indent=1) + "\n")


def print_check(report: dict, reference: dict | None) -> None:
    tau_ref = sim.REFERENCE["tau_alpha"].get(round(report["temperature"], 4))
    rows = [("NVE drift / particle / 1e4 steps (dt = %g)" % report["dt"],
             f"{report['drift_per_particle_per_1e4_steps']:.2e}",
             f"≈ {sim.REFERENCE['drift_per_particle_per_1e4_steps']:.0e} (magnitude)"),
            ("tau_alpha (F_s, q = 7.25, A)",
             f"{report['tau_alpha']:.2f} (origins {report['tau_alpha_origin_mean']:.1f} "
             f"± {report['tau_alpha_origin_stderr']:.1f})",
             f"{tau_ref}" if tau_ref is not None else "-")]
    for name, peak in report["g_first_peaks"].items():
        ref = "-"
        if reference and name in reference.get("g_first_peaks", {}):
            other = reference["g_first_peaks"][name]
            ref = f"r = {other['r']:.3f}, g = {other['g']:.2f} (reference data)"
        rows.append((f"g_{name} first peak", f"r = {peak['r']:.3f}, g = {peak['g']:.2f}", ref))
    width = max(len(r[0]) for r in rows)
    print(f"\ncheck: N = {report['n']}, T = {report['temperature']}, {report['nve_steps']} NVE steps "
          f"({report['nve_steps_per_second']:.0f} steps/s), {report['engine']}")
    print(f"{'quantity':<{width}}  {'measured':<24}  reference")
    for name, value, ref in rows:
        print(f"{name:<{width}}  {value:<24}  {ref}")
    print("F_s(t):", " ".join(f"{t:.3g}:{f:.3f}" for t, f in zip(report["f_s"]["times"], report["f_s"]["values"])))


def reference_peaks(folder: str, limit: int = 16) -> dict:
    """g_ab first peaks over the initial positions of up to ``limit`` files of a data folder."""
    from eignn_jax import dataset
    paths = dataset.list_configurations(folder)[:limit]
    total = None
    for path in paths:
        config = dataset.load_configuration(path)
        r, g = sim.pair_correlation(config.positions, config.types, config.box)
        total = g if total is None else {k: total[k] + g[k] for k in g}
    return {"files": len(paths), "g_first_peaks": {k: dict(zip(("r", "g"), sim.first_peak(r, v / len(paths))))
                                                  for k, v in total.items()}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (generation), or the JSON report (--check)")
    parser.add_argument("--check", action="store_true", help="validation run: NVE drift, g(r) peaks, tau_alpha")
    parser.add_argument("--n", type=int, default=1000, help="particles (default 1000)")
    parser.add_argument("--temperature", type=float, default=0.64)
    parser.add_argument("--tau-alpha", type=float, default=None,
                        help="tau_alpha used as the unit of --equilibrate and --spacing "
                             "(default: the reference value at 0.64 / 0.56, else required)")
    parser.add_argument("--equilibrate", type=float, default=100.0, help="equilibration, in tau_alpha (default 100)")
    parser.add_argument("--spacing", type=float, default=10.0, help="between configurations, in tau_alpha (default 10)")
    parser.add_argument("--configs", type=int, default=None,
                        help="configurations to generate (default 20); with --check-data, files used (default 8)")
    parser.add_argument("--runs", type=int, default=None,
                        help="NVE runs per configuration (default 8); with --check-data, per file (default 2)")
    parser.add_argument("--times", default=",".join(f"{t:g}" for t in sim.DEFAULT_TIMES),
                        help="comma-separated sample times (tau)")
    parser.add_argument("--dt", type=float, default=0.005)
    parser.add_argument("--melt-temperature", type=float, default=2.0)
    parser.add_argument("--melt-time", type=float, default=20.0, help="tau")
    parser.add_argument("--friction", type=float, default=1.0, help="Langevin friction of the chain (1/tau)")
    parser.add_argument("--bond-in", type=float, default=1.4, help="bond if r_ij(0) < this x sigma_ab")
    parser.add_argument("--bond-out", type=float, default=1.7, help="broken if r_ij(t) > this x sigma_ab")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--platform", default="CPU", help="OpenMM platform: CPU, CUDA, OpenCL, Reference")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="local worker processes for the NVE runs (0: in this process)")
    parser.add_argument("--run-threads", type=int, default=1, help="OpenMM CPU threads per worker")
    parser.add_argument("--chain-threads", type=int, default=1,
                        help="OpenMM CPU threads of the chain (default 1: with more, OpenMM sums forces in a "
                             "varying order and the chaotic dynamics make the data differ bit for bit from run "
                             "to run; 0: all cores)")
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:8786)")
    parser.add_argument("--segments", type=int, default=8, help="--check: NVE segments (time origins)")
    parser.add_argument("--segment-time", type=float, default=None,
                        help="--check: length of each NVE segment, tau (default 5 tau_alpha)")
    parser.add_argument("--reference-data", default=None,
                        help="--check: a data folder whose g(r) peaks are printed beside ours")
    parser.add_argument("--check-data", default=None, metavar="FOLDER",
                        help="tau_alpha from NVE runs started at the configurations of FOLDER (any data set, "
                             "e.g. another pipeline's) at --temperature, over 8 tau_alpha")
    args = parser.parse_args(argv)
    check_data = args.check_data is not None
    args.configs = args.configs if args.configs is not None else (8 if check_data else 20)
    args.runs = args.runs if args.runs is not None else (2 if check_data else 8)

    try:
        import openmm  # noqa: F401
    except ImportError:
        sys.exit("error: OpenMM is not installed: pip install 'eignn_jax[sim]'")
    tau_alpha = args.tau_alpha or sim.REFERENCE["tau_alpha"].get(round(args.temperature, 4))
    if tau_alpha is None:
        sys.exit(f"error: no reference tau_alpha at T = {args.temperature}: pass --tau-alpha")
    try:
        protocol = sim.Protocol(
            n=args.n, temperature=args.temperature, dt=args.dt, melt_temperature=args.melt_temperature,
            melt_time=args.melt_time, equilibration_time=round(args.equilibrate * tau_alpha, 6),
            spacing=round(args.spacing * tau_alpha, 6), friction=args.friction, runs=args.runs,
            times=tuple(float(t) for t in args.times.split(",")), bond_in=args.bond_in, bond_out=args.bond_out,
            seed=args.seed, platform=args.platform)
    except ValueError as error:
        sys.exit(f"error: {error}")

    if check_data:
        report = check_data_folder(args, protocol, tau_alpha)
        print(f"\ncheck-data: {report['files']} files x {args.runs} runs from {args.check_data}, T = "
              f"{args.temperature:g}: tau_alpha {report['tau_alpha']:.2f} of the mean F_s, "
              f"{report['tau_alpha_configuration_mean']:.2f} ± {report['tau_alpha_configuration_stderr']:.2f} "
              f"per configuration "
              f"(reference {sim.REFERENCE['tau_alpha'].get(round(args.temperature, 4), '-')})")
        write_report(args.out, report)
        return
    if args.check:
        report = sim.check(protocol, segments=args.segments,
                           segment_time=args.segment_time or 5.0 * tau_alpha, threads=args.chain_threads or None)
        reference = reference_peaks(args.reference_data) if args.reference_data else None
        if reference:
            report["reference_data"] = {"folder": args.reference_data, **reference}
        print_check(report, reference)
        write_report(args.out, report)
        return
    if not args.out:
        sys.exit("error: --out is required (or --check)")
    generate(args, protocol, tau_alpha)


if __name__ == "__main__":
    main()
