"""Bad inputs end in one clear error, not a traceback: config values and names, npz archives
holding more than arrays, the graph cache, incomplete checkpoints and concurrent training."""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import types
import warnings
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from eignn_jax import checkpointing, config as config_lib, dataset, graph as graph_lib, training
from eignn_jax.model import EIGNN, ModelConfig
from experiments import common, train as train_main
from tests.conftest import DEFAULT_DATA, small_model_config

# ----------------------------------------------------------------------------- config values


@pytest.mark.parametrize("assignment, expected", [
    ("train.epochs=abc", "expected int, got 'abc'"),
    ("model.width=3.5", "expected int, got 3.5"),
    ("model.width=true", "expected int, got True"),
    ("train.lr_decay_epochs=5", "expected a list of int"),
    ('train.lr_decay_epochs=[5, "x"]', r"train.lr_decay_epochs\[1\]: expected int, got 'x'"),
    ("train.data_parallel=1", "expected true or false, got 1"),
    ("train.learning_rate=fast", "expected a finite number, got 'fast'"),
    ("model.r_max=NaN", "expected a finite number, got nan"),
    ("graph.energy_shifted=yes", "expected true or false"),
    ("train=5", "expected a TrainConfig"),
    ('model.scales={"energy_std": "x"}', "model.scales.energy_std: expected a finite number"),
])
def test_overrides_of_the_wrong_type_name_the_key_the_value_and_the_type(assignment, expected):
    key = assignment.split("=")[0]
    with pytest.raises(SystemExit, match=expected) as info:
        common.load_config("default", [assignment])
    assert key in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("assignment, field", [
    ("train.epochs=0", "epochs"), ("train.batch_size=0", "batch_size"),
    ("train.learning_rate=0", "learning_rate"), ("train.learning_rate=-1e-3", "learning_rate"),
    ("train.lr_decay_epochs=[0, 5]", "lr_decay_epochs"), ("train.lr_decay_factor=0", "lr_decay_factor"),
    ("train.adam_b2=1", "adam_b2"), ("train.weight_decay=-1", "weight_decay"), ("train.seed=-1", "seed"),
    ("train.keep_checkpoints=0", "keep_checkpoints"), ("graph.cutoff=0", "cutoff"),
    ("graph.cutoff=-2", "cutoff"), ("data.n_train=-1", "n_train"), ("data.n_validation=-1", "n_validation"),
])
def test_overrides_out_of_range_are_refused(assignment, field):
    with pytest.raises(SystemExit, match=re.escape(f"--set {assignment}: {field} must be")):
        common.load_config("default", [assignment])


def test_accepted_overrides_get_the_field_type():
    config = common.load_config("default", ["train.learning_rate=1", "name=2024", "data.path=123",
                                            "train.lr_decay_epochs=[3]", "graph.energy_shifted=false"])
    assert config.train.learning_rate == 1.0 and type(config.train.learning_rate) is float
    assert config.name == "2024" and config.data.path == "123"
    assert config.train.lr_decay_epochs == (3,) and config.graph.energy_shifted is False


def test_fields_are_checked_together_after_all_overrides():
    # ka_dev holds out 4 validation files; lowering n_train first passes through n_train < 4.
    config = common.load_config("ka_dev", ["data.n_train=3", "data.n_validation=1"])
    assert (config.data.n_train, config.data.n_validation) == (3, 1)
    with pytest.raises(SystemExit, match="data.n_validation .8. must be smaller than data.n_train .8."):
        common.load_config("default", ["data.n_validation=8"])


def test_saved_configs_are_type_checked_on_loading():
    values = config_lib.to_dict(common.load_config("default", []))
    values["train"]["epochs"] = "20"
    with pytest.raises(ValueError, match="train.epochs: expected int, got '20'"):
        config_lib.from_dict(config_lib.ExperimentConfig, values)
    values["train"]["epochs"] = 20
    values["model"]["scales"] = [1.0]
    with pytest.raises(ValueError, match="model.scales: expected a FeatureScales"):
        config_lib.from_dict(config_lib.ExperimentConfig, values)


def test_a_bad_value_stops_training_before_the_workdir_is_written(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit, match="train.epochs"):
        train_main.main(["--config", "default", "--workdir", str(workdir), "--set", "train.epochs=abc"])
    assert not workdir.exists()


@pytest.mark.parametrize("name", ["__init__", "default.py", "", "configs.default", "common"])
def test_config_names_that_are_not_config_modules_are_refused(name):
    with pytest.raises(SystemExit, match="unknown config .*choose one of .*'default'"):
        common.load_config(name, [])


@pytest.mark.parametrize("name", ["../default", "configs/default.json", "missing.json"])
def test_config_paths_that_are_not_files_are_named(name):
    """A path-like --config is read as a run's config.json, never imported as a module."""
    with pytest.raises(SystemExit, match=rf"--config {re.escape(name)}: no such file.*'default'"):
        common.load_config(name, [])


def test_a_config_module_without_get_config_is_refused(monkeypatch):
    monkeypatch.setattr(common, "available_configs", lambda: ["helpers"])
    monkeypatch.setitem(sys.modules, "experiments.configs.helpers", types.ModuleType("experiments.configs.helpers"))
    with pytest.raises(SystemExit, match="helpers.py is not a config: it defines no get_config"):
        common.load_config("helpers", [])


# ----------------------------------------------------------------------------- npz archives


def _copy_with_members(tmp_path, replace: dict[str, bytes]) -> pathlib.Path:
    """A copy of an embedded configuration whose zip members named in ``replace`` (added if
    absent) hold the given bytes."""
    source = DEFAULT_DATA / "N1000T0.64_1.npz"
    path = tmp_path / "edited_1.npz"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as edited:
        for name in original.namelist():
            if name not in replace:
                edited.writestr(name, original.read(name))
        for name, data in replace.items():
            edited.writestr(name, data)
    return path


@pytest.mark.parametrize("member, field", [("README.txt", "README.txt"), ("types.npy", "types")],
                         ids=["extra text member", "npy name without npy header"])
def test_npz_member_that_is_not_an_array_names_the_file_and_member(tmp_path, member, field):
    path = _copy_with_members(tmp_path, {member: b"made with our simulation code\n"})
    with pytest.raises(dataset.DataError) as info:
        dataset.load_configuration(path)
    assert info.value.field == field
    assert str(path) in str(info.value) and "not a .npy array" in str(info.value)


def test_npz_with_two_members_of_one_name_is_refused(tmp_path):
    path = _copy_with_members(tmp_path, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zipfile warns about the duplicate name
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("md_prop", b"")
    with pytest.raises(dataset.DataError, match=f"{path.name}: field 'md_prop': .*more than one member"):
        dataset.load_configuration(path)


# ----------------------------------------------------------------------------- graph cache


def test_graph_cache_tells_apart_files_of_equal_size_and_mtime(default_files, tmp_path):
    first, second = default_files[:2]
    assert first.stat().st_size == second.stat().st_size
    path, cache, config = tmp_path / "data" / "x_1.npz", tmp_path / "cache", graph_lib.GraphConfig()
    path.parent.mkdir()
    stamp = 1_700_000_000_000_000_000
    graphs = []
    for source in (first, second):
        shutil.copyfile(source, path)
        os.utime(path, ns=(stamp, stamp))
        [graph] = graph_lib.load_graphs([path], config, cache)
        graphs.append(graph)
    positions = [g.nodes["positions"] for g in graphs]
    assert not np.array_equal(*positions)
    np.testing.assert_array_equal(positions[1], dataset.load_configuration(second).positions.astype(np.float32))
    # A copy with another name and mtime is the same content: the entry is reused.
    copy = tmp_path / "copy_7.npz"
    shutil.copyfile(second, copy)
    [again] = graph_lib.load_graphs([copy], config, cache)
    assert len(list(cache.glob("*.npz"))) == 2
    np.testing.assert_array_equal(again.nodes["energy"], graphs[1].nodes["energy"])


# ----------------------------------------------------------------------------- checkpoints


def _saved_steps(directory, n_steps=3):
    manager = checkpointing.CheckpointManager(directory, max_to_keep=n_steps)
    for step in range(n_steps):
        manager.save(step, {"w": jnp.full(3, float(step))}, {"epoch": step})
    manager.close()


def test_read_only_manager_creates_nothing_and_names_a_missing_directory(tmp_path):
    missing = tmp_path / "typo" / "checkpoints"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        checkpointing.CheckpointManager(missing, create=False)
    assert not (tmp_path / "typo").exists()
    _saved_steps(tmp_path / "checkpoints", 1)
    manager = checkpointing.CheckpointManager(tmp_path / "checkpoints", create=False)
    assert manager.restore_metadata() == {"epoch": 0}
    with pytest.raises(ValueError, match="read-only"):
        manager.save(1, {"w": jnp.zeros(3)}, {"epoch": 1})


@pytest.mark.parametrize("removed", ["state", "metadata/metadata"])
def test_an_incomplete_newest_step_falls_back_to_the_newest_complete_one(tmp_path, removed):
    directory = tmp_path / "checkpoints"
    _saved_steps(directory)
    target = directory / "2" / removed
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    template = {"w": jnp.zeros(3)}

    before = sorted(p.name for p in directory.iterdir())
    with pytest.warns(checkpointing.IncompleteCheckpointWarning, match=f"{directory / '2'}: incomplete .*{removed}"):
        reader = checkpointing.CheckpointManager(directory, create=False)
    assert reader.latest_step() == 1 and reader.restore_metadata() == {"epoch": 1}
    state, metadata = reader.restore_latest(template)
    np.testing.assert_array_equal(state["w"], 1.0)
    assert metadata == {"epoch": 1}
    with pytest.raises(ValueError, match="incomplete"):
        reader.restore_metadata(2)
    assert sorted(p.name for p in directory.iterdir()) == before   # read-only: nothing moved

    messages = []
    writer = checkpointing.CheckpointManager(directory, 3, log=messages.append)
    assert len(messages) == 1 and "the latest complete step is 1" in messages[0]
    assert (directory / f"2{checkpointing.INCOMPLETE_SUFFIX}").is_dir()
    # Step 2 can be saved again (orbax skips steps not newer than the newest on disk).
    writer.save(2, {"w": jnp.full(3, 7.0)}, {"epoch": 2})
    state, metadata = writer.restore_latest(template)
    np.testing.assert_array_equal(state["w"], 7.0)
    assert metadata == {"epoch": 2} and writer.restore_metadata(2) == {"epoch": 2}
    writer.close()
    # A second incomplete step 2 is set aside beside the first.
    shutil.rmtree(directory / "2" / "state")
    messages = []
    checkpointing.CheckpointManager(directory, 3, log=messages.append).close()
    assert f"renamed to 2{checkpointing.INCOMPLETE_SUFFIX}-2" in messages[0]


@pytest.mark.slow
def test_training_resumes_from_the_newest_complete_checkpoint(default_files, tmp_path):
    graphs = graph_lib.load_graphs(default_files[:1], graph_lib.GraphConfig())
    model_config = small_model_config(graphs, width=8, num_layers=1)
    train_config = training.TrainConfig(epochs=2, lr_decay_epochs=())
    # Checkpoints of epochs 1 and 2 as train() writes them, epoch 2's without its state.
    optimizer = training.make_optimizer(train_config, steps_per_epoch=1)
    example = graph_lib.pad_graph(graphs[0], graph_lib.padding_budget(graphs))
    initial = training.init_state(EIGNN(model_config), optimizer, example, train_config.seed)
    workdir = tmp_path / "run"
    manager = checkpointing.CheckpointManager(workdir / "checkpoints")
    for epoch in (0, 1):
        manager.save(epoch, initial, {"epoch": epoch})
    manager.close()
    shutil.rmtree(workdir / "checkpoints" / "1" / "state")

    messages = []
    # No test graphs: nothing to compile but the train step.
    state = training.train(model_config, train_config, graphs, [], workdir, {}, log=messages.append)
    assert "1: incomplete checkpoint (no state/ folder)" in messages[0]
    assert "resuming after epoch 1" in messages[1]
    assert int(state.step) == 1   # epoch 2 trained on top of epoch 1's state
    assert checkpointing.CheckpointManager(workdir / "checkpoints", create=False).latest_step() == 1


_HOLD_LOCK = """
import fcntl, os, sys
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.write(f"{os.getpid()}\\n"); handle.flush()
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_a_second_training_process_in_one_workdir_is_refused(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(workdir / ".lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refusal = f"another process \\(pid {holder.pid}\\) is training in {workdir}"
        with pytest.raises(ValueError, match=refusal):
            with checkpointing.workdir_lock(workdir):
                pass
        # Refused before any work: the arguments are not even looked at.
        with pytest.raises(ValueError, match=refusal):
            training.train(ModelConfig(), training.TrainConfig(), [], [], workdir, {})
    finally:
        holder.communicate("")
    # The holder has exited: the lock is free, and re-entrant within this process.
    with checkpointing.workdir_lock(workdir) as path:
        with checkpointing.workdir_lock(workdir):
            assert path.read_text().strip() == str(os.getpid())


@pytest.mark.slow
def test_metrics_lines_match_the_checkpoints_after_a_kill(tmp_path):
    """A kill right after a checkpoint is written loses no metrics line; lines of epochs
    after the checkpoint (redone on resuming) are not kept twice."""
    import json
    tiny = ["model.width=8", "model.num_layers=1", "train.epochs=2", "train.lr_decay_epochs=[]",
            "data.n_train=2", "data.n_test=1"]
    args = ["--config", "default", "--workdir", str(tmp_path), "--no-eval"] + [f"--set={s}" for s in tiny]
    train_main.main(args)
    path = tmp_path / "metrics.jsonl"
    lines = path.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    path.write_text(lines[0] + "\n")                         # killed after the last checkpoint
    train_main.main(args)
    assert path.read_text().splitlines() == lines
    path.write_text("\n".join(lines + [json.dumps({"epoch": 3})]) + "\n")   # an epoch never checkpointed
    train_main.main(args)
    assert path.read_text().splitlines() == lines
