"""Edge-parallel training (one graph per step, its edges split over two CPU devices) equals
one-device training, compiles once, and the training loop runs with it.

The CPU's device count is fixed when jax starts, so the checks run in a child process with
two simulated devices (``eignn_jax.parallel.request_host_devices``).
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import DEFAULT_DATA

pytestmark = pytest.mark.slow

CHILD = r"""
import json, pathlib, sys
from eignn_jax import parallel
parallel.request_host_devices(2)
import jax, numpy as np
from eignn_jax import dataset, graph as graph_lib, training
from eignn_jax.feature_scales import fit_feature_scales
from eignn_jax.model import EIGNN, ModelConfig

data, workdir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
graphs = graph_lib.load_graphs(dataset.list_configurations(data)[:4], graph_lib.GraphConfig())
model_config = ModelConfig(width=8, num_layers=2, num_outputs=graphs[0].nodes["targets"].shape[1],
                           scales=fit_feature_scales(graphs))
model = EIGNN(model_config)
optimizer = training.make_optimizer(training.TrainConfig(learning_rate=3e-3), steps_per_epoch=3)
budget = graph_lib.padding_budget(graphs)
batches = list(graph_lib.batches(graphs[:3], budget, 1))
out = {"device_count": jax.device_count()}

def run(step, state, place):
    losses = []
    for epoch in range(2):
        for batch in batches:
            state, loss = step(state, place(batch))
            losses.append(float(loss))
    return state, losses

# Host copies: the steps donate their input state.
initial = jax.tree_util.tree_map(np.asarray, training.init_state(model, optimizer, batches[0], 0))
one_step = training.make_train_step(model, optimizer)
one_state, one_losses = run(one_step, jax.device_put(initial, jax.devices()[0]), lambda b: b)

mesh = parallel.edge_mesh()
edge_step = training.make_train_step(model, optimizer, edge_mesh=mesh)
placed = parallel.place_edge_sharded(batches[0], mesh)
out["senders_shards"] = [list(s.data.shape) for s in placed.senders.addressable_shards]
out["positions_shards"] = [list(s.data.shape) for s in placed.nodes["positions"].addressable_shards]
edge_state, edge_losses = run(edge_step, parallel.replicate(initial, mesh), lambda b: parallel.place_edge_sharded(b, mesh))
out["losses"] = [one_losses, edge_losses]
out["compilations"] = [one_step.traces, edge_step.traces]
one, edge = (np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(s.params)])
             for s in (one_state, edge_state))
out["params_max_relative_difference"] = float(np.abs(one - edge).max() / np.abs(one).max())
out["params_moved"] = float(np.abs(one - np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(initial.params)])).max())

# The training loop with train.edge_parallel=true.
train_config = training.TrainConfig(epochs=2, lr_decay_epochs=(1,), edge_parallel=True)
training.train(model_config, train_config, graphs[:3], graphs[3:], workdir, {"source": "test"}, log=lambda _: None)
records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
out["loop_compilations"] = [r["train_step_compilations"] for r in records]
out["loop_losses"] = [r["train_loss"] for r in records]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("edge") / "run"
    done = subprocess.run([sys.executable, "-c", CHILD, str(DEFAULT_DATA), str(workdir)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_edges_are_split_and_nodes_replicated(child):
    assert child["device_count"] == 2
    halves = child["senders_shards"]
    assert len(halves) == 2 and halves[0] == halves[1] and halves[0][0] % 512 == 0
    assert child["positions_shards"][0] == child["positions_shards"][1]       # every node on both


def test_edge_parallel_steps_equal_one_device_steps(child):
    one, edge = child["losses"]
    np.testing.assert_allclose(edge, one, rtol=2e-5)
    assert len(set(one)) > 1                        # the steps did something
    assert child["params_moved"] > 1e-4
    assert child["params_max_relative_difference"] < 1e-4
    assert child["compilations"] == [1, 1]


def test_training_loop_with_edge_parallel_compiles_once(child):
    assert child["loop_compilations"] == [1, 1]
    assert all(np.isfinite(child["loop_losses"]))
