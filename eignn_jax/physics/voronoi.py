"""Voronoi cells of a periodic configuration, as half-spaces: the cages of the cage states.

The cell of particle i in a configuration r⁰ (periodic, plain — not radical — Voronoi) is

    C_i = { x : |x − r⁰_i| < |x − r⁰_j − n L|  for every j ≠ i and image n }.

Only the Voronoi (Delaunay) neighbours of i matter, so C_i is stored as one half-space per
neighbour image, v · (x − r⁰_i) < |v|² / 2 with v = r⁰_j + n L − r⁰_i
(:func:`voronoi_cages`: ``scipy.spatial.Delaunay`` of the points plus periodic images,
checked to be exact). Lengths in σ.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import Delaunay

from eignn_jax.physics import periodic

@dataclasses.dataclass(frozen=True)
class VoronoiCages:
    """Voronoi cells of a periodic configuration, as half-spaces around each particle.

    vectors: [N, K, 3] float64, σ; v = r⁰_j + n L − r⁰_i for each Voronoi neighbour
        image of i (padding: zeros).
    mask: [N, K] bool, True for real entries.
    radius: [N] float64, σ; distance from r⁰_i to the farthest vertex of its cell
        (the largest circumradius of the Delaunay tetrahedra around i).

    A point r⁰_i + u lies in the cell of i iff v · u < |v|² / 2 for every real v.
    """

    vectors: np.ndarray
    mask: np.ndarray
    radius: np.ndarray

    def contains(self, displacements) -> np.ndarray:
        """[N] bool: is r⁰_i + displacements[i] strictly inside the cell of i?

        displacements: [N, 3] float (σ), or [S, N, 3] for S configurations
        (then the result is [S, N]).
        """
        u = np.asarray(displacements, dtype=np.float64)
        dots = np.einsum("...nd,nkd->...nk", u, self.vectors)
        half = 0.5 * np.sum(self.vectors**2, axis=-1)
        return np.all((dots < half) | ~self.mask, axis=-1)


def _circumspheres(points: np.ndarray, simplices: np.ndarray):
    """Centres [S, 3] and radii [S] of the circumspheres of tetrahedra [S, 4] (indices)."""
    p = points[simplices]
    # |c − p_k|² = |c − p_0|²  ⇔  2 (p_k − p_0) · c = |p_k|² − |p_0|², k = 1..3.
    a = 2.0 * (p[:, 1:] - p[:, :1])
    b = np.sum(p[:, 1:] ** 2, axis=-1) - np.sum(p[:, :1] ** 2, axis=-1)
    centres = np.linalg.solve(a, b[..., None])[..., 0]
    radii = np.linalg.norm(centres - p[:, 0], axis=-1)
    return centres, radii


def voronoi_cages(positions, box, margin: float | None = None) -> VoronoiCages:
    """Periodic Voronoi cells of ``positions`` in an orthorhombic ``box``.

    positions: [N, 3] float, σ (any wrapping).  box: [3] float, σ.
    margin: thickness (σ) of the shell of periodic images added around the box
        before the Delaunay triangulation; None starts at two mean spacings.

    The triangulation of the points plus images within ``margin`` of the box is
    exact around the original points when every tetrahedron touching one of them
    has its circumsphere inside the padded region (then no image left out can lie
    inside it, so it is a tetrahedron of the periodic triangulation, and these
    tetrahedra tile the neighbourhood of the point). Otherwise the margin grows and
    the triangulation is redone.
    """
    positions = np.asarray(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64).reshape(3)
    n = len(positions)
    if positions.shape != (n, 3) or n < 5:
        raise ValueError(f"positions must have shape [N >= 5, 3], got {positions.shape}")
    wrapped = periodic.wrap(positions, box, centred=False)
    if margin is None:
        margin = 2.0 * float(np.prod(box) / n) ** (1.0 / 3.0)
    shifts = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    # Central copy first, so indices < n are the original particles.
    shifts = shifts[np.argsort(np.abs(shifts).sum(axis=1), kind="stable")]

    for _ in range(8):
        if np.any(margin >= box):
            raise ValueError(f"box {box} too small for an exact periodic Voronoi construction")
        images = wrapped[None, :, :] + shifts[:, None, :] * box
        keep = np.all((images >= -margin) & (images < box + margin), axis=-1)
        keep[0] = True
        points = images[keep]
        tri = Delaunay(points)
        touching = np.any(tri.simplices < n, axis=1)
        centres, radii = _circumspheres(points, tri.simplices[touching])
        inside = np.all((centres - radii[:, None] > -margin)
                        & (centres + radii[:, None] < box + margin))
        if inside and np.all(np.isfinite(radii)):
            break
        margin *= 1.5
    else:
        raise RuntimeError("could not build an exact periodic Voronoi tessellation")

    indptr, indices = tri.vertex_neighbor_vertices
    counts = indptr[1 : n + 1] - indptr[:n]
    capacity = int(counts.max())
    vectors = np.zeros((n, capacity, 3))
    mask = np.zeros((n, capacity), dtype=bool)
    for i in range(n):
        neighbours = indices[indptr[i] : indptr[i + 1]]
        vectors[i, : len(neighbours)] = points[neighbours] - points[i]
        mask[i, : len(neighbours)] = True
    # Farthest cell vertex: Voronoi vertices are the circumcentres of the Delaunay
    # tetrahedra, and i lies on the circumsphere of every tetrahedron it belongs to.
    vertices = tri.simplices[touching].ravel()
    own = vertices < n
    radius = np.zeros(n)
    np.maximum.at(radius, vertices[own], np.repeat(radii, 4)[own])
    return VoronoiCages(vectors=vectors, mask=mask, radius=radius)
