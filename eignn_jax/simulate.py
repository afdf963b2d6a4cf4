"""Iso-configurational propensities of Kob–Andersen configurations, simulated with OpenMM.

The optional extra ``pip install eignn_jax[sim]`` provides OpenMM; nothing else in the
package imports it, and this module imports it only inside the functions that run it.
The observables (F_s(q, t), τ_α, g(r) peaks, bond breaking, energy drift) are plain numpy.

**Units.** Reduced LJ units (σ_AA, ε_AA, m, τ) map exactly onto OpenMM's: reading nm as σ,
kJ/mol as ε and amu as m makes OpenMM's ps equal to τ (1 kJ/mol = 1 amu nm² ps⁻²). Only the
thermostat needs converting: T_K = T / k_B with k_B = 0.00831446261815324 kJ/(mol K)
(:data:`BOLTZMANN`, the exact SI value OpenMM uses).

**Force field.** The truncated and shifted KA pair potential of :mod:`eignn_jax.potential`
(its constants: one definition) as one ``CustomNonbondedForce`` whose per-particle parameter
``b`` is 1 for B particles and 0 for A; ε_ab, σ_ab are picked with ``select()`` on
``b1 + b2`` (tabulated functions are slower on the CPU platform), the per-pair cutoff
2.5 σ_ab is a ``step()`` inside the expression, and the global cutoff is the longest,
2.5 σ_AA, with no switching function and no long-range correction.

**Protocol** (:class:`Protocol`). One Markov chain per data set: particles on a simple-cubic
lattice (types shuffled), OpenMM's energy minimiser, ``melt_time`` at ``melt_temperature``,
``equilibration_time`` at T, then one configuration every ``spacing`` (Langevin dynamics,
``LangevinMiddleIntegrator``, friction ``friction`` τ⁻¹; the friction only sets how the
chain moves between samples, which are canonical whatever its value). For each configuration,
``runs`` NVE trajectories (velocity Verlet, ``dt``) from the same positions with fresh
Maxwell–Boltzmann velocities of zero total momentum (drawn per component from N(0, T), then
the mean velocity subtracted: for equal masses exactly the Maxwell–Boltzmann distribution
restricted to zero momentum, not rescaled); the integrator steps in blocks between the
sample times, one positions read per sample time (:func:`iso_configurational_run`).

**Labels** at the sample times t_k = round(times_k / dt) dt, with Δr_i = r_i(t) − r_i(0) from
OpenMM's unwrapped positions (OpenMM never wraps the positions it integrates):
``md_prop`` = ⟨|Δr_i|⟩ and ``md_disp`` = ⟨Δr_i⟩ over runs; ``bb_prop`` = ⟨fraction of the
bonds of i at t = 0 that are broken at t⟩, a bond being a pair with r_ij(0) < ``bond_in`` σ_ab
and broken when r_ij(t) > ``bond_out`` σ_ab (minimum image; Yamamoto–Onuki bond breaking as
used by BOTAN, Shiba et al., J. Chem. Phys. 158, 084503 (2023)). The defaults 1.4 / 1.7 are
this package's choice — 1.4 σ_ab lies near the first minimum of the KA g_ab(r) — and have not
been checked against the values of the BOTAN paper, which we could not consult; BOTAN's
C_B = 1 − bb_prop. Both are recorded in every data set's meta.json.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Sequence

import numpy as np

from eignn_jax import dataset, potential

__all__ = [
    "BOLTZMANN",
    "DEFAULT_TIMES",
    "REFERENCE",
    "SELF_SCATTERING_Q",
    "Protocol",
    "RunTask",
    "bond_pairs",
    "broken_bond_fraction",
    "build_system",
    "check",
    "energy_drift",
    "first_peak",
    "iso_configurational_run",
    "ka_types",
    "kelvin",
    "lattice_positions",
    "maxwell_boltzmann",
    "pair_correlation",
    "pair_energy_expression",
    "relaxation_time",
    "sample_steps",
    "self_intermediate_scattering",
]

BOLTZMANN = 1.380649e-23 * 6.02214076e23 / 1000.0
"""k_B in kJ/(mol K) (exact SI); reduced temperature T is T / BOLTZMANN kelvin in OpenMM."""

SELF_SCATTERING_Q = 7.25
"""Wave number (σ⁻¹) of F_s(q, t) for τ_α, near the first peak of the A–A structure factor."""

DEFAULT_TIMES = (0.13, 0.4, 1.3, 4.0, 8.0, 13.0, 25.0, 40.0)
"""Sample times (τ) of the dev set ``ka3d_T064_N1000``."""

REFERENCE = {
    "tau_alpha": {0.64: 7.8, 0.56: 22.6},
    "drift_per_particle_per_1e4_steps": 1e-4,
}
"""Values measured for N = 1000 (DESIGN.md §2): τ_α by temperature, NVE drift at dt = 0.005."""


# ----------------------------------------------------------------------------
# The system
# ----------------------------------------------------------------------------


def kelvin(temperature: float) -> float:
    """OpenMM thermostat temperature (K) of the reduced temperature T (ε_AA / k_B)."""
    return float(temperature) / BOLTZMANN


def ka_types(n: int, fraction_a: float = 0.8) -> np.ndarray:
    """[n] int32: round(fraction_a n) A particles (1) first, then B (2), as in the dev set."""
    n_a = int(round(fraction_a * n))
    return np.concatenate([np.ones(n_a, np.int32), np.full(n - n_a, 2, np.int32)])


def pair_energy_expression() -> str:
    """OpenMM expression of the truncated, shifted KA pair energy (per-particle parameter ``b``).

    ``b`` is 1 for B particles and 0 for A, so ``nb = b1 + b2`` is 0 (AA), 1 (AB) or 2 (BB).
    """
    eps, sig = potential.KA_EPSILON, potential.KA_SIGMA

    def pick(table):  # select(x, if x != 0, else): nb = 0 -> AA; nb = 1 -> AB; nb = 2 -> BB
        return f"select(nb, select(nb - 1, {float(table[1, 1])!r}, {float(table[0, 1])!r}), {float(table[0, 0])!r})"

    return (f"step(rc - r) * eps * (4 * (x * x - x) - ({float(potential.KA_SHIFT_PER_EPSILON)!r}));"
            f" x = (sig / r)^6; rc = {float(potential.KA_CUTOFF_FACTOR)!r} * sig;"
            f" eps = {pick(eps)}; sig = {pick(sig)}; nb = b1 + b2")


def build_system(types: np.ndarray, box: np.ndarray):
    """An ``openmm.System``: unit masses, cubic periodic box, the KA force (see module docstring).

    types: [N] int, 1 (A) / 2 (B).  box: [3] float, σ; every side must exceed 2 × 2.5 σ.
    """
    import openmm

    types = np.asarray(types)
    box = np.asarray(box, dtype=np.float64)
    if not np.all((types == 1) | (types == 2)):
        raise ValueError("types must be 1 (A) or 2 (B)")
    if np.any(box <= 2.0 * potential.KA_MAX_CUTOFF):
        raise ValueError(f"every box side must exceed twice the cutoff {potential.KA_MAX_CUTOFF} σ, got {box}")
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(box[0], 0, 0), openmm.Vec3(0, box[1], 0),
                                        openmm.Vec3(0, 0, box[2]))
    force = openmm.CustomNonbondedForce(pair_energy_expression())
    force.addPerParticleParameter("b")
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(potential.KA_MAX_CUTOFF)
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
    """[n, 3] float64: the first n sites of a simple-cubic lattice filling ``box`` (σ)."""
    box = np.asarray(box, dtype=np.float64)
    per_side = math.ceil(n ** (1.0 / 3.0) - 1e-9)
    grid = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    return (grid[:n] + 0.5) * (box / per_side)


def maxwell_boltzmann(n: int, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """[n, 3] float64 velocities (σ/τ, unit masses): Maxwell–Boltzmann at T with zero total momentum."""
    velocities = rng.normal(0.0, math.sqrt(temperature), size=(n, 3))
    return velocities - velocities.mean(axis=0)


def sample_steps(times: Sequence[float], dt: float) -> np.ndarray:
    """[T] int64 step counts round(t / dt); raises ValueError unless strictly increasing and >= 1."""
    steps = np.rint(np.asarray(times, dtype=np.float64) / dt).astype(np.int64)
    if steps.ndim != 1 or len(steps) == 0 or steps[0] < 1 or np.any(np.diff(steps) <= 0):
        raise ValueError(f"sample times {list(times)} at dt = {dt} must give strictly increasing "
                         f"step counts >= 1, got {steps.tolist()}")
    return steps


def wrap(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """[N, 3] positions wrapped into [−L/2, L/2) per axis (the GlassBench convention)."""
    return positions - box * np.floor(positions / box + 0.5)


# ----------------------------------------------------------------------------
# Observables (numpy)
# ----------------------------------------------------------------------------


def self_intermediate_scattering(displacements: np.ndarray, q: float = SELF_SCATTERING_Q) -> np.ndarray:
    """Isotropic F_s(q, t) = ⟨sin(q |Δr|) / (q |Δr|)⟩ over particles.

    displacements: [T, N, 3] (or [..., N, 3]) float, σ, unwrapped.  Returns [T] float64.
    """
    distance = np.linalg.norm(np.asarray(displacements, dtype=np.float64), axis=-1)
    return np.sinc(q * distance / np.pi).mean(axis=-1)


def log_spaced_steps(duration: float, samples: int, dt: float) -> np.ndarray:
    """[S] int64: up to ``samples`` log-spaced step counts from 1 to ``duration`` / dt (no repeats)."""
    return np.unique(np.rint(np.geomspace(1, int(round(duration / dt)), samples)).astype(np.int64))


def mean_and_stderr(values) -> tuple[float, float]:
    """Mean and standard error of the finite entries of ``values`` (nan where too few)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    mean = float(finite.mean()) if finite.size else float("nan")
    stderr = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else float("nan")
    return mean, stderr


def relaxation_time(times: np.ndarray, correlation: np.ndarray, level: float = 1.0 / math.e) -> float:
    """First time at which ``correlation`` falls to ``level``, linear in log t between samples.

    times: [T] increasing, > 0.  correlation: [T].  Returns nan if it never gets there.
    """
    times = np.asarray(times, dtype=np.float64)
    correlation = np.asarray(correlation, dtype=np.float64)
    below = np.flatnonzero(correlation <= level)
    if below.size == 0:
        return float("nan")
    k = int(below[0])
    if k == 0:
        return float(times[0])
    f0, f1 = correlation[k - 1], correlation[k]
    fraction = (f0 - level) / (f0 - f1)
    return float(math.exp(math.log(times[k - 1]) + fraction * (math.log(times[k]) - math.log(times[k - 1]))))


def _pairs(positions: np.ndarray, box: np.ndarray, cutoff: float):
    """(i, j, d) of all ordered pairs closer than ``cutoff`` (matscipy cell lists, minimum image)."""
    from matscipy.neighbours import neighbour_list

    box = np.asarray(box, dtype=np.float64)
    wrapped = np.mod(np.asarray(positions, dtype=np.float64), box)
    return neighbour_list("ijd", positions=wrapped, cell=np.diag(box), pbc=[True] * 3, cutoff=cutoff)


def pair_correlation(positions: np.ndarray, types: np.ndarray, box: np.ndarray, r_max: float = 3.0,
                     bin_width: float = 0.02) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Partial pair correlation functions g_AA, g_AB, g_BB of one configuration.

    positions: [N, 3] σ; types: [N] 1/2; box: [3] σ, r_max < L/2.
    Returns (r [B] bin centres, {"AA": [B], "AB": [B], "BB": [B]}), each normalised so that
    g → 1 for an ideal gas: g_ab(r) = V n_ab(r) / (N_a N_b' 4π r² dr), n_ab counting ordered
    pairs (i of type a, j ≠ i of type b) and N_b' = N_b − δ_ab.
    """
    types = np.asarray(types)
    box = np.asarray(box, dtype=np.float64)
    edges = np.arange(0.0, r_max + 0.5 * bin_width, bin_width)
    centres = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    i, j, d = _pairs(positions, box, r_max)
    volume = float(np.prod(box))
    counts = {1: int(np.sum(types == 1)), 2: int(np.sum(types == 2))}
    result = {}
    for name, a, b in (("AA", 1, 1), ("AB", 1, 2), ("BB", 2, 2)):
        mask = (types[i] == a) & (types[j] == b)
        histogram = np.histogram(d[mask], bins=edges)[0]
        partners = counts[b] - (1 if a == b else 0)
        result[name] = volume * histogram / (max(counts[a] * partners, 1) * shell)
    return centres, result


def first_peak(r: np.ndarray, g: np.ndarray, smooth: int = 5) -> tuple[float, float]:
    """(position, height) of the highest maximum of g(r) for r < 2 σ (the first shell).

    g is first averaged over ``smooth`` neighbouring bins (histogram noise), then a parabola
    through the top bin and its neighbours places the maximum between bins. For the KA
    g_BB, whose contact peak near 1 σ stays below 1, this is its broad main peak.
    """
    g = np.asarray(g, dtype=np.float64)
    if smooth > 1:
        g = np.convolve(np.pad(g, smooth // 2, mode="edge"), np.ones(smooth) / smooth, mode="valid")[: len(r)]
    g = np.where(np.asarray(r) < 2.0, g, -np.inf)
    k = int(np.argmax(g))
    if 0 < k < len(g) - 1:
        y0, y1, y2 = g[k - 1], g[k], g[k + 1]
        curvature = y0 - 2.0 * y1 + y2
        if curvature < 0:
            shift = 0.5 * (y0 - y2) / curvature
            return float(r[k] + shift * (r[1] - r[0])), float(y1 - 0.25 * (y0 - y2) * shift)
    return float(r[k]), float(g[k])


def bond_pairs(positions: np.ndarray, types: np.ndarray, box: np.ndarray, factor: float) -> np.ndarray:
    """[B, 2] int64 unordered bonds i < j with r_ij < factor σ_ab (minimum image)."""
    types = np.asarray(types)
    sigma = np.asarray(potential.KA_SIGMA)
    i, j, d = _pairs(positions, box, factor * float(sigma.max()))
    keep = (i < j) & (d < factor * sigma[types[i] - 1, types[j] - 1])
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)


def broken_bond_fraction(positions: np.ndarray, bonds: np.ndarray, types: np.ndarray, box: np.ndarray,
                         factor: float) -> np.ndarray:
    """Fraction of each particle's bonds longer than ``factor`` σ_ab at each time.

    positions: [T, N, 3] (or [N, 3]) σ, any images.  bonds: [B, 2] from :func:`bond_pairs`.
    Returns [T, N] (or [N]) float64; 0 for a particle without bonds.
    """
    positions = np.asarray(positions, dtype=np.float64)
    types = np.asarray(types)
    box = np.asarray(box, dtype=np.float64)
    i, j = bonds[:, 0], bonds[:, 1]
    sigma = np.asarray(potential.KA_SIGMA)[types[i] - 1, types[j] - 1]
    delta = positions[..., j, :] - positions[..., i, :]
    delta -= box * np.rint(delta / box)
    broken = (np.linalg.norm(delta, axis=-1) > factor * sigma).astype(np.float64)  # [..., B]
    n = types.shape[0]
    degree = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    flat = broken.reshape(-1, broken.shape[-1])
    counts = np.stack([np.bincount(i, weights=row, minlength=n) + np.bincount(j, weights=row, minlength=n)
                       for row in flat])
    fraction = counts / np.maximum(degree, 1)
    return fraction.reshape(broken.shape[:-1] + (n,))


def energy_drift(steps: np.ndarray, energies: np.ndarray, n_particles: int) -> float:
    """Least-squares slope of the total energy, per particle per 10⁴ steps (ε)."""
    slope = np.polyfit(np.asarray(steps, dtype=np.float64), np.asarray(energies, dtype=np.float64), 1)[0]
    return float(slope * 1e4 / n_particles)


# ----------------------------------------------------------------------------
# Protocol: the chain and the iso-configurational runs
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Everything that defines a generated data set (stored in its meta.json).

    Times are in τ, temperatures in ε_AA / k_B, lengths in σ.
    """

    n: int = 1000
    temperature: float = 0.64
    density: float = dataset.DENSITY
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
        return dataset.box_from_density(self.n, self.density)

    @property
    def types(self) -> np.ndarray:
        return ka_types(self.n, self.fraction_a)

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


def _seed(*parts: int) -> int:
    """A positive 31-bit integer seed for OpenMM from integer parts (0 would mean 'pick one')."""
    return int(np.random.default_rng([int(p) for p in parts]).integers(1, 2**31 - 1))


def langevin_segment(system, positions, velocities, temperature: float, duration: float, protocol: Protocol,
                     seed: int, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``duration`` τ of Langevin dynamics at ``temperature``; returns (positions, velocities) [N, 3].

    velocities None draws Maxwell–Boltzmann ones. Positions come back unwrapped.
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
    the sites. Returns (positions, velocities) [N, 3].
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
                            _seed(protocol.seed, 2), threads)


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
    reads the positions once per sample time: T Python round trips per run.
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
    bonds = bond_pairs(origin, task.types, task.box, task.bond_in)
    broken = broken_bond_fraction(frames, bonds, task.types, task.box, task.bond_out)
    return RunResult(displacements=frames - origin, broken=broken, md_seconds=md_seconds,
                     seconds=time.perf_counter() - started)


# ----------------------------------------------------------------------------
# Validation: energy conservation, g(r), τ_α
# ----------------------------------------------------------------------------


def check(protocol: Protocol, segments: int = 8, segment_time: float = 40.0, samples: int = 24,
          threads: int | None = None, log=print) -> dict:
    """Melt, equilibrate (``protocol.equilibration_time``), then ``segments`` consecutive NVE
    segments of ``segment_time`` τ, each a time origin for F_s(q = 7.25, t) of the A particles
    (positions read at ``samples`` log-spaced times) and a snapshot for g(r); the total
    energy at every read gives the NVE drift over the whole NVE run.

    Returns a JSON-ready dict: drift per particle per 10⁴ steps, g_ab first peaks,
    τ_α (of the mean F_s, and of each origin alone with their standard error), F_s(t), the
    raw NVE step rate and the protocol.
    """
    import openmm

    started = time.perf_counter()
    types, box = protocol.types, protocol.box
    system = build_system(types, box)
    log(f"melting at T = {protocol.melt_temperature} for {protocol.melt_time} τ")
    positions, velocities = melt(system, protocol, threads)
    log(f"equilibrating at T = {protocol.temperature} for {protocol.equilibration_time} τ")
    positions, velocities = langevin_segment(system, positions, velocities, protocol.temperature,
                                             protocol.equilibration_time, protocol, _seed(protocol.seed, 3), threads)
    steps = log_spaced_steps(segment_time, samples, protocol.dt)
    integrator = openmm.VerletIntegrator(protocol.dt)
    context = make_context(system, integrator, protocol.platform, threads)
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
        r, g = pair_correlation(origin, types, box)
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
        correlations.append(self_intermediate_scattering(np.stack(frames) - origin[is_a]))
        log(f"NVE segment {segment + 1}/{segments}: F_s(t_max) = {correlations[-1][-1]:.3f}")
    times = steps * protocol.dt
    f_s = np.mean(correlations, axis=0)
    # τ_α of each time origin alone: their spread shows how far one chain of N particles
    # can be from the ensemble value (dynamic heterogeneity is large at N = 1000).
    per_origin = np.array([relaxation_time(times, c) for c in correlations])
    peaks = {k: dict(zip(("r", "g"), first_peak(r, v / segments))) for k, v in g_sum.items()}
    energies = np.asarray(energies)
    return {
        "temperature": protocol.temperature,
        "n": protocol.n,
        "dt": protocol.dt,
        "nve_steps": int(total),
        "drift_per_particle_per_1e4_steps": energy_drift(np.asarray(energy_steps), energies, protocol.n),
        "energy_per_particle_mean": float(energies.mean() / protocol.n),
        "energy_per_particle_std": float(energies.std() / protocol.n),
        "g_first_peaks": peaks,
        "tau_alpha": relaxation_time(times, f_s),
        "tau_alpha_per_origin": per_origin.tolist(),
        "tau_alpha_origin_mean": mean_and_stderr(per_origin)[0],
        "tau_alpha_origin_stderr": mean_and_stderr(per_origin)[1],
        "f_s": {"q": SELF_SCATTERING_Q, "times": times.tolist(), "values": f_s.tolist(),
                "origins": segments},
        "nve_steps_per_second": total / md_seconds if md_seconds > 0 else float("nan"),
        "seconds": time.perf_counter() - started,
        "engine": engine_version(protocol.platform),
        "protocol": dataclasses.asdict(protocol),
    }


def relaxation_report(steps: np.ndarray, dt: float, runs: Sequence[RunResult], types: Sequence[np.ndarray],
                      configuration_of: Sequence[int]) -> dict:
    """τ_α from NVE runs started at stored configurations (see ``--check-data``).

    Each run contributes F_s(q = 7.25, t) of its A particles; τ_α is read off the mean F_s,
    off each run alone, and per configuration (the mean over its runs). The standard error
    is taken over configurations, since runs from one configuration are correlated.
    ``configuration_of``: [R] the configuration index of each run. JSON-ready.
    """
    times = np.asarray(steps) * dt
    curves = np.array([self_intermediate_scattering(r.displacements[:, np.asarray(t) == 1])
                       for r, t in zip(runs, types)])
    per_run = np.array([relaxation_time(times, c) for c in curves])
    configuration_of = np.asarray(configuration_of)
    per_configuration = [mean_and_stderr(per_run[configuration_of == k])[0] for k in np.unique(configuration_of)]
    mean, stderr = mean_and_stderr(per_configuration)
    return {
        "runs": len(curves),
        "tau_alpha": relaxation_time(times, curves.mean(axis=0)),
        "tau_alpha_per_run": per_run.tolist(),
        "tau_alpha_per_configuration": per_configuration,
        "tau_alpha_configuration_mean": mean,
        "tau_alpha_configuration_stderr": stderr,
        "f_s": {"q": SELF_SCATTERING_Q, "times": times.tolist(), "values": curves.mean(axis=0).tolist()},
    }
