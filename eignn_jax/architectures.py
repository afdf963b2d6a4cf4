"""The network a ``ModelConfig`` describes: one place that maps ``architecture`` to a module."""

from __future__ import annotations

import flax.linen as nn

from eignn_jax.model import EIGNN, ModelConfig
from eignn_jax.public_model import PublicEIGNN


def build(config: ModelConfig) -> nn.Module:
    """``EIGNN`` (architecture 'paper', paper §3.2) or ``PublicEIGNN`` ('public', the public
    implementation's layout for its published checkpoints). Both map a padded graph to
    [N, T] predictions."""
    return PublicEIGNN(config) if config.architecture == "public" else EIGNN(config)
