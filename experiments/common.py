"""Argument handling shared by the entry points."""

import argparse
import importlib
import pkgutil

from eignn_jax import config as config_lib
from experiments import configs as configs_package


def available_configs() -> list[str]:
    """Names of the config modules in experiments/configs (each defines ``get_config()``)."""
    return sorted(m.name for m in pkgutil.iter_modules(configs_package.__path__)
                  if not m.name.startswith("_"))


def load_config(name: str, overrides: list[str]) -> config_lib.ExperimentConfig:
    """The config ``experiments/configs/<name>.py`` with ``--set`` overrides applied in order.

    Raises SystemExit with a one-line message for an unknown name, a module that is not a
    config, or an override with an unknown key, a wrong type or a value out of range.
    """
    # Only listed modules: an arbitrary name could import a package's __init__ or a path.
    available = available_configs()
    if name not in available:
        raise SystemExit(f"unknown config {name!r}: choose one of {available} (experiments/configs/<name>.py)")
    module = importlib.import_module(f"{configs_package.__name__}.{name}")
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise SystemExit(f"experiments/configs/{name}.py is not a config: it defines no get_config()")
    try:
        config = get_config()
    except ValueError as error:
        raise SystemExit(f"config {name!r}: {error}") from error
    if not isinstance(config, config_lib.ExperimentConfig):
        raise SystemExit(f"experiments/configs/{name}.py: get_config() returned a {type(config).__name__}, "
                         f"not an ExperimentConfig")
    for assignment in overrides:
        try:
            config = config_lib.override(config, assignment)
        except ValueError as error:
            raise SystemExit(f"--set {assignment}: {error}") from error
    try:
        config_lib.check(config)
    except ValueError as error:
        raise SystemExit(f"config {name!r}{' with its --set overrides' if overrides else ''}: {error}") from error
    return config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="default",
                        help="experiments/configs/<name>.py (default, ka_dev, glassbench_inh, glassbench_cage)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set model.width=64 (repeatable)")
