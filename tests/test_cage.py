"""Cage states: Voronoi cages, the checkerboard sampler's temperature, the cage constraint,
symmetry and determinism, and the cage state of a real configuration."""

import itertools

import jax
import numpy as np
import pytest
from scipy.spatial import cKDTree

from eignn_jax.physics import cage, voronoi
from eignn_jax.physics.kob_andersen import CUTOFF_FACTOR, EPSILON, SIGMA, per_particle_energy
from eignn_jax.physics.neighbours import NeighbourListOverflow, neighbour_pairs
from eignn_jax.physics.periodic import wrap

# Minutes on 2 cores: the full suite only (pytest -m "not slow" leaves them out).
pytestmark = pytest.mark.slow

T = 0.64


# ----------------------------------------------------------------------------
# Helpers (independent of the module under test)
# ----------------------------------------------------------------------------


def nearest_generator(points, generators, box):
    """[M] index of the generator nearest to each point (periodic, brute force M × N)."""
    d = wrap(points[:, None, :] - generators[None, :, :], box)
    return np.argmin(np.sum(d * d, axis=-1), axis=1)


def outside_own_cage(sample, origin, box):
    """[N] bool: is particle i of ``sample`` at least as close to some r⁰_j (j ≠ i) as to r⁰_i?

    The definition of the cage, evaluated exactly with a periodic k-d tree of the
    initial positions (independent of the module's Delaunay half-spaces).
    """
    into_box = lambda x: x - box * np.floor(x / box)
    tree = cKDTree(into_box(origin), boxsize=box)
    distances, nearest = tree.query(into_box(sample), k=2)
    own = np.linalg.norm(wrap(sample - origin, box), axis=1)
    other = np.where(nearest[:, 0] == np.arange(len(sample)), distances[:, 1], distances[:, 0])
    return other <= own


def configurational_temperature(samples, types, box, h=0.05):
    """k_B T_conf = Σ_s |∇U|² / Σ_s ∇²U over configurations ``samples`` [S, N, 3].

    The identity ⟨|∇U|²⟩ = k_B T ⟨∇²U⟩ holds for any canonical configurational
    distribution (integrate ∇·(∇U e^{−U/kT}) over the periodic box), whatever the
    algorithm that produced the samples and its acceptance. ∇²U includes the kink
    of the shifted potential at r_c: U' jumps from U'(r_c⁻) to 0, which adds
    −U'(r_c⁻) δ(r − r_c) per ordered pair; the δ is estimated from the pairs in a
    shell of width h below r_c (≈ 0.2 % of ∇²U here).
    """
    numerator = denominator = 0.0
    for x in samples:
        centres, others, shifts = neighbour_pairs(x, box, CUTOFF_FACTOR * SIGMA.max())
        v = x[others] - x[centres] + shifts * box
        r = np.linalg.norm(v, axis=1)
        a, b = types[centres] - 1, types[others] - 1
        sigma, epsilon = SIGMA[a, b], EPSILON[a, b]
        cutoff = CUTOFF_FACTOR * sigma
        inside = r < cutoff
        s6 = (sigma / r) ** 6
        du = np.where(inside, 4 * epsilon * (-12 * s6**2 + 6 * s6) / r, 0.0)
        d2u = np.where(inside, 4 * epsilon * (156 * s6**2 - 42 * s6) / r**2, 0.0)
        gradient = np.zeros_like(x)
        np.add.at(gradient, centres, -(du / r)[:, None] * v)
        c6 = CUTOFF_FACTOR**-6
        du_cut = 4 * epsilon * (-12 * c6**2 + 6 * c6) / cutoff
        shell = (r >= cutoff - h) & (r < cutoff)
        numerator += np.sum(gradient**2)
        denominator += np.sum(d2u + 2 * du / r) - np.sum(np.where(shell, du_cut, 0.0)) / h
    return numerator / denominator


def flat(trajectory):
    """[S, R, N, 3] → [S·R, N, 3]."""
    return trajectory.reshape(-1, *trajectory.shape[-2:])


# ----------------------------------------------------------------------------
# Shared runs (module scope: each runs once)
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(configuration):
    return (np.asarray(configuration.positions, np.float64), configuration.types,
            np.asarray(configuration.box, np.float64))


@pytest.fixture(scope="module")
def free_run(real):
    """Unconstrained sampler at T = 0.64 from the real (MD-equilibrated) configuration."""
    positions, types, box = real
    config = cage.CageConfig(temperature=T, constrain=False, replicas=2, equilibration_sweeps=10,
                             sweeps=80, sample_interval=2, keep_samples=True)
    return cage.cage_state(positions, types, box, config)


@pytest.fixture(scope="module")
def hot_runs(real):
    """Free and caged runs at T = 2: hot enough that free particles leave their cells."""
    positions, types, box = real
    runs = {}
    for constrain in (False, True):
        config = cage.CageConfig(temperature=2.0, constrain=constrain, replicas=2,
                                 equilibration_sweeps=0, sweeps=100, sample_interval=5,
                                 keep_samples=True)
        runs[constrain] = cage.cage_state(positions, types, box, config)
    return runs


# ----------------------------------------------------------------------------
# Voronoi cages and checkerboard geometry
# ----------------------------------------------------------------------------


def test_voronoi_cages_match_brute_force_nearest_generator():
    rng = np.random.default_rng(3)
    n, side = 300, (300 / 1.2) ** (1 / 3)
    box = np.array([side, side * 1.1, side * 0.95])
    generators = rng.uniform(0, 1, (n, 3)) * box - 0.4 * box   # some outside [0, L)
    cages = voronoi.voronoi_cages(generators, box)
    # Trial points around each generator, up to beyond its farthest cell vertex.
    directions = rng.normal(size=(20, n, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    lengths = rng.uniform(0, 1.2, (20, n, 1)) * cages.radius[None, :, None]
    displacements = directions * lengths
    inside = cages.contains(displacements)                          # [20, N]
    truth = np.stack([nearest_generator(generators + u, generators, box) == np.arange(n)
                      for u in displacements])
    np.testing.assert_array_equal(inside, truth)
    assert 0.1 < inside.mean() < 0.95
    # The radius bounds the cell: no inside point is farther than it.
    assert np.all(np.linalg.norm(displacements, axis=-1)[inside]
                  <= np.broadcast_to(cages.radius, inside.shape)[inside] + 1e-9)


@pytest.mark.parametrize("side", [5.7, 9.41, 11.0, 15.0])
def test_checkerboard_cells_of_one_colour_never_interact(side):
    """Two cells of one colour are ≥ r_max apart (periodically), so their moves are independent."""
    box = np.array([side, side * 1.3, side])
    grid = cage._grid(box)
    counts = np.array(grid.counts)
    assert np.all(counts % 3 == 0)
    r_max = CUTOFF_FACTOR * SIGMA.max()
    cell = box / counts
    assert np.all(cell >= r_max / 2)
    for cells in grid.active:
        coords = np.stack(np.unravel_index(cells, grid.counts), axis=1)
        for a, b in itertools.combinations(coords, 2):
            gap = np.abs(a - b) % counts
            gap = np.minimum(gap, counts - gap)                  # periodic cell distance
            # Separation between the closest points of the two cells, per axis.
            separation = np.maximum(gap - 1, 0) * cell
            assert np.sqrt(np.sum(separation**2)) >= r_max - 1e-12
    # Every cell has exactly one colour.
    assert sorted(grid.active.ravel()) == list(range(grid.n_cells))


# ----------------------------------------------------------------------------
# Sampler: temperature and energies
# ----------------------------------------------------------------------------


def test_configurational_temperature_estimator_on_md_configurations(default_files):
    """The estimator itself gives the MD temperature on the NVT configurations."""
    from eignn_jax import dataset
    configs = [dataset.load_configuration(path) for path in default_files]
    value = np.mean([configurational_temperature([np.asarray(c.positions, np.float64)], c.types,
                                                 np.asarray(c.box, np.float64)) for c in configs])
    # 12 configurations, per-configuration spread ≈ 0.03.
    assert value == pytest.approx(T, abs=0.02)


def test_unconstrained_sampler_has_the_right_temperature(free_run, real):
    """Without cages, the checkerboard Metropolis chain samples the canonical ensemble at T.

    The configurational temperature does not depend on how samples were made, so a
    sampler with broken detailed balance (e.g. interacting particles moved at once)
    or the wrong β would miss it. 80 sweeps × 2 replicas: statistical error ≈ 0.5 %.
    """
    _, types, box = real
    measured = configurational_temperature(flat(free_run.trajectory)[::2], types, box)
    assert measured == pytest.approx(T, rel=0.025)
    assert free_run.neighbour_builds > 1          # the list was rebuilt along the way
    assert 0.2 < free_run.acceptance < 0.5


def test_configurational_temperature_tracks_the_sampler_temperature(hot_runs, real):
    """Negative control: the same check on a run at T = 2 finds 2, not 0.64.

    (Started from a T = 0.64 configuration 50–100 sweeps earlier, the run is still
    relaxing, hence the looser tolerance.)
    """
    _, types, box = real
    measured = configurational_temperature(flat(hot_runs[False].trajectory)[20::2], types, box)
    assert measured == pytest.approx(2.0, rel=0.06)


def test_sample_energies_match_the_potential_module(hot_runs, free_run, real):
    """Recorded energies (every 10th sample) equal kob_andersen.per_particle_energy."""
    _, types, box = real
    for run in (hot_runs[True], free_run):
        every = run.trajectory.shape[0] // run.sample_energies.shape[0]
        assert every == 10
        for row, k in itertools.product((0, -1), range(run.trajectory.shape[1])):
            sample = run.trajectory[::every][row, k]
            expected = per_particle_energy(sample, types, box).mean()
            assert run.sample_energies[row, k] == pytest.approx(expected, abs=2e-4)
        assert run.mean_energy == pytest.approx(run.sample_energies.mean())


# ----------------------------------------------------------------------------
# Cage constraint
# ----------------------------------------------------------------------------


def test_no_particle_ever_leaves_its_cage(hot_runs, real):
    """Every recorded sample of the caged run has every particle nearest its own r⁰.

    At T = 2 the same run without cages has particles in other cells, so the check
    has something to catch, and the caged run keeps hitting cage walls.
    """
    origin, _, box = real
    caged, free = flat(hot_runs[True].trajectory), flat(hot_runs[False].trajectory)
    assert caged.shape[0] == hot_runs[True].samples == 40
    for sample in caged:
        assert not outside_own_cage(sample, origin, box).any()
    assert hot_runs[True].rejected_cage_moves > 50
    assert sum(outside_own_cage(sample, origin, box).sum() for sample in free) > 10
    assert hot_runs[False].rejected_cage_moves == 0


def test_cage_check_flags_a_particle_past_the_midpoint(real):
    """The check (and VoronoiCages.contains) flags a particle pushed just past the
    bisector towards its nearest neighbour's initial position, and only that one."""
    origin, _, box = real
    sample = origin.copy()
    towards = wrap(origin - origin[0], box)
    towards[0] = np.inf
    j = int(np.argmin(np.sum(towards**2, axis=1)))
    sample[0] = origin[0] + 0.55 * towards[j]
    outside = outside_own_cage(sample, origin, box)
    np.testing.assert_array_equal(np.flatnonzero(outside), [0])
    cages = voronoi.voronoi_cages(origin, box)
    np.testing.assert_array_equal(~cages.contains(sample - origin), outside)
    sample[0] = origin[0] + 0.45 * towards[j]
    assert not outside_own_cage(sample, origin, box).any()


# ----------------------------------------------------------------------------
# Symmetry and determinism
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_config():
    return cage.CageConfig(temperature=T, replicas=2, equilibration_sweeps=10, sweeps=30,
                           sample_interval=2)


@pytest.fixture(scope="module")
def short_runs(real, short_config):
    positions, types, box = real
    key = jax.random.PRNGKey(11)
    first = cage.cage_state(positions, types, box, short_config, key=key)
    again = cage.cage_state(positions, types, box, short_config, key=key)
    other = cage.cage_state(positions, types, box, short_config, key=jax.random.PRNGKey(12))
    return key, first, again, other


def test_same_key_gives_identical_result(short_runs):
    _, first, again, other = short_runs
    np.testing.assert_array_equal(first.positions, again.positions)
    assert first.acceptance == again.acceptance
    assert first.rejected_cage_moves == again.rejected_cage_moves
    assert not np.array_equal(first.positions, other.positions)
    assert first.positions.dtype == np.float64


def test_translating_the_input_translates_the_cage_state(real, short_config, short_runs):
    positions, types, box = real
    key, first, _, other = short_runs
    rng = np.random.default_rng(5)
    shift = np.array([1.3, -4.1, 7.7])
    # Translate and re-wrap a third of the particles by whole boxes.
    rewrap = rng.integers(-1, 2, positions.shape) * (rng.random((len(positions), 1)) < 0.3)
    image = box * rewrap                                              # whole-box offsets
    moved = positions + shift + image
    # Same key: the chain only sees relative positions, so the result moves with the input.
    same = cage.cage_state(moved, types, box, short_config, key=key)
    np.testing.assert_allclose(same.positions - image - shift, first.positions, atol=2e-5)
    # Other key: equal in distribution. The mean over particles shifts by exactly the
    # translation and the scatter equals that of two keys on the untranslated input.
    fresh = cage.cage_state(moved, types, box, short_config, key=jax.random.PRNGKey(99))
    difference = fresh.positions - image - shift - first.positions
    reference = other.positions - first.positions
    np.testing.assert_allclose(difference.mean(axis=0), 0.0, atol=0.015)
    spread, reference_spread = np.sqrt(np.mean(difference**2)), np.sqrt(np.mean(reference**2))
    assert spread == pytest.approx(reference_spread, rel=0.25)
    # Each average stays in the periodic image of its own input position.
    assert np.max(np.abs(fresh.positions - moved)) < 1.0


# ----------------------------------------------------------------------------
# Cage state of a real configuration
# ----------------------------------------------------------------------------


def test_cage_state_of_a_dev_configuration(real, configuration):
    """T = 0.64: typical |Δr| ≈ 0.1 σ, in the direction the particles actually go.

    ``md_disp`` at t = 1.3 τ (caging plateau) is each particle's mean displacement
    over 8 MD runs from the same configuration: the cage state should point the
    same way. This short run (4 × 180 sweeps) correlates with it at ≈ 0.65, the
    default one at ≈ 0.83; the initial positions themselves, trivially, at 0.
    """
    positions, types, box = real
    config = cage.CageConfig(temperature=T, replicas=4, equilibration_sweeps=80, sweeps=100)
    result = cage.cage_state(positions, types, box, config)
    delta = result.positions - positions
    assert 0.05 < np.median(np.linalg.norm(delta, axis=1)) < 0.2
    times = list(np.round(np.asarray(configuration.times), 3))
    md = np.asarray(configuration.extras["md_disp"])[times.index(1.3)]
    assert np.corrcoef(delta.ravel(), md.ravel())[0, 1] > 0.5
    assert result.samples == 4 * 50 and result.sweeps == 180
    # The cages were felt: some trial moves hit a wall (≈ 0.3 % at T = 0.64).
    assert 0 < result.rejected_cage_moves < 0.01 * result.attempted_moves


def test_neighbour_list_overflow_is_detected(real):
    """A list with too few slots is never truncated: packing raises, the sampler reallocates."""
    positions, types, box = real
    u = np.zeros((1, len(positions), 3))
    with pytest.raises(NeighbourListOverflow):
        cage._verlet_neighbours(positions, u, types, box, 0.8, 50)
    neighbours = cage._verlet_neighbours(positions, u, types, box, 0.8, 200)
    counts = np.asarray(neighbours.cutoff2 > 0).sum(axis=1)
    # Every pair within 2.5 σ_ab + skin is there, each once.
    centres, others, _ = neighbour_pairs(positions, box, CUTOFF_FACTOR * SIGMA.max() + 0.8)
    vectors = wrap(positions[others] - positions[centres], box)
    reach = CUTOFF_FACTOR * SIGMA[types[centres] - 1, types[others] - 1] + 0.8
    expected = np.bincount(centres[np.linalg.norm(vectors, axis=1) < reach], minlength=len(positions))
    np.testing.assert_array_equal(counts, expected)


def test_invalid_inputs_are_rejected(real):
    positions, types, box = real
    config = cage.CageConfig(temperature=T, sweeps=2, sample_interval=1)
    with pytest.raises(ValueError, match="types"):
        cage.cage_state(positions, np.full(len(positions), 3), box, config)
    with pytest.raises(ValueError, match="too small"):
        cage.cage_state(positions[:100] % 3.0, types[:100], np.full(3, 3.0), config)
    with pytest.raises(ValueError, match="temperature"):
        cage.CageConfig(temperature=0.0)
    with pytest.raises(ValueError, match="skin"):
        cage.CageConfig(temperature=T, constrain=False, step_size=0.3, skin=0.5)
