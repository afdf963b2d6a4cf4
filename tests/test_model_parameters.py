"""No dead parameters: every parameter of every model variant and option takes part in the output.

A parameter that receives no gradient, or whose value does not change the predictions, is a
part of the model that the equations specify but the code does not use (e.g. equivariant
features computed by a layer and never read). Checked element by element on a real N = 1000
graph, for every variant and every option of ``ModelConfig``.
"""

import dataclasses

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eignn_jax import graph as graph_lib
from eignn_jax import architectures
from eignn_jax.model import PUBLIC_LAYOUT, GraphIndex, ModelConfig, paper_edge_inputs
from tests.conftest import small_model_config

# Each entry: a variant or option of ModelConfig, on a 3-layer model (first, middle and last
# layers differ in what reads their outputs).
MODEL_OPTIONS = {
    "full": {},
    "ablation_A": {"variant": "no_alpha0"},
    "ablation_B": {"variant": "invariant"},
    "mean_aggregation": {"aggregation": "mean"},
    "silu_gates": {"gate": "silu"},
    "edge_length_change": {"edge_length_change": True},
    "even_harmonics": {"harmonics_parity": "even"},
    "l_max_1": {"l_max": 1},
    "l_max_3": {"l_max": 3},
    "decoder_dropout": {"decoder_dropout": 0.3},
    "edge_chunks": {"edge_chunk": 20_000},
    "one_layer": {"num_layers": 1},
    "public_architecture": {"architecture": "public", **PUBLIC_LAYOUT},
}


def flat_parameters(params) -> dict[str, jax.Array]:
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.fixture(scope="module")
def padded_graph(real_graph):
    return graph_lib.pad_graph(real_graph, graph_lib.padding_budget([real_graph]))


def jitter(params, seed: int, relative: float = 0.3):
    """Every element moved by ``relative`` × (mean |leaf| + 0.1), seeded."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda v: v + jnp.asarray(
        relative * (np.abs(v).mean() + 0.1) * rng.normal(size=v.shape), v.dtype), params)


def model_and_params(real_graph, padded_graph, options, seed: int = 1):
    """The model, a generic point of its parameter space (the initial values jittered, so
    that coincidences of the initialisation, such as zero biases or GraphNorm's shift α = 1
    exactly cancelling constant features, do not pass for structure), and its other
    variables (BatchNorm statistics of the public layout)."""
    config = small_model_config([real_graph], **{"width": 8, "num_layers": 3, **options})
    model = architectures.build(config)
    variables = dict(model.init(jax.random.PRNGKey(0), padded_graph))
    params = jitter(variables.pop("params"), seed=seed)
    if "batch_stats" in variables:
        # The readout BatchNorm's running statistics as training leaves them (those of its
        # inputs), not the initial 0 and 1, under which ReLU units can be off for every node.
        _, captured = model.apply({"params": params, **variables}, padded_graph, mutable=["intermediates"],
                                  capture_intermediates=lambda module, _: module.name == "readout_hidden")
        hidden = captured["intermediates"]["readout_hidden"]["__call__"][0][: int(real_graph.n_node[0])]
        variables["batch_stats"] = {**variables["batch_stats"],
                                    "readout_norm": {"mean": hidden.mean(0), "var": hidden.var(0)}}
    return (model, variables), params


def real_node_outputs(model_and_state, padded_graph, n_real):
    """jit(params → [n_real, T] predictions in eval mode)."""
    model, state = model_and_state
    return jax.jit(lambda p: model.apply({"params": p, **state}, padded_graph)[:n_real])


@pytest.mark.slow
@pytest.mark.parametrize("options", MODEL_OPTIONS.values(), ids=MODEL_OPTIONS.keys())
def test_every_parameter_receives_a_gradient(real_graph, padded_graph, options):
    """Element by element, at two generic points: a gradient that vanishes at one point only
    is a ReLU unit that happens to be off there (the public readout), not a dead parameter."""
    n_real = int(real_graph.n_node[0])
    live = None
    for seed in (1, 3):
        model_and_state, params = model_and_params(real_graph, padded_graph, options, seed)
        outputs = real_node_outputs(model_and_state, padded_graph, n_real)
        # A generic linear functional of all outputs: no accidental cancellation.
        weights = jax.random.normal(jax.random.PRNGKey(seed), outputs(params).shape)
        grads = flat_parameters(jax.grad(lambda p: jnp.sum(outputs(p) * weights))(params))
        nonzero = {name: np.asarray(g) != 0 for name, g in grads.items()}
        live = nonzero if live is None else {name: live[name] | nonzero[name] for name in live}
    dead = {name: f"{int((~alive).sum())} of {alive.size} elements"
            for name, alive in live.items() if not alive.all()}
    assert not dead, f"parameters with zero gradient: {dead}"


@pytest.mark.slow
@pytest.mark.parametrize("options", MODEL_OPTIONS.values(), ids=MODEL_OPTIONS.keys())
def test_every_parameter_changes_the_outputs(real_graph, padded_graph, options):
    model, params = model_and_params(real_graph, padded_graph, options)
    n_real = int(real_graph.n_node[0])
    outputs = real_node_outputs(model, padded_graph, n_real)
    reference = np.asarray(outputs(params))
    flat = flat_parameters(params)
    treedef = jax.tree_util.tree_structure(params)
    moved_params = flat_parameters(jitter(params, seed=2, relative=1.0))
    inert = []
    for k, name in enumerate(flat):
        leaves = list(flat.values())
        leaves[k] = moved_params[name]
        moved = np.asarray(outputs(jax.tree_util.tree_unflatten(treedef, leaves)))
        # Float32 rounding alone moves outputs by ~1e-7 of their scale; the weakest real
        # parameters (the last layer's mix weights, read only through α) by ≳ 5e-6.
        if np.abs(moved - reference).max() <= 1e-6 * np.abs(reference).max():
            inert.append(name)
    assert not inert, f"perturbing these parameters leaves the outputs unchanged: {inert}"


def test_options_cover_every_model_field():
    """A new ModelConfig field must join MODEL_OPTIONS (or be listed here as not a model option)."""
    not_options = {"width", "num_layers", "num_bessel", "r_max", "num_outputs", "scales"}
    covered = {key for options in MODEL_OPTIONS.values() for key in options}
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert fields - not_options - covered == set()


def test_scalarisation_has_the_node_products_clebsch_gordan_normalisation():
    """α⁰ (eq. 15) = the scalar outputs of e3nn's tensor product, as Δm of the node product (eq. 11)."""
    from eignn_jax.model import degree_scalar_products, harmonic_irreps
    for l_max in (1, 2, 3):
        irreps = harmonic_irreps(l_max)
        a = jax.random.normal(jax.random.PRNGKey(l_max), (5, irreps.dim))
        b = jax.random.normal(jax.random.PRNGKey(10 + l_max), (5, irreps.dim))
        expected = jax.vmap(lambda x, y: e3nn.tensor_product(
            e3nn.IrrepsArray(irreps, x), e3nn.IrrepsArray(irreps, y), filter_ir_out=["0e"]).array)(a, b)
        np.testing.assert_allclose(degree_scalar_products(a, b, l_max), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("edge_chunk", [0, 20_000])
def test_shared_edge_quantities_are_computed_once_over_all_edges(real_graph, edge_chunk):
    """``GraphIndex.shared``: a per-edge quantity read by two reductions is one value when all
    edges are processed at once (so the backward pass goes through it once), and is
    recomputed per chunk otherwise; the reductions and their gradients agree with unshared
    code either way, and other edges never receive the all-edges value."""
    config = small_model_config([real_graph], edge_chunk=edge_chunk)
    padded = graph_lib.pad_graph(real_graph, graph_lib.padding_budget([real_graph]))
    n_features = 2 * config.num_bessel
    weight = jnp.linspace(0.5, 1.5, n_features)
    calls = []

    def scale(w, edges):                               # a per-edge quantity with a parameter
        return jnp.tanh(edges.features @ w)[:, None]

    def reductions(w, graph, share):
        index = GraphIndex(graph, paper_edge_inputs(config), aggregation="sum",
                           edge_chunk=edge_chunk if share else 0)

        def counted(edges):
            calls.append(edges.features.shape[0])
            return scale(w, edges)

        shared = index.shared(counted) if share else (lambda edges: scale(w, edges))
        first = index.reduce(lambda edges: shared(edges) * edges.features, n_features)
        second = index.reduce(lambda edges: shared(edges) + edges.features[:, 1:2], 1)
        if share and edge_chunk == 0:
            few = dataclasses.replace(index.all_edges, **{
                name: getattr(index.all_edges, name)[:7] for name in ("senders", "receivers", "features", "harmonics")})
            assert shared(few).shape == (7, 1)         # recomputed for other edges
        return first, second

    def loss(w, share):
        first, second = reductions(w, padded, share)
        return jnp.sum(first ** 2) + jnp.sum(jnp.sin(second))

    value, grad = jax.jit(jax.value_and_grad(lambda w: loss(w, True)))(weight)
    n_edges = padded.senders.shape[0]
    if edge_chunk == 0:
        assert calls == [n_edges, 7]                   # once over all edges, once for the 7
    else:
        assert len(calls) >= 2 and set(calls) == {edge_chunk}   # per chunk, in each reduction
    expected_value, expected_grad = jax.jit(jax.value_and_grad(lambda w: loss(w, False)))(weight)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6 * float(jnp.abs(expected_grad).max()))
    assert float(jnp.abs(grad).max()) > 0


@pytest.mark.parametrize("architecture", ["paper", "public"])
def test_e3nn_global_configuration_does_not_change_the_model(real_graph, padded_graph, architecture):
    """A user's e3nn.config(...) must neither change predictions nor the meaning of weights."""
    options = {"architecture": "public", **PUBLIC_LAYOUT} if architecture == "public" else {}
    model_and_state, params = model_and_params(real_graph, padded_graph, options)
    n_real = int(real_graph.n_node[0])
    reference = np.asarray(real_node_outputs(model_and_state, padded_graph, n_real)(params))
    changed = {"irrep_normalization": "norm", "path_normalization": "path", "gradient_normalization": "element"}
    defaults = {name: e3nn.config(name) for name in changed}
    try:
        for name, value in changed.items():
            e3nn.config(name, value)
        under_other_settings = np.asarray(real_node_outputs(model_and_state, padded_graph, n_real)(params))
    finally:
        for name, value in defaults.items():
            e3nn.config(name, value)
    np.testing.assert_array_equal(under_other_settings, reference)
