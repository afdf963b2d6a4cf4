"""Observables of simulated Kob–Andersen trajectories, in plain numpy.

The self-intermediate scattering function F_s(q, t) and the relaxation time τ_α read off
it, the partial pair correlation functions g_ab(r) and their first peaks, bond breaking,
and the drift of the total energy. Lengths in σ_AA, times in τ, energies in ε_AA.

**Bond breaking** (Yamamoto–Onuki bond breaking as used by BOTAN, Shiba et al., J. Chem.
Phys. 158, 084503 (2023)): a bond is a pair with
r_ij(0) < ``bond_in`` σ_ab, broken at t when r_ij(t) > ``bond_out`` σ_ab (minimum image).
The generator's defaults 1.4 / 1.7 (:class:`eignn_jax.physics.md.Protocol`) are this
package's choice — 1.4 σ_ab lies near the first minimum of the KA g_ab(r) — and have not
been checked against the values of the BOTAN paper, which we could not consult; BOTAN's
C_B = 1 − the broken fraction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from eignn_jax.physics import periodic
from eignn_jax.physics.kob_andersen import SIGMA
from eignn_jax.physics.neighbours import SortedPairs

__all__ = [
    "SELF_SCATTERING_Q",
    "bond_pairs",
    "broken_bond_fraction",
    "energy_drift",
    "first_peak",
    "log_spaced_steps",
    "mean_and_stderr",
    "pair_correlation",
    "relaxation_report",
    "relaxation_time",
    "self_intermediate_scattering",
]

SELF_SCATTERING_Q = 7.25
"""Wave number (σ⁻¹) of F_s(q, t) for τ_α, near the first peak of the A–A structure factor."""


def self_intermediate_scattering(displacements: np.ndarray, q: float = SELF_SCATTERING_Q) -> np.ndarray:
    """Isotropic F_s(q, t) = ⟨sin(q |Δr|) / (q |Δr|)⟩ over particles.

    displacements: [T, N, 3] (or [..., N, 3]) float, σ, unwrapped.  q: σ⁻¹.
    Returns [T] (or [...]) float64.
    """
    distance = np.linalg.norm(np.asarray(displacements, dtype=np.float64), axis=-1)
    return np.sinc(q * distance / np.pi).mean(axis=-1)


def log_spaced_steps(duration: float, samples: int, dt: float) -> np.ndarray:
    """[S] int64: up to ``samples`` log-spaced step counts from 1 to ``duration`` / dt (no repeats).

    duration, dt: τ.
    """
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

    times: [T] increasing, > 0 (τ).  correlation: [T].  Returns τ, or nan if it never gets there.
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


def relaxation_report(times: np.ndarray, displacements: Sequence[np.ndarray], types: Sequence[np.ndarray],
                      configuration_of: Sequence[int]) -> dict:
    """τ_α of NVE runs, several per starting configuration.

    times: [T] τ, the sample times.  displacements: R arrays [T, N, 3] σ, one per run
    (unwrapped).  types: R arrays [N], 1/2, of each run's particles.
    configuration_of: [R] the configuration index of each run.

    Each run contributes F_s(q = 7.25, t) of its A particles; τ_α is read off the mean F_s,
    off each run alone, and per configuration (the mean over its runs). The standard error
    is taken over configurations, since runs from one configuration are correlated.
    Returns a JSON-ready dict.
    """
    times = np.asarray(times, dtype=np.float64)
    curves = np.array([self_intermediate_scattering(d[:, np.asarray(t) == 1])
                       for d, t in zip(displacements, types)])
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


def _pair_distances(positions: np.ndarray, box: np.ndarray, cutoff: float):
    """(i [E] int32, j [E] int32, r_ij [E] float64 σ) of all ordered pairs closer than ``cutoff``.

    Raises ValueError unless every box side exceeds 2 ``cutoff``.
    """
    parts = list(zip(*SortedPairs(positions, box, cutoff).blocks()))
    if not parts:
        empty = np.zeros(0, np.int32)
        return empty, empty, np.zeros(0)
    i, j, _, squared = (np.concatenate(p) for p in parts)
    return i, j, np.sqrt(squared)


def pair_correlation(positions: np.ndarray, types: np.ndarray, box: np.ndarray, r_max: float = 3.0,
                     bin_width: float = 0.02) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Partial pair correlation functions g_AA, g_AB, g_BB of one configuration.

    positions: [N, 3] σ (any wrapping); types: [N] 1/2; box: [3] σ; r_max, bin_width: σ.
    Returns (r [B] bin centres, {"AA": [B], "AB": [B], "BB": [B]}), each normalised so that
    g → 1 for an ideal gas: g_ab(r) = V n_ab(r) / (N_a N_b' 4π r² dr), n_ab counting ordered
    pairs (i of type a, j ≠ i of type b) and N_b' = N_b − δ_ab.
    Raises ValueError unless r_max < L/2 on every side (each pair counted once, at its
    minimum image).
    """
    types = np.asarray(types)
    box = np.asarray(box, dtype=np.float64)
    edges = np.arange(0.0, r_max + 0.5 * bin_width, bin_width)
    centres = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    i, j, d = _pair_distances(positions, box, r_max)
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
    """(position σ, height) of the highest maximum of g(r) for r < 2 σ (the first shell).

    r: [B] bin centres, σ, evenly spaced.  g: [B].
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
    """[B, 2] int64 unordered bonds i < j with r_ij < factor σ_ab (minimum image).

    positions: [N, 3] σ (any wrapping); types: [N] 1/2; box: [3] σ.
    Raises ValueError unless every box side exceeds 2 factor σ_AA.
    """
    types = np.asarray(types)
    i, j, d = _pair_distances(positions, box, factor * float(SIGMA.max()))
    keep = (i < j) & (d < factor * SIGMA[types[i] - 1, types[j] - 1])
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)


def broken_bond_fraction(positions: np.ndarray, bonds: np.ndarray, types: np.ndarray, box: np.ndarray,
                         factor: float) -> np.ndarray:
    """Fraction of each particle's bonds longer than ``factor`` σ_ab at each time.

    positions: [T, N, 3] (or [N, 3]) σ, any images.  bonds: [B, 2] from :func:`bond_pairs`.
    types: [N] 1/2.  box: [3] σ.
    Returns [T, N] (or [N]) float64; 0 for a particle without bonds.
    """
    positions = np.asarray(positions, dtype=np.float64)
    types = np.asarray(types)
    box = np.asarray(box, dtype=np.float64)
    i, j = bonds[:, 0], bonds[:, 1]
    sigma = SIGMA[types[i] - 1, types[j] - 1]
    delta = periodic.wrap(positions[..., j, :] - positions[..., i, :], box)
    broken = (np.linalg.norm(delta, axis=-1) > factor * sigma).astype(np.float64)  # [..., B]
    n = types.shape[0]
    degree = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    flat = broken.reshape(-1, broken.shape[-1])
    counts = np.stack([np.bincount(i, weights=row, minlength=n) + np.bincount(j, weights=row, minlength=n)
                       for row in flat])
    fraction = counts / np.maximum(degree, 1)
    return fraction.reshape(broken.shape[:-1] + (n,))


def energy_drift(steps: np.ndarray, energies: np.ndarray, n_particles: int) -> float:
    """Least-squares slope of the total energy, per particle per 10⁴ steps (ε).

    steps: [S] step counts.  energies: [S] total energies, ε.
    """
    slope = np.polyfit(np.asarray(steps, dtype=np.float64), np.asarray(energies, dtype=np.float64), 1)[0]
    return float(slope * 1e4 / n_particles)
