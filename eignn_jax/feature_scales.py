"""Shift and scale of the model's scalar node inputs, fitted on the training graphs.

Part of a model's configuration (``ModelConfig.scales``), so that a trained network sees
its inputs scaled as in training; kept apart from graph building so that the model
depends on nothing but its inputs.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jraph
import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureScales:
    """Shift and scale of the scalar node inputs, fitted on the training graphs.

    energy_mean, energy_std: ε, of the per-particle energies E_i.
    displacement_mean, displacement_std: σ, of the displacement lengths |d_i|.
    average_degree: mean number of incoming edges per node.
    """

    energy_mean: float = 0.0
    energy_std: float = 1.0
    displacement_mean: float = 0.0
    displacement_std: float = 1.0
    # Sums over neighbours are divided by the mean in-degree, so 'sum' aggregation keeps
    # O(1) activations (and sum, not mean, semantics: a node with more neighbours gets more).
    average_degree: float = 1.0


def fit_feature_scales(graphs: Sequence[jraph.GraphsTuple]) -> FeatureScales:
    """Scales of the node fields ``energy`` [N] (ε) and ``displacements`` [N, 3] (σ) over
    all nodes of unpadded ``graphs`` (see :mod:`eignn_jax.graph`); each std is offset by
    1e-6 so that a constant input does not divide by zero."""
    energy = np.concatenate([g.nodes["energy"] for g in graphs]).astype(np.float64)
    norms = np.concatenate([np.linalg.norm(g.nodes["displacements"], axis=-1) for g in graphs])
    return FeatureScales(
        energy_mean=float(energy.mean()), energy_std=float(energy.std() + 1e-6),
        displacement_mean=float(norms.mean()), displacement_std=float(norms.std() + 1e-6),
        average_degree=float(sum(int(g.n_edge.sum()) for g in graphs) / sum(int(g.n_node.sum()) for g in graphs)))
