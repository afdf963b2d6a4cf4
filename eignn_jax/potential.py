"""Kob–Andersen 80:20 binary Lennard-Jones mixture, reduced (LJ) units.

Particle types are 1 (A) and 2 (B), as stored in the data files. Energies are
in units of ε_AA, lengths in σ_AA.

The pair potential is truncated at r_c = 2.5 σ_ab and shifted by a constant so
that it vanishes at the cutoff:

    V_ab(r) = 4 ε_ab [(σ_ab/r)^12 - (σ_ab/r)^6] - V_ab^LJ(r_c),   r < r_c
    V_ab(r) = 0,                                                   r >= r_c
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eignn_jax.neighbours import SortedPairs

# Indexed by [type_i - 1, type_j - 1].
KA_EPSILON = np.array([[1.0, 1.5], [1.5, 0.5]])
KA_SIGMA = np.array([[1.0, 0.8], [0.8, 0.88]])
KA_CUTOFF_FACTOR = 2.5

# Shift constant in units of ε: 4[(1/2.5)^12 - (1/2.5)^6] (≈ -0.01631), identical
# for all type pairs because the cutoff scales with σ_ab.
KA_SHIFT_PER_EPSILON = 4.0 * (KA_CUTOFF_FACTOR**-12 - KA_CUTOFF_FACTOR**-6)
# Longest interaction range of any pair kind (σ): 2.5 σ_AA.
KA_MAX_CUTOFF = KA_CUTOFF_FACTOR * float(np.max(KA_SIGMA))


def _array_module(*arrays):
    """Return jax.numpy if any input is a JAX array or tracer, else numpy."""
    if any(isinstance(a, jax.Array) for a in arrays):
        return jnp
    return np


def pair_energy(r, type_i, type_j, shifted: bool = True):
    """Truncated and shifted Kob–Andersen pair energy, elementwise.

    shifted=False leaves out the shift (the plain LJ energy inside the cutoff), as the
    public EIGNN code's energy feature does.

    r: [E] float, σ (pair distance).  type_i, type_j: [E] int, values 1 or 2
    (broadcastable against r).
    Returns [E] float, ε: float64 for numpy inputs; the input float dtype for
    JAX inputs, so the function can be traced inside ``jax.jit``.

    A distance of exactly 0 inside the cutoff gives +inf (numerically as
    expected for LJ); callers padding edge lists should pad with r >= r_c.
    """
    xp = _array_module(r, type_i, type_j)
    if xp is np:
        r = np.asarray(r, dtype=np.float64)
    else:
        r = jnp.asarray(r)
        if not jnp.issubdtype(r.dtype, jnp.floating):
            r = r.astype(jnp.float32)
    dtype = r.dtype
    index_i = xp.asarray(type_i) - 1
    index_j = xp.asarray(type_j) - 1
    epsilon = xp.asarray(KA_EPSILON, dtype=dtype)[index_i, index_j]
    sigma = xp.asarray(KA_SIGMA, dtype=dtype)[index_i, index_j]

    inside = r < KA_CUTOFF_FACTOR * sigma
    # Beyond the cutoff evaluate at the cutoff itself, so the discarded branch of
    # where() is finite and gradients through it stay finite.
    r_eval = xp.where(inside, r, KA_CUTOFF_FACTOR * sigma)
    s2 = (sigma / r_eval) ** 2
    s6 = s2 * s2 * s2
    energy = 4.0 * epsilon * s6 * (s6 - 1.0)
    if shifted:
        energy = energy - epsilon * KA_SHIFT_PER_EPSILON
    return xp.where(inside, energy, xp.zeros_like(energy))


def per_particle_energy(positions, types, box, pairs: SortedPairs | None = None,
                        shifted: bool = True) -> np.ndarray:
    """Potential energy of each particle, half of each of its pair energies.

    positions: [N, 3] float, σ (any wrapping).  types: [N] int, 1 or 2.
    box: [3] float, σ (orthorhombic, periodic).  pairs (optional): the pairs of these
    positions within the longest cutoff, ``neighbours.SortedPairs(positions, box, c)``
    with c >= KA_MAX_CUTOFF, when already at hand. shifted: see :func:`pair_energy`.
    Returns [N] float64, ε, with E_i = ½ Σ_j V(r_ij) over minimum images;
    Σ_i E_i is the total potential energy.
    """
    positions = np.asarray(positions, dtype=np.float64)
    types = np.asarray(types)
    box = np.asarray(box, dtype=np.float64)
    if types.shape != (len(positions),):
        raise ValueError(f"types must have shape [{len(positions)}], got {types.shape}")
    if not np.all((types == 1) | (types == 2)):
        raise ValueError("types must be 1 (A) or 2 (B)")

    if pairs is None:
        pairs = SortedPairs(positions, box, KA_MAX_CUTOFF)
    # Each ordered pair (i, j) gives i half the pair energy, summed over i's neighbours in
    # ascending order, so the float64 result does not depend on the order the neighbour
    # search finds pairs in. Edges come in blocks: no per-edge array is held whole.
    energy = np.zeros(len(positions))
    for centres, neighbours, _, squared in pairs.blocks():
        np.add.at(energy, centres, pair_energy(np.sqrt(squared), types[centres], types[neighbours], shifted))
    return 0.5 * energy
