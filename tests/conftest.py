"""Shared fixtures: real dev configurations from the embedded default data, small models."""

import json
import os
import pathlib

# The command-line tools keep compiled programs in the user's cache; tests that call them in
# this process must not write there (tests of the cache choose their own directory).
os.environ.setdefault("EIGNN_JAX_COMPILATION_CACHE", "0")

import jax
import numpy as np
import pytest

from eignn_jax import dataset, graph as graph_lib
from eignn_jax.feature_scales import fit_feature_scales
from eignn_jax.model import EIGNN, ModelConfig

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[1] / "eignn_jax" / "default_data"
# One file of the dev set, made by another pipeline (tests/data/SOURCE.md).
DEV_SET_FILE = pathlib.Path(__file__).resolve().parent / "data" / "N1000T0.64_12.npz"


@pytest.fixture(scope="session")
def default_files():
    return dataset.list_configurations(DEFAULT_DATA)


@pytest.fixture(scope="session")
def configuration(default_files):
    """One real Kob–Andersen configuration, N = 1000, with its inherent structure."""
    return dataset.load_configuration(default_files[0])


@pytest.fixture(scope="session")
def real_graph(configuration):
    return graph_lib.build_graph(configuration, graph_lib.GraphConfig())


def small_model_config(graphs, **overrides) -> ModelConfig:
    """A 2-layer, width-16 EIGNN with input scales fitted on ``graphs``."""
    settings = dict(width=16, num_layers=2, num_outputs=graphs[0].nodes["targets"].shape[1],
                    scales=fit_feature_scales(graphs))
    settings.update(overrides)
    return ModelConfig(**settings)


class ModelRunner:
    """Initialises a model once and evaluates it on unpadded graphs (padding done here)."""

    def __init__(self, config: ModelConfig, example: "jraph.GraphsTuple", seed: int = 0):
        self.model = EIGNN(config)
        self.budget = graph_lib.padding_budget([example])
        self.params = self.model.init(jax.random.PRNGKey(seed), graph_lib.pad_graph(example, self.budget))
        self._apply = jax.jit(self.model.apply)

    def __call__(self, graph, budget=None) -> np.ndarray:
        """[N, T] predictions for the real nodes of ``graph``."""
        padded = graph_lib.pad_graph(graph, budget or self.budget)
        return np.asarray(self._apply(self.params, padded))[: int(graph.n_node.sum())]


# A one-epoch, one-layer training on two embedded files: a real run directory in seconds.
TINY_TRAINING = ["--set=model.width=8", "--set=model.num_layers=1", "--set=train.epochs=1",
                 "--set=train.lr_decay_epochs=[]", "--set=data.n_train=2", "--set=data.n_test=1"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The run directory of a tiny training (TINY_TRAINING) on the default data."""
    from experiments import train as train_main
    workdir = tmp_path_factory.mktemp("run")
    train_main.main(["--config", "default", "--workdir", str(workdir), "--no-eval"] + TINY_TRAINING)
    return workdir


class Interrupt(Exception):
    """Raised by :func:`interrupt_after_epoch` to stop a training as a kill would."""


def interrupt_after_epoch(epoch: int):
    """A ``log`` for ``training.train`` that raises :class:`Interrupt` once ``epoch``'s metrics line is logged."""
    def log(line: str) -> None:
        if line.startswith("{") and json.loads(line)["epoch"] == epoch:
            raise Interrupt
    return log
