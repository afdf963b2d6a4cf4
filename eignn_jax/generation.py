"""Labelled Kob–Andersen data sets from OpenMM simulations, and checks of the protocol.

:func:`generate` walks one Markov chain (:class:`Chain`) and hands the NVE runs of each
configuration to an executor (this process, local processes or a Dask cluster:
:class:`Execution`); each configuration is written, atomically, as ``N{n}T{T}_{i}.npz`` in
the GlassBench layout, with a meta.json holding every parameter and the engine version.
Existing files are skipped and the chain resumes from its checkpoint
(``<out>/.simulate/chain.npz``), so a killed run continues where it stopped when started
again with the same protocol. The physics is in :mod:`eignn_jax.physics.md` (the engine and
protocol) and :mod:`eignn_jax.physics.observables`; ``python -m experiments.simulate`` is
the command line.

**Labels** at the sample times t_k = round(times_k / dt) dt, with Δr_i = r_i(t) − r_i(0)
unwrapped: ``md_prop`` = ⟨|Δr_i|⟩ and ``md_disp`` = ⟨Δr_i⟩ over runs; ``bb_prop`` =
⟨fraction of the bonds of i at t = 0 that are broken at t⟩ (bonds r_ij(0) < ``bond_in`` σ_ab,
broken when r_ij(t) > ``bond_out`` σ_ab; see :mod:`eignn_jax.physics.observables`);
``md_prop_half`` = ``md_prop`` of the first and of the second half of the runs (R ≥ 2), for
the split-half noise ceiling. Both
cutoffs are recorded in every data set's meta.json.

**Checks.** :func:`check` runs the protocol's chain and then NVE segments, and measures the
energy drift, the g_ab(r) first peaks and τ_α against :data:`REFERENCE`;
:func:`check_data_folder` measures τ_α from runs started at stored configurations.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import pathlib
import time
from collections.abc import Callable

import numpy as np

from eignn_jax import dataset, equilibrium, files, progress
from eignn_jax.physics import md, observables, periodic

__all__ = [
    "CHAIN_FILE",
    "REFERENCE",
    "Chain",
    "Execution",
    "GenerationError",
    "check",
    "check_data_folder",
    "executor_for",
    "file_name",
    "generate",
    "meta_for",
    "prepare_folder",
    "reference_peaks",
    "reference_tau_alpha",
]

CHAIN_FILE = pathlib.Path(".simulate") / "chain.npz"
"""The chain's checkpoint, relative to the output folder."""

REFERENCE = {
    "tau_alpha": {0.64: 7.8, 0.56: 22.6},
    "drift_per_particle_per_1e4_steps": 1e-4,
}
"""Values measured for N = 1000 (DESIGN.md §2): τ_α by temperature, NVE drift at dt = 0.005."""


def reference_tau_alpha(temperature: float) -> float | None:
    """τ_α (τ) of :data:`REFERENCE` at ``temperature`` (ε_AA / k_B), or None where it has none."""
    return REFERENCE["tau_alpha"].get(round(temperature, 4))


class GenerationError(Exception):
    """A request that cannot be carried out: a folder made with another protocol, no
    configuration files to check, or an optional dependency missing."""


def _log(message: str) -> None:
    """Print a progress line at once: stdout is often a pipe or a log file."""
    print(message, flush=True)


@dataclasses.dataclass(frozen=True)
class Execution:
    """Where the NVE runs go and how many OpenMM CPU threads each part uses.

    workers: local worker processes for the runs (0: in this process, the default here,
        since spawned workers re-import the caller's main module, which must then be
        guarded by ``if __name__ == "__main__"``).
    scheduler: address of a running Dask scheduler (``tcp://host:8786``); overrides workers.
    run_threads: OpenMM CPU threads per run (None: all cores).
    chain_threads: OpenMM CPU threads of the chain (None: all cores). With one thread each,
        the same protocol on the same OpenMM build gives the same files bit for bit; with
        more, OpenMM sums forces in a varying order and the chaotic dynamics amplify it.
    """

    workers: int = 0
    scheduler: str | None = None
    run_threads: int | None = 1
    chain_threads: int | None = 1

    @property
    def threads(self) -> dict:
        """The thread counts as recorded in meta.json."""
        return {"chain": self.chain_threads, "runs": self.run_threads}


def file_name(protocol: md.Protocol, index: int) -> str:
    """``N{n}T{T}_{index}.npz``: the file of configuration ``index`` (1-based)."""
    return f"N{protocol.n}T{protocol.temperature:g}_{index}.npz"


def meta_for(protocol: md.Protocol, configs: int, tau_alpha: float, threads: dict) -> dict:
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
        "engine": md.engine_version(protocol.platform),
        "types": "1=A,2=B as GlassBench",
        "configurations": configs,
        dataset.META_TAU_ALPHA: tau_alpha,
        "protocol": dataclasses.asdict(protocol),
        "threads": threads,
        "thermostat": "LangevinMiddleIntegrator (chain only); NVE velocity Verlet for the runs",
        "md_prop": "mean over runs of |r_i(t) - r_i(0)|, unwrapped, [T, N]",
        "md_disp": "mean over runs of r_i(t) - r_i(0), [T, N, 3]",
        dataset.KEY_HALF_PROPENSITY: (f"md_prop of runs 1..{protocol.runs // 2} and of runs "
                                      f"{protocol.runs // 2 + 1}..{protocol.runs}, [2, T, N] (split-half noise ceiling)"),
        "bb_prop": (f"mean over runs of the fraction of i's bonds (r_ij(0) < {protocol.bond_in} sigma_ab) "
                    f"with r_ij(t) > {protocol.bond_out} sigma_ab, [T, N]"),
        "initial_positions_inherent": "eignn_jax.physics.minimise.inherent_structure (default method), max |F| < 1e-4",
    }


def prepare_folder(out: pathlib.Path, protocol: md.Protocol, configs: int, tau_alpha: float, threads: dict,
                   command: str | None = None) -> None:
    """Create ``out`` with meta.json, or check that an existing meta.json has the same protocol.

    meta.json is rewritten when more configurations are asked for than it records;
    ``command`` (the command line that made the data) is stored in it.
    Raises GenerationError if ``out`` was made with another protocol.
    """
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("protocol") != json.loads(json.dumps(dataclasses.asdict(protocol))):
            raise GenerationError(f"{out} was made with another protocol ({meta_path}); "
                                  "use a new --out or the same arguments")
        if old.get("configurations", 0) >= configs:
            return
    meta = meta_for(protocol, configs, tau_alpha, threads)
    meta["command"] = command
    files.atomic_write(meta_path, json.dumps(meta, indent=1) + "\n")


class Chain:
    """The equilibrium Markov chain, checkpointed after every segment.

    State: positions/velocities [N, 3], time spent at T (τ), and the sampled configurations
    so far (positions [k, N, 3], wrapped). Segments are at most one spacing long and each
    gets its own thermostat seed, so resuming from a checkpoint reproduces the same chain up
    to the nondeterminism of the engine's float summation.
    """

    def __init__(self, path: pathlib.Path, protocol: md.Protocol, threads: int | None,
                 log: Callable[[str], None] = _log):
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
            self.system = md.build_system(self.protocol.types, self.protocol.box)
        return self.system

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        n = self.protocol.n
        samples = np.asarray(self.samples).reshape(-1, n, 3)
        files.atomic_savez(self.path, {"positions": self.positions, "velocities": self.velocities,
                                       "time_at_t": np.float64(self.time_at_t), "samples": samples})

    def _advance(self, duration: float) -> None:
        p = self.protocol
        segment = int(round(self.time_at_t / p.dt))  # a seed per starting point
        self.positions, self.velocities = md.langevin_segment(
            self._system(), self.positions, self.velocities, p.temperature, duration, p,
            md.openmm_seed(p.seed, 4, segment), self.threads)
        self.time_at_t += duration

    def sample(self, index: int) -> np.ndarray:
        """Configuration ``index`` (1-based) [N, 3] float64, wrapped; runs the chain as far as needed."""
        p = self.protocol
        if self.positions is None:
            self.log(f"melting: lattice, minimisation, {p.melt_time:g} τ at T = {p.melt_temperature:g}")
            self.positions, self.velocities = md.melt(self._system(), p, self.threads)
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
            self.samples.append(periodic.wrap(self.positions, p.box))
            self._save()
        return self.samples[index - 1]


class _Serial(concurrent.futures.Executor):
    """Runs tasks in this process when they are submitted (``workers`` = 0)."""

    def submit(self, fn, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


@contextlib.contextmanager
def executor_for(execution: Execution):
    """The executor of the NVE runs: a Dask cluster's workers (``execution.scheduler``), this
    process (``workers`` = 0) or local processes (spawned, not forked: this process runs JAX).

    On leaving, local processes finish or drop their queued runs; a Dask client is closed,
    which makes the scheduler forget the runs it still holds for us. Raises GenerationError
    if a scheduler is given and dask.distributed is not installed.
    """
    if execution.scheduler:
        try:
            from dask.distributed import Client
        except ImportError as error:
            raise GenerationError("--scheduler needs dask.distributed: pip install 'eignn_jax[sim]'") from error
        client = Client(execution.scheduler)
        try:
            # pure=False: every run is its own task, even if two had equal arguments.
            yield client.get_executor(pure=False)
        finally:
            client.close()
    elif execution.workers == 0:
        yield _Serial()
    else:
        pool = concurrent.futures.ProcessPoolExecutor(execution.workers,
                                                      mp_context=multiprocessing.get_context("spawn"))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _finish(path: pathlib.Path, protocol: md.Protocol, positions, inherent, results) -> dict:
    """Average the runs of one configuration and write its file; returns timing figures."""
    displacements = np.stack([r.displacements for r in results])  # [R, T, N, 3]
    broken = np.stack([r.broken for r in results])
    distances = np.linalg.norm(displacements, axis=-1)  # [R, T, N]
    extras = {"md_disp": displacements.mean(axis=0).astype(np.float32),
              "bb_prop": broken.mean(axis=0).astype(np.float32)}
    if len(results) >= 2:
        # Two disjoint halves of the runs: their agreement bounds what any model can reach
        # (eignn_jax.metrics.split_half_ceiling).
        half = len(results) // 2
        extras[dataset.KEY_HALF_PROPENSITY] = np.stack(
            [distances[:half].mean(axis=0), distances[half:].mean(axis=0)]).astype(np.float32)
    config = dataset.Configuration(
        path="",
        types=protocol.types,
        positions=positions,
        box=protocol.box,
        inherent=inherent,
        propensity=distances.mean(axis=0).astype(np.float32),
        times=protocol.sample_times,
        extras=extras,
    )
    dataset.write_configuration(path, config)
    return {"md_seconds": sum(r.md_seconds for r in results), "task_seconds": sum(r.seconds for r in results)}


def generate(out, protocol: md.Protocol, configs: int, tau_alpha: float, execution: Execution = Execution(),
             command: str | None = None, log: Callable[[str], None] = _log) -> list[pathlib.Path]:
    """Make (or complete) the data set of ``configs`` configurations of ``protocol`` in ``out``.

    out: folder (created if needed).  tau_alpha: the τ_α (τ) the protocol's times were
    chosen with, recorded in meta.json.  command: the command line recorded in meta.json.
    log: receives one line per step of the chain and per configuration written; the count
      of configurations written also goes to stderr (:func:`eignn_jax.progress.progress`).
    Returns the paths of all ``configs`` files. Raises GenerationError if ``out`` holds
    another protocol's data (or see :func:`executor_for`).
    """
    out = pathlib.Path(out)
    prepare_folder(out, protocol, configs, tau_alpha, execution.threads, command)
    paths = [out / file_name(protocol, i) for i in range(1, configs + 1)]
    todo = [i for i, path in enumerate(paths, start=1) if not path.exists()]
    if not todo:
        log(f"all {configs} configurations already in {out}")
        return paths
    log(f"{configs - len(todo)} configuration(s) already done; {len(todo)} to go")
    with executor_for(execution) as executor, \
            progress.progress(len(todo), "configurations", unit="configuration") as shown:
        _run_all(protocol, out, configs, todo, executor, execution, log, shown.update)
    return paths


def _run_all(protocol: md.Protocol, out: pathlib.Path, configs: int, todo: list[int], executor,
             execution: Execution, log: Callable[[str], None], written: Callable[[], None]) -> None:
    """Walk the chain to every configuration in ``todo``, hand its runs to ``executor`` and
    write each configuration's file as soon as all its runs are back (then call ``written``)."""
    chain = Chain(out / CHAIN_FILE, protocol, execution.chain_threads, log)
    pending: dict[int, tuple] = {}

    def collect(block: bool) -> None:
        for index in sorted(pending):
            positions, inherent, futures, started = pending[index]
            if not block and not all(f.done() for f in futures):
                continue
            results = [f.result() for f in futures]
            timing = _finish(out / file_name(protocol, index), protocol, positions, inherent, results)
            del pending[index]
            summary = {"md_seconds_per_run": round(timing["md_seconds"] / len(results), 2),
                       "task_seconds_per_run": round(timing["task_seconds"] / len(results), 2),
                       "wall_seconds": round(time.perf_counter() - started, 1)}
            log(f"[{index}/{configs}] {file_name(protocol, index)}: {json.dumps(summary)}")
            written()

    for index in range(1, max(todo) + 1):
        positions = chain.sample(index)
        if index not in todo:
            continue
        started = time.perf_counter()
        futures = [executor.submit(md.iso_configurational_run,
                                   protocol.run_task(positions, (protocol.seed, index, run), execution.run_threads))
                   for run in range(protocol.runs)]
        # While the runs go, this process finds the inherent structure (JAX).
        probe = dataset.Configuration(path="", types=protocol.types, positions=positions, box=protocol.box)
        inherent, _ = equilibrium.compute(probe, "inherent")
        pending[index] = (positions, inherent, futures, started)
        collect(block=False)
    collect(block=True)


# ----------------------------------------------------------------------------
# Checks of the protocol: energy conservation, g(r), τ_α
# ----------------------------------------------------------------------------


def check(protocol: md.Protocol, segments: int = 8, segment_time: float = 40.0, samples: int = 24,
          threads: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Melt, equilibrate (``protocol.equilibration_time``), then ``segments`` consecutive NVE
    segments of ``segment_time`` τ, each a time origin for F_s(q = 7.25, t) of the A particles
    (positions read at ``samples`` log-spaced times) and a snapshot for g(r); the total
    energy at every read gives the NVE drift over the whole NVE run.

    threads: OpenMM CPU threads (None: all cores).
    Returns a JSON-ready dict: drift per particle per 10⁴ steps, g_ab first peaks,
    τ_α (of the mean F_s, and of each origin alone with their standard error), F_s(t), the
    raw NVE step rate and the protocol.
    """
    import openmm

    started = time.perf_counter()
    types, box = protocol.types, protocol.box
    system = md.build_system(types, box)
    log(f"melting at T = {protocol.melt_temperature} for {protocol.melt_time} τ")
    positions, velocities = md.melt(system, protocol, threads)
    log(f"equilibrating at T = {protocol.temperature} for {protocol.equilibration_time} τ")
    positions, velocities = md.langevin_segment(system, positions, velocities, protocol.temperature,
                                                protocol.equilibration_time, protocol,
                                                md.openmm_seed(protocol.seed, 3), threads)
    steps = observables.log_spaced_steps(segment_time, samples, protocol.dt)
    integrator = openmm.VerletIntegrator(protocol.dt)
    context = md.make_context(system, integrator, protocol.platform, threads)
    context.setPositions(positions)
    # Langevin dynamics does not conserve momentum: started from its velocities, the NVE
    # run would drift as a whole (≈ 0.2 σ in τ_α at N = 1000) and make F_s decay too early.
    context.setVelocities(velocities - velocities.mean(axis=0))
    is_a = types == 1
    energy_steps, energies, correlations, g_sum = [], [], [], None
    md_seconds, total = 0.0, 0
    for segment in range(segments):
        state = context.getState(getPositions=True, getEnergy=True)
        origin = np.asarray(state.getPositions(asNumpy=True)._value, np.float64)
        energy_steps.append(total)
        energies.append(state.getPotentialEnergy()._value + state.getKineticEnergy()._value)
        r, g = observables.pair_correlation(origin, types, box)
        g_sum = g if g_sum is None else {k: g_sum[k] + g[k] for k in g}
        frames, done = [], 0
        for step in steps:
            tick = time.perf_counter()
            integrator.step(int(step) - done)
            md_seconds += time.perf_counter() - tick
            done = int(step)
            state = context.getState(getPositions=True, getEnergy=True)
            frames.append(np.asarray(state.getPositions(asNumpy=True)._value, np.float64)[is_a])
            energy_steps.append(total + done)
            energies.append(state.getPotentialEnergy()._value + state.getKineticEnergy()._value)
        total += done
        correlations.append(observables.self_intermediate_scattering(np.stack(frames) - origin[is_a]))
        log(f"NVE segment {segment + 1}/{segments}: F_s(t_max) = {correlations[-1][-1]:.3f}")
    times = steps * protocol.dt
    f_s = np.mean(correlations, axis=0)
    # τ_α of each time origin alone: their spread shows how far one chain of N particles
    # can be from the ensemble value (dynamic heterogeneity is large at N = 1000).
    per_origin = np.array([observables.relaxation_time(times, c) for c in correlations])
    peaks = {k: dict(zip(("r", "g"), observables.first_peak(r, v / segments))) for k, v in g_sum.items()}
    energies = np.asarray(energies)
    origin_mean, origin_stderr = observables.mean_and_stderr(per_origin)
    return {
        "temperature": protocol.temperature,
        "n": protocol.n,
        "dt": protocol.dt,
        "nve_steps": int(total),
        "drift_per_particle_per_1e4_steps": observables.energy_drift(np.asarray(energy_steps), energies,
                                                                     protocol.n),
        "energy_per_particle_mean": float(energies.mean() / protocol.n),
        "energy_per_particle_std": float(energies.std() / protocol.n),
        "g_first_peaks": peaks,
        "tau_alpha": observables.relaxation_time(times, f_s),
        "tau_alpha_per_origin": per_origin.tolist(),
        "tau_alpha_origin_mean": origin_mean,
        "tau_alpha_origin_stderr": origin_stderr,
        "f_s": {"q": observables.SELF_SCATTERING_Q, "times": times.tolist(), "values": f_s.tolist(),
                "origins": segments},
        "nve_steps_per_second": total / md_seconds if md_seconds > 0 else float("nan"),
        "seconds": time.perf_counter() - started,
        "engine": md.engine_version(protocol.platform),
        "protocol": dataclasses.asdict(protocol),
    }


def check_data_folder(folder, protocol: md.Protocol, tau_alpha: float, configs: int,
                      execution: Execution = Execution()) -> dict:
    """τ_α from ``protocol.runs`` NVE runs at each of the first ``configs`` files of ``folder``
    (fresh velocities at the protocol's temperature, 8 ``tau_alpha`` (τ) long).

    Returns a JSON-ready dict (:func:`eignn_jax.physics.observables.relaxation_report`, with
    the folder, file count, temperature and engine). Raises ``dataset.DataError`` if the
    folder does not exist or holds no configuration files, GenerationError if ``configs``
    selects none.
    """
    paths = dataset.list_configurations(folder)[:configs]
    if not paths:
        raise GenerationError(f"no configuration files in {folder}")
    configurations = [dataset.load_configuration(p) for p in paths]
    steps = observables.log_spaced_steps(8.0 * tau_alpha, samples=30, dt=protocol.dt)
    tasks = [protocol.run_task(c.positions, (protocol.seed, k, run), execution.run_threads, steps, c.types, c.box)
             for k, c in enumerate(configurations) for run in range(protocol.runs)]
    with executor_for(execution) as executor:
        results = [f.result() for f in [executor.submit(md.iso_configurational_run, t) for t in tasks]]
    report = observables.relaxation_report(np.asarray(steps) * protocol.dt, [r.displacements for r in results],
                                           [t.types for t in tasks], [t.seed[1] for t in tasks])
    return {"folder": str(folder), "files": len(paths), "temperature": protocol.temperature,
            "engine": md.engine_version(protocol.platform), **report}


def reference_peaks(folder, limit: int = 16) -> dict:
    """g_ab first peaks over the initial positions of up to ``limit`` files of a data folder.

    Returns {"files": count, "g_first_peaks": {"AA" | "AB" | "BB": {"r": σ, "g": height}}}.
    """
    paths = dataset.list_configurations(folder)[:limit]
    total = None
    for path in paths:
        config = dataset.load_configuration(path)
        r, g = observables.pair_correlation(config.positions, config.types, config.box)
        total = g if total is None else {k: total[k] + g[k] for k in g}
    return {"files": len(paths), "g_first_peaks": {k: dict(zip(("r", "g"), observables.first_peak(r, v / len(paths))))
                                                  for k, v in total.items()}}
