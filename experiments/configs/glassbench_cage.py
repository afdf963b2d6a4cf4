"""GlassBench 3D KA, T=0.44, cage states: files 1–100 train / 401–500 test (paper protocol).

Only those files carry ``initial_positions_cage``; sorted naturally they are the first 100
of ``train/`` and all of ``test/``. Point ``data.path`` at the temperature folder.
"""

import dataclasses

from experiments.configs import glassbench_inh

from eignn_jax.config import DataConfig, GraphConfig


def get_config():
    config = glassbench_inh.get_config()
    return dataclasses.replace(
        config, name="EIGNN-Cage",
        data=dataclasses.replace(config.data, n_train=100, n_test=100),
        graph=GraphConfig(cutoff=2.0, equilibrium="cage"))
