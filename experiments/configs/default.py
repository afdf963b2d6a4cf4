"""The embedded default: 12 configurations made by experiments.simulate; a minute on 2 CPU cores.

A smaller network (3 layers) and fewer epochs than the paper, so the whole train + evaluate
run is quick; the architecture and loss are the paper's.
"""

import pathlib

from eignn_jax.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig

import eignn_jax

DEFAULT_DATA = pathlib.Path(eignn_jax.__file__).parent / "default_data"


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="EIGNN",
        data=DataConfig(path=str(DEFAULT_DATA), n_train=8, n_test=4, split_seed=0),
        model=ModelConfig(width=32, num_layers=3),
        train=TrainConfig(epochs=20, lr_decay_epochs=(12, 16), learning_rate=2e-3),
    )
