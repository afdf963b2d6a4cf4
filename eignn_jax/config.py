"""Experiment configuration: one frozen dataclass per stage, JSON round-trips, ``--set`` overrides."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any

from eignn_jax.feature_scales import FeatureScales
from eignn_jax.graph import GraphConfig
from eignn_jax.model import ModelConfig


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
    paths: several folders instead of ``path`` (all-temperature training, paper Fig. 6):
      each is split as ``path`` would be, with n_train / n_test files from each (seeded),
      and the training set is their union. Each folder may have its own time grid (the
      model's output k is the k-th time of each file's grid); all need the same number of
      time scales.
    """

    path: str = ""
    n_train: int = 0
    n_test: int = 0
    split_seed: int = 0
    n_validation: int = 0
    paths: tuple[str, ...] = ()

    @property
    def folders(self) -> tuple[str, ...]:
        """The data folders: ``paths``, or ``(path,)``."""
        return self.paths or (self.path,)

    def __post_init__(self):
        for name in ("n_train", "n_test", "n_validation", "split_seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (paper: Adam, lr 1e-3, 100 epochs, one graph per batch, step decay).

    lr_decay_epochs: epochs after which the learning rate is multiplied by lr_decay_factor.
    weight_decay: L2 penalty added to the gradient before Adam (as torch's Adam does).
    data_parallel: split each batch of batch_size graphs over all devices (of all processes
      after ``jax.distributed.initialize()``); batch_size must be divisible by the device
      count. Same losses as one device, up to float rounding (``eignn_jax.parallel``).
    edge_parallel: split each batch's edges over this process's devices (``eignn_jax.parallel``;
      on a CPU, ``experiments.train`` presents its cores as devices): the paper's one graph
      per step on several cores or GPUs. Same losses as one device, up to float rounding.
      Not together with data_parallel.
    tensorboard: also write each epoch's losses, learning rate and Pcc as TensorBoard events
      in ``<workdir>/tensorboard/`` (needs the optional extra: pip install 'eignn_jax[tensorboard]').
    """

    epochs: int = 100
    learning_rate: float = 1e-3
    lr_decay_epochs: tuple[int, ...] = (50, 70, 90)
    lr_decay_factor: float = 0.5
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    weight_decay: float = 0.0
    batch_size: int = 1
    seed: int = 0
    keep_checkpoints: int = 2
    data_parallel: bool = False
    edge_parallel: bool = False
    tensorboard: bool = False

    def __post_init__(self):
        """Raises ValueError naming the field for a value outside its range."""
        # Written as `not (x > bound)` so that NaN fails too.
        at_least_one = {"epochs": self.epochs, "batch_size": self.batch_size,
                        "keep_checkpoints": self.keep_checkpoints}
        for name, value in at_least_one.items():
            if not value >= 1:
                raise ValueError(f"{name} must be ≥ 1, got {value}")
        for name in ("learning_rate", "lr_decay_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("adam_b1", "adam_b2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {self.weight_decay}")
        # numpy's default_rng, which orders the epochs, refuses negative seeds.
        if self.seed < 0:
            raise ValueError(f"seed must be ≥ 0, got {self.seed}")
        if self.data_parallel and self.edge_parallel:
            raise ValueError("data_parallel and edge_parallel cannot both be true: choose one")
        bad = [e for e in self.lr_decay_epochs if not e >= 1]
        if bad:
            raise ValueError(f"lr_decay_epochs must be epochs ≥ 1 (the rate decays after them), "
                             f"got {list(self.lr_decay_epochs)}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str = "EIGNN"
    data: DataConfig = DataConfig()
    graph: GraphConfig = GraphConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


def check(config: ExperimentConfig) -> None:
    """Checks between fields, which each dataclass's own checks cannot make: overrides are
    applied one at a time, so a pair of them may pass through an inconsistent state.

    Raises ValueError naming the fields.
    """
    data = config.data
    if data.path and data.paths:
        raise ValueError(f"give data.path or data.paths, not both (data.path={data.path!r}, "
                         f"data.paths={list(data.paths)})")
    if len(set(data.paths)) != len(data.paths):
        raise ValueError(f"data.paths repeats a folder: {list(data.paths)}")
    # The validation files come out of the training files; at least one must be left.
    if data.n_train and data.n_validation >= data.n_train:
        raise ValueError(f"data.n_validation ({data.n_validation}) must be smaller than data.n_train "
                         f"({data.n_train}): validation files are held out of the training files")


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _describe(field_type) -> str:
    """Human-readable name of a field annotation, for error messages."""
    if dataclasses.is_dataclass(field_type):
        return f"a {field_type.__name__} (a JSON object of its fields)"
    if typing.get_origin(field_type) is tuple:
        args = typing.get_args(field_type)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}, e.g. [1, 2]"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if field_type is bool:
        return "true or false"
    if field_type is float:
        return "a finite number"
    return getattr(field_type, "__name__", str(field_type))


def _convert(field_type, value, key: str):
    """Builds a value of the annotated type from its JSON form, checking its type.

    field_type: the field's annotation: bool, int, float (an int is accepted and converted),
      str, tuple[X, ...] or tuple[X, Y, ...] (from a list), or a dataclass (from a dict).
    key: the field's dotted name (``train.epochs``), for the error message.
    Raises ValueError naming the key, the value and the expected type: a wrong value would
    otherwise only fail deep inside training, after the run directory was written.
    """
    def mismatch() -> ValueError:
        return ValueError(f"{key}: expected {_describe(field_type)}, got {value!r}")

    if dataclasses.is_dataclass(field_type):
        if isinstance(value, field_type):
            return value
        if not isinstance(value, dict):
            raise mismatch()
        return from_dict(field_type, value, key)
    if typing.get_origin(field_type) is tuple:
        if not isinstance(value, (list, tuple)):
            raise mismatch()
        args = typing.get_args(field_type)
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        elif len(args) == len(value):
            item_types = list(args)
        else:
            raise mismatch()
        return tuple(_convert(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(item_types, value)))
    # bool is a subclass of int: True must not pass as an int, nor 1 as a bool.
    if field_type is bool:
        if not isinstance(value, bool):
            raise mismatch()
        return value
    if field_type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise mismatch()
        return value
    if field_type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise mismatch()
        return float(value)
    if field_type is str:
        if not isinstance(value, str):
            raise mismatch()
        return value
    # No field has another annotation so far; such a value would pass through unchecked.
    return value


def from_dict(cls, values: dict, key: str = ""):
    """Inverse of :func:`to_dict`; unknown keys and values of the wrong type are errors naming them.

    key: dotted name of ``values`` inside an enclosing config, for error messages.
    Missing keys take the dataclass defaults (configs saved before a field existed still load).
    """
    prefix = f"{key}." if key else ""
    if not isinstance(values, dict):
        raise ValueError(f"{key or cls.__name__}: expected a {cls.__name__} (a JSON object), got {values!r}")
    hints = typing.get_type_hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {sorted(prefix + k for k in unknown)}")
    return cls(**{k: _convert(hints[k], v, prefix + k) for k, v in values.items()})


def override(config, assignment: str):
    """Applies one ``dotted.key=value`` (value parsed as JSON, else taken as a string).

    Example: ``override(cfg, "model.width=64")``, ``override(cfg, "train.lr_decay_epochs=[5,8]")``.
    A string field takes the text as written (``name=2024`` is the name "2024").
    Raises ValueError for an unknown key, a value of the wrong type (naming the key, the value
    and the expected type) or a value out of its field's range.
    """
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} is not of the form key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return _replace_path(config, key.split("."), value, raw, key)


def _replace_path(config, path: list[str], value: Any, raw: str, full_key: str):
    hints = typing.get_type_hints(type(config))
    if path[0] not in hints:
        raise ValueError(f"unknown config key {full_key!r} ({type(config).__name__} has {sorted(hints)})")
    current = getattr(config, path[0])
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"config key {full_key!r}: {path[0]} has no sub-fields")
        new = _replace_path(current, path[1:], value, raw, full_key)
    else:
        field_type = hints[path[0]]
        if field_type is str and not isinstance(value, str):
            value = raw
        new = _convert(field_type, value, full_key)
    return dataclasses.replace(config, **{path[0]: new})


__all__ = ["DataConfig", "ExperimentConfig", "FeatureScales", "GraphConfig", "ModelConfig",
           "TrainConfig", "check", "from_dict", "override", "to_dict"]
