"""Inherent structures by FIRE and L-BFGS: forces, descent, neighbour-list upkeep, real configurations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eignn_jax import dataset
from eignn_jax.physics import fire, kob_andersen, lbfgs, minimise, neighbours
from eignn_jax.physics.minimise import KA_FORCE_FIELD
from eignn_jax.physics.periodic import wrap
from tests.conftest import DEV_SET_FILE

# Minutes on 2 cores: the full suite only (pytest -m "not slow" leaves them out).
pytestmark = pytest.mark.slow

# A dev-set configuration on which our FIRE and L-BFGS and the shipped (OpenMM, single
# precision) minimisation end in the same basin; on others they can differ.
AGREEING_FILE = DEV_SET_FILE


def jittered_lattice(seed, n_side=6, density=1.2, jitter=0.1):
    """KA 80:20 on a jittered simple-cubic lattice: positions [n³, 3] σ, types [n³], box [3] σ.

    n_side = 6 at density 1.2 gives N = 216 and L = 5.65 σ, just above the
    2 (2.5 + 0.3) σ the default skin needs.
    """
    rng = np.random.default_rng(seed)
    n = n_side**3
    box = kob_andersen.box_from_density(n, density)
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (grid + 0.5) * box / n_side + rng.uniform(-jitter, jitter, size=(n, 3))
    types = np.ones(n, np.int32)
    types[rng.choice(n, size=n // 5, replace=False)] = 2
    return positions, types, box


def brute_force(positions, types, box):
    """Total energy (ε) and forces [N, 3] (ε/σ) in float64 from all minimum-image model."""
    positions = np.asarray(positions, np.float64)
    vectors = wrap(positions[None, :, :] - positions[:, None, :], box)  # [i, j] = x_j - x_i
    r = np.linalg.norm(vectors, axis=-1)
    np.fill_diagonal(r, np.inf)
    ti, tj = types[:, None] - 1, types[None, :] - 1
    sigma, epsilon = kob_andersen.SIGMA[ti, tj], kob_andersen.EPSILON[ti, tj]
    inside = r < 2.5 * sigma
    energy = 0.5 * np.sum(kob_andersen.pair_energy(np.where(inside, r, 10.0),
                                                np.broadcast_to(types[:, None], r.shape),
                                                np.broadcast_to(types[None, :], r.shape)))
    # dV/dr = -24 ε (2 (σ/r)^12 - (σ/r)^6) / r; the force on i is (dV/dr) r̂_ij.
    sr6 = np.where(inside, (sigma / r) ** 6, 0.0)
    dvdr = -24.0 * epsilon * (2.0 * sr6 * sr6 - sr6) / r
    forces = np.sum((dvdr / r)[:, :, None] * vectors, axis=1)
    return energy, forces


def max_force(forces):
    return float(np.max(np.linalg.norm(forces, axis=1)))


def test_forces_are_minus_gradient_and_match_brute_force():
    positions, types, box = jittered_lattice(seed=1)
    # Put some particles in other periodic images: the list's shifts must absorb them.
    rng = np.random.default_rng(2)
    moved = rng.choice(len(types), size=40, replace=False)
    positions[moved] += rng.integers(-2, 3, size=(40, 3)) * box
    reference_energy, reference_forces = brute_force(positions, types, box)
    assert max_force(reference_forces) > 10.0  # far from a minimum: a demanding comparison

    with jax.enable_x64(True):
        model = minimise.ka_model(positions, types, box, skin=0.3, capacity=20_000,
                                              dtype=jnp.float64)
        x = jnp.asarray(positions, jnp.float64)
        energy, forces = jax.jit(KA_FORCE_FIELD.energy_and_forces)(x, model)
        gradient = jax.grad(lambda y: KA_FORCE_FIELD.energy_and_forces(y, model)[0])(x)
        assert energy.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(forces), -np.asarray(gradient), rtol=0, atol=1e-9)
        np.testing.assert_allclose(float(energy), reference_energy, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(forces), reference_forces, rtol=0, atol=1e-9)

    # Float32 (the first phase of inherent_structure) agrees to float32 round-off:
    # coordinates up to ~3 L carry ~2e-6 σ absolute error, which the steep
    # repulsion at the closest contacts amplifies to a few 1e-5 relative.
    model32 = minimise.ka_model(positions, types, box, skin=0.3, capacity=20_000)
    energy32, forces32 = KA_FORCE_FIELD.energy_and_forces(jnp.asarray(positions, jnp.float32), model32)
    assert forces32.dtype == jnp.float32
    np.testing.assert_allclose(float(energy32), reference_energy, rtol=1e-5)
    scale = np.max(np.abs(reference_forces))
    np.testing.assert_allclose(np.asarray(forces32), reference_forces, rtol=0, atol=1e-4 * scale)


def test_overdamped_fire_is_steepest_descent_and_lowers_the_energy_every_step():
    positions, types, box = jittered_lattice(seed=3)
    dt = 0.005
    # Overdamped limit: the velocity is zeroed before every step (infinite
    # friction). The kick then gives v = dt F, parallel to F, so FIRE's mix
    # (1 − α) v + α |v| F̂ returns v unchanged for any α, and the step is exactly
    # steepest descent x ← x + dt² F. P = F·0 = 0 counts as downhill, so dt would
    # grow after N_min steps; f_inc = 1 and dt_max = dt keep the step fixed.
    # With dt² times the largest curvature below 2, every step lowers the energy.
    config = minimise.FireConfig(dt_start=dt, dt_max=dt, f_inc=1.0, alpha_start=1.0, f_alpha=1.0)
    with jax.enable_x64(True):
        model = minimise.ka_model(positions, types, box, config.skin, 20_000,
                                              dtype=jnp.float64)
        parameters = fire.parameters(config, jnp.float64)
        state = fire.init(jnp.asarray(positions), KA_FORCE_FIELD, model, config)
        energy = lambda s: float(KA_FORCE_FIELD.energy_and_forces(s.positions, model)[0])
        energies = [energy(state)]
        for _ in range(60):
            before = state._replace(velocities=jnp.zeros_like(state.velocities))
            state = fire.steps(before, KA_FORCE_FIELD, model, parameters,
                                        jnp.int32(int(before.iteration) + 1), jnp.float64(0.0))
            np.testing.assert_allclose(np.asarray(state.positions - before.positions),
                                       dt * dt * np.asarray(before.forces), rtol=1e-12, atol=1e-15)
            assert float(state.dt) == dt
            if bool(state.displaced):
                # The first steps move the most crowded particles far: renew the
                # list (and the forces) as inherent_structure would.
                model = minimise.ka_model(np.asarray(state.positions), types, box,
                                                      config.skin, 20_000, dtype=jnp.float64)
                state = fire.init(state.positions, KA_FORCE_FIELD, model, config)
            energies.append(energy(state))
    steps = np.diff(energies)
    assert np.all(steps < 0), f"energy rose at steps {np.flatnonzero(steps >= 0)}"
    assert energies[-1] < energies[0] - 50.0  # a real descent, not round-off


def test_default_fire_converges_checked_independently():
    positions, types, box = jittered_lattice(seed=4)
    start_energy, _ = brute_force(positions, types, box)
    result = minimise.inherent_structure(positions, types, box)

    energy, forces = brute_force(result.positions, types, box)
    assert max_force(forces) < 1e-4
    assert result.max_force < 1e-4
    assert result.positions.dtype == np.float64 and result.positions.shape == positions.shape
    np.testing.assert_allclose(result.energy_per_particle, energy / len(types), rtol=1e-10)
    assert energy < start_energy
    assert result.iterations > result.float64_iterations > 0
    # Each particle stays in its input image: no displacement near a box length.
    assert np.max(np.abs(result.positions - positions)) < 0.5 * box[0]
    # float64 was enabled only inside the call.
    assert jnp.zeros(1).dtype == jnp.float32


@pytest.mark.parametrize("config,message", [
    (minimise.FireConfig(max_iterations=20), r"max \|F\| = "),
    (minimise.LbfgsConfig(max_iterations=20), r"L-BFGS .*max \|F\| = "),
], ids=["fire", "lbfgs"])
def test_non_convergence_raises_with_the_force_reached(config, message):
    positions, types, box = jittered_lattice(seed=5)
    with pytest.raises(minimise.MinimisationError, match=message):
        minimise.inherent_structure(positions, types, box, config)


def test_list_covers_until_half_the_skin():
    positions, types, box = jittered_lattice(seed=6)
    skin = 0.2
    model = minimise.ka_model(positions, types, box, skin, 20_000)
    for distance, expected in ((0.49 * skin, True), (0.51 * skin, False)):
        moved = positions.copy()
        moved[17] += distance * np.array([0.6, 0.0, 0.8])
        assert bool(neighbours.covers(jnp.asarray(moved, jnp.float32), model.pairs)) is expected


def test_fire_steps_stop_when_a_particle_leaves_half_the_skin():
    positions, types, box = jittered_lattice(seed=7)
    config = minimise.FireConfig(skin=0.2)
    model = minimise.ka_model(positions, types, box, config.skin, 20_000)
    state = fire.init(jnp.asarray(positions, jnp.float32), KA_FORCE_FIELD, model, config)
    state = fire.steps(state, KA_FORCE_FIELD, model, fire.parameters(config),
                                jnp.int32(10_000), jnp.float32(0.0))
    assert bool(state.displaced)
    assert int(state.iteration) < 10_000
    displacement = np.linalg.norm(np.asarray(state.positions) - positions, axis=1)
    assert displacement.max() > 0.5 * config.skin


def test_minimisation_rebuilds_the_list_and_stays_exact():
    positions, types, box = jittered_lattice(seed=8)
    skin = 0.05
    result = minimise.inherent_structure(positions, types, box, minimise.FireConfig(skin=skin))
    # Particles travel several half-skins, so the list had to be rebuilt; forces
    # from a stale list would miss model and the independent check would fail.
    assert np.max(np.linalg.norm(result.positions - positions, axis=1)) > skin
    assert result.neighbour_rebuilds >= 2
    _, forces = brute_force(result.positions, types, box)
    assert max_force(forces) < 1e-4


def test_overflow_is_detected_and_capacity_grown():
    positions, types, box = jittered_lattice(seed=9)
    with pytest.raises(neighbours.NeighbourListOverflow) as overflow:
        minimise.ka_model(positions, types, box, 0.3, capacity=100)
    n_pairs = overflow.value.n_pairs
    assert n_pairs > 100

    # Padding slots contribute nothing: a roomier list gives the same energy and forces.
    x = jnp.asarray(positions, jnp.float32)
    exact = minimise.ka_model(positions, types, box, 0.3, capacity=n_pairs)
    roomy = minimise.ka_model(positions, types, box, 0.3, capacity=2 * n_pairs)
    np.testing.assert_allclose(KA_FORCE_FIELD.energy_and_forces(x, exact)[1],
                               KA_FORCE_FIELD.energy_and_forces(x, roomy)[1], atol=1e-4)

    result = minimise.inherent_structure(positions, types, box,
                                         minimise.FireConfig(initial_capacity=100))
    assert result.capacity_reallocations >= 1
    assert result.neighbour_capacity > n_pairs * 0.9
    _, forces = brute_force(result.positions, types, box)
    assert max_force(forces) < 1e-4


@pytest.mark.parametrize("method", ["fire", "lbfgs"])
def test_real_configuration_reaches_the_shipped_inherent_structure(method):
    config = dataset.load_configuration(AGREEING_FILE)
    result = minimise.inherent_structure(config.positions, config.types, config.box, method=method)

    _, forces = brute_force(result.positions, config.types, config.box)
    assert max_force(forces) < 1e-4
    ours = float(np.mean(kob_andersen.per_particle_energy(result.positions, config.types, config.box)))
    shipped = float(np.mean(kob_andersen.per_particle_energy(config.inherent, config.types, config.box)))
    np.testing.assert_allclose(result.energy_per_particle, ours, rtol=1e-10)
    assert abs(ours - shipped) < 1e-3
    assert -7.65 < ours < -7.5


# ----------------------------------------------------------------------------
# L-BFGS
# ----------------------------------------------------------------------------


def test_lbfgs_direction_is_the_bfgs_inverse_hessian_applied_to_minus_the_gradient():
    # The two-loop recursion over a ring buffer (newest pair not in the last slot,
    # one slot unused) against the BFGS update written out as dense matrices:
    # H₀ = (s·y / y·y) I from the newest pair, then H ← Vᵀ H V + ρ s sᵀ with
    # V = I − ρ y sᵀ, ρ = 1 / (s·y), oldest pair first.
    rng = np.random.default_rng(10)
    n, memory, stored, next_slot = 4, 5, 4, 2   # model in slots 3, 4, 0, 1 (oldest → newest)
    with jax.enable_x64(True):
        hessian = rng.normal(size=(3 * n, 3 * n))
        hessian = hessian @ hessian.T + 3 * n * np.eye(3 * n)
        s_history = rng.normal(size=(memory, n, 3))
        y_history = (s_history.reshape(memory, -1) @ hessian).reshape(memory, n, 3)
        s_history[(next_slot + 1) % memory] = y_history[(next_slot + 1) % memory] = 1e3  # unused slot
        sy = np.einsum("kij,kij->k", s_history, y_history)
        forces = rng.normal(size=(n, 3))

        order = [(next_slot - stored + i) % memory for i in range(stored)]
        newest = order[-1]
        h = sy[newest] / np.sum(y_history[newest] ** 2) * np.eye(3 * n)
        for k in order:
            s, y = s_history[k].ravel(), y_history[k].ravel()
            rho = 1.0 / (s @ y)
            v = np.eye(3 * n) - rho * np.outer(y, s)
            h = v.T @ h @ v + rho * np.outer(s, s)
        expected = (h @ forces.ravel()).reshape(n, 3)   # −H g with g = −F

        direction = lbfgs._direction(
            jnp.asarray(forces), jnp.asarray(s_history), jnp.asarray(y_history), jnp.asarray(sy),
            jnp.int32(stored), jnp.int32(next_slot))
        np.testing.assert_allclose(np.asarray(direction), expected, rtol=1e-10, atol=1e-12)
        # With nothing stored the direction is the force itself.
        empty = lbfgs._direction(jnp.asarray(forces), jnp.asarray(s_history),
                                          jnp.asarray(y_history), jnp.asarray(sy),
                                          jnp.int32(0), jnp.int32(next_slot))
        np.testing.assert_allclose(np.asarray(empty), forces, rtol=0, atol=0)


def test_lbfgs_lowers_the_energy_at_every_accepted_step():
    positions, types, box = jittered_lattice(seed=11)
    config = minimise.LbfgsConfig()
    with jax.enable_x64(True):
        model = minimise.ka_model(positions, types, box, config.skin, 20_000,
                                              dtype=jnp.float64)
        parameters = lbfgs.parameters(config, jnp.float64)
        state = lbfgs.init(jnp.asarray(positions), KA_FORCE_FIELD, model, config)
        start_forces = np.asarray(state.forces)
        energies = [brute_force(positions, types, box)[0]]
        steps = []
        while int(state.iteration) < 80:
            before = state
            state = lbfgs.steps(state, KA_FORCE_FIELD, model, parameters,
                                         jnp.int32(int(state.iteration) + 1), jnp.float64(0.0))
            assert not bool(state.failed)
            if bool(state.displaced):
                # Rebuild around the point the line search evaluates next, as
                # inherent_structure does, and go on.
                model = minimise.ka_model(np.asarray(state.trial_positions), types, box,
                                                      config.skin, 20_000, dtype=jnp.float64)
                state = state._replace(displaced=~neighbours.covers(state.trial_positions, model.pairs))
                continue
            assert int(state.iteration) == int(before.iteration) + 1
            # The energy the state carries is the true one (a complete list was used) ...
            energy, forces = brute_force(np.asarray(state.positions), types, box)
            np.testing.assert_allclose(float(state.energy), energy, rtol=1e-12)
            np.testing.assert_allclose(np.asarray(state.forces), forces, rtol=0, atol=1e-9)
            # ... and it dropped by at least the sufficient decrease of the search.
            step = np.asarray(state.positions - before.positions)
            slope_bound = config.armijo * float(jnp.vdot(-before.forces, jnp.asarray(step)))
            assert energy <= energies[-1] + slope_bound + 1e-9
            energies.append(energy)
            steps.append(step)
    assert np.all(np.diff(energies) < 0), f"energy rose at steps {np.flatnonzero(np.diff(energies) >= 0)}"
    assert energies[-1] < energies[0] - 50.0
    # The first step is steepest descent; the line search was exercised (some trials rejected).
    cosine = np.vdot(steps[0], start_forces) / np.linalg.norm(steps[0]) / np.linalg.norm(start_forces)
    assert cosine > 1 - 1e-12
    assert int(state.evaluations) > int(state.iteration)


def test_lbfgs_rejects_a_trial_that_passes_the_curvature_test_but_raises_the_energy():
    # Particle 0 passes particle 1 on a straight line, 0.9 σ from it at closest
    # approach. The start (2 σ before that point) is in 1's attractive tail, so
    # moving along the line is downhill; the trial point, the closest approach,
    # is the top of the repulsive bump: zero slope along the line (the strong
    # Wolfe curvature test passes) but a much higher energy. Only the
    # sufficient-decrease test stands between that trial and an accepted step.
    box = np.full(3, 10.0)
    types = np.array([1, 1], np.int32)
    positions = np.array([[3.0, 5.9, 5.0], [5.0, 5.0, 5.0]])
    config = minimise.LbfgsConfig()
    with jax.enable_x64(True):
        model = minimise.ka_model(positions, types, box, config.skin, 4, dtype=jnp.float64)
        state = lbfgs.init(jnp.asarray(positions), KA_FORCE_FIELD, model, config)
        direction = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        slope = -float(jnp.vdot(state.forces, direction))
        assert slope < 0.0
        state = state._replace(direction=direction, step=jnp.float64(2.0), slope=jnp.float64(slope))
        trial = np.asarray(state.trial_positions)
        trial_energy, trial_forces = brute_force(trial, types, box)
        assert trial_energy > float(state.energy) + 5.0
        assert abs(np.vdot(trial_forces, np.asarray(direction))) < 1e-9

        model = minimise.ka_model(trial, types, box, config.skin, 4, dtype=jnp.float64)
        state = state._replace(displaced=~neighbours.covers(state.trial_positions, model.pairs))
        after = lbfgs.steps(state, KA_FORCE_FIELD, model, lbfgs.parameters(config, jnp.float64),
                                     jnp.int32(1), jnp.float64(0.0))
    # One evaluation (the next trial, at step 1, is outside the new list: the loop stops).
    assert int(after.evaluations) == 1
    assert int(after.iteration) == 0
    np.testing.assert_array_equal(np.asarray(after.positions), positions)
    assert float(after.energy) == float(state.energy)
    assert float(after.step) == 1.0


def test_lbfgs_converges_checked_independently():
    positions, types, box = jittered_lattice(seed=12)
    start_energy, _ = brute_force(positions, types, box)
    result = minimise.inherent_structure(positions, types, box, method="lbfgs")

    energy, forces = brute_force(result.positions, types, box)
    assert result.method == "lbfgs"
    assert max_force(forces) < 1e-4
    assert result.max_force < 1e-4
    np.testing.assert_allclose(result.energy_per_particle, energy / len(types), rtol=1e-10)
    assert energy < start_energy
    assert result.iterations > result.float64_iterations > 0
    assert result.evaluations >= result.iterations
    assert np.max(np.abs(result.positions - positions)) < 0.5 * box[0]
    assert jnp.zeros(1).dtype == jnp.float32


def test_lbfgs_rebuilds_the_list_for_its_trial_points_and_stays_exact():
    positions, types, box = jittered_lattice(seed=13)
    result = minimise.inherent_structure(positions, types, box, minimise.LbfgsConfig(skin=0.05))
    assert result.neighbour_rebuilds >= 2
    _, forces = brute_force(result.positions, types, box)
    assert max_force(forces) < 1e-4


def test_method_and_config_must_agree():
    positions, types, box = jittered_lattice(seed=14)
    with pytest.raises(ValueError, match="does not match"):
        minimise.inherent_structure(positions, types, box, minimise.FireConfig(), method="lbfgs")
    with pytest.raises(ValueError, match="unknown minimisation method"):
        minimise.inherent_structure(positions, types, box, method="bfgs")


def test_lbfgs_and_fire_find_the_same_minimum_near_a_shipped_inherent_structure():
    config = dataset.load_configuration(AGREEING_FILE)
    rng = np.random.default_rng(15)
    start = np.asarray(config.inherent, np.float64) + rng.normal(scale=0.02, size=config.inherent.shape)
    lbfgs = minimise.inherent_structure(start, config.types, config.box, method="lbfgs")
    fire = minimise.inherent_structure(start, config.types, config.box, method="fire")

    shift = wrap(lbfgs.positions - fire.positions, config.box)
    assert np.mean(np.linalg.norm(shift, axis=1)) < 1e-3
    assert abs(lbfgs.energy_per_particle - fire.energy_per_particle) < 1e-6
    shipped = float(np.mean(kob_andersen.per_particle_energy(config.inherent, config.types, config.box)))
    assert abs(lbfgs.energy_per_particle - shipped) < 1e-4
