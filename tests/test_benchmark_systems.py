"""The benchmark systems (``benchmarks.systems``): a generated KA liquid and a tiled configuration.

The benchmarks build their N = 4096 system and every tiled size with these functions, so a
change of the physics API that they miss would break the benchmarks without a failing test.
"""

import numpy as np
import pytest

from benchmarks import systems
from eignn_jax.physics import kob_andersen, periodic


@pytest.fixture(scope="module")
def small_configuration():
    # 8³ = 512 particles: the smallest cubic KA box (7.5 σ) that the 2.5 σ cutoff plus
    # the 1 σ Langevin skin allows.
    return systems.ka_configuration(8, seed=3, md_steps=200)


def test_generated_liquid_is_a_dense_ka_liquid(small_configuration):
    config = small_configuration
    assert config.positions.shape == (512, 3) and np.all(np.isfinite(config.positions))
    assert np.sum(config.types == 2) == 512 // 5
    np.testing.assert_allclose(np.prod(config.box), 512 / kob_andersen.DENSITY)
    # Melted and cooled, not exploded or stuck on the lattice: the potential energy per
    # particle of the KA liquid at T ≈ 0.64 lies near −6.6 ε; a lattice with overlaps or a
    # gas would be far from it.
    energy = kob_andersen.per_particle_energy(config.positions, config.types, config.box).mean()
    assert -7.2 < energy < -6.0
    # Its inherent structure is a local minimum below it, in the image nearest each particle.
    inherent_energy = kob_andersen.per_particle_energy(config.inherent, config.types, config.box).mean()
    assert inherent_energy < energy - 0.3
    assert np.max(np.abs(config.inherent - config.positions)) < config.box[0] / 2


def test_tiling_keeps_every_particle_environment(small_configuration):
    config = small_configuration
    tiled = systems.replicate(config, 2)
    assert tiled.n_particles == 8 * config.n_particles
    np.testing.assert_allclose(tiled.box, 2 * config.box)
    # Periodic images of the small box are the neighbours of each copy in the large one,
    # so every copy of a particle has that particle's energy, in both structures.
    for small, large in [(config.positions, tiled.positions), (config.inherent, tiled.inherent)]:
        base = kob_andersen.per_particle_energy(small, config.types, config.box)
        np.testing.assert_allclose(
            kob_andersen.per_particle_energy(large, tiled.types, tiled.box).reshape(8, -1),
            np.broadcast_to(base, (8, len(base))), atol=1e-9)
    # Each copy's equilibrium displacement is the original one.
    displacement = periodic.wrap(config.inherent - config.positions, config.box)
    np.testing.assert_allclose((tiled.inherent - tiled.positions).reshape(8, -1, 3),
                               np.broadcast_to(displacement, (8, *displacement.shape)), atol=1e-9)
