"""Data-parallel training on two CPU devices equals one-device training.

The device count of the CPU platform is fixed when jax starts, so the checks run in child
processes: one process with two simulated devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``), and two processes of one device
each joined by ``jax.distributed`` (the multi-host code path, on one machine).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import DEFAULT_DATA

# Minutes on 2 cores: the full suite only (pytest -m "not slow" leaves them out).
pytestmark = pytest.mark.slow

# Shared by the children: 6 real graphs (5 train, 1 test), a tiny model, batches of 4.
SETUP = r"""
import json, pathlib, sys
import jax, numpy as np
from eignn_jax import dataset, graph as graph_lib, parallel, training
from eignn_jax.feature_scales import fit_feature_scales
from eignn_jax.model import EIGNN, ModelConfig

data, workdir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out = {"device_count": jax.device_count()}
graphs = graph_lib.load_graphs(dataset.list_configurations(data)[:6], graph_lib.GraphConfig())
train_graphs, test_graphs = graphs[:5], graphs[5:]
model_config = ModelConfig(width=8, num_layers=1, num_outputs=graphs[0].nodes["targets"].shape[1],
                           scales=fit_feature_scales(train_graphs))
train_config = training.TrainConfig(epochs=2, batch_size=4, learning_rate=3e-3, lr_decay_epochs=(1,),
                                    data_parallel=True)
"""

# One process, two simulated devices; prints one JSON line of measurements, checked below.
CHILD = SETUP + r"""
model = EIGNN(model_config)
optimizer = training.make_optimizer(train_config, steps_per_epoch=2)
# The loop's batches: 5 graphs in batches of 4, so every other batch has 1 graph (and a
# second shard of padding only).
rng = np.random.default_rng(train_config.seed)
orders = [rng.permutation(5) for _ in range(2)]

# One device: whole global batches merged into one padded graph.
budget = graph_lib.padding_budget(graphs, 4)
one_step = training.make_train_step(model, optimizer)
state = training.init_state(model, optimizer, next(graph_lib.batches(graphs, budget, 4)), 0)
init_params = jax.tree_util.tree_map(np.asarray, state.params)
one_losses = []
for order in orders:
    for batch in graph_lib.batches(train_graphs, budget, 4, order):
        state, loss = one_step(state, batch)
        one_losses.append(float(loss))
one_params = jax.tree_util.tree_map(np.asarray, state.params)
np.savez(workdir.parent / "one_device_params.npz", *jax.tree_util.tree_leaves(one_params))

# Two devices: the same global batches, 2 graphs per device.
mesh = parallel.data_mesh()
shard_budget = graph_lib.padding_budget(graphs, 2)
sharded_step = training.make_train_step(model, optimizer, mesh=mesh)
state = parallel.replicate(training.init_state(model, optimizer, next(graph_lib.batches(graphs, shard_budget, 2)), 0), mesh)
out["same_init"] = all(np.array_equal(a, b) for a, b in zip(
    jax.tree_util.tree_leaves(init_params), jax.tree_util.tree_leaves(state.params)))
sharded_losses, placements = [], []
for order in orders:
    for batch in parallel.sharded_batches(train_graphs, shard_budget, 4, mesh, order):
        shards = batch.n_node.addressable_shards
        placements.append({"sharded_on_data": all(x.sharding.spec == jax.sharding.PartitionSpec("data")
                                                   for x in jax.tree_util.tree_leaves(batch)),
                           "devices": sorted(s.device.id for s in shards),
                           "shard_shapes": [list(s.data.shape) for s in shards],
                           "graphs_per_shard": [int((np.asarray(s.data)[0] > 0).sum()) - 1 for s in shards]})
        state, loss = sharded_step(state, batch)
        sharded_losses.append(float(loss))
out["compilations"] = [one_step.traces, sharded_step.traces]
out["params_replicated_on"] = sorted({d.id for x in jax.tree_util.tree_leaves(state.params)
                                      for d in x.sharding.device_set})
sharded_params = jax.tree_util.tree_map(np.asarray, state.params)

# The training loop with train.data_parallel=true, then a resume of the finished run
# (restores the replicated state from the checkpoint; no step left to run).
looped = training.train(model_config, train_config, train_graphs, test_graphs, workdir, {"name": "dp"},
                        log=lambda _: None)
records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
messages = []
resumed = training.train(model_config, train_config, train_graphs, test_graphs, workdir, {"name": "dp"},
                         log=messages.append)
out["resume_message"] = messages[-1] if messages else ""
out["loop_compilations"] = [r["train_step_compilations"] for r in records]
out["loop_train_loss"] = [r["train_loss"] for r in records]

def max_diff(a, b, relative=False):
    worst = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        d = float(np.abs(x - y).max()) if x.size else 0.0
        if relative:   # relative to the leaf's scale (elementwise, Adam amplifies rounding near zero)
            d = d / max(float(np.abs(y).max()), 1e-6) if y.size else 0.0
        worst = max(worst, d)
    return worst

out.update(one_losses=one_losses, sharded_losses=sharded_losses, placements=placements,
           params_abs=max_diff(sharded_params, one_params),
           params_rel=max_diff(sharded_params, one_params, True),
           params_moved=max_diff(one_params, init_params),
           loop_params_abs=max_diff(looped.params, one_params),
           resumed_params_abs=max_diff(resumed.params, looped.params),
           resumed_replicated_on=sorted({d.id for x in jax.tree_util.tree_leaves(resumed.params)
                                         for d in x.sharding.device_set}))
try:
    training.train(model_config, training.TrainConfig(batch_size=3, data_parallel=True), train_graphs,
                   test_graphs, workdir / "odd", {}, log=lambda _: None)
    out["odd_batch_error"] = ""
except ValueError as error:
    out["odd_batch_error"] = str(error)
print("RESULT " + json.dumps(out))
"""

# One of two processes (one CPU device each) joined by jax.distributed, training with the loop.
PROCESS_CHILD = r"""
import sys
import jax

jax.distributed.initialize(coordinator_address=sys.argv[3], num_processes=2, process_id=int(sys.argv[4]))
""" + SETUP + r"""
messages = []
state = training.train(model_config, train_config, train_graphs, test_graphs, workdir, {"name": "dp"},
                       log=messages.append)
if jax.process_index() == 0:
    leaves = [np.asarray(x.addressable_shards[0].data) for x in jax.tree_util.tree_leaves(state.params)]
    np.savez(workdir.parent / "two_process_params.npz", *leaves)
out.update(process_index=jax.process_index(), process_count=jax.process_count(),
           local_devices=jax.local_device_count(), messages=messages)
print("RESULT " + json.dumps(out))
"""


def _result(stdout: str) -> dict:
    [line] = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def two_device_run(tmp_path_factory):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    workdir = tmp_path_factory.mktemp("dp") / "run"
    done = subprocess.run([sys.executable, "-c", CHILD, str(DEFAULT_DATA), str(workdir)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return {**_result(done.stdout), "folder": workdir.parent}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    workdir = tmp_path_factory.mktemp("dp_processes") / "run"
    with socket.socket() as s:
        s.bind(("localhost", 0))
        address = f"localhost:{s.getsockname()[1]}"
    children = [subprocess.Popen([sys.executable, "-c", PROCESS_CHILD, str(DEFAULT_DATA), str(workdir), address,
                                  str(k)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for k in range(2)]
    outputs = []
    try:
        for child in children:
            outputs.append(child.communicate(timeout=900))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    for child, (_, stderr) in zip(children, outputs):
        assert child.returncode == 0, stderr[-4000:]
    return {"results": [_result(stdout) for stdout, _ in outputs], "workdir": workdir}


def test_two_simulated_devices(two_device_run):
    assert two_device_run["device_count"] == 2


def test_batches_are_split_over_both_devices(two_device_run):
    placements = two_device_run["placements"]
    assert len(placements) == 4
    for placed in placements:
        assert placed["sharded_on_data"]
        assert placed["devices"] == [0, 1]
        assert all(shape[0] == 1 for shape in placed["shard_shapes"])
    # Full batches: 2 graphs per device; the last batch of an epoch: 1 graph, then padding only.
    assert [p["graphs_per_shard"] for p in placements] == [[2, 2], [1, 0], [2, 2], [1, 0]]
    assert two_device_run["params_replicated_on"] == [0, 1]


def test_same_losses_and_params_as_one_device(two_device_run):
    run = two_device_run
    assert run["same_init"]
    np.testing.assert_allclose(run["sharded_losses"], run["one_losses"], rtol=1e-5)
    assert run["params_moved"] > 1e-3      # the comparison below is not between untrained params
    # Relative to each leaf's scale: zero-initialised biases have moved only ~1e-2 here.
    assert run["params_abs"] < 1e-5 and run["params_rel"] < 1e-3, (run["params_abs"], run["params_rel"])
    assert run["compilations"] == [1, 1]


def test_training_loop_with_data_parallel(two_device_run):
    run = two_device_run
    assert run["loop_compilations"] == [1, 1]
    one = run["one_losses"]
    np.testing.assert_allclose(run["loop_train_loss"], [np.mean(one[:2]), np.mean(one[2:])], atol=2e-5)
    assert run["loop_params_abs"] < 1e-5
    assert run["resume_message"].startswith("resuming after epoch 2")
    assert run["resumed_params_abs"] == 0.0 and run["resumed_replicated_on"] == [0, 1]
    assert "divisible by the number of devices" in run["odd_batch_error"]


def test_two_processes_with_jax_distributed_train_like_one_device(two_device_run, two_process_run):
    first, second = two_process_run["results"]
    assert (first["process_index"], second["process_index"]) == (0, 1)
    assert first["process_count"] == 2 and first["local_devices"] == 1 and first["device_count"] == 2
    assert any("over 2 devices (2 process(es))" in m for m in first["messages"])
    assert second["messages"] == []                       # only process 0 logs
    records = [json.loads(line) for line in (two_process_run["workdir"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]        # written once, by process 0
    assert [r["train_step_compilations"] for r in records] == [1, 1]
    one = two_device_run["one_losses"]
    np.testing.assert_allclose([r["train_loss"] for r in records], [np.mean(one[:2]), np.mean(one[2:])], atol=2e-5)
    with np.load(two_device_run["folder"] / "one_device_params.npz") as reference, \
            np.load(two_process_run["workdir"].parent / "two_process_params.npz") as trained:
        assert len(reference.files) == len(trained.files)
        for key in reference.files:
            np.testing.assert_allclose(trained[key], reference[key], atol=1e-5)
