"""Argument handling shared by the entry points."""

import argparse
import importlib

from eignn_jax import config as config_lib


def load_config(name: str, overrides: list[str]) -> config_lib.ExperimentConfig:
    try:
        module = importlib.import_module(f"experiments.configs.{name}")
    except ModuleNotFoundError as error:
        raise SystemExit(f"unknown config {name!r}: no experiments/configs/{name}.py") from error
    config = module.get_config()
    for assignment in overrides:
        try:
            config = config_lib.override(config, assignment)
        except ValueError as error:
            raise SystemExit(f"--set {assignment}: {error}") from error
    return config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="default",
                        help="experiments/configs/<name>.py (default, ka_dev, glassbench_inh, glassbench_cage)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set model.width=64 (repeatable)")
