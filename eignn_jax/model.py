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

from eignn_jax.feature_scales import FeatureScales

VARIANTS = ("full", "no_alpha0", "invariant")
ARCHITECTURES = ("paper", "public")

# Bumped whenever the same parameters would compute something else; stored with every run so
# that a checkpoint is never silently loaded into a model that gives its weights another
# meaning. 1: scalarisation (α⁰, α¹) read the layer's input h̃. 2: it reads the layer's new
# h̃^L (paper eqs. 14–16), α⁰ carries the Clebsch–Gordan 1/√(2ℓ+1), the last layer has no
# equivariant norm.
MODEL_REVISION = 2


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """EIGNN hyper-parameters.

    architecture: 'paper' (``EIGNN``, paper §3.2) or 'public' (``public_model.PublicEIGNN``,
      the public implementation's layout, to run its published checkpoints). The public
      layout has fixed choices for aggregation, gate, variant, edge_length_change,
      harmonics_parity and decoder_dropout (``PUBLIC_LAYOUT``), which its config must state.
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
      paper states none; the public code configures 0.3 on a single-layer MLP, where it
      has no effect).
    num_outputs: T, one prediction per time scale.
    edge_chunk: execution only, not part of the model: 0 processes all edges at once
      (fastest); C > 0 processes C edges at a time, so memory stays O(N + C) for very large
      graphs (see ``GraphIndex``). Predictions agree to float rounding.
    scales: input shifts and scales of E_i and |d_i|, fitted on the training set.
    """

    architecture: str = "paper"
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
    edge_chunk: int = 0
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
        if self.edge_chunk < 0:
            raise ValueError(f"edge_chunk must be ≥ 0, got {self.edge_chunk}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.architecture == "public":
            differing = {k: getattr(self, k) for k, v in PUBLIC_LAYOUT.items() if getattr(self, k) != v}
            if differing:
                raise ValueError(f"the public layout has {PUBLIC_LAYOUT}; got {differing}")


# The public implementation's choices where the paper model has options (its decoder dropout
# sits where it has no effect, hence 0), so that a public run's config says what it computes.
PUBLIC_LAYOUT = dict(aggregation="mean", gate="silu", variant="full", edge_length_change=True,
                     harmonics_parity="even", decoder_dropout=0.0)


# Graphs with more edges than this are processed in chunks of edges when predicting
# (all at once, their edge intermediates would take several GiB at width 32).
LARGE_GRAPH_EDGES = 2**22
# Edges per chunk. On a CPU, chunks whose [C, F] intermediates stay in the caches: the
# N = 125 000 forward pass (5.6 M edges, 2 cores) took 14.8 s with 2¹⁶-edge chunks against
# 19.9–21.0 s with 2²⁰, and 1.38 against 1.83 GiB (2¹³: 19.9 s, 2¹⁵: 14.9–15.2 s). An accelerator
# needs large chunks to be kept busy.
CPU_EDGE_CHUNK = 2**16
ACCELERATOR_EDGE_CHUNK = 2**20


def default_edge_chunk(platform: str | None = None) -> int:
    """Edges per chunk for ``platform`` ('cpu', 'gpu', …; default: JAX's default backend)."""
    return CPU_EDGE_CHUNK if (platform or jax.default_backend()) == "cpu" else ACCELERATOR_EDGE_CHUNK


def for_graph_size(config: ModelConfig, n_edges: int, platform: str | None = None) -> ModelConfig:
    """``config`` with edge chunking switched on (``default_edge_chunk(platform)`` edges per
    chunk) for graphs too large to process at once; a config that sets ``edge_chunk`` is
    returned as it is."""
    if config.edge_chunk or n_edges <= LARGE_GRAPH_EDGES:
        return config
    return dataclasses.replace(config, edge_chunk=default_edge_chunk(platform))


# e3nn-jax's default normalisations, stated rather than read from its global configuration
# (``e3nn.config``), which a user's own code may change: the model must compute the same
# function, and its checkpoints keep their meaning, whatever that configuration says.
TENSOR_PRODUCT_NORMALIZATION = dict(irrep_normalization="component")
LINEAR_NORMALIZATION = dict(path_normalization="element", gradient_normalization="path")


def harmonic_irreps(l_max: int, parity: str = "polar") -> e3nn.Irreps:
    """Irreps of the spherical harmonics of a polar vector, 0e + 1o + 2e + … ('polar'),
    or all declared even, 0e + 1e + 2e + … ('even')."""
    return e3nn.Irreps([(1, (l, (-1) ** l if parity == "polar" else 1)) for l in range(l_max + 1)])


def degree_projector(l_max: int) -> np.ndarray:
    """[D, L+1] 0/1 matrix summing the components of each degree ℓ."""
    return np.concatenate([np.tile(np.eye(l_max + 1)[l], (2 * l + 1, 1)) for l in range(l_max + 1)])


def safe_sqrt(squared: jax.Array) -> jax.Array:
    """√x for x ≥ 0 with a finite (zero) gradient at x = 0."""
    safe = jnp.where(squared > 0, squared, 1.0)
    return jnp.where(squared > 0, jnp.sqrt(safe), 0.0)


def safe_norm(vectors: jax.Array) -> jax.Array:
    """[..., 3] → [...] Euclidean norms, with a finite gradient at zero (padding edges have
    zero vectors). Written as x² + y² + z²: XLA's CPU reduction over a size-3 axis took
    ≈ 5 % of a train step in the profile."""
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    return safe_sqrt(x * x + y * y + z * z)


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


class DenseParams(nn.Module):
    """Declares the kernel [in, out] and bias [out] of one dense layer without applying it.

    Same names and initialisers as ``nn.Dense``, so an ``EdgeMLP`` has exactly the
    parameters (and initial values) of the ``MLP`` it replaces.
    """

    in_features: int
    features: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.in_features, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return kernel, bias


class EdgeMLP(nn.Module):
    """Parameters of an MLP over edges whose input is a concatenation of parts.

    Calling it returns ``(first, apply_rest)``: the first layer's kernel split by input part
    (``part_sizes``) with its bias, and a pure function finishing the MLP from the first
    layer's pre-activation. The first layer is then applied part by part: node features
    are multiplied by their block of the kernel *before* being gathered onto edges
    (N·F² instead of E·F² work, and no [E, ΣF] concatenation), edge features after.
    Pure functions of plain arrays, so they can run inside ``lax.scan`` over edge chunks.
    """

    part_sizes: Sequence[int]
    features: Sequence[int]

    @nn.compact
    def __call__(self):
        sizes = [sum(self.part_sizes), *self.features]
        layers = [DenseParams(sizes[k], sizes[k + 1], name=f"Dense_{k}")() for k in range(len(self.features))]
        kernel, bias = layers[0]
        blocks = jnp.split(kernel, np.cumsum(self.part_sizes)[:-1], axis=0)

        def apply_rest(pre_activation: jax.Array) -> jax.Array:
            x = pre_activation
            for kernel_k, bias_k in layers[1:]:
                x = nn.silu(x) @ kernel_k + bias_k
            return x

        return blocks, bias, apply_rest


@dataclasses.dataclass(frozen=True)
class EdgeBatch:
    """Per-edge inputs of a layer, for all edges or one chunk of C edges."""

    senders: jax.Array     # [C] int32
    receivers: jax.Array   # [C] int32
    features: jax.Array    # [C, B] radial bases of both structures (invariant)
    harmonics: jax.Array | None   # [C, D] Y(r̂_ij) of the initial bond, or None (ablation B)
    weight: jax.Array | None = None   # [C] 0 on chunk padding, None when every edge is real


EdgeInputs = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array | None]]


class GraphIndex:
    """Index arrays and per-edge inputs shared by every layer of one forward pass.

    ``edge_inputs(bond_initial, bond_equilibrium)`` ([C, 3] bond vectors r_j − r_i from
    receiver i to sender j in both structures, σ) gives an architecture's invariant edge
    features [C, B] and bond harmonics [C, D] (or None). ``reduce`` maps a per-edge
    function over the edges and sums the result onto receivers. With ``edge_chunk`` = 0
    the edge inputs are computed once and every edge is processed at once (fastest); with
    ``edge_chunk`` = C > 0 the edges are processed C at a time by ``lax.scan``,
    recomputing the edge inputs per chunk, so memory is O(N + C) rather than O(E)
    (inference on 10⁶ particles), at the cost of recomputation. The results agree to
    float rounding either way.
    """

    def __init__(self, graph: jraph.GraphsTuple, edge_inputs: EdgeInputs, *, aggregation: str,
                 edge_chunk: int = 0, average_degree: float = 1.0):
        nodes = graph.nodes
        self.n_node_total = nodes["positions"].shape[0]
        self.n_graph = graph.n_node.shape[0]
        self.node_graph = jnp.repeat(jnp.arange(self.n_graph), graph.n_node,
                                     total_repeat_length=self.n_node_total)           # [N]
        self.node_count = jnp.maximum(graph.n_node, 1).astype(jnp.float32)            # [G]
        degree = jax.ops.segment_sum(jnp.ones_like(graph.receivers, jnp.float32), graph.receivers,
                                     num_segments=self.n_node_total)
        self.inverse_degree = jnp.where(degree > 0, 1.0 / jnp.maximum(degree, 1.0), 0.0)  # [N]
        self.average_degree = average_degree
        self.aggregation = aggregation
        self.edge_chunk = edge_chunk
        self._edge_inputs = edge_inputs
        self._nodes = jax.tree.map(jnp.asarray, nodes)
        self._cell = jnp.asarray(graph.globals["cell"])                                 # [G, 3, 3]
        edge_graph = jnp.repeat(jnp.arange(self.n_graph), graph.n_edge,
                                total_repeat_length=graph.senders.shape[0])
        self._raw = jax.tree.map(jnp.asarray, {
            "senders": graph.senders, "receivers": graph.receivers,
            "shifts": graph.edges["shifts"], "edge_graph": edge_graph})
        self.senders, self.receivers = graph.senders, graph.receivers
        self.all_edges = self._edge_batch(self._raw) if self.edge_chunk == 0 else None

    def _edge_batch(self, raw: dict) -> EdgeBatch:
        """Geometry of a set of edges, from positions and integer shifts (so that symmetries
        act on everything)."""
        with jax.named_scope("edge_geometry"):
            s, r = raw["senders"], raw["receivers"]
            shift_vectors = jnp.einsum("ea,eab->eb", raw["shifts"], self._cell[raw["edge_graph"]])  # [C, 3]
            positions, disp = self._nodes["positions"], self._nodes["displacements"]
            bond_initial = positions[s] - positions[r] + shift_vectors                   # [C, 3]
            bond_equilibrium = bond_initial + disp[s] - disp[r]
            features, harmonics = self._edge_inputs(bond_initial, bond_equilibrium)
            return EdgeBatch(s, r, features, harmonics, raw.get("weight"))

    def shared(self, edge_fn: Callable[[EdgeBatch], jax.Array]) -> Callable[[EdgeBatch], jax.Array]:
        """``edge_fn`` evaluated once over all edges when they are processed at once, so that
        a per-edge quantity read by two reductions of a layer is one value: its two
        cotangents are summed before the backward pass goes through ``edge_fn``, instead of
        differentiating ``edge_fn`` twice. With ``edge_chunk`` > 0 each chunk recomputes it."""
        if self.all_edges is None:
            return edge_fn
        value = edge_fn(self.all_edges)
        return lambda edges: value if edges is self.all_edges else edge_fn(edges)

    def reduce(self, message_fn: Callable[[EdgeBatch], jax.Array], size: int) -> jax.Array:
        """Σ over incoming edges of message_fn(edges) [C, size] → [N, size], then divided by
        the average degree ('sum') or the node's in-degree ('mean')."""
        n = self.n_node_total
        if self.edge_chunk == 0:
            total = jax.ops.segment_sum(message_fn(self.all_edges), self.receivers, num_segments=n)
        else:
            total = self._chunked_sum(message_fn, size)
        if self.aggregation == "mean":
            return total * self.inverse_degree[:, None]
        return total / self.average_degree

    def _chunked_sum(self, message_fn, size: int) -> jax.Array:
        chunk = self.edge_chunk
        n_edges = self.senders.shape[0]
        n_chunks = -(-n_edges // chunk)
        pad = n_chunks * chunk - n_edges
        # Padding edges are self-loops of node 0 with weight 0: valid indices, no contribution.
        raw = {**self._raw, "weight": jnp.ones(n_edges, jnp.float32)}
        raw = {k: jnp.concatenate([v, jnp.zeros((pad,) + v.shape[1:], v.dtype)]).reshape(
            (n_chunks, chunk) + v.shape[1:]) for k, v in raw.items()}

        # Checkpointed: a backward pass recomputes each chunk instead of storing all of them.
        @jax.checkpoint
        def add_chunk(total, raw_chunk):
            edges = self._edge_batch(raw_chunk)
            messages = message_fn(edges) * edges.weight[:, None]
            return total + jax.ops.segment_sum(messages, edges.receivers, num_segments=total.shape[0]), None

        initial = jnp.zeros((self.n_node_total, size), jnp.float32)
        total, _ = jax.lax.scan(add_chunk, initial, raw)
        return total

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


def edge_feature_count(config: "ModelConfig") -> int:
    return 2 * config.num_bessel + int(config.edge_length_change)


def paper_edge_inputs(config: ModelConfig) -> EdgeInputs:
    """Edge inputs of paper §3.1: B(|r^init_ij|) ⊕ B(|r^equi_ij|) [⊕ |r^equi_ij| − |r^init_ij|]
    and Y(r̂^init_ij) ('norm' normalisation; none for ablation B)."""

    def edge_inputs(bond_initial, bond_equilibrium):
        length_initial = safe_norm(bond_initial)
        length_equilibrium = safe_norm(bond_equilibrium)
        features = [radial_basis(length_initial, config.num_bessel, config.r_max),
                    radial_basis(length_equilibrium, config.num_bessel, config.r_max)]
        if config.edge_length_change:
            features.append((length_equilibrium - length_initial)[:, None])
        harmonics = None
        if config.variant != "invariant":
            harmonics = e3nn.spherical_harmonics(harmonic_irreps(config.l_max), bond_initial,
                                                 normalize=True, normalization="norm").array
        return jnp.concatenate(features, axis=-1), harmonics

    return edge_inputs


def degree_scalar_products(a: jax.Array, b: jax.Array, l_max: int) -> jax.Array:
    """[..., D] × [..., D] → [..., L+1]: the scalar (ℓ ⊗ ℓ → 0) Clebsch–Gordan products of two
    single-channel equivariant features, ⟨a^ℓ, b^ℓ⟩ / √(2ℓ+1).

    The same normalisation as the scalar outputs of ``e3nn.tensor_product`` (component
    normalisation), so the scalarisation α⁰ (paper eq. 15) and the node product Δm
    (eq. 11) are on one scale.
    """
    cg_scale = 1.0 / np.sqrt(2.0 * np.arange(l_max + 1) + 1.0)
    return ((a * b) @ jnp.asarray(degree_projector(l_max), a.dtype)) * jnp.asarray(cg_scale, a.dtype)


class InteractionLayer(nn.Module):
    """One EIGNN layer (paper eqs. 9–20): equivariant message passing, scalarisation of the
    layer's new equivariant features, gated invariant message passing, norms.

    last: the network's last layer. Its normalised equivariant features would feed nothing
      (the decoder reads only h), so it skips that norm rather than carry a parameter with
      no effect.
    """

    config: ModelConfig
    last: bool = False

    @nn.compact
    def __call__(self, h, h_eq, index: GraphIndex):
        """h [N, F]; h_eq [N, D] or None (ablation B). Returns the new (h, h_eq)."""
        cfg = self.config
        width, l_max, n_features = cfg.width, cfg.l_max, edge_feature_count(cfg)
        projector = jnp.asarray(degree_projector(l_max), h.dtype)              # [D, L+1]

        if cfg.variant == "invariant":
            delta_h = MLP([width, width], name="update")(h)
            new_h_eq = None
            n_geometry = 0
        else:
            irreps = harmonic_irreps(l_max, cfg.harmonics_parity)
            # 1. Equivariant message passing (eqs. 9–13): one gate per degree scales Y^ℓ(r̂_ij).
            #    Gate MLP input: [h_i, edge features, h_j] (receiver i, sender j).
            (gate_r, gate_e, gate_s), gate_bias, gate_rest = EdgeMLP(
                [width, n_features, width], [width, l_max + 1], name="gates")()
            gate_from_receiver = h @ gate_r + gate_bias                        # [N, F]
            gate_from_sender = h @ gate_s                                      # [N, F]

            @jax.named_scope("edge_messages")
            def edge_messages(edges: EdgeBatch) -> jax.Array:                  # [C, D]
                gates = gate_rest(gate_from_receiver[edges.receivers] + gate_from_sender[edges.senders]
                                  + edges.features @ gate_e)                   # [C, L+1]
                gates = jax.nn.sigmoid(gates) if cfg.gate == "sigmoid" else nn.silu(gates)
                return edges.harmonics * (gates @ projector.T)

            # Read twice: summed into m̃_i (eq. 12) and in α⁰ (eq. 15).
            edge_messages = index.shared(edge_messages)
            node_messages = index.reduce(edge_messages, projector.shape[0])   # [N, D]
            product = e3nn.tensor_product(
                e3nn.IrrepsArray(irreps, node_messages), e3nn.IrrepsArray(irreps, h_eq),
                filter_ir_out=irreps, **TENSOR_PRODUCT_NORMALIZATION)          # all paths, ℓ ≤ L
            delta_m = product.filter(keep="0e").array                          # [N, L+1]
            delta_h = MLP([width, width], name="update")(jnp.concatenate([delta_m, h], axis=-1))
            new_h_eq = e3nn.flax.Linear(irreps, name="mix", **LINEAR_NORMALIZATION)(product).array  # h̃^L, eq. 13
            n_geometry = (2 if cfg.variant == "full" else 1) * (l_max + 1)

        # 2. Equivariant scalarisation of this layer's new features h̃^L (eqs. 14–16), then
        # 3. invariant message passing gated by them and the edge features (eqs. 17–19).
        (alpha_geometry, alpha_e), alpha_bias, alpha_rest = EdgeMLP(
            [n_geometry, n_features], [width, width], name="alpha")()
        values = MLP([width, width], name="values")(delta_h)                  # [N, F]

        @jax.named_scope("invariant_messages")
        def invariant_messages(edges: EdgeBatch) -> jax.Array:                 # [C, F]
            pre_activation = edges.features @ alpha_e + alpha_bias
            if cfg.variant != "invariant":
                h_eq_i, h_eq_j = new_h_eq[edges.receivers], new_h_eq[edges.senders]
                # α¹: |h̃^ℓ_i − h̃^ℓ_j| per degree, as a [C, D] @ [D, L+1] product.
                geometry = [safe_sqrt(((h_eq_i - h_eq_j) ** 2) @ projector)]
                if cfg.variant == "full":
                    # α⁰: scalar outputs of h̃_i ⊗ m̃_ij.
                    geometry.insert(0, degree_scalar_products(h_eq_i, edge_messages(edges), l_max))
                pre_activation += jnp.concatenate(geometry, axis=-1) @ alpha_geometry
            return alpha_rest(pre_activation) * values[edges.senders]

        h = delta_h + index.reduce(invariant_messages, width)
        # 4. Normalisation (eq. 20), after the scalarisation: eqs. 14–16 read h̃^L as eq. 13
        # produced it, and the norm defines the next layer's input.
        h = GraphNorm(name="graph_norm")(h, index)
        if new_h_eq is not None and not self.last:
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
        index = GraphIndex(graph, paper_edge_inputs(cfg), aggregation=cfg.aggregation,
                           edge_chunk=cfg.edge_chunk, average_degree=cfg.scales.average_degree)

        # Encoder.
        scales = cfg.scales
        disp = nodes["displacements"]                                          # [N, 3]
        scalars = jnp.concatenate([
            jax.nn.one_hot(nodes["species"], 2),
            ((nodes["energy"] - scales.energy_mean) / scales.energy_std)[:, None],
            ((safe_norm(disp) - scales.displacement_mean) / scales.displacement_std)[:, None],
        ], axis=-1)                                                            # [N, 4]
        h = nn.Dense(cfg.width, name="encoder")(scalars)                       # [N, F]
        h_eq = None
        if cfg.variant != "invariant":
            # Computed as what they are (polar); 'even' only changes how layers declare them.
            # A particle sitting exactly at its equilibrium position has no direction:
            # e3nn maps the zero vector to Y = (1, 0, …), i.e. only the ℓ = 0 part survives.
            h_eq = e3nn.spherical_harmonics(harmonic_irreps(cfg.l_max), disp, normalize=True,
                                            normalization="norm").array       # [N, D]

        for k in range(cfg.num_layers):
            h, h_eq = InteractionLayer(cfg, last=k == cfg.num_layers - 1, name=f"layer_{k}")(h, h_eq, index)

        # Decoder: one more invariant pass with messages MLP([h_i, h_i − h_j]), then one output
        # per time scale. Linear in its input, so [h_i, h_i − h_j] @ [K₁; K₂] = h_i (K₁+K₂) − h_j K₂.
        (k_receiver, k_difference), bias, decoder_rest = EdgeMLP(
            [cfg.width, cfg.width], [cfg.width, cfg.width], name="decoder_messages")()
        from_receiver = h @ (k_receiver + k_difference) + bias
        from_sender = h @ k_difference

        @jax.named_scope("decoder_messages")
        def decoder_messages(edges: EdgeBatch) -> jax.Array:                   # [C, F]
            return decoder_rest(from_receiver[edges.receivers] - from_sender[edges.senders])

        h = index.reduce(decoder_messages, cfg.width)
        if cfg.decoder_dropout > 0:
            h = nn.Dropout(cfg.decoder_dropout, deterministic=not train)(h)
        return MLP([cfg.width, cfg.num_outputs], name="readout")(h)            # [N, T]


def parameter_count(variables) -> int:
    """Number of trainable scalars: the total size of the leaves of the 'params' collection.

    ``variables`` is what ``module.init`` returns (or its 'params' collection alone). Other
    collections, such as the public layout's BatchNorm running statistics ('batch_stats'),
    are state rather than parameters and are not counted.
    """
    params = variables.get("params", variables) if hasattr(variables, "get") else variables
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))
