"""Processing edges in chunks (ModelConfig.edge_chunk) changes memory, not results."""

import dataclasses

import jax
import numpy as np
import pytest

from eignn_jax import graph as graph_lib, training
from eignn_jax.model import ACCELERATOR_EDGE_CHUNK, CPU_EDGE_CHUNK, EIGNN, for_graph_size
from tests.conftest import small_model_config

# Minutes on 2 cores: the model-evaluating tests are in the full suite only
# (pytest -m "not slow" leaves them out); the chunk-size rules are checked in both.


def outputs_and_gradients(config, params, padded):
    model = EIGNN(config)

    def loss(p):
        predictions = model.apply(p, padded)
        return training.standardised_mse(predictions, padded.nodes["targets"],
                                         padded.nodes["target_mask"]), predictions

    (value, predictions), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return float(value), np.asarray(predictions), grads


@pytest.mark.slow
@pytest.mark.parametrize("variant,aggregation", [("full", "sum"), ("invariant", "mean")])
def test_chunked_edges_give_the_same_predictions_and_gradients(real_graph, variant, aggregation):
    config = small_model_config([real_graph], variant=variant, aggregation=aggregation)
    budget = graph_lib.padding_budget([real_graph])
    padded = graph_lib.pad_graph(real_graph, budget)
    params = EIGNN(config).init(jax.random.PRNGKey(0), padded)
    # 4999 does not divide the edge budget: the last chunk is padded inside the model.
    chunk = 4999
    assert budget.n_edge % chunk != 0
    loss, predictions, grads = outputs_and_gradients(config, params, padded)
    loss_c, predictions_c, grads_c = outputs_and_gradients(
        dataclasses.replace(config, edge_chunk=chunk), params, padded)

    scale = np.abs(predictions).max()
    assert np.abs(predictions_c - predictions).max() < 1e-5 * scale
    assert abs(loss_c - loss) < 1e-5 * abs(loss)
    for g, g_c in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_c)):
        assert np.abs(np.asarray(g_c) - np.asarray(g)).max() < 1e-4 * (np.abs(np.asarray(g)).max() + 1e-6)


@pytest.mark.slow
def test_chunks_do_not_change_parameters(real_graph):
    """A model trained without chunks can be evaluated with them (same parameter tree)."""
    config = small_model_config([real_graph])
    padded = graph_lib.pad_graph(real_graph, graph_lib.padding_budget([real_graph]))
    shapes = lambda c: jax.tree.map(lambda x: x.shape, EIGNN(c).init(jax.random.PRNGKey(0), padded))
    assert shapes(config) == shapes(dataclasses.replace(config, edge_chunk=1000))


def test_only_very_large_graphs_are_chunked(real_graph):
    config = small_model_config([real_graph])
    assert for_graph_size(config, int(real_graph.n_edge[0])).edge_chunk == 0
    assert for_graph_size(config, 45_000_000).edge_chunk > 0
    explicit = dataclasses.replace(config, edge_chunk=1000)
    assert for_graph_size(explicit, 45_000_000).edge_chunk == 1000


def test_chunk_size_follows_the_platform(real_graph):
    """Cache-sized chunks on a CPU, large ones on an accelerator."""
    config = small_model_config([real_graph])
    assert for_graph_size(config, 45_000_000, platform="cpu").edge_chunk == CPU_EDGE_CHUNK
    assert for_graph_size(config, 45_000_000, platform="gpu").edge_chunk == ACCELERATOR_EDGE_CHUNK
    assert CPU_EDGE_CHUNK < ACCELERATOR_EDGE_CHUNK
    expected = CPU_EDGE_CHUNK if jax.default_backend() == "cpu" else ACCELERATOR_EDGE_CHUNK
    assert for_graph_size(config, 45_000_000).edge_chunk == expected
