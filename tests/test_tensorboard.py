"""train.tensorboard=true: the event files hold each epoch's metrics.jsonl values, once."""

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from eignn_jax import graph as graph_lib, training
from eignn_jax.config import TrainConfig
from experiments import train as train_main
from tests.conftest import TINY_TRAINING, Interrupt, interrupt_after_epoch, small_model_config

TIMES = [0.13, 0.4, 1.3, 4.0, 8.0, 13.0, 25.0, 40.0]   # the embedded data's time scales


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), …]} as TensorBoard itself reads the event files of ``logdir``."""
    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def records(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_tags_name_the_time_scales_and_leave_out_what_a_record_lacks():
    record = {"epoch": 3, "train_loss": 0.5, "test_loss": 0.6, "learning_rate": 1e-3, "test_pcc_all": [0.1, 0.2],
              "train_seconds": 4.0}
    assert training.tensorboard_scalars(record, [0.13, 40.0]) == {
        "loss/train": 0.5, "loss/test": 0.6, "learning_rate": 1e-3,
        "pcc_all_test/t_0.13": 0.1, "pcc_all_test/t_40": 0.2}
    assert set(training.tensorboard_scalars(record)) >= {"pcc_all_test/index_0", "pcc_all_test/index_1"}


@pytest.mark.slow
def test_a_tiny_training_logs_every_metric_of_every_epoch(tmp_path):
    workdir = tmp_path / "run"
    overrides = [s for s in TINY_TRAINING if "epochs" not in s] + [
        "--set=train.epochs=2", "--set=train.lr_decay_epochs=[1]", "--set=data.n_train=3",
        "--set=data.n_validation=1", "--set=train.tensorboard=true"]
    train_main.main(["--config", "default", "--workdir", str(workdir), "--no-eval"] + overrides)
    assert json.loads((workdir / "config.json").read_text())["train"]["tensorboard"] is True
    logged, lines = scalars(workdir / training.TENSORBOARD_DIR), records(workdir)
    per_time = [f"pcc_all_{split}/t_{t:g}" for split in ("test", "validation") for t in TIMES]
    assert set(logged) == {"loss/train", "loss/test", "loss/validation", "learning_rate", *per_time}
    expected = {"loss/train": [r["train_loss"] for r in lines], "loss/test": [r["test_loss"] for r in lines],
                "loss/validation": [r["validation_loss"] for r in lines],
                "learning_rate": [r["learning_rate"] for r in lines]}
    for split in ("test", "validation"):
        for k, t in enumerate(TIMES):
            expected[f"pcc_all_{split}/t_{t:g}"] = [r[f"{split}_pcc_all"][k] for r in lines]
    for tag, values in expected.items():
        assert [step for step, _ in logged[tag]] == [1, 2], tag
        assert [value for _, value in logged[tag]] == pytest.approx(values, rel=1e-6, abs=1e-7), tag
    # The rate each epoch's steps used: the default config's 2e-3, halved after epoch 1.
    assert [r["learning_rate"] for r in lines] == [2e-3, 1e-3]

    # Turning the events off does not make the finished run "another config".
    train_main.main(["--config", "default", "--workdir", str(workdir), "--no-eval"] + overrides[:-1])


@pytest.mark.slow
def test_a_resumed_training_logs_each_epoch_once(default_files, tmp_path):
    graphs = graph_lib.load_graphs(default_files[:3], graph_lib.GraphConfig())
    model_config = small_model_config(graphs, width=8, num_layers=1)
    config = TrainConfig(epochs=3, lr_decay_epochs=(), tensorboard=True)

    with pytest.raises(Interrupt):
        training.train(model_config, config, graphs[:2], graphs[2:], tmp_path, {"times": TIMES},
                       log=interrupt_after_epoch(2))
    training.train(model_config, config, graphs[:2], graphs[2:], tmp_path, {"times": TIMES}, log=lambda _: None)
    logged, lines = scalars(tmp_path / training.TENSORBOARD_DIR), records(tmp_path)
    # Epoch 2, logged before the interruption and again on resuming, is read once.
    assert [step for step, _ in logged["loss/train"]] == [1, 2, 3]
    assert [value for _, value in logged["loss/train"]] == pytest.approx([r["train_loss"] for r in lines])

    # Resumed once more with nothing left to do: still each epoch once.
    training.train(model_config, config, graphs[:2], graphs[2:], tmp_path, {"times": TIMES}, log=lambda _: None)
    assert [step for step, _ in scalars(tmp_path / training.TENSORBOARD_DIR)["loss/test"]] == [1, 2, 3]


@pytest.mark.slow
def test_without_tensorboardX_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)     # import fails as if not installed
    with pytest.raises(SystemExit, match=r"pip install 'eignn_jax\[tensorboard\]'"):
        train_main.main(["--config", "default", "--workdir", str(tmp_path), "--no-eval",
                         "--set=train.tensorboard=true"] + TINY_TRAINING)
    assert not (tmp_path / "metrics.jsonl").exists()
