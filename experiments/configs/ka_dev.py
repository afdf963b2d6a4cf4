"""The whole dev set (N=1000 Kob–Andersen, T=0.64): seeded 24 train / 8 test split, paper model.

4 of the 24 training files are held out to pick the epoch with the lowest validation loss
(with so few configurations the model starts to overfit well before the last epoch).

The data folder defaults to the shared dev set beside the repository; override it with
``--set data.path=/path/to/ka3d_T064_N1000``.
"""

import pathlib

from eignn_jax.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig

DEV_DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "ka3d_T064_N1000"


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="EIGNN",
        data=DataConfig(path=str(DEV_DATA), n_train=24, n_test=8, split_seed=0, n_validation=4),
        model=ModelConfig(width=32, num_layers=7, l_max=2),
        train=TrainConfig(epochs=50, lr_decay_epochs=(25, 35, 45)),
    )
