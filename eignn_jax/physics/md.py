"""Molecular dynamics of the Kob–Andersen mixture with OpenMM: the system, the Markov
chain's segments and the iso-configurational NVE runs.

The optional extra ``pip install eignn_jax[sim]`` provides OpenMM; this module (and
:func:`eignn_jax.generation.check`, which steps an NVE integrator itself) imports it only
inside the functions that run it, so the package imports without it.

**Units.** Reduced LJ units (σ_AA, ε_AA, m, τ) map exactly onto OpenMM's: reading nm as σ,
kJ/mol as ε and amu as m makes OpenMM's ps equal to τ (1 kJ/mol = 1 amu nm² ps⁻²). Only the
thermostat needs converting: T_K = T / k_B with k_B = 0.00831446261815324 kJ/(mol K)
(:data:`BOLTZMANN`, the exact SI value OpenMM uses).

**Force field.** The truncated and shifted KA pair potential of
:mod:`eignn_jax.physics.kob_andersen` (its table and expression: one definition) as one
``CustomNonbondedForce`` whose per-particle parameter ``b`` is 1 for B particles and 0 for
A; ε_ab, σ_ab are picked with ``select()`` on ``b1 + b2`` (tabulated functions are slower
on the CPU platform), the per-pair cutoff 2.5 σ_ab is a ``step()`` inside the expression,
and the global cutoff is the longest, 2.5 σ_AA, with no switching function and no
long-range correction.

**Protocol** (:class:`Protocol`). One Markov chain per data set: particles on a simple-cubic
lattice (types shuffled), OpenMM's energy minimiser, ``melt_time`` at ``melt_temperature``
(:func:`melt`), ``equilibration_time`` at T, then one configuration every ``spacing``
(Langevin dynamics, :func:`langevin_segment`, ``LangevinMiddleIntegrator``, friction
``friction`` τ⁻¹; the friction only sets how the chain moves between samples, which are
canonical whatever its value). For each configuration, ``runs`` NVE trajectories (velocity
Verlet, ``dt``) from the same positions with fresh Maxwell–Boltzmann velocities of zero
total momentum (drawn per component from N(0, T), then the mean velocity subtracted: for
equal masses exactly the Maxwell–Boltzmann distribution restricted to zero momentum, not
rescaled); the integrator steps in blocks between the sample times, one positions read
per sample time (:func:`iso_configurational_run`). Each run's displacements
Δr_i = r_i(t) − r_i(0) come from OpenMM's unwrapped positions (OpenMM never wraps the
positions it integrates), its broken-bond fractions from
:func:`eignn_jax.physics.observables.broken_bond_fraction`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Sequence

import numpy as np

from eignn_jax.physics import kob_andersen, observables

__all__ = [
    "BOLTZMANN",
    "DEFAULT_TIMES",
    "Protocol",
    "RunResult",
    "RunTask",
    "build_system",
    "engine_version",
    "iso_configurational_run",
    "kelvin",
    "langevin_segment",
    "lattice_positions",
    "make_context",
    "maxwell_boltzmann",
    "melt",
    "openmm_seed",
    "sample_steps",
]

BOLTZMANN = 1.380649e-23 * 6.02214076e23 / 1000.0
"""k_B in kJ/(mol K) (exact SI); reduced temperature T is T / BOLTZMANN kelvin in OpenMM."""

DEFAULT_TIMES = (0.13, 0.4, 1.3, 4.0, 8.0, 13.0, 25.0, 40.0)
"""Sample times (τ) of the dev set ``ka3d_T064_N1000``."""


# ----------------------------------------------------------------------------
# The system
# ----------------------------------------------------------------------------


def kelvin(temperature: float) -> float:
    """OpenMM thermostat temperature (K) of the reduced temperature T (ε_AA / k_B)."""
    return float(temperature) / BOLTZMANN


def build_system(types: np.ndarray, box: np.ndarray):
    """An ``openmm.System``: unit masses, cubic periodic box, the KA force (see module docstring).

    types: [N] int, 1 (A) / 2 (B).  box: [3] float, σ; every side must exceed 2 × 2.5 σ.
    Raises ValueError for other types or a smaller box.
    """
    import openmm

    types = np.asarray(types)
    box = np.asarray(box, dtype=np.float64)
    if not np.all((types == 1) | (types == 2)):
        raise ValueError("types must be 1 (A) or 2 (B)")
    if np.any(box <= 2.0 * kob_andersen.MAX_CUTOFF):
        raise ValueError(f"every box side must exceed twice the cutoff {kob_andersen.MAX_CUTOFF} σ, got {box}")
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(box[0], 0, 0), openmm.Vec3(0, box[1], 0),
                                        openmm.Vec3(0, 0, box[2]))
    force = openmm.CustomNonbondedForce(kob_andersen.openmm_expression())
    force.addPerParticleParameter("b")
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(kob_andersen.MAX_CUTOFF)
    force.setUseSwitchingFunction(False)
    force.setUseLongRangeCorrection(False)
    for t in types:
        system.addParticle(1.0)
        force.addParticle([1.0 if t == 2 else 0.0])
    system.addForce(force)
    return system


def make_context(system, integrator, platform: str = "CPU", threads: int | None = None):
    """An ``openmm.Context`` on the named platform; ``threads`` (CPU platform) defaults to OpenMM's."""
    import openmm

    properties = {}
    if platform == "CPU" and threads:
        properties["Threads"] = str(int(threads))
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), properties)


def engine_version(platform: str = "CPU") -> str:
    """``"openmm <version> <platform>"``, recorded with every data set."""
    import openmm

    return f"openmm {openmm.__version__} {platform}"


def lattice_positions(n: int, box: np.ndarray) -> np.ndarray:
    """[n, 3] float64: the first n sites of a simple-cubic lattice filling ``box`` [3] (σ)."""
    box = np.asarray(box, dtype=np.float64)
    per_side = math.ceil(n ** (1.0 / 3.0) - 1e-9)
    grid = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    return (grid[:n] + 0.5) * (box / per_side)


def maxwell_boltzmann(n: int, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """[n, 3] float64 velocities (σ/τ, unit masses): Maxwell–Boltzmann at T with zero total momentum."""
    velocities = rng.normal(0.0, math.sqrt(temperature), size=(n, 3))
    return velocities - velocities.mean(axis=0)


def sample_steps(times: Sequence[float], dt: float) -> np.ndarray:
    """[T] int64 step counts round(t / dt) of the sample times (τ).

    Raises ValueError unless they are strictly increasing and >= 1.
    """
    steps = np.rint(np.asarray(times, dtype=np.float64) / dt).astype(np.int64)
    if steps.ndim != 1 or len(steps) == 0 or steps[0] < 1 or np.any(np.diff(steps) <= 0):
        raise ValueError(f"sample times {list(times)} at dt = {dt} must give strictly increasing "
                         f"step counts >= 1, got {steps.tolist()}")
    return steps


def openmm_seed(*parts: int) -> int:
    """A positive 31-bit integer seed for OpenMM from integer parts (0 would mean 'pick one')."""
    return int(np.random.default_rng([int(p) for p in parts]).integers(1, 2**31 - 1))


# ----------------------------------------------------------------------------
# Protocol: the chain and the iso-configurational runs
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Everything that defines a generated data set (stored in its meta.json).

    Times are in τ, temperatures in ε_AA / k_B, lengths in σ. Raises ValueError for
    non-positive sizes, times or temperatures, bond cutoffs out of order, or sample
    times that do not give increasing step counts.
    """

    n: int = 1000
    temperature: float = 0.64
    density: float = kob_andersen.DENSITY
    fraction_a: float = 0.8
    dt: float = 0.005
    melt_temperature: float = 2.0
    melt_time: float = 20.0
    equilibration_time: float = 780.0
    spacing: float = 78.0
    friction: float = 1.0
    runs: int = 8
    times: tuple[float, ...] = DEFAULT_TIMES
    bond_in: float = 1.4
    bond_out: float = 1.7
    seed: int = 0
    platform: str = "CPU"

    def __post_init__(self):
        object.__setattr__(self, "times", tuple(float(t) for t in self.times))
        if self.n < 2 or self.runs < 1:
            raise ValueError(f"need n >= 2 and runs >= 1, got n={self.n}, runs={self.runs}")
        if min(self.dt, self.temperature, self.melt_temperature, self.spacing, self.friction) <= 0:
            raise ValueError("dt, temperatures, spacing and friction must be positive")
        if self.melt_time < 0 or self.equilibration_time < 0:
            raise ValueError("melt_time and equilibration_time must be >= 0")
        if not 0 < self.bond_in < self.bond_out:
            raise ValueError(f"need 0 < bond_in < bond_out, got {self.bond_in}, {self.bond_out}")
        sample_steps(self.times, self.dt)

    @property
    def box(self) -> np.ndarray:
        return kob_andersen.box_from_density(self.n, self.density)

    @property
    def types(self) -> np.ndarray:
        return kob_andersen.ka_types(self.n, self.fraction_a)

    @property
    def steps(self) -> np.ndarray:
        return sample_steps(self.times, self.dt)

    @property
    def sample_times(self) -> np.ndarray:
        """[T] float64, the times actually sampled: step counts × dt."""
        return np.round(self.steps * self.dt, 12)

    def run_task(self, positions, seed: tuple[int, ...], threads: int | None = 1, steps=None,
                 types=None, box=None) -> "RunTask":
        """One NVE run of this protocol from ``positions`` [N, 3] σ with velocity seed ``seed``.

        ``steps`` defaults to the protocol's sample steps; ``types`` and ``box`` to its own,
        or those stored with a configuration from elsewhere.
        """
        return RunTask(
            positions=np.asarray(positions, np.float64),
            types=np.asarray(self.types if types is None else types),
            box=np.asarray(self.box if box is None else box, np.float64),
            temperature=self.temperature, dt=self.dt,
            steps=tuple(int(s) for s in (self.steps if steps is None else steps)), seed=tuple(seed),
            bond_in=self.bond_in, bond_out=self.bond_out, platform=self.platform, threads=threads)


def langevin_segment(system, positions, velocities, temperature: float, duration: float, protocol: Protocol,
                     seed: int, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``duration`` τ of Langevin dynamics at ``temperature``; returns (positions, velocities) [N, 3].

    positions, velocities: [N, 3] σ, σ/τ; velocities None draws Maxwell–Boltzmann ones.
    Positions come back unwrapped.
    """
    import openmm

    integrator = openmm.LangevinMiddleIntegrator(kelvin(temperature), protocol.friction, protocol.dt)
    integrator.setRandomNumberSeed(seed)
    context = make_context(system, integrator, protocol.platform, threads)
    context.setPositions(np.asarray(positions, dtype=np.float64))
    if velocities is None:
        velocities = maxwell_boltzmann(len(positions), temperature, np.random.default_rng(seed))
    context.setVelocities(np.asarray(velocities, dtype=np.float64))
    integrator.step(int(round(duration / protocol.dt)))
    state = context.getState(getPositions=True, getVelocities=True)
    return (np.asarray(state.getPositions(asNumpy=True)._value, np.float64),
            np.asarray(state.getVelocities(asNumpy=True)._value, np.float64))


def melt(system, protocol: Protocol, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lattice → OpenMM energy minimisation → ``melt_time`` at ``melt_temperature``.

    The types of ``protocol.types`` are spread over the lattice sites by a seeded shuffle of
    the sites. Returns (positions σ, velocities σ/τ) [N, 3].
    """
    import openmm

    rng = np.random.default_rng([protocol.seed, 1])
    positions = lattice_positions(protocol.n, protocol.box)[rng.permutation(protocol.n)]
    integrator = openmm.VerletIntegrator(protocol.dt)
    context = make_context(system, integrator, protocol.platform, threads)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 1000)
    positions = np.asarray(context.getState(getPositions=True).getPositions(asNumpy=True)._value, np.float64)
    return langevin_segment(system, positions, None, protocol.melt_temperature, protocol.melt_time, protocol,
                            openmm_seed(protocol.seed, 2), threads)


@dataclasses.dataclass(frozen=True)
class RunTask:
    """One iso-configurational NVE run (picklable: it travels to worker processes).

    positions: [N, 3] float64 σ; types: [N]; box: [3]; steps: sample step counts; seed: the
    velocity seed parts (data-set seed, configuration, run).
    """

    positions: np.ndarray
    types: np.ndarray
    box: np.ndarray
    temperature: float
    dt: float
    steps: tuple[int, ...]
    seed: tuple[int, ...]
    bond_in: float
    bond_out: float
    platform: str = "CPU"
    threads: int | None = 1


@dataclasses.dataclass(frozen=True)
class RunResult:
    """displacements: [T, N, 3] float64 σ (unwrapped); broken: [T, N] float64 broken-bond fraction;
    md_seconds: time spent inside OpenMM stepping; seconds: whole task."""

    displacements: np.ndarray
    broken: np.ndarray
    md_seconds: float
    seconds: float


class _Engine:
    """An NVE context kept alive between runs of one worker (building it costs more than a short run)."""

    def __init__(self, types, box, dt, platform, threads):
        import openmm

        self.key = (np.asarray(types).tobytes(), tuple(np.asarray(box, np.float64)), dt, platform, threads)
        self.integrator = openmm.VerletIntegrator(dt)
        self.context = make_context(build_system(types, box), self.integrator, platform, threads)


# Each thread's engine, reused while the system stays the same. Per thread, because a Dask
# worker may run several tasks at once in one process, and a context is not thread-safe.
_ENGINES = threading.local()


def _engine(task: RunTask) -> _Engine:
    key = (np.asarray(task.types).tobytes(), tuple(np.asarray(task.box, np.float64)), task.dt,
           task.platform, task.threads)
    engine = getattr(_ENGINES, "engine", None)
    if engine is None or engine.key != key:
        engine = _ENGINES.engine = _Engine(task.types, task.box, task.dt, task.platform, task.threads)
    return engine


def iso_configurational_run(task: RunTask) -> RunResult:
    """One NVE run from ``task.positions`` with fresh velocities; displacements at the sample steps.

    The integrator advances in one ``step()`` call per interval between sample times and
    reads the positions once per sample time: T Python round trips per run. Bonds are
    those of the starting positions closer than ``task.bond_in`` σ_ab, broken beyond
    ``task.bond_out`` σ_ab (:mod:`eignn_jax.physics.observables`).
    """
    started = time.perf_counter()
    engine = _engine(task)
    n = len(task.positions)
    context = engine.context
    context.setTime(0.0)
    context.setPositions(np.asarray(task.positions, dtype=np.float64))
    context.setVelocities(maxwell_boltzmann(n, task.temperature, np.random.default_rng(list(task.seed))))
    origin = np.asarray(context.getState(getPositions=True).getPositions(asNumpy=True)._value, np.float64)
    frames = np.empty((len(task.steps), n, 3))
    done, md_seconds = 0, 0.0
    for k, step in enumerate(task.steps):
        tick = time.perf_counter()
        engine.integrator.step(int(step) - done)
        md_seconds += time.perf_counter() - tick
        done = int(step)
        frames[k] = context.getState(getPositions=True).getPositions(asNumpy=True)._value
    bonds = observables.bond_pairs(origin, task.types, task.box, task.bond_in)
    broken = observables.broken_bond_fraction(frames, bonds, task.types, task.box, task.bond_out)
    return RunResult(displacements=frames - origin, broken=broken, md_seconds=md_seconds,
                     seconds=time.perf_counter() - started)
