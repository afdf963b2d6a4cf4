"""Argument handling shared by the entry points."""

import argparse
import importlib
import json
import pathlib
import pkgutil
from typing import Callable

from eignn_jax import allocator, compilation, config as config_lib, formats
from experiments import configs as configs_package


def available_configs() -> list[str]:
    """Names of the config modules in experiments/configs (each defines ``get_config()``)."""
    return sorted(m.name for m in pkgutil.iter_modules(configs_package.__path__)
                  if not m.name.startswith("_"))


def is_config_file(config: str) -> bool:
    """Whether --config names a JSON file (``.json``, or any path with a folder) rather than a
    config module of experiments/configs."""
    path = pathlib.Path(config)
    return path.suffix == ".json" or len(path.parts) > 1


def _config_module(name: str) -> config_lib.ExperimentConfig:
    """The config of ``experiments/configs/<name>.py``; SystemExit with one line if there is none."""
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
    return config


def _config_file(path: str) -> config_lib.ExperimentConfig:
    """The config saved in a JSON file (a run's config.json); SystemExit naming the file if unreadable."""
    if not pathlib.Path(path).is_file():
        raise SystemExit(f"--config {path}: no such file; give a run's config.json or one of the "
                         f"config names {available_configs()}")
    try:
        return config_lib.from_dict(config_lib.ExperimentConfig, json.loads(pathlib.Path(path).read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
        raise SystemExit(f"--config {path}: {error}") from error


def load_config(name: str, overrides: list[str]) -> config_lib.ExperimentConfig:
    """The config ``experiments/configs/<name>.py``, or the one saved in a JSON file (a run's
    ``config.json``, which repeats that run), with ``--set`` overrides applied in order.

    Raises SystemExit with a one-line message for an unknown name, a module that is not a
    config, a file that cannot be read or is not a config, or an override with an unknown
    key, a wrong type or a value out of range.
    """
    from_file = is_config_file(name)
    config = _config_file(name) if from_file else _config_module(name)
    for assignment in overrides:
        try:
            config = config_lib.override(config, assignment)
        except ValueError as error:
            raise SystemExit(f"--set {assignment}: {error}") from error
    try:
        config_lib.check(config)
    except ValueError as error:
        what = f"--config {name}" if from_file else f"config {name!r}"
        raise SystemExit(f"{what}{' with its --set overrides' if overrides else ''}: {error}") from error
    return config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="default",
                        help="experiments/configs/<name>.py (default, ka_dev, glassbench_inh, glassbench_cage), "
                             "or a run's config.json to repeat it")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set model.width=64 (repeatable)")


def add_reader_arguments(parser: argparse.ArgumentParser) -> None:
    """``--format``, ``--frames`` and ``--type-map``, parsed into ``args.format`` (str or None),
    ``args.frames`` (:func:`eignn_jax.formats.parse_frames`) and ``args.type_map`` (:func:`eignn_jax.formats.parse_type_map`),
    as the command-line tools that read configurations take them."""

    def parsed(parse: Callable[[str], object]) -> Callable[[str], object]:
        def convert(text: str) -> object:
            try:
                return parse(text)
            except ValueError as error:     # argparse shows an ArgumentTypeError's own message
                raise argparse.ArgumentTypeError(str(error)) from None
        return convert

    parser.add_argument("--format", choices=list(formats.FORMATS), default=None,
                        help="format of every input file (default: from each extension: "
                             + ", ".join(f"{' '.join(s)} {n}" for n, s in formats.FORMATS.items()) + ")")
    parser.add_argument("--frames", type=parsed(formats.parse_frames), default=None,
                        help="frames of trajectory files to read: 3, -1, 1,4,7 or 0:10:2 (default: all)")
    parser.add_argument("--type-map", type=parsed(formats.parse_type_map), default=None,
                        help="which file species is A and which B, e.g. 0:A,1:B or Ni:A,P:B "
                             "(default: 1:A,2:B,A:A,B:B)")


def add_runtime_arguments(parser: argparse.ArgumentParser, *, training: bool = False) -> None:
    """``--no-compilation-cache`` (``args.no_compilation_cache``) and, for the tools that
    train (``training``), ``--no-memory-reuse`` (:func:`add_memory_reuse_argument`); see
    :func:`start_runtime`."""
    parser.add_argument("--no-compilation-cache", action="store_true",
                        help="trace and compile every jitted program afresh instead of loading it from the "
                             "persistent compilation cache and its traced programs ($EIGNN_JAX_COMPILATION_CACHE: a directory, or 0 for off; "
                             "default $XDG_CACHE_HOME/eignn_jax/xla, else ~/.cache/eignn_jax/xla)")
    if training:
        add_memory_reuse_argument(parser, default=True)


def add_memory_reuse_argument(parser: argparse.ArgumentParser, default: bool) -> None:
    """Into ``args.memory_reuse``: ``--no-memory-reuse`` where keeping freed memory is the
    ``default`` (the tools that train, the step benchmarks), else ``--memory-reuse``; see
    :func:`start_memory_reuse`."""
    if default:
        parser.add_argument("--no-memory-reuse", dest="memory_reuse", action="store_false",
                            help="keep glibc's malloc defaults, which return XLA's large buffers to the system "
                                 "after every step (by default the process keeps freed memory for reuse: "
                                 "10-20%% less time per train step on a CPU, a few seconds more compilation, "
                                 "resident memory held at its peak)")
    else:
        parser.add_argument("--memory-reuse", dest="memory_reuse", action="store_true",
                            help="keep freed memory for reuse (eignn_jax.allocator), as training does")


def start_memory_reuse(args: argparse.Namespace) -> bool:
    """Keep freed memory for reuse (:func:`eignn_jax.allocator.keep_freed_memory`) if
    ``args.memory_reuse`` (absent: no); whether it is kept. Call it before JAX's first
    computation."""
    return getattr(args, "memory_reuse", False) and allocator.keep_freed_memory()


def start_runtime(args: argparse.Namespace) -> pathlib.Path | None:
    """Process-wide settings of the command-line tools, before anything is compiled or run:

    * malloc keeping freed memory for reuse in the tools that train, unless
      ``--no-memory-reuse`` (:func:`start_memory_reuse`). It pays over many steps and
      costs some compilation time (one malloc arena for XLA's compiler threads), so the
      tools that only predict or minimise leave glibc's defaults;
    * JAX's persistent compilation cache, unless ``--no-compilation-cache``
      (:func:`eignn_jax.compilation.enable_persistent_cache`; the environment can also turn
      it off).

    Returns the cache directory, or None.
    """
    start_memory_reuse(args)
    if args.no_compilation_cache:
        return None
    return compilation.enable_persistent_cache()


def integers(text: str) -> list[int]:
    """``0,1,2`` → [0, 1, 2], for options that take a list of integers (seeds, depths)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
