"""Loss, learning, compilation count and resumable training."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eignn_jax import dataset, graph as graph_lib, training
from eignn_jax.model import EIGNN
from tests.conftest import Interrupt, interrupt_after_epoch, small_model_config

# Minutes on 2 cores: the full suite only (pytest -m "not slow" leaves them out).
pytestmark = pytest.mark.slow


def test_loss_standardises_targets_over_masked_particles_only():
    rng = np.random.default_rng(0)
    targets = rng.normal(3.0, 2.0, (50, 4)).astype(np.float32)
    mask = rng.random(50) < 0.7
    z = (targets[mask] - targets[mask].mean(0)) / targets[mask].std(0)
    predictions = rng.normal(size=(50, 4)).astype(np.float32)
    expected = np.mean((predictions[mask] - z) ** 2)
    loss = training.standardised_mse(jnp.asarray(predictions), jnp.asarray(targets), jnp.asarray(mask))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    # Unmasked particles (type B, padding) cannot move the loss.
    predictions[~mask] = 1e6
    targets[~mask] = -1e6
    loss2 = training.standardised_mse(jnp.asarray(predictions), jnp.asarray(targets), jnp.asarray(mask))
    np.testing.assert_allclose(float(loss2), expected, rtol=1e-4)


def small_system(n_cells=4, seed=0):
    """A jittered fcc KA-like system of 4·n_cells³ particles at density 1.2 (nearest
    neighbours 1.06 σ apart, so per-particle energies are those of a dense liquid), with
    an 'inherent structure' nearby and random labels."""
    rng = np.random.default_rng(seed)
    n = 4 * n_cells ** 3
    box = np.full(3, (n / 1.2) ** (1 / 3))
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    lattice = ((grid + basis).reshape(-1, 3) + 0.25) * box / n_cells - box / 2
    positions = lattice + rng.normal(0, 0.06, (n, 3))
    types = np.where(rng.random(n) < 0.8, 1, 2).astype(np.int32)
    return dataset.Configuration(
        path="", types=types, positions=positions.astype(np.float32), box=box,
        inherent=(lattice + rng.normal(0, 0.02, (n, 3))).astype(np.float32),
        propensity=rng.gamma(2.0, 0.2, (3, n)).astype(np.float32),
        times=np.array([1.0, 10.0, 100.0], np.float32))


def test_compiled_initial_state_equals_the_eager_initialisation():
    # init_state runs model.init and the optimizer's init as one compiled program; the
    # parameters a seed gives must be those of the plain eager call, bit for bit, so that
    # a seed means the same model whichever way it was initialised.
    graph = graph_lib.build_graph(small_system(), graph_lib.GraphConfig())
    model = EIGNN(small_model_config([graph], width=8, num_layers=2))
    optimizer = training.make_optimizer(training.TrainConfig(), steps_per_epoch=1)
    padded = graph_lib.pad_graph(graph, graph_lib.padding_budget([graph]))
    state = training.init_state(model, optimizer, padded, seed=5)
    eager = model.init(jax.random.PRNGKey(5), padded)
    leaves, eager_leaves = jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(eager)
    assert len(leaves) == len(eager_leaves) > 0
    assert all(np.array_equal(a, b) for a, b in zip(leaves, eager_leaves))
    assert int(state.step) == 0
    zeros = [np.all(np.asarray(x) == 0) for x in jax.tree_util.tree_leaves(state.opt_state)
             if np.asarray(x).dtype.kind == "f"]
    assert zeros and all(zeros)       # Adam's moments start at zero


def test_overfits_one_small_graph():
    graph = graph_lib.build_graph(small_system(), graph_lib.GraphConfig())
    config = small_model_config([graph], width=32, num_layers=3)
    model = EIGNN(config)
    train_config = training.TrainConfig(learning_rate=3e-3, lr_decay_epochs=())
    optimizer = training.make_optimizer(train_config, steps_per_epoch=1)
    padded = graph_lib.pad_graph(graph, graph_lib.padding_budget([graph]))
    state = training.init_state(model, optimizer, padded, seed=0)
    step = training.make_train_step(model, optimizer)
    losses = []
    for _ in range(400):
        state, loss = step(state, padded)
        losses.append(float(loss))
    assert losses[0] > 0.5
    assert min(losses[-20:]) < 0.05, losses[::40]


def test_one_compilation_per_epoch_over_graphs_of_different_sizes(default_files):
    graphs = graph_lib.load_graphs(default_files[:4], graph_lib.GraphConfig())
    assert len({int(g.n_edge[0]) for g in graphs}) == 4
    model = EIGNN(small_model_config(graphs, width=8, num_layers=1))
    optimizer = training.make_optimizer(training.TrainConfig(), steps_per_epoch=4)
    budget = graph_lib.padding_budget(graphs)
    batches = list(graph_lib.batches(graphs, budget, 1))
    state = training.init_state(model, optimizer, batches[0], seed=0)
    step = training.make_train_step(model, optimizer)
    for _ in range(2):
        for batch in batches:
            state, _ = step(state, batch)
    assert step.traces == 1
    assert int(state.step) == 8


def test_interrupted_training_resumes_to_the_same_result(default_files, tmp_path):
    graphs = graph_lib.load_graphs(default_files[:3], graph_lib.GraphConfig())
    train_graphs, test_graphs = graphs[:2], graphs[2:]
    model_config = small_model_config(graphs, width=8, num_layers=1)
    train_config = training.TrainConfig(epochs=3, lr_decay_epochs=(2,))

    straight = training.train(model_config, train_config, train_graphs, test_graphs,
                              tmp_path / "straight", {"name": "test"}, log=lambda _: None)

    with pytest.raises(Interrupt):
        training.train(model_config, train_config, train_graphs, test_graphs,
                       tmp_path / "resumed", {"name": "test"}, log=interrupt_after_epoch(2))
    messages = []
    resumed = training.train(model_config, train_config, train_graphs, test_graphs,
                             tmp_path / "resumed", {"name": "test"}, log=messages.append)
    assert "resuming after epoch 2" in messages[0]
    assert int(resumed.step) == int(straight.step) == 6
    for a, b in zip(jax.tree_util.tree_leaves(straight.params), jax.tree_util.tree_leaves(resumed.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_decoder_dropout_acts_in_training_only(real_graph):
    config = small_model_config([real_graph], decoder_dropout=0.5)
    model = EIGNN(config)
    padded = graph_lib.pad_graph(real_graph, graph_lib.padding_budget([real_graph]))
    params = model.init(jax.random.PRNGKey(0), padded)
    evaluation = model.apply(params, padded)
    np.testing.assert_array_equal(evaluation, model.apply(params, padded))
    a = model.apply(params, padded, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    b = model.apply(params, padded, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(a, b) and not np.allclose(a, evaluation)
