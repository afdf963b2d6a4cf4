"""The Kob–Andersen mixture: analytic properties of the pair kernel, brute force and real data."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eignn_jax.physics.kob_andersen import CUTOFF_FACTOR, EPSILON, SIGMA, pair_energy, per_particle_energy

# Real T = 0.64 configurations: one of the dev set (another pipeline) and one of ours.
from tests.conftest import DEFAULT_DATA, DEV_SET_FILE  # noqa: E402

REAL_FILES = [DEV_SET_FILE, DEFAULT_DATA / "N1000T0.64_1.npz"]
TYPE_PAIRS = [(1, 1), (1, 2), (2, 1), (2, 2)]


def lj_unshifted(r, epsilon, sigma):
    return 4.0 * epsilon * ((sigma / r) ** 12 - (sigma / r) ** 6)


def jittered_lattice(rng, n_side, density=1.2, jitter=0.05):
    """KA-like configuration without overlaps.

    Returns positions [n_side**3, 3] float64 (σ), types [N] int (80% type 1), box [3] (σ).
    """
    n = n_side**3
    side = (n / density) ** (1.0 / 3.0)
    spacing = side / n_side
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (grid + 0.5) * spacing + rng.normal(scale=jitter, size=(n, 3))
    # Shift by an arbitrary offset so some particles fall outside [0, L).
    positions -= 0.3 * side
    types = np.ones(n, dtype=np.int32)
    types[rng.choice(n, size=n // 5, replace=False)] = 2
    return positions, types, np.full(3, side)


def brute_force_energies(positions, types, box):
    """Double loop over all pairs, minimum image, float64. Returns [N] per-particle energies."""
    n = len(positions)
    energies = np.zeros(n)
    for i in range(n):
        for j in range(i + 1, n):
            d = positions[j] - positions[i]
            d -= box * np.round(d / box)
            r = float(np.sqrt(d @ d))
            a, b = types[i] - 1, types[j] - 1
            eps, sig = EPSILON[a, b], SIGMA[a, b]
            rc = CUTOFF_FACTOR * sig
            if r < rc:
                v = lj_unshifted(r, eps, sig) - lj_unshifted(rc, eps, sig)
                energies[i] += 0.5 * v
                energies[j] += 0.5 * v
    return energies


@pytest.mark.parametrize("ti,tj", TYPE_PAIRS)
def test_zero_and_continuous_at_cutoff(ti, tj):
    sigma = SIGMA[ti - 1, tj - 1]
    rc = CUTOFF_FACTOR * sigma
    r = np.array([rc * (1 - 1e-9), rc, rc * (1 + 1e-9), 1.5 * rc, 10.0])
    v = pair_energy(r, np.full(5, ti), np.full(5, tj))
    assert v.dtype == np.float64
    assert abs(v[0]) < 1e-9
    np.testing.assert_array_equal(v[1:], 0.0)
    # Continuity: on a fine grid across the cutoff no step exceeds what the
    # (small) slope allows; the unshifted potential would jump by ~0.016 ε.
    r_fine = np.linspace(2.0 * sigma, rc * (1 + 1e-3), 20001)
    v_fine = pair_energy(r_fine, ti, tj)
    assert np.max(np.abs(np.diff(v_fine))) < 1e-5


@pytest.mark.parametrize("ti,tj", TYPE_PAIRS)
def test_minimum_position_and_depth(ti, tj):
    epsilon = EPSILON[ti - 1, tj - 1]
    sigma = SIGMA[ti - 1, tj - 1]
    r_min = 2.0 ** (1.0 / 6.0) * sigma
    r = np.linspace(0.95 * sigma, 2.0 * sigma, 200001)
    v = pair_energy(r, ti, tj)
    assert abs(r[np.argmin(v)] - r_min) < 1e-4 * sigma
    shift = 4.0 * epsilon * (CUTOFF_FACTOR**-12 - CUTOFF_FACTOR**-6)
    depth = pair_energy(np.array([r_min]), ti, tj)[0]
    np.testing.assert_allclose(depth, -epsilon - shift, rtol=1e-12)
    # The shift is small and positive: the well is slightly shallower than -ε.
    assert -epsilon < depth < -0.98 * epsilon
    # Zero crossing of the unshifted part stays at σ up to the small shift.
    assert pair_energy(np.array([sigma]), ti, tj)[0] == pytest.approx(-shift, abs=1e-12)


def test_per_particle_energy_matches_brute_force():
    rng = np.random.default_rng(0)
    # N = 216: the smallest cubic lattice at density 1.2 whose box (5.65 σ)
    # exceeds twice the 2.5 σ cutoff, as the minimum-image convention requires.
    positions, types, box = jittered_lattice(rng, n_side=6)
    assert np.all(box > 2 * CUTOFF_FACTOR)
    got = per_particle_energy(positions, types, box)
    expected = brute_force_energies(positions, types, box)
    assert got.shape == (216,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_sum_equals_total_pair_energy():
    rng = np.random.default_rng(1)
    positions, types, box = jittered_lattice(rng, n_side=7)
    energies = per_particle_energy(positions, types, box)
    total = 0.0
    n = len(positions)
    for i in range(n):
        d = positions[i + 1 :] - positions[i]
        d -= box * np.round(d / box)
        r = np.linalg.norm(d, axis=1)
        total += pair_energy(r, types[i], types[i + 1 :]).sum()
    np.testing.assert_allclose(energies.sum(), total, rtol=1e-12)


def test_rejects_bad_types():
    rng = np.random.default_rng(2)
    positions, types, box = jittered_lattice(rng, n_side=6)
    types[0] = 0
    with pytest.raises(ValueError):
        per_particle_energy(positions, types, box)


def test_rejects_box_below_twice_cutoff():
    # N = 64 at density 1.2 gives a 3.8 σ box: minimum image would miss images.
    rng = np.random.default_rng(4)
    positions, types, box = jittered_lattice(rng, n_side=4)
    with pytest.raises(ValueError):
        per_particle_energy(positions, types, box)


@pytest.mark.parametrize("path", REAL_FILES, ids=["dev_set", "default_data"])
def test_inherent_structure_energy_on_real_data(path):
    # KA at density 1.2 and T = 0.64: inherent structures near −7.59 ε per particle.
    data = np.load(path)
    energies = per_particle_energy(data["initial_positions_inherent"], data["types"], data["box"])
    assert energies.shape == data["types"].shape
    assert -7.62 <= energies.mean() <= -7.56


def test_jit_matches_numpy():
    rng = np.random.default_rng(3)
    types_i = rng.integers(1, 3, size=5000)
    types_j = rng.integers(1, 3, size=5000)
    # Round the distances to float32 first so the comparison measures the
    # arithmetic, not the representation of r.
    r = rng.uniform(0.75, 2.6, size=5000).astype(np.float32).astype(np.float64)
    expected = pair_energy(r, types_i, types_j)

    jitted = jax.jit(pair_energy)
    got = jitted(jnp.asarray(r, dtype=jnp.float32), jnp.asarray(types_i), jnp.asarray(types_j))
    assert isinstance(got, jax.Array) and got.dtype == jnp.float32
    got = np.asarray(got, dtype=np.float64)
    # Relative agreement measured against the size of the repulsive and
    # attractive terms: V is their difference, so where they cancel (V ≈ 0 near
    # σ and at the cutoff) float32 cannot do better than ~1e-7 of the terms.
    epsilon = EPSILON[types_i - 1, types_j - 1]
    s6 = (SIGMA[types_i - 1, types_j - 1] / r) ** 6
    term_scale = 4.0 * epsilon * (s6 * s6 + s6)
    assert np.all(np.abs(got - expected) <= 1e-5 * term_scale)
    # Away from the cancellation the plain relative error is within 1e-5 too.
    clear = np.abs(expected) > 0.1 * term_scale
    assert clear.sum() > 3000
    np.testing.assert_allclose(got[clear], expected[clear], rtol=1e-5)

    # Total energy is dominated by well-defined terms and must agree relatively.
    np.testing.assert_allclose(got.sum(), expected.sum(), rtol=1e-5)


def test_gradient_finite_beyond_cutoff():
    grad = jax.grad(lambda r: pair_energy(r, jnp.array([1, 2]), jnp.array([1, 2])).sum())
    g = grad(jnp.array([1.0, 10.0]))
    assert np.all(np.isfinite(np.asarray(g)))
    assert float(g[1]) == 0.0
