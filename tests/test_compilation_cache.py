"""The persistent compilation cache: where it goes, the switches, and reuse across processes."""

import json
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

    programs = {p.name for p in (cache / compilation.TRACED_SUBDIRECTORY).glob("*.program")}
    assert len(programs) == 3           # initial state, train step, predict step

    second = train("second")
    assert "Persistent compilation cache hit for 'jit_counted'" in second.stderr
    assert entries(cache) == written
    assert {p.name for p in (cache / compilation.TRACED_SUBDIRECTORY).glob("*.program")} == programs
    records = [json.loads(line) for line in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["train_step_compilations"], r["train_step_programs_loaded"]) for r in records] == [(1, 1)]
    first_records = (tmp_path / "first" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["train_step_programs_loaded"] for line in first_records] == [0]


# ----------------------------------------------------------------------------- traced programs
# The traced-program cache (compilation.load_or_export through training.TracedFunction), on a
# one-layer width-8 EIGNN and one embedded graph: a train step traced once, kept with
# jax.export, loaded instead of traced by a later TracedFunction with the same key.

@pytest.fixture
def step_parts(real_graph):
    import jax
    from eignn_jax import graph as graph_lib, training
    from eignn_jax.model import EIGNN
    from tests.conftest import small_model_config

    model_config = small_model_config([real_graph], width=8, num_layers=1)
    train_config = training.TrainConfig()
    model = EIGNN(model_config)
    optimizer = training.make_optimizer(train_config, steps_per_epoch=1)
    padded = graph_lib.pad_graph(real_graph, graph_lib.padding_budget([real_graph]))
    initial = jax.device_get(training.init_state(model, optimizer, padded, seed=0))
    key = training.program_key("train_step", model_config, train_config, 1)

    def make_step(program_key=key):
        return training.make_train_step(model, optimizer, 0, program_key=program_key)

    return make_step, initial, padded


@pytest.fixture
def traced_directory(tmp_path, monkeypatch):
    directory = tmp_path / "traced"
    monkeypatch.setattr(compilation, "_traced_directory", directory)
    monkeypatch.setattr(compilation, "_warned", set())
    return directory


def run_steps(step, initial, graph, n=3):
    """n steps from a fresh copy of ``initial``: (states' leaves after each step, losses)."""
    import jax
    import numpy as np
    state, states, losses = jax.device_put(initial), [], []
    for _ in range(n):
        state, loss = step(state, graph)
        states.append([np.asarray(x) for x in jax.tree.leaves(state)])
        losses.append(float(loss))
    return states, losses


def lowerings_during(fn):
    """How many programs JAX lowered (and so compiled or looked up) while ``fn`` ran."""
    import jax.monitoring
    count = []

    def listener(event, duration, **_):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            count.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return result, len(count)


def test_a_traced_program_is_written_then_loaded_and_computes_what_jit_computes(step_parts, traced_directory):
    import numpy as np
    make_step, initial, graph = step_parts
    plain_states, plain_losses = run_steps(make_step(program_key=None), initial, graph)
    assert not traced_directory.exists()

    writing = make_step()
    (written_states, written_losses), lowered = lowerings_during(lambda: run_steps(writing, initial, graph))
    files = sorted(traced_directory.glob("*.program"))
    assert len(files) == 1 and writing.loaded == 0 and writing.traces == 1
    # Lowered once by jax.export, once for the executable: the same executable serves fresh
    # inputs and the step's own outputs (whose placement differs) in the later steps.
    assert lowered == 2

    loading = make_step()
    (loaded_states, loaded_losses), lowered = lowerings_during(lambda: run_steps(loading, initial, graph))
    assert loading.loaded == 1 and loading.traces == 1 and lowered == 1
    assert sorted(traced_directory.glob("*.program")) == files
    for states, losses in ((written_states, written_losses), (loaded_states, loaded_losses)):
        np.testing.assert_allclose(losses, plain_losses, rtol=1e-6)
        for step_leaves, plain_leaves in zip(states, plain_states):
            for a, b in zip(step_leaves, plain_leaves):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert plain_losses[2] < plain_losses[0]       # the steps did train


def test_a_loaded_program_still_donates_the_state(step_parts, traced_directory):
    import jax
    make_step, initial, graph = step_parts
    make_step()(jax.device_put(initial), graph)                  # writes the program
    (path,) = traced_directory.glob("*.program")
    os.utime(path, ns=(10**18, 10**18))                          # long unused
    state = jax.device_put(initial)
    loading = make_step()
    new_state, _ = loading(state, graph)
    assert loading.loaded == 1
    assert path.stat().st_mtime_ns > 10**18                      # loading marks it recently used
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state.params))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new_state))


@pytest.mark.slow
def test_another_key_code_or_input_shape_is_another_program(step_parts, traced_directory, monkeypatch, real_graph):
    import jax
    from eignn_jax import graph as graph_lib
    make_step, initial, graph = step_parts
    make_step()(jax.device_put(initial), graph)
    assert len(list(traced_directory.glob("*.program"))) == 1

    other_key = make_step(program_key="train_step|something else")
    other_key(jax.device_put(initial), graph)
    assert other_key.loaded == 0 and len(list(traced_directory.glob("*.program"))) == 2

    budget = graph_lib.padding_budget([real_graph])
    bigger = graph_lib.pad_graph(real_graph, graph_lib.PaddingBudget(
        n_node=budget.n_node + 8, n_edge=budget.n_edge + 64, n_graph=budget.n_graph))
    other_shape = make_step()
    other_shape(jax.device_put(initial), bigger)
    assert other_shape.loaded == 0 and len(list(traced_directory.glob("*.program"))) == 3

    monkeypatch.setattr(compilation, "source_digest", lambda: "the package after an edit")
    edited = make_step()
    edited(jax.device_put(initial), graph)
    assert edited.loaded == 0 and len(list(traced_directory.glob("*.program"))) == 4


@pytest.mark.slow
def test_a_damaged_program_file_is_traced_again_and_replaced(step_parts, traced_directory):
    import jax
    import numpy as np
    make_step, initial, graph = step_parts
    _, reference = run_steps(make_step(program_key=None), initial, graph, n=1)
    make_step()(jax.device_put(initial), graph)
    (path,) = traced_directory.glob("*.program")
    whole = path.read_bytes()
    flipped = bytearray(whole)
    flipped[int(len(whole) * 0.6)] ^= 0x10          # one bit inside the serialised program
    for damaged in (whole[: len(whole) // 2], bytes(flipped)):
        path.write_bytes(damaged)
        step = make_step()
        with pytest.warns(RuntimeWarning, match="unreadable"):
            _, losses = run_steps(step, initial, graph, n=1)
        assert step.loaded == 0
        np.testing.assert_allclose(losses, reference, rtol=1e-6)
        again = make_step()                 # the file was replaced by a whole program
        _, losses = run_steps(again, initial, graph, n=1)
        assert again.loaded == 1
        np.testing.assert_allclose(losses, reference, rtol=1e-6)


@pytest.mark.slow
def test_an_unwritable_program_directory_warns_once_and_still_runs(step_parts, tmp_path, monkeypatch):
    import numpy as np
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setattr(compilation, "_traced_directory", blocker / "traced")
    monkeypatch.setattr(compilation, "_warned", set())
    make_step, initial, graph = step_parts
    _, reference = run_steps(make_step(program_key=None), initial, graph, n=2)
    step = make_step()
    with pytest.warns(RuntimeWarning, match="not writable"):
        _, losses = run_steps(step, initial, graph, n=2)
    np.testing.assert_allclose(losses, reference, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_steps(make_step(), initial, graph, n=1)


def test_a_program_key_is_refused_for_sharded_programs():
    import jax
    from eignn_jax import training
    with pytest.raises(ValueError, match="single-device"):
        training.TracedFunction(lambda x: x, "key", in_shardings=jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def test_without_the_caches_a_program_key_changes_nothing(step_parts, monkeypatch):
    make_step, initial, graph = step_parts
    monkeypatch.setattr(compilation, "_traced_directory", None)
    step = make_step()
    run_steps(step, initial, graph, n=1)
    assert step.loaded == 0 and step.traces == 1


def test_every_global_setting_that_tracing_reads_names_another_program(monkeypatch):
    """jax's options (all of them: e.g. the PRNG seed offset changes dropout keys traced into
    the step), flax's and e3nn-jax's global configuration."""
    import e3nn_jax
    import flax
    import jax

    def fingerprint():
        return compilation.program_fingerprint("key", "tree", ["f32[3]"])

    reference = fingerprint()
    assert fingerprint() == reference
    changes = [
        (lambda: jax.config.update("jax_random_seed_offset", 7),
         lambda: jax.config.update("jax_random_seed_offset", 0)),
        (lambda: flax.config.update("flax_fix_rng_separator", True),
         lambda: flax.config.update("flax_fix_rng_separator", False)),
        (lambda: e3nn_jax.config("irrep_normalization", "norm"),
         lambda: e3nn_jax.config("irrep_normalization", "component")),
    ]
    for change, undo in changes:
        change()
        try:
            assert fingerprint() != reference
        finally:
            undo()
        assert fingerprint() == reference
    assert compilation.program_fingerprint("other key", "tree", ["f32[3]"]) != reference
    assert compilation.program_fingerprint("key", "tree", ["f32[4]"]) != reference


def test_the_installed_code_of_a_traced_package_names_another_program(tmp_path, monkeypatch):
    package = tmp_path / "a_traced_package"
    package.mkdir()
    (package / "__init__.py").write_text("EPS = 1e-8\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(compilation, "TRACED_PACKAGES", ("a_traced_package",))
    compilation.library_digest.cache_clear()
    try:
        before = compilation.library_digest()
        (package / "__init__.py").write_text("EPS = 1e-1\n")       # an edited copy
        compilation.library_digest.cache_clear()
        assert compilation.library_digest() != before
    finally:
        compilation.library_digest.cache_clear()


def test_sources_edited_after_import_are_never_cached_under_the_new_name(step_parts, traced_directory,
                                                                        monkeypatch):
    """A process runs the code it imported: if the files changed since, its program could be
    stored under the name of code it does not run. It is traced as usual, not cached."""
    import numpy as np
    make_step, initial, graph = step_parts
    _, reference = run_steps(make_step(program_key=None), initial, graph, n=1)
    imported = compilation._IMPORTED_STATE
    monkeypatch.setattr(compilation, "_IMPORTED_STATE", imported[:-1] + (imported[-1][:2] + (0,),))
    with pytest.raises(compilation.SourceChanged, match=imported[-1][0]):
        compilation.source_digest()
    step = make_step()
    with pytest.warns(RuntimeWarning, match="changed since this process imported"):
        _, losses = run_steps(step, initial, graph, n=2)
    np.testing.assert_allclose(losses[:1], reference, rtol=1e-6)
    assert step.traces == 1 and step.loaded == 0
    assert not list(traced_directory.glob("*.program"))


@pytest.mark.parametrize("case", ["host_callback", "weak_output"])
def test_functions_that_cannot_be_kept_run_as_plain_jit(case, traced_directory):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from eignn_jax import training

    if case == "host_callback":
        def fn(x):
            return jax.pure_callback(lambda v: np.asarray(v) * 2, jax.ShapeDtypeStruct(x.shape, x.dtype), x) + 1
        x = jnp.arange(4.0)
    else:
        def fn(x):
            return x * 2          # a Python scalar in, a weakly typed scalar out
        x = 3.0
    traced = training.TracedFunction(fn, "a key")
    with pytest.warns(RuntimeWarning, match="without the traced-program cache"):
        result = traced(x)
    expected = jax.jit(fn)(x)
    np.testing.assert_array_equal(result, expected)
    assert jax.typeof(result) == jax.typeof(expected)
    assert traced.traces == 1 and traced.loaded == 0
    assert not list(traced_directory.glob("*.program"))


def test_least_recently_used_programs_are_pruned_beyond_the_limit(tmp_path):
    sizes = {"a": 300, "b": 200, "c": 100, "d": 400}               # a oldest ... d newest
    for age, (name, size) in enumerate(sizes.items()):
        path = tmp_path / f"{name}.program"
        path.write_bytes(b"x" * size)
        os.utime(path, ns=(10**18 + age * 10**9,) * 2)
    (tmp_path / "other.bin").write_bytes(b"x" * 10_000)           # not a program: never touched
    deleted = compilation.prune_traced_programs(tmp_path, 700, keep=tmp_path / "a.program")
    assert deleted == ["b.program", "c.program"]                  # oldest first, 'a' kept as asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.program", "d.program", "other.bin"]
    assert compilation.prune_traced_programs(tmp_path, 10**6) == []


EVICTION_SCRIPT = """
import sys
from eignn_jax import compilation
compilation.enable_persistent_cache(sys.argv[1], min_compile_time_s=0.0, max_bytes=int(sys.argv[2]))
import jax, jax.numpy as jnp
print(jax.config.jax_compilation_cache_max_size)
for n in range(1, 30):        # programs of different shapes, a few KB each
    jax.jit(lambda x: jnp.sin(x) * n)(jnp.ones(n)).block_until_ready()
"""


def test_xla_entries_beyond_the_size_limit_are_evicted(tmp_path):
    cache, limit = tmp_path / "xla", 40_000
    done = run_python(["-c", EVICTION_SCRIPT, str(cache), str(limit)], {}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(limit)]
    sizes = [p.stat().st_size for p in cache.glob("*-cache")]
    assert len(sizes) >= 2 and sum(sizes) <= limit
