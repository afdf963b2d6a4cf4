"""The persistent compilation cache: where it goes, the switches, and reuse across processes."""

import os
import pathlib
import subprocess
import sys
import warnings

import pytest

from eignn_jax import compilation
from experiments import common
from tests.conftest import TINY_TRAINING

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIABLE = compilation.ENVIRONMENT_VARIABLE

# A jitted gradient step of a small MLP: compiles in well under a second, so the test passes
# min_compile_time_s=0 to have it written. Prints the cache's monitoring counts.
STEP_SCRIPT = """
import sys
from eignn_jax import compilation
directory = compilation.enable_persistent_cache(min_compile_time_s=0.0)
import jax, jax.numpy as jnp

def loss(params, x):
    hidden = jax.nn.silu(x @ params[0])
    return jnp.mean((hidden @ params[1]) ** 2)

step = jax.jit(lambda params, x: jax.tree.map(lambda p, g: p - 0.1 * g, params, jax.grad(loss)(params, x)))
params = (jnp.ones((16, 32)) / 16, jnp.ones((32, 4)) / 32)
with compilation.cache_events() as events:
    params = step(params, jnp.ones((64, 16)))
    jax.block_until_ready(params)
print(directory, events["cache_hits"], events["cache_misses"])
"""


def run_python(args: list[str], env_overrides: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_overrides}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def entries(directory: pathlib.Path) -> set[str]:
    """The cache's entry files (JAX names them <module>-<key>-cache)."""
    return {p.name for p in directory.glob("*-cache")} if directory.is_dir() else set()


# ----------------------------------------------------------------------------- where

def test_the_default_directory_is_per_user_under_xdg_cache_home(tmp_path):
    assert compilation.cache_directory({}) == pathlib.Path.home() / ".cache" / "eignn_jax" / "xla"
    assert compilation.cache_directory({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "eignn_jax" / "xla"
    # The XDG specification says relative paths are to be ignored.
    assert compilation.cache_directory({"XDG_CACHE_HOME": "relative"}) == \
        pathlib.Path.home() / ".cache" / "eignn_jax" / "xla"


@pytest.mark.parametrize("value", ["0", "off", "OFF", "false", "no", " 0 "])
def test_the_environment_turns_it_off(value):
    assert compilation.cache_directory({VARIABLE: value}) is None


@pytest.mark.parametrize("value", ["", "1", "on", "true"])
def test_the_environment_can_say_on_at_the_default_place(value, tmp_path):
    assert compilation.cache_directory({VARIABLE: value, "XDG_CACHE_HOME": str(tmp_path)}) == \
        tmp_path / "eignn_jax" / "xla"


def test_the_environment_names_another_directory(tmp_path):
    assert compilation.cache_directory({VARIABLE: str(tmp_path / "xla")}) == tmp_path / "xla"


# ----------------------------------------------------------------------------- switches

def test_importing_the_package_changes_no_jax_setting():
    code = ("import jax; before = (jax.config.jax_compilation_cache_dir, "
            "jax.config.jax_persistent_cache_min_compile_time_secs); "
            "import eignn_jax, eignn_jax.compilation, eignn_jax.training, eignn_jax.experiment, experiments.common; "
            "print(before == (jax.config.jax_compilation_cache_dir, "
            "jax.config.jax_persistent_cache_min_compile_time_secs))")
    done = run_python(["-c", code], {}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]


def test_an_unwritable_directory_warns_once_and_leaves_jax_as_it_was(tmp_path, monkeypatch):
    import jax
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    unwritable = blocker / "xla"      # a directory cannot be made inside a file, not even by root
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setattr(compilation, "_warned", set())
    with pytest.warns(RuntimeWarning, match="not writable"):
        assert compilation.enable_persistent_cache(unwritable) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compilation.enable_persistent_cache(unwritable) is None      # no second warning
    monkeypatch.setenv(VARIABLE, str(unwritable))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compilation.enable_persistent_cache() is None
    assert jax.config.jax_compilation_cache_dir == before


def test_the_environment_switch_enables_nothing(monkeypatch):
    monkeypatch.setenv(VARIABLE, "0")
    assert compilation.enable_persistent_cache() is None


@pytest.mark.parametrize("flag, expected_calls", [([], 1), (["--no-compilation-cache"], 0)])
def test_the_command_line_flag_skips_the_cache(flag, expected_calls, monkeypatch):
    import argparse
    calls = []
    monkeypatch.setattr(compilation, "enable_persistent_cache", lambda *a, **k: calls.append(a) or None)
    parser = argparse.ArgumentParser()
    common.add_runtime_arguments(parser)
    common.start_runtime(parser.parse_args(flag))
    assert len(calls) == expected_calls


@pytest.mark.parametrize("entry_point, trains", [
    ("train", True), ("study", True), ("transfer", True),
    ("evaluate", False), ("predict", False), ("equilibrate", False), ("simulate", False)])
def test_every_compiling_entry_point_takes_the_flags(entry_point, trains, capsys):
    import importlib
    module = importlib.import_module(f"experiments.{entry_point}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--no-compilation-cache" in out
    assert ("--no-memory-reuse" in out) == trains     # memory reuse pays over many train steps only


# ----------------------------------------------------------------------------- across processes

def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "xla"
    first = run_python(["-c", STEP_SCRIPT], {VARIABLE: str(cache)}, timeout=300)
    assert first.returncode == 0, first.stderr
    directory, hits, writes = first.stdout.split()
    assert pathlib.Path(directory) == cache.resolve()
    written = entries(cache)
    assert int(hits) == 0 and int(writes) >= 1 and len(written) >= 1

    second = run_python(["-c", STEP_SCRIPT], {VARIABLE: str(cache)}, timeout=300)
    assert second.returncode == 0, second.stderr
    _, hits, writes = second.stdout.split()
    assert int(hits) >= 1 and int(writes) == 0
    assert entries(cache) == written


def test_switched_off_nothing_is_written(tmp_path):
    done = run_python(["-c", STEP_SCRIPT], {VARIABLE: "0", "XDG_CACHE_HOME": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "0", "0"]
    assert not any(tmp_path.rglob("*-cache"))


@pytest.mark.slow
def test_training_twice_compiles_the_step_once_across_processes(tmp_path):
    """experiments.train with the cache at the default place (XDG_CACHE_HOME): the first run
    writes the train step, the second loads it (JAX logs the hit) and writes nothing new;
    with --no-compilation-cache nothing is read or written."""
    environment = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "JAX_LOG_COMPILES": "1"}
    cache = tmp_path / "xdg" / "eignn_jax" / "xla"
    base_env = {k: v for k, v in os.environ.items() if k != VARIABLE}

    def train(workdir: str, *extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "experiments.train", "--config", "default", "--workdir",
                               str(tmp_path / workdir), "--no-eval", *TINY_TRAINING, *extra],
                              cwd=ROOT, env={**base_env, **environment}, capture_output=True, text=True,
                              timeout=1200)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    off = train("off", "--no-compilation-cache")
    assert entries(cache) == set() and "Persistent compilation cache hit" not in off.stderr

    first = train("first")
    written = entries(cache)
    assert any(name.startswith("jit_counted") for name in written), written   # the train step
    # (A program compiled twice within one process may hit the entry it wrote itself.)
    assert "Persistent compilation cache hit for 'jit_counted'" not in first.stderr

    second = train("second")
    assert "Persistent compilation cache hit for 'jit_counted'" in second.stderr
    assert entries(cache) == written
