"""EIGNN: equivariance-constrained invariant graph network (DESIGN §2, paper §3.2).

Notation: N nodes, E edges (sender j → receiver i), F = width, L = ℓ_max,
D = Σ_ℓ (2ℓ+1) = (L+1)² components of the single-channel equivariant features h̃.

Every equivariant quantity is built from polar vectors (displacements, bond vectors), so
its spherical-harmonic irreps are ``0e + 1o + 2e + …`` (parity (−1)^ℓ): the network is
invariant under rotations *and* inversion. Spherical harmonics use e3nn's 'norm'
normalisation: each degree of Y(r̂) has unit norm, so per-degree dot products are Legendre
polynomials P_ℓ(cos θ) ∈ [−1, 1].
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from eignn_jax.graph import FeatureScales

VARIANTS = ("full", "no_alpha0", "invariant")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """EIGNN hyper-parameters.

    width: F, hidden size of every invariant feature and MLP.
    num_layers: N_L, interaction layers.
    l_max: highest spherical-harmonic degree of the equivariant features.
    num_bessel: N_b, radial basis functions per structure.
    r_max: σ, radial basis range. Union edges reach cutoff + |d_i| + |d_j| in the other
      structure: ≈ 2.3 at T = 0.44, but up to ≈ 2.9 for a few (≈ 0.3 %) edges at T = 0.64,
      whose basis in that structure is then zero.
    aggregation: 'sum' (paper) or 'mean' (public code) over neighbours.
    gate: 'sigmoid' (paper) or 'silu' (public code) on the per-ℓ message gates.
    variant: 'full'; 'no_alpha0' (ablation A: no α⁰); 'invariant' (ablation B: no equivariant
      features at all, |d_i| kept as a scalar input).
    edge_length_change: also feed |r^equi_ij| − |r^init_ij| to the edge features (public code).
    harmonics_parity: 'polar' (correct: Y^ℓ of a displacement has parity (−1)^ℓ) or 'even'
      (as the public code declares them; then the model is invariant only under proper
      rotations, not under inversion).
    decoder_dropout: dropout rate on the decoder's hidden features during training (the
      public code uses 0.3; the paper states none).
    num_outputs: T, one prediction per time scale.
    scales: input shifts and scales of E_i and |d_i|, fitted on the training set.
    """

    width: int = 32
    num_layers: int = 7
    l_max: int = 2
    num_bessel: int = 8
    r_max: float = 2.5
    aggregation: str = "sum"
    gate: str = "sigmoid"
    variant: str = "full"
    edge_length_change: bool = False
    harmonics_parity: str = "polar"
    decoder_dropout: float = 0.0
    num_outputs: int = 10
    scales: FeatureScales = FeatureScales()

    def __post_init__(self):
        if self.aggregation not in ("sum", "mean"):
            raise ValueError(f"aggregation must be 'sum' or 'mean', got {self.aggregation!r}")
        if self.gate not in ("sigmoid", "silu"):
            raise ValueError(f"gate must be 'sigmoid' or 'silu', got {self.gate!r}")
        if self.harmonics_parity not in ("polar", "even"):
            raise ValueError(f"harmonics_parity must be 'polar' or 'even', got {self.harmonics_parity!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")


def harmonic_irreps(l_max: int, parity: str = "polar") -> e3nn.Irreps:
    """Irreps of the spherical harmonics of a polar vector, 0e + 1o + 2e + … ('polar'),
    or all declared even, 0e + 1e + 2e + … ('even')."""
    return e3nn.Irreps([(1, (l, (-1) ** l if parity == "polar" else 1)) for l in range(l_max + 1)])


def degree_projector(l_max: int) -> np.ndarray:
    """[D, L+1] 0/1 matrix summing the components of each degree ℓ."""
    return np.concatenate([np.tile(np.eye(l_max + 1)[l], (2 * l + 1, 1)) for l in range(l_max + 1)])


def safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
    """Euclidean norm with a finite gradient at zero (padding edges have zero vectors)."""
    squared = jnp.sum(x * x, axis=axis)
    safe = jnp.where(squared > 0, squared, 1.0)
    return jnp.where(squared > 0, jnp.sqrt(safe), 0.0)


class MLP(nn.Module):
    """Dense layers with SiLU between them (none after the last)."""

    features: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for k, size in enumerate(self.features):
            x = nn.Dense(size)(x)
            if k < len(self.features) - 1:
                x = nn.silu(x)
        return x


@dataclasses.dataclass(frozen=True)
class GraphIndex:
    """Index arrays shared by every layer of one forward pass (static sizes)."""

    senders: jax.Array       # [E] int32
    receivers: jax.Array     # [E] int32
    node_graph: jax.Array    # [N] int32, graph of each node
    n_graph: int
    node_count: jax.Array    # [G] float32, nodes per graph (≥ 1)
    inverse_degree: jax.Array  # [N] float32, 1/in-degree (0 for isolated nodes)
    average_degree: float      # fitted on the training set

    def aggregate(self, messages: jax.Array, mode: str) -> jax.Array:
        """[E, ...] edge messages → [N, ...] sum / average degree, or mean, over incoming edges."""
        total = jax.ops.segment_sum(messages, self.receivers, num_segments=self.inverse_degree.shape[0])
        if mode == "mean":
            return total * self.inverse_degree.reshape((-1,) + (1,) * (total.ndim - 1))
        return total / self.average_degree

    def graph_mean(self, x: jax.Array) -> jax.Array:
        """[N, ...] → [G, ...] mean over each graph's nodes."""
        total = jax.ops.segment_sum(x, self.node_graph, num_segments=self.n_graph)
        return total / self.node_count.reshape((-1,) + (1,) * (x.ndim - 1))


class GraphNorm(nn.Module):
    """GraphNorm (Cai et al. 2021): per-graph standardisation with a learnt mean shift α."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, h: jax.Array, index: GraphIndex) -> jax.Array:
        features = h.shape[-1]
        alpha = self.param("alpha", nn.initializers.ones, (features,))
        gamma = self.param("gamma", nn.initializers.ones, (features,))
        beta = self.param("beta", nn.initializers.zeros, (features,))
        centred = h - alpha * index.graph_mean(h)[index.node_graph]
        variance = index.graph_mean(centred * centred)[index.node_graph]
        return gamma * centred * jax.lax.rsqrt(variance + self.epsilon) + beta


class EquivariantNorm(nn.Module):
    """Per-degree norm normalisation of single-channel features: h̃^ℓ ← γ_ℓ h̃^ℓ / RMS_graph |h̃^ℓ|.

    Dividing each degree by an invariant (its root-mean-square norm over the graph) keeps
    the features equivariant, unlike a per-component BatchNorm.
    """

    l_max: int
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, h_eq: jax.Array, index: GraphIndex) -> jax.Array:
        projector = jnp.asarray(degree_projector(self.l_max), h_eq.dtype)      # [D, L+1]
        gamma = self.param("gamma", nn.initializers.ones, (self.l_max + 1,))
        squared_norms = (h_eq * h_eq) @ projector                              # [N, L+1]
        mean_square = index.graph_mean(squared_norms)[index.node_graph]       # [N, L+1]
        factor = gamma * jax.lax.rsqrt(mean_square + self.epsilon)             # [N, L+1]
        return h_eq * (factor @ projector.T)                                   # [N, D]


def radial_basis(lengths: jax.Array, num_bessel: int, r_max: float) -> jax.Array:
    """[E] lengths, σ → [E, N_b] Bessel functions times a smooth envelope vanishing at r_max."""
    envelope = e3nn.poly_envelope(5, 2)(lengths / r_max)
    return e3nn.bessel(lengths, num_bessel, r_max) * envelope[:, None]


class InteractionLayer(nn.Module):
    """One EIGNN layer: equivariant message passing, scalarisation, gated invariant passing, norms."""

    config: ModelConfig

    @nn.compact
    def __call__(self, h, h_eq, edge_features, edge_harmonics, index: GraphIndex):
        """h [N, F]; h_eq [N, D] or None; edge_features [E, B]; edge_harmonics [E, D] or None."""
        cfg = self.config
        width, l_max = cfg.width, cfg.l_max
        s, r = index.senders, index.receivers

        if cfg.variant == "invariant":
            delta_h = MLP([width, width], name="update")(h)
            invariants = [edge_features]
            new_h_eq = None
        else:
            irreps = harmonic_irreps(l_max, cfg.harmonics_parity)
            projector = jnp.asarray(degree_projector(l_max), h.dtype)          # [D, L+1]
            # 1. Equivariant message passing: one gate per degree scales Y^ℓ(r̂_ij).
            gates = MLP([width, l_max + 1], name="gates")(
                jnp.concatenate([h[r], edge_features, h[s]], axis=-1))        # [E, L+1]
            gates = jax.nn.sigmoid(gates) if cfg.gate == "sigmoid" else nn.silu(gates)
            edge_messages = edge_harmonics * (gates @ projector.T)             # [E, D]
            node_messages = index.aggregate(edge_messages, cfg.aggregation)  # [N, D]
            product = e3nn.tensor_product(
                e3nn.IrrepsArray(irreps, node_messages), e3nn.IrrepsArray(irreps, h_eq),
                filter_ir_out=irreps)                                          # all paths, ℓ ≤ L
            delta_m = product.filter(keep="0e").array                          # [N, L+1]
            delta_h = MLP([width, width], name="update")(jnp.concatenate([delta_m, h], axis=-1))
            new_h_eq = e3nn.flax.Linear(irreps, name="mix")(product).array     # [N, D]
            # 2. Equivariant scalarisation of the layer's input features.
            alpha_1 = safe_norm((h_eq[r] - h_eq[s])[..., None] * projector, axis=-2)  # [E, L+1]
            invariants = [alpha_1, edge_features]
            if cfg.variant == "full":
                alpha_0 = (h_eq[r] * edge_messages) @ projector                # [E, L+1]
                invariants.insert(0, alpha_0)

        # 3. Invariant message passing, gated by the scalarised geometry.
        alpha = MLP([width, width], name="alpha")(jnp.concatenate(invariants, axis=-1))
        values = MLP([width, width], name="values")(delta_h)
        h = delta_h + index.aggregate(alpha * values[s], cfg.aggregation)
        # 4. Normalisation.
        h = GraphNorm(name="graph_norm")(h, index)
        if new_h_eq is not None:
            new_h_eq = EquivariantNorm(l_max, name="equivariant_norm")(new_h_eq, index)
        return h, new_h_eq


class EIGNN(nn.Module):
    """Graph → per-node predictions [N, T] (standardised propensities)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, train: bool = False) -> jax.Array:
        """train: enables dropout (then a 'dropout' PRNG stream must be given to apply)."""
        cfg = self.config
        nodes = graph.nodes
        n_node_total = nodes["positions"].shape[0]
        n_graph = graph.n_node.shape[0]
        node_graph = jnp.repeat(jnp.arange(n_graph), graph.n_node, total_repeat_length=n_node_total)
        edge_graph = jnp.repeat(jnp.arange(n_graph), graph.n_edge,
                                total_repeat_length=graph.senders.shape[0])
        degree = jax.ops.segment_sum(jnp.ones_like(graph.receivers, jnp.float32), graph.receivers,
                                     num_segments=n_node_total)
        index = GraphIndex(
            senders=graph.senders, receivers=graph.receivers, node_graph=node_graph,
            n_graph=n_graph, node_count=jnp.maximum(graph.n_node, 1).astype(jnp.float32),
            inverse_degree=jnp.where(degree > 0, 1.0 / jnp.maximum(degree, 1.0), 0.0),
            average_degree=cfg.scales.average_degree)
        s, r = graph.senders, graph.receivers

        # Geometry, from positions and integer shifts so that symmetries act on everything.
        cell = graph.globals["cell"][edge_graph]                               # [E, 3, 3]
        shift_vectors = jnp.einsum("ea,eab->eb", graph.edges["shifts"], cell)  # [E, 3]
        disp = nodes["displacements"]                                          # [N, 3]
        bond_initial = nodes["positions"][s] - nodes["positions"][r] + shift_vectors   # [E, 3]
        bond_equilibrium = bond_initial + disp[s] - disp[r]                    # [E, 3]
        length_initial = safe_norm(bond_initial)
        length_equilibrium = safe_norm(bond_equilibrium)
        edge_features = [radial_basis(length_initial, cfg.num_bessel, cfg.r_max),
                         radial_basis(length_equilibrium, cfg.num_bessel, cfg.r_max)]
        if cfg.edge_length_change:
            edge_features.append((length_equilibrium - length_initial)[:, None])
        edge_features = jnp.concatenate(edge_features, axis=-1)               # [E, B]

        # Encoder.
        scales = cfg.scales
        disp_norm = safe_norm(disp)
        scalars = jnp.concatenate([
            jax.nn.one_hot(nodes["species"], 2),
            ((nodes["energy"] - scales.energy_mean) / scales.energy_std)[:, None],
            ((disp_norm - scales.displacement_mean) / scales.displacement_std)[:, None],
        ], axis=-1)                                                            # [N, 4]
        h = nn.Dense(cfg.width, name="encoder")(scalars)                       # [N, F]
        if cfg.variant == "invariant":
            h_eq = edge_harmonics = None
        else:
            # Computed as what they are (polar); 'even' only changes how layers declare them.
            irreps = harmonic_irreps(cfg.l_max)
            # A particle sitting exactly at its equilibrium position has no direction:
            # e3nn maps the zero vector to Y = (1, 0, …), i.e. only the ℓ = 0 part survives.
            h_eq = e3nn.spherical_harmonics(irreps, disp, normalize=True, normalization="norm").array
            edge_harmonics = e3nn.spherical_harmonics(
                irreps, bond_initial, normalize=True, normalization="norm").array

        for k in range(cfg.num_layers):
            h, h_eq = InteractionLayer(cfg, name=f"layer_{k}")(h, h_eq, edge_features, edge_harmonics, index)

        # Decoder: one more invariant pass, then one output per time scale.
        pair = jnp.concatenate([h[r], h[r] - h[s]], axis=-1)
        h = index.aggregate(MLP([cfg.width, cfg.width], name="decoder_messages")(pair), cfg.aggregation)
        if cfg.decoder_dropout > 0:
            h = nn.Dropout(cfg.decoder_dropout, deterministic=not train)(h)
        return MLP([cfg.width, cfg.num_outputs], name="readout")(h)            # [N, T]
