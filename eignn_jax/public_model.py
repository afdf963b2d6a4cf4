"""The public EIGNN implementation's layout, built from this package's parts, to run its
published checkpoints (``experiments.import_public``).

What it computes departs from the paper (``model.EIGNN``) in the ways the public code does
(DESIGN §2; ``../shared/reference/public_eignn/README.md``):
- inputs: the raw, unshifted per-particle LJ energy on the *inherent* structure (the graph's
  ``energy`` field, built with ``GraphConfig(energy_structure='inherent',
  energy_shifted=False)``), |d_i|, one-hot type, with no input scaling;
- edge scalars: |r^equi_ij| − |r^init_ij|, then Bessel functions of |r^equi_ij| and of
  |r^init_ij| cut off at r_max without a smooth envelope;
- harmonics of the bond r_i − r_j and of d_i, 'component' normalised and *declared even*
  (so it is invariant under rotations only, not under inversion);
- mean aggregation everywhere; SiLU gates; a single linear node update; the node product
  h̃ ⊗ m̃ (in that order); α⁰ pairs the edge message with the *sender's* h̃_j and α¹ is a
  squared norm; one sigmoid-gated linear message; GraphNorm, then an equivariant
  BatchNorm with running statistics;
- decoder: SiLU(linear([encoder embedding, h])), one mean pass of linear([x_i, x_j − x_i]),
  then linear → BatchNorm → ReLU → linear to 2T outputs: T time scales for type A
  (standardised over A particles) and T for type B (standardised over B particles).

The network returns [N, T]: each particle's prediction for its own species. BatchNorm
layers use their running statistics (the ``batch_stats`` collection) as in the public
code's evaluation mode; training this layout is not supported.
GraphNorm statistics are per graph (the public code pools every node of a batch; the two
agree for one graph per batch, which is how predictions are made).
"""

from __future__ import annotations

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from eignn_jax.model import (LINEAR_NORMALIZATION, PUBLIC_LAYOUT, TENSOR_PRODUCT_NORMALIZATION, EdgeInputs,
                             EdgeMLP, GraphIndex, GraphNorm, ModelConfig, degree_projector,
                             degree_scalar_products, harmonic_irreps, safe_norm)

BATCH_NORM_EPSILON = 1e-5


def public_edge_inputs(config: ModelConfig) -> EdgeInputs:
    """Edge scalars [C, 1 + 2 N_b] (length change, Bessel of |r^equi|, Bessel of |r^init|) and
    Y(r_i − r_j) [C, D] of the initial bond, 'component' normalised."""

    def bessel(lengths):
        # e3nn's Bessel basis √(2/c) sin(nπr/c)/r, zero at and beyond c (no envelope).
        return e3nn.bessel(lengths, config.num_bessel, config.r_max) * (
            (lengths > 0) & (lengths < config.r_max))[:, None]

    def edge_inputs(bond_initial, bond_equilibrium):
        length_initial = safe_norm(bond_initial)
        length_equilibrium = safe_norm(bond_equilibrium)
        features = jnp.concatenate([(length_equilibrium - length_initial)[:, None],
                                    bessel(length_equilibrium), bessel(length_initial)], axis=-1)
        # Our bonds point from receiver i to sender j; the public code's from j to i.
        harmonics = e3nn.spherical_harmonics(harmonic_irreps(config.l_max, "even"), -bond_initial,
                                             normalize=True, normalization="component").array
        return features, harmonics

    return edge_inputs


def public_edge_feature_count(config: ModelConfig) -> int:
    return 1 + 2 * config.num_bessel


class EquivariantBatchNorm(nn.Module):
    """e3nn's BatchNorm of single-channel features in evaluation mode ('component'
    normalisation): scalars centred by their running mean, every degree divided by
    √(running variance + ε) and scaled by its weight, the scalar shifted by its bias."""

    l_max: int

    @nn.compact
    def __call__(self, h_eq: jax.Array) -> jax.Array:
        degrees = self.l_max + 1
        mean = self.variable("batch_stats", "mean", jnp.zeros, (1,)).value
        var = self.variable("batch_stats", "var", jnp.ones, (degrees,)).value
        weight = self.param("weight", nn.initializers.ones, (degrees,))
        bias = self.param("bias", nn.initializers.zeros, (1,))
        projector = jnp.asarray(degree_projector(self.l_max), h_eq.dtype)           # [D, L+1]
        scalar = jnp.zeros(h_eq.shape[-1], h_eq.dtype).at[0].set(1.0)               # [D]
        factor = (weight * jax.lax.rsqrt(var + BATCH_NORM_EPSILON)) @ projector.T   # [D]
        return (h_eq - scalar * mean) * factor + scalar * bias


class PublicInteractionLayer(nn.Module):
    """One layer of the public layout (see the module docstring)."""

    config: ModelConfig
    last: bool = False

    @nn.compact
    def __call__(self, h, h_eq, index: GraphIndex):
        cfg = self.config
        width, l_max = cfg.width, cfg.l_max
        n_features = public_edge_feature_count(cfg)
        irreps = harmonic_irreps(l_max, "even")
        projector = jnp.asarray(degree_projector(l_max), h.dtype)              # [D, L+1]

        # Gates: silu(linear([h_i, h_j, e_ij])) → linear → silu, one per degree, times Y^ℓ.
        (gate_r, gate_s, gate_e), gate_bias, gate_rest = EdgeMLP(
            [width, width, n_features], [width, l_max + 1], name="gates")()
        gate_from_receiver = h @ gate_r + gate_bias
        gate_from_sender = h @ gate_s

        def edge_messages(edges) -> jax.Array:                                 # [C, D]
            gates = nn.silu(gate_rest(gate_from_receiver[edges.receivers] + gate_from_sender[edges.senders]
                                      + edges.features @ gate_e))
            return edges.harmonics * (gates @ projector.T)

        edge_messages = index.shared(edge_messages)   # read again by α⁰ below
        node_messages = index.reduce(edge_messages, projector.shape[0])       # [N, D], mean
        product = e3nn.tensor_product(e3nn.IrrepsArray(irreps, h_eq), e3nn.IrrepsArray(irreps, node_messages),
                                      filter_ir_out=irreps, **TENSOR_PRODUCT_NORMALIZATION)
        h = nn.Dense(width, name="update")(jnp.concatenate([h, product.filter(keep="0e").array], axis=-1))
        h_eq = e3nn.flax.Linear(irreps, name="mix", **LINEAR_NORMALIZATION)(product).array   # [N, D]
        self.sow("intermediates", "updated", (h, h_eq))

        # Scalarisation of the new h̃ and the gated invariant messages.
        (alpha_e, alpha_0, alpha_1), alpha_bias, _ = EdgeMLP(
            [n_features, l_max + 1, l_max + 1], [width], name="alpha")()
        values = nn.silu(nn.Dense(width, name="values")(h))                    # [N, F]

        def invariant_messages(edges) -> jax.Array:                            # [C, F]
            h_eq_i, h_eq_j = h_eq[edges.receivers], h_eq[edges.senders]
            alpha0 = degree_scalar_products(edge_messages(edges), h_eq_j, l_max)
            alpha1 = ((h_eq_i - h_eq_j) ** 2) @ projector
            gate = jax.nn.sigmoid(edges.features @ alpha_e + alpha0 @ alpha_0 + alpha1 @ alpha_1 + alpha_bias)
            return gate * values[edges.senders]

        h = GraphNorm(name="graph_norm")(h + index.reduce(invariant_messages, width), index)
        if not self.last:   # the last layer's normalised h̃ would feed nothing
            h_eq = EquivariantBatchNorm(l_max, name="equivariant_norm")(h_eq)
        self.sow("intermediates", "normalised", (h, h_eq))
        return h, h_eq


class PublicEIGNN(nn.Module):
    """Graph → [N, T] per-species standardised propensities, the public implementation's
    layout (module docstring). ``config.num_outputs`` is T; the readout has 2T outputs."""

    config: ModelConfig

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, train: bool = False) -> jax.Array:
        if train:
            raise ValueError("the public layout runs published checkpoints; training it is not "
                             "supported (its BatchNorm layers would need running statistics)")
        cfg = self.config
        nodes = graph.nodes
        index = GraphIndex(graph, public_edge_inputs(cfg), aggregation="mean", edge_chunk=cfg.edge_chunk)
        disp = nodes["displacements"]                                          # [N, 3]
        scalars = jnp.concatenate([jax.nn.one_hot(nodes["species"], 2), nodes["energy"][:, None],
                                   safe_norm(disp)[:, None]], axis=-1)         # [N, 4]
        embedding = nn.Dense(cfg.width, name="encoder")(scalars)                # [N, F]
        self.sow("intermediates", "embedding", embedding)
        h = embedding
        h_eq = e3nn.spherical_harmonics(harmonic_irreps(cfg.l_max, "even"), disp, normalize=True,
                                        normalization="component").array       # [N, D]
        for k in range(cfg.num_layers):
            h, h_eq = PublicInteractionLayer(cfg, last=k == cfg.num_layers - 1, name=f"layer_{k}")(h, h_eq, index)
        self.sow("intermediates", "final_invariant", h)

        x = nn.silu(nn.Dense(cfg.width, name="decoder_input")(jnp.concatenate([embedding, h], axis=-1)))
        # Messages linear([x_i, x_j − x_i]) = x_i (K₁ − K₂) + x_j K₂ + b.
        (k_receiver, k_difference), bias, _ = EdgeMLP([cfg.width, cfg.width], [cfg.width],
                                                      name="decoder_messages")()
        from_receiver = x @ (k_receiver - k_difference) + bias
        from_sender = x @ k_difference
        x = index.reduce(lambda edges: from_receiver[edges.receivers] + from_sender[edges.senders], cfg.width)
        self.sow("intermediates", "decoder_aggregate", x)
        x = nn.Dense(cfg.width, use_bias=False, name="readout_hidden")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON, name="readout_norm")(x)
        both_species = nn.Dense(2 * cfg.num_outputs, use_bias=False, name="readout")(nn.relu(x))  # [N, 2T]
        is_b = (nodes["species"] == 1)[:, None]
        return jnp.where(is_b, both_species[:, cfg.num_outputs:], both_species[:, : cfg.num_outputs])


# ------------------------------------------------------------------- published checkpoints

# The public code's radial basis range and graph cutoff (σ), fixed in its code rather than
# stored in checkpoints.
PUBLIC_R_MAX = 2.5
PUBLIC_CUTOFF = 2.0


def _is_constant_buffer(name: str, value: np.ndarray) -> bool:
    """State-dict entries that are not learnt: empty tensors, e3nn's output masks and
    Clebsch–Gordan tables, BatchNorm's batch counter."""
    return value.size == 0 or name.endswith(("output_mask", "num_batches_tracked")) or "._w3j_" in name


def config_from_state_dict(state: dict[str, np.ndarray]) -> ModelConfig:
    """The ModelConfig (architecture 'public') whose shapes match a public state dict.

    Raises ValueError naming the missing entry if it is not of that layout.
    """
    try:
        width, n_inputs = state["lin_embedding.weight"].shape
        num_layers = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("interactions.")), default=-1)
        gate_inputs = state["interactions.0.I2EConv.lin1.weight"].shape[1]
        l_max = state["interactions.0.I2EConv.lin2.weight"].shape[0] - 1
        num_outputs, remainder = divmod(state["out.lins.1.weight"].shape[0], 2)
    except (KeyError, ValueError, IndexError) as error:
        raise ValueError(f"not a state dict of the public EIGNN layout (missing or misshapen {error})") from error
    num_bessel, odd = divmod(gate_inputs - 2 * width - 1, 2)
    if n_inputs != 4 or num_layers < 1 or l_max < 0 or num_bessel < 1 or odd or remainder or num_outputs < 1:
        raise ValueError(
            f"not a state dict of the public EIGNN layout: lin_embedding takes {n_inputs} inputs "
            f"(4 expected), {num_layers} interaction layers, {gate_inputs} gate inputs (2·{width} + 1 + "
            f"2·N_b expected), l_max {l_max}, {2 * num_outputs + remainder} outputs (2 per time expected)")
    return ModelConfig(architecture="public", width=width, num_layers=num_layers, l_max=l_max,
                       num_bessel=num_bessel, r_max=PUBLIC_R_MAX, num_outputs=num_outputs, **PUBLIC_LAYOUT)


def variables_from_state_dict(state: dict[str, np.ndarray], template: dict) -> dict:
    """Flax variables ({'params', 'batch_stats'}) of ``PublicEIGNN`` from a public state dict.

    template: variables of the matching ``PublicEIGNN`` (from ``init``), giving the tree and
    shapes. torch.nn.Linear weights are [out, in]; flax kernels are [in, out].
    Raises ValueError naming the entry when a shape does not match, an entry is missing,
    or a learnt entry would be left unused.
    """
    used: set[str] = set()

    def take(name: str, transpose: bool = False) -> np.ndarray:
        if name not in state:
            raise ValueError(f"the state dict has no {name!r}")
        used.add(name)
        value = np.asarray(state[name], np.float32)
        return value.T if transpose else value

    params = {"encoder": {"kernel": take("lin_embedding.weight", True), "bias": take("lin_embedding.bias")},
              "decoder_input": {"kernel": take("lin_cat.weight", True), "bias": take("lin_cat.bias")},
              "decoder_messages": {"Dense_0": {"kernel": take("agg_3.nn.lins.0.weight", True),
                                               "bias": take("agg_3.nn.lins.0.bias")}},
              "readout_hidden": {"kernel": take("out.lins.0.weight", True)},
              "readout_norm": {"scale": take("out.norms.0.module.weight"), "bias": take("out.norms.0.module.bias")},
              "readout": {"kernel": take("out.lins.1.weight", True)}}
    batch_stats = {"readout_norm": {"mean": take("out.norms.0.module.running_mean"),
                                    "var": take("out.norms.0.module.running_var")}}
    layers = sorted(k for k in template["params"] if k.startswith("layer_"))
    for k, layer in enumerate(layers):
        prefix = f"interactions.{k}."
        mix_weights = take(prefix + "I2EConv.o3_lin.weight")
        mix, start = {}, 0
        for key, value in template["params"][layer]["mix"].items():   # in e3nn's path order
            mix[key] = mix_weights[start:start + value.size].reshape(value.shape)
            start += value.size
        if start != mix_weights.size:
            raise ValueError(f"{prefix}I2EConv.o3_lin.weight has {mix_weights.size} weights, expected {start}")
        params[layer] = {
            "gates": {"Dense_0": {"kernel": take(prefix + "I2EConv.lin1.weight", True),
                                  "bias": take(prefix + "I2EConv.lin1.bias")},
                      "Dense_1": {"kernel": take(prefix + "I2EConv.lin2.weight", True),
                                  "bias": take(prefix + "I2EConv.lin2.bias")}},
            "update": {"kernel": take(prefix + "I2EConv.lin3.weight", True), "bias": take(prefix + "I2EConv.lin3.bias")},
            "mix": mix,
            "alpha": {"Dense_0": {"kernel": take(prefix + "E2IConv.lin_cat.weight", True),
                                  "bias": take(prefix + "E2IConv.lin_cat.bias")}},
            "values": {"kernel": take(prefix + "E2IConv.lin_r.weight", True), "bias": take(prefix + "E2IConv.lin_r.bias")},
            "graph_norm": {"alpha": take(prefix + "norm.mean_scale"), "gamma": take(prefix + "norm.weight"),
                           "beta": take(prefix + "norm.bias")}}
        if "equivariant_norm" in template["params"][layer]:
            params[layer]["equivariant_norm"] = {"weight": take(prefix + "e_norm.weight"),
                                                 "bias": take(prefix + "e_norm.bias")}
            batch_stats[layer] = {"equivariant_norm": {"mean": take(prefix + "e_norm.running_mean"),
                                                       "var": take(prefix + "e_norm.running_var")}}
        else:
            # The last layer's equivariant BatchNorm feeds nothing in the public code either.
            used.update(prefix + f"e_norm.{name}" for name in ("weight", "bias", "running_mean", "running_var"))
    variables = {"params": params, "batch_stats": batch_stats}

    def check(path, expected, actual):
        if np.shape(expected) != np.shape(actual):
            raise ValueError(f"{jax.tree_util.keystr(path)}: shape {np.shape(actual)} in the state dict, "
                             f"{np.shape(expected)} in the model")
    jax.tree_util.tree_map_with_path(check, template, variables)
    unused = sorted(k for k, v in state.items() if k not in used and not _is_constant_buffer(k, v))
    if unused:
        raise ValueError(f"entries of the state dict this layout does not use: {unused[:5]}"
                         f"{' …' if len(unused) > 5 else ''}")
    return jax.tree.map(jnp.asarray, variables)
