"""The Kob–Andersen 80:20 binary Lennard-Jones mixture: its parameters and pair interaction.

Kob and Andersen, Phys. Rev. E 51, 4626 (1995). Particle types are 1 (A) and 2 (B), as
stored in the data files; energies are in units of ε_AA, lengths of σ_AA.

The pair potential is truncated at r_c = 2.5 σ_ab and shifted by a constant so that it
vanishes at the cutoff:

    V_ab(r) = 4 ε_ab [(σ_ab/r)^12 − (σ_ab/r)^6] − V_ab^LJ(r_c),   r < r_c
    V_ab(r) = 0,                                                   r ≥ r_c

This module is the one definition of the mixture: the parameter table and one pair
kernel (:func:`lennard_jones`), from which come the pair energies, per-particle energies,
the total energy and forces of the minimisers, the cage sampler's energy changes, and
the OpenMM expression of the simulations (:func:`openmm_expression`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eignn_jax.physics import periodic
from eignn_jax.physics.neighbours import HalfList, SortedPairs

# Indexed by [type_i - 1, type_j - 1].
EPSILON = np.array([[1.0, 1.5], [1.5, 0.5]])
SIGMA = np.array([[1.0, 0.8], [0.8, 0.88]])
CUTOFF_FACTOR = 2.5

# Shift constant in units of ε: 4[(1/2.5)^12 - (1/2.5)^6] (≈ -0.01631), identical for all
# type pairs because the cutoff scales with σ_ab.
SHIFT_PER_EPSILON = 4.0 * (CUTOFF_FACTOR**-12 - CUTOFF_FACTOR**-6)
# Longest interaction range of any pair kind (σ): 2.5 σ_AA.
MAX_CUTOFF = CUTOFF_FACTOR * float(np.max(SIGMA))

DENSITY = 1.2
"""Number density of the mixture as studied (particles per σ³); sets the box when a file has none."""

# The tables are symmetric, so a pair's parameters depend only on its kind
# type_i + type_j − 2 (0 = AA, 1 = AB, 2 = BB): compiled code gathers from these
# three-entry tables, one small gather per pair instead of a 2-D lookup.
KIND_SIGMA = np.array([SIGMA[0, 0], SIGMA[0, 1], SIGMA[1, 1]])
KIND_EPSILON = np.array([EPSILON[0, 0], EPSILON[0, 1], EPSILON[1, 1]])


def interaction_ranges(skin: float = 0.0) -> np.ndarray:
    """[2, 2] float64, σ: the cutoff 2.5 σ_ab of each type pair plus ``skin`` (σ)."""
    return CUTOFF_FACTOR * SIGMA + skin


def box_from_density(n_particles: int, density: float = DENSITY) -> np.ndarray:
    """Side lengths [3] float64 (σ) of the cube holding ``n_particles`` at ``density`` (σ⁻³)."""
    side = (n_particles / density) ** (1.0 / 3.0)
    return np.full(3, side, dtype=np.float64)


def _array_module(*arrays):
    """jax.numpy if any input is a JAX array or tracer, else numpy."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def lennard_jones(r2, sigma2, epsilon, inside, *, shifted: bool = True, forces: bool = True):
    """The pair kernel: truncated Lennard-Jones energy and radial force factor from r².

    r2: [...] float, σ², squared pair distances.  sigma2, epsilon: [...] float, σ_ab²
    (σ²) and ε_ab (ε) of each pair (broadcastable).  inside: [...] bool, pairs that
    interact (r < 2.5 σ_ab, and not padding); the others get exactly 0.
    shifted: subtract V^LJ(r_c) (the KA potential); False gives the plain LJ energy
    inside the cutoff, as the public EIGNN code's energy feature uses.
    forces: also return the force factor; False returns None in its place.
    Returns (energy [...] ε, dV/dr / r [...] ε/σ²): the force on i from j is
    (dV/dr / r) (r_j − r_i). Works on numpy and JAX arrays alike, in their dtype.

    Pairs not ``inside`` (padding may have r = 0) are evaluated at r² = 1, so both
    branches of where() stay finite and so do gradients through them.
    """
    xp = _array_module(r2, sigma2, epsilon, inside)
    inv_r2 = 1.0 / xp.where(inside, r2, 1.0)
    s6 = (sigma2 * inv_r2) ** 3
    s12 = s6 * s6
    energy = 4.0 * epsilon * (s12 - s6)
    if shifted:
        energy = energy - epsilon * SHIFT_PER_EPSILON
    energy = xp.where(inside, energy, 0.0)
    if not forces:
        return energy, None
    return energy, xp.where(inside, 4.0 * epsilon * (6.0 * s6 - 12.0 * s12) * inv_r2, 0.0)


def pair_energy(r, type_i, type_j, shifted: bool = True):
    """Kob–Andersen pair energy V_ab(r), elementwise.

    r: [E] float, σ (pair distance).  type_i, type_j: [E] int, 1 or 2 (broadcastable).
    shifted: see :func:`lennard_jones`.
    Returns [E] float, ε: float64 for numpy inputs; the input float dtype for JAX
    inputs, so the function can be traced inside ``jax.jit``. r = 0 inside the cutoff
    gives +inf; callers padding pair lists should pad with r ≥ r_c.
    """
    xp = _array_module(r, type_i, type_j)
    if xp is np:
        r = np.asarray(r, dtype=np.float64)
    else:
        r = jnp.asarray(r)
        if not jnp.issubdtype(r.dtype, jnp.floating):
            r = r.astype(jnp.float32)
    kind = xp.asarray(type_i) + xp.asarray(type_j) - 2
    sigma = xp.asarray(KIND_SIGMA, dtype=r.dtype)[kind]
    epsilon = xp.asarray(KIND_EPSILON, dtype=r.dtype)[kind]
    energy, _ = lennard_jones(r * r, sigma * sigma, epsilon, r < CUTOFF_FACTOR * sigma,
                              shifted=shifted, forces=False)
    return energy


def per_particle_energy(positions, types, box, pairs: SortedPairs | None = None,
                        shifted: bool = True) -> np.ndarray:
    """Potential energy of each particle, half of each of its pair energies.

    positions: [N, 3] float, σ (any wrapping).  types: [N] int, 1 or 2.
    box: [3] float, σ.  pairs (optional): the pairs of these positions within the
    longest cutoff, ``neighbours.SortedPairs(positions, box, c)`` with c ≥ MAX_CUTOFF,
    when already at hand. shifted: see :func:`lennard_jones`.
    Returns [N] float64, ε, with E_i = ½ Σ_j V(r_ij) over minimum images;
    Σ_i E_i is the total potential energy. Raises ValueError for malformed inputs.
    """
    positions, types, box = periodic.as_system(positions, types, box)
    if pairs is None:
        pairs = SortedPairs(positions, box, MAX_CUTOFF)
    sigma2, epsilon = KIND_SIGMA**2, KIND_EPSILON
    cutoff2 = (CUTOFF_FACTOR * KIND_SIGMA) ** 2
    # Each ordered pair (i, j) gives i half the pair energy, summed over i's neighbours in
    # ascending order, so the float64 result does not depend on the order the neighbour
    # search finds pairs in. Edges come in blocks: no per-edge array is held whole.
    energy = np.zeros(len(positions))
    for centres, neighbours, _, squared in pairs.blocks():
        kind = types[centres] + types[neighbours] - 2
        pair, _ = lennard_jones(squared, sigma2[kind], epsilon[kind], squared < cutoff2[kind],
                                shifted=shifted, forces=False)
        np.add.at(energy, centres, pair)
    return 0.5 * energy


def energy_and_forces(positions, types, box, pairs: HalfList):
    """Total KA energy and forces from a half neighbour list; jittable.

    positions: [N, 3] float, σ, in the images ``pairs`` was built for.
    types: [N] int, 1/2.  box: [3] float, σ.  pairs: :class:`HalfList`.
    Returns (energy: scalar, ε; forces: [N, 3], ε/σ), in the dtype of ``positions``.

    Each unordered pair is stored once, so it contributes its full energy V_ab(r) once
    and equal and opposite forces to its two particles. Pairs in the list but beyond
    their cutoff (the skin) and padding slots contribute nothing.
    """
    positions = jnp.asarray(positions)
    dtype = positions.dtype
    types = jnp.asarray(types)
    box = jnp.asarray(box, dtype=dtype)
    centres, neighbours = pairs.centres, pairs.neighbours
    # Rows of four numbers (x, y, z, 0): XLA's CPU gathers and scatters run markedly
    # faster (~30% for the whole function) on 4-wide rows than on 3-wide.
    padded = jnp.pad(positions, ((0, 0), (0, 1)))
    offsets = jnp.pad(pairs.shifts.astype(dtype) * box, ((0, 0), (0, 1)))
    # Indices come from our own list, so bounds checks (clamping) can be skipped.
    x_i = padded.at[centres].get(mode="promise_in_bounds", indices_are_sorted=True)
    x_j = padded.at[neighbours].get(mode="promise_in_bounds")
    vectors = x_j - x_i + offsets

    kind = (types.at[centres].get(mode="promise_in_bounds", indices_are_sorted=True)
            + types.at[neighbours].get(mode="promise_in_bounds") - 2)
    sigma = jnp.asarray(KIND_SIGMA, dtype)[kind]
    epsilon = jnp.asarray(KIND_EPSILON, dtype)[kind]
    sigma2 = sigma * sigma

    r2 = jnp.sum(vectors * vectors, axis=-1)
    inside = pairs.mask & (r2 < (CUTOFF_FACTOR**2) * sigma2)
    energy, scale = lennard_jones(r2, sigma2, epsilon, inside)
    on_centre = scale[:, None] * vectors
    forces = jnp.zeros_like(padded)
    forces = forces.at[centres].add(on_centre, mode="promise_in_bounds", indices_are_sorted=True)
    forces = forces.at[neighbours].add(-on_centre, mode="promise_in_bounds")
    return jnp.sum(energy), forces[:, :3]


def openmm_expression() -> str:
    """The KA pair energy as an OpenMM ``CustomNonbondedForce`` expression.

    The same table and shift as :func:`lennard_jones`, written in OpenMM's expression
    language (r in nm = σ, energy in kJ/mol = ε). Per-particle parameter ``b`` is 1 for
    B particles and 0 for A, so ``nb = b1 + b2`` is the pair kind 0 (AA), 1 (AB) or
    2 (BB); the cutoff 2.5 σ_ab is a ``step()`` inside the expression.
    """
    def pick(table):  # select(x, if x != 0, else): nb = 0 -> AA; nb = 1 -> AB; nb = 2 -> BB
        return (f"select(nb, select(nb - 1, {float(table[2])!r}, {float(table[1])!r}), "
                f"{float(table[0])!r})")

    return (f"step(rc - r) * eps * (4 * (x * x - x) - ({float(SHIFT_PER_EPSILON)!r}));"
            f" x = (sig / r)^6; rc = {float(CUTOFF_FACTOR)!r} * sig;"
            f" eps = {pick(KIND_EPSILON)}; sig = {pick(KIND_SIGMA)}; nb = b1 + b2")


def ka_types(n: int, fraction_a: float = 0.8) -> np.ndarray:
    """[n] int32 particle types of the KA mixture: round(fraction_a n) A particles (1)
    first, then B (2); the 80:20 composition of Kob and Andersen by default, ordered as
    in the dev set's files."""
    n_a = int(round(fraction_a * n))
    return np.concatenate([np.ones(n_a, np.int32), np.full(n - n_a, 2, np.int32)])
