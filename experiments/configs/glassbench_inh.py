"""GlassBench 3D KA, T=0.44, inherent structures: 400 train / 100 test files (paper protocol).

Point ``data.path`` at the temperature folder holding ``train/`` and ``test/``:
``--set data.path=/data/GlassBench/KA_models/T0.44``.
"""

from eignn_jax.config import DataConfig, ExperimentConfig, GraphConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="EIGNN-Inh",
        data=DataConfig(path="KA_models/T0.44", n_train=400, n_test=100),
        graph=GraphConfig(cutoff=2.0, equilibrium="inherent"),
        model=ModelConfig(width=32, num_layers=7, l_max=2),
        train=TrainConfig(epochs=100, lr_decay_epochs=(50, 70, 90)),
    )
