"""What a run's results depend on, and that it is recorded.

The model depends on nothing but its inputs, and the modules import each other one way.
Every parameter behind a run's data and features is recorded with it: how the data were
generated (meta.json), how their equilibrium structures were computed (equilibrate.json),
and, with a trained run, its evaluations and its predictions.
"""

import dataclasses
import functools
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import structure
from eignn_jax import dataset, equilibrium, experiment
from eignn_jax.config import ExperimentConfig, from_dict
from eignn_jax.physics import cage, minimise
from experiments import equilibrate as equilibrate_main
from tests.conftest import DEFAULT_DATA, TINY_TRAINING

DEFAULT_META = json.loads((DEFAULT_DATA / dataset.META_NAME).read_text())
FIRST, SECOND = sorted(DEFAULT_DATA.glob("*.npz"))[:2]


def raw_folder(folder, *, inherent: bool):
    """``folder`` holding the default data's meta.json and its first file (without its
    inherent structure unless ``inherent``); returns the file's path."""
    folder.mkdir()
    shutil.copy(DEFAULT_DATA / dataset.META_NAME, folder)
    config = dataset.load_configuration(FIRST)
    dataset.write_configuration(folder / FIRST.name, config if inherent else dataclasses.replace(config, inherent=None))
    return folder / FIRST.name


def test_the_model_imports_no_data_preparation_module():
    code = "import sys, eignn_jax.model; print(' '.join(m for m in sys.modules if m.startswith('eignn_jax')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # eignn_jax.compilation: imported by the package first, to record its sources as imported.
    assert sorted(done.stdout.split()) == ["eignn_jax", "eignn_jax.compilation", "eignn_jax.feature_scales",
                                           "eignn_jax.model"]


def test_no_module_imports_itself_through_others_even_inside_functions():
    modules = structure.module_files(pathlib.Path(__file__).resolve().parents[1])
    graph = {name: set().union(*structure.imports(name, path, modules).values()) for name, path in modules.items()}
    assert structure.cycles(graph) == []
    assert "eignn_jax.training" not in graph["eignn_jax.parallel"]


def test_imports_go_one_way_physics_first_and_scripts_last():
    """physics imports nothing else of the package; no script of experiments/ imports another
    (they share only experiments.common, the argument handling, and the configs)."""
    modules = structure.module_files(pathlib.Path(__file__).resolve().parents[1])
    graph = {name: set().union(*structure.imports(name, path, modules).values()) for name, path in modules.items()}
    physics = {name for name in graph if name.startswith("eignn_jax.physics")}
    assert len(physics) >= 10
    leaks = {name: sorted(graph[name] - physics) for name in physics if graph[name] - physics}
    assert leaks == {}
    shared = lambda name: name == "experiments.common" or name.startswith("experiments.configs")
    scripts = {name: sorted(t for t in targets if t.startswith("experiments") and not shared(t))
               for name, targets in graph.items() if name.startswith("experiments")}
    assert {name: t for name, t in scripts.items() if t} == {}


def test_a_record_keeps_only_what_its_files_use_and_a_damaged_one_is_named(tmp_path):
    first, second = (tmp_path / "in" / name for name in ("a_1.npz", "a_2.npz"))
    (tmp_path / "in").mkdir()
    shutil.copy(DEFAULT_DATA / dataset.META_NAME, tmp_path / "in")
    lbfgs = {"method": "lbfgs", "config": {"force_tolerance": 1e-4}}
    fire = {"method": "fire", "config": {"force_tolerance": 1e-4}}
    out = tmp_path / "out"
    out.mkdir()
    equilibrium.record_structures(out / first.name, first, {"inherent": fire})
    equilibrium.record_structures(out / first.name, first, {"inherent": lbfgs})    # replaces the entry
    equilibrium.record_structures(out / second.name, second, {"inherent": lbfgs})

    record = equilibrium.read_record(out)
    assert list(record["settings"].values()) == [lbfgs]                             # fire: no file uses it
    assert record["files"][first.name] == {"source": str(first.resolve()), "inherent": next(iter(record["settings"]))}
    assert record["source_meta"] == {str((tmp_path / "in").resolve()): DEFAULT_META}
    assert equilibrium.recorded_settings(out / second.name) == {"inherent": lbfgs}
    assert equilibrium.recorded_settings(tmp_path / "in" / first.name) == {}

    provenance = experiment.data_provenance([out / second.name, DEFAULT_DATA / FIRST.name])
    assert provenance[str(out)]["meta"] is None
    assert list(provenance[str(out)]["equilibrate"]["files"]) == [second.name]
    assert provenance[str(DEFAULT_DATA)] == {"meta": DEFAULT_META, "equilibrate": None}
    lines = experiment.describe_provenance(provenance)
    assert "structures of 1 file(s) by lbfgs" in lines[0]
    assert "T 0.64" in lines[1] and "no equilibrate.json" in lines[1]

    for damaged, message in (("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
                             ('{"files": []}', "not an equilibrate record")):
        (out / equilibrium.RECORD_NAME).write_text(damaged)
        with pytest.raises(dataset.DataError, match=f"equilibrate.json.*{message}"):
            experiment.data_provenance([out / first.name])


def test_training_records_its_data_provenance_and_graph_config(tmp_path, monkeypatch):
    from eignn_jax import training
    from experiments import train as train_main
    monkeypatch.setattr(training, "train", lambda *args, **kwargs: None)   # the records come first
    workdir = tmp_path / "run"
    train_main.main(["--config", "default", "--workdir", str(workdir), "--no-eval"] + TINY_TRAINING)
    provenance = json.loads((workdir / experiment.PROVENANCE_NAME).read_text())
    assert provenance == {str(DEFAULT_DATA): {"meta": DEFAULT_META, "equilibrate": None}}
    config = from_dict(ExperimentConfig, json.loads((workdir / "config.json").read_text()))
    assert config.graph.cutoff == 2.0 and config.graph.equilibrium == "inherent"


@pytest.mark.slow
def test_equilibrate_records_the_minimiser_the_sampler_and_the_temperature_source(tmp_path, monkeypatch):
    source = raw_folder(tmp_path / "raw", inherent=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "raw").iterdir()}
    equilibrate_main.main([str(tmp_path / "raw"), "--out", str(tmp_path / "inherent")])
    assert {p.name: p.read_bytes() for p in (tmp_path / "raw").iterdir()} == before    # inputs untouched
    lbfgs = {"method": "lbfgs", "config": dataclasses.asdict(minimise.LbfgsConfig())}
    assert equilibrium.recorded_settings(tmp_path / "inherent" / FIRST.name) == {"inherent": lbfgs}
    record = equilibrium.read_record(tmp_path / "inherent")
    assert record["files"][FIRST.name]["source"] == str(source.resolve())
    assert record["source_meta"] == {str((tmp_path / "raw").resolve()): DEFAULT_META}

    # A short sampler: what is recorded is the configuration that ran, not the defaults.
    short = functools.partial(cage.CageConfig, sweeps=2, equilibration_sweeps=0, sample_interval=1, replicas=1)
    monkeypatch.setattr(cage, "CageConfig", short)
    equilibrate_main.main([str(tmp_path / "inherent"), "--kind", "cage", "--seed", "3", "--temperature", "0.6",
                           "--out", str(tmp_path / "both")])
    settings = equilibrium.recorded_settings(tmp_path / "both" / FIRST.name)
    assert settings["inherent"] == lbfgs              # kept from the record beside the input
    assert settings["cage"] == {"method": "cage_monte_carlo", "temperature_source": "--temperature",
                                "config": dataclasses.asdict(short(temperature=0.6, seed=3))}
    assert dataset.load_configuration(tmp_path / "both" / FIRST.name).cage is not None


@pytest.mark.slow
def test_evaluation_and_prediction_show_and_record_the_provenance(trained_run, tmp_path, capsys):
    from experiments import evaluate as evaluate_main, predict as predict_main
    source = raw_folder(tmp_path / "data", inherent=True)
    unrecorded = tmp_path / "data" / SECOND.name
    shutil.copy(SECOND, unrecorded)
    settings = {"method": "lbfgs", "config": {"force_tolerance": 1e-4}}
    equilibrium.record_structures(source, source, {"inherent": settings})
    trained_on = json.loads((trained_run / experiment.PROVENANCE_NAME).read_text())
    run = experiment.load_trained(trained_run)
    assert run.metadata["data_provenance"] == trained_on == {str(DEFAULT_DATA): {"meta": DEFAULT_META,
                                                                                "equilibrate": None}}

    evaluate_main.main(["--workdir", str(trained_run), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "eval")])
    assert f"{DEFAULT_DATA}: meta.json: T 0.64, n 1000, seed 0" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "eval" / experiment.EVALUATION_PROVENANCE_NAME).read_text())
    assert recorded["trained_on"] == trained_on and recorded["graph"]["cutoff"] == 2.0
    assert recorded["evaluated_on"] == experiment.data_provenance([source, unrecorded])
    assert list(recorded["evaluated_on"][str(tmp_path / "data")]["equilibrate"]["files"]) == [source.name]

    predict_main.main(["--workdir", str(trained_run), str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    assert "trained on:" in capsys.readouterr().out
    for path, expected in ((source, settings), (unrecorded, None)):
        with np.load(tmp_path / "out" / path.name) as out:
            assert json.loads(str(out["equilibrium_settings"])) == {"inherent": expected}
            assert str(out["workdir"]) == str(trained_run.resolve())
