"""Experiment configuration: one frozen dataclass per stage, JSON round-trips, ``--set`` overrides."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from eignn_jax.graph import FeatureScales, GraphConfig
from eignn_jax.model import ModelConfig
from eignn_jax.training import TrainConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the configurations come from and how they are split.

    path: a folder of GlassBench-layout ``.npz`` files, or a GlassBench temperature folder
      holding ``train/`` and ``test/`` (then those folders are the split).
    n_train, n_test: sizes of a seeded random split of one folder (0 = all remaining files
      for n_test); with ``train/``/``test/`` folders, the first n_train / n_test of each
      (0 = all).
    split_seed: seed of the random split.
    n_validation: training files held out (seeded) to pick the best epoch by validation
      loss; 0 keeps all for training and evaluates the last epoch.
    """

    path: str = ""
    n_train: int = 0
    n_test: int = 0
    split_seed: int = 0
    n_validation: int = 0


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str = "EIGNN"
    data: DataConfig = DataConfig()
    graph: GraphConfig = GraphConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _convert(field_type, value):
    """Builds a value of the annotated type from its JSON form (nested dataclasses, tuples)."""
    if dataclasses.is_dataclass(field_type) and isinstance(value, dict):
        return from_dict(field_type, value)
    origin = typing.get_origin(field_type)
    if origin is tuple and isinstance(value, (list, tuple)):
        item_type = typing.get_args(field_type)[0]
        return tuple(_convert(item_type, v) for v in value)
    if field_type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def from_dict(cls, values: dict):
    """Inverse of :func:`to_dict`; unknown keys are an error naming them."""
    hints = typing.get_type_hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
    return cls(**{k: _convert(hints[k], v) for k, v in values.items()})


def override(config, assignment: str):
    """Applies one ``dotted.key=value`` (value parsed as JSON, else taken as a string).

    Example: ``override(cfg, "model.width=64")``, ``override(cfg, "train.lr_decay_epochs=[5,8]")``.
    """
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} is not of the form key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return _replace_path(config, key.split("."), value, key)


def _replace_path(config, path: list[str], value: Any, full_key: str):
    hints = typing.get_type_hints(type(config))
    if path[0] not in hints:
        raise ValueError(f"unknown config key {full_key!r} ({type(config).__name__} has {sorted(hints)})")
    current = getattr(config, path[0])
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"config key {full_key!r}: {path[0]} has no sub-fields")
        new = _replace_path(current, path[1:], value, full_key)
    else:
        new = _convert(hints[path[0]], value)
    return dataclasses.replace(config, **{path[0]: new})


__all__ = ["DataConfig", "ExperimentConfig", "FeatureScales", "GraphConfig", "ModelConfig",
           "TrainConfig", "from_dict", "override", "to_dict"]
