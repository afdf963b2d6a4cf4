"""The physics of the Kob–Andersen glass former, each quantity defined once.

* :mod:`~eignn_jax.physics.periodic`: boxes, wrapping and minimum images.
* :mod:`~eignn_jax.physics.kob_andersen`: the mixture's parameters and its one pair kernel
  (energies, forces, per-particle energies, the OpenMM expression).
* :mod:`~eignn_jax.physics.neighbours`: every neighbour-list format and search.
* :mod:`~eignn_jax.physics.descent`, :mod:`~eignn_jax.physics.fire`,
  :mod:`~eignn_jax.physics.lbfgs`: energy minimisers as state machines over a force field;
  :mod:`~eignn_jax.physics.minimise`: inherent structures with them.
* :mod:`~eignn_jax.physics.voronoi`, :mod:`~eignn_jax.physics.cage`: cage states.
* :mod:`~eignn_jax.physics.md` (OpenMM, optional) and :mod:`~eignn_jax.physics.observables`:
  molecular dynamics and what is measured on it.
"""
