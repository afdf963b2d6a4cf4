"""Entry points and configs, end to end on a few embedded files with a tiny model."""

import csv
import json
import dataclasses
import shutil

import numpy as np
import pytest

from eignn_jax import config as config_lib, experiment
from experiments import evaluate as evaluate_main, train as train_main
from experiments.common import load_config
from tests.conftest import DEFAULT_DATA

TINY = ["model.width=8", "model.num_layers=1", "train.epochs=2", "train.lr_decay_epochs=[1]",
        "data.n_train=4", "data.n_test=2", "data.n_validation=1"]


@pytest.mark.parametrize("name", ["default", "ka_dev", "glassbench_inh", "glassbench_cage"])
def test_configs_round_trip_through_json(name):
    config = load_config(name, [])
    assert config_lib.from_dict(config_lib.ExperimentConfig, config_lib.to_dict(config)) == config


def test_overrides():
    config = load_config("default", ["model.width=64", "train.lr_decay_epochs=[5, 8]",
                                     "graph.equilibrium=cage", "name=mine"])
    assert config.model.width == 64 and config.train.lr_decay_epochs == (5, 8)
    assert config.graph.equilibrium == "cage" and config.name == "mine"
    with pytest.raises(SystemExit, match="unknown config key"):
        load_config("default", ["model.widht=3"])
    with pytest.raises(SystemExit, match="variant"):
        load_config("default", ["model.variant=nonsense"])
    with pytest.raises(SystemExit, match="unknown config"):
        load_config("no_such_config", [])


def test_glassbench_cage_protocol_uses_files_with_cage_states():
    config = load_config("glassbench_cage", [])
    assert config.graph.equilibrium == "cage"
    assert (config.data.n_train, config.data.n_test) == (100, 100)


@pytest.mark.slow
def test_train_then_evaluate_on_the_test_split_and_on_another_folder(tmp_path, capsys):
    workdir = tmp_path / "run"
    train_main.main(["--config", "default", "--workdir", str(workdir)] + [f"--set={s}" for s in TINY])
    output = capsys.readouterr().out
    assert "Pcc(all)" in output and "|d| line" in output
    assert "(lowest validation loss)" in output
    assert (workdir / "best").is_dir()
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert all("validation_loss" in r for r in records)
    with open(workdir / "pcc.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["model", "time", "pcc_mean", "pcc_all"]
    assert {r["model"] for r in rows} == {"EIGNN", experiment.BASELINE_NAME}
    assert len(rows) == 2 * 8
    assert all(np.isfinite(float(r["pcc_all"])) for r in rows)
    for figure in ("pcc.png", "scatter.png", "map.png"):
        assert (workdir / figure).stat().st_size > 1000
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 2

    # Transfer: every file of another GlassBench-layout folder.
    other = tmp_path / "other"
    other.mkdir()
    for path in sorted(DEFAULT_DATA.glob("*.npz"))[:2]:
        shutil.copy(path, other)
    evaluate_main.main(["--workdir", str(workdir), "--data", str(other)])
    for output in ("pcc.csv", "pcc.png", "scatter.png", "map.png"):
        assert (workdir / "eval_other" / output).exists()

    # Re-running a finished run resumes (nothing left to do) and gives the same table.
    train_main.main(["--config", "default", "--workdir", str(workdir)] + [f"--set={s}" for s in TINY])
    with open(workdir / "pcc.csv") as f:
        assert list(csv.DictReader(f)) == rows


@pytest.mark.slow
def test_a_different_config_in_the_same_workdir_is_refused(tmp_path):
    workdir = tmp_path / "run"
    args = ["--config", "default", "--workdir", str(workdir), "--no-eval"] + [f"--set={s}" for s in TINY]
    train_main.main(args)
    with pytest.raises(SystemExit, match="different config"):
        train_main.main(args + ["--set=model.width=12"])


@pytest.mark.slow
def test_a_run_is_repeated_from_its_own_config_json(trained_run, tmp_path):
    saved = json.loads((trained_run / "config.json").read_text())
    again = tmp_path / "again"
    train_main.main(["--config", str(trained_run / "config.json"), "--workdir", str(again), "--no-eval"])
    # The same run: same data, split, model (with its fitted input scales) and training.
    assert json.loads((again / "config.json").read_text()) == saved
    assert [json.loads(line)["train_loss"] for line in (again / "metrics.jsonl").read_text().splitlines()] == \
        [json.loads(line)["train_loss"] for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    # --set applies on top of the saved config, and changes only what it names.
    changed = tmp_path / "changed"
    train_main.main(["--config", str(trained_run / "config.json"), "--workdir", str(changed), "--no-eval",
                     "--set=train.seed=7"])
    expected = json.loads(json.dumps(saved))
    expected["train"]["seed"] = 7
    assert json.loads((changed / "config.json").read_text()) == expected


def test_a_config_file_that_is_not_a_config_is_a_clear_error(tmp_path):
    args = ["--workdir", str(tmp_path / "run"), "--no-eval"]
    with pytest.raises(SystemExit, match="missing.json"):
        train_main.main(["--config", str(tmp_path / "missing.json")] + args)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SystemExit, match="broken.json"):
        train_main.main(["--config", str(tmp_path / "broken.json")] + args)
    (tmp_path / "other.json").write_text(json.dumps({"name": "x", "trian": {}}))
    with pytest.raises(SystemExit, match="trian"):
        train_main.main(["--config", str(tmp_path / "other.json")] + args)
    (tmp_path / "good.json").write_text(json.dumps(config_lib.to_dict(load_config("default", []))))
    with pytest.raises(SystemExit, match="train.epochs"):
        train_main.main(["--config", str(tmp_path / "good.json"), "--set=train.epochs=0"] + args)
    assert not (tmp_path / "run").exists()


def test_bad_data_folder_is_a_clear_error(tmp_path):
    (tmp_path / "N10_1.npz").write_text("not a numpy file")
    with pytest.raises(SystemExit, match="N10_1.npz"):
        train_main.main(["--config", "default", "--workdir", str(tmp_path / "run"),
                         f"--set=data.path={tmp_path}", "--set=data.n_train=1", "--set=data.n_test=0"])
    with pytest.raises(SystemExit, match="cannot split 1 files"):
        train_main.main(["--config", "default", "--workdir", str(tmp_path / "run"),
                         f"--set=data.path={tmp_path}", "--set=data.n_train=3"])


def test_compare_merges_runs_and_refuses_conflicting_baselines(tmp_path, capsys):
    from eignn_jax import metrics
    from experiments import compare
    baseline = [{"model": "|d| line", "time": 1.0, "pcc_mean": 0.3, "pcc_all": 0.31}]
    for name, value in (("a", 0.5), ("b", 0.4)):
        (tmp_path / name).mkdir()
        metrics.write_pcc_csv(tmp_path / name / "pcc.csv",
                              [{"model": name, "time": 1.0, "pcc_mean": value, "pcc_all": value}] + baseline)
    compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both")])
    rows = metrics.read_pcc_csv(tmp_path / "both" / "pcc.csv")
    assert sorted(r["model"] for r in rows) == ["a", "b", "|d| line"]
    assert (tmp_path / "both" / "pcc.png").exists()
    metrics.write_pcc_csv(tmp_path / "b" / "pcc.csv", [dict(baseline[0], pcc_all=0.2)])
    with pytest.raises(SystemExit, match="differs"):
        compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both")])


@pytest.mark.slow
def test_runs_of_an_earlier_model_revision_are_refused(tmp_path):
    """A checkpoint whose parameters meant something else (written before the model revision
    was recorded, or under another revision) is neither evaluated nor resumed."""
    workdir = tmp_path / "run"
    args = ["--config", "default", "--workdir", str(workdir), "--no-eval"] + [f"--set={s}" for s in TINY]
    train_main.main(args)
    for path in workdir.glob("*/*/metadata/metadata"):   # checkpoints/ and best/
        metadata = json.loads(path.read_text())
        del metadata["model_revision"]
        path.write_text(json.dumps(metadata))
    with pytest.raises(SystemExit, match="model revision 1"):
        evaluate_main.main(["--workdir", str(workdir)])
    with pytest.raises(SystemExit, match="model revision 1"):
        train_main.main(args)


def test_compare_seeds_reports_mean_and_spread(tmp_path, capsys):
    from eignn_jax import metrics
    from experiments import compare
    values = (0.5, 0.6, 0.7)
    for k, value in enumerate(values):
        (tmp_path / f"s{k}").mkdir()
        metrics.write_pcc_csv(tmp_path / f"s{k}" / "pcc.csv",
                              [{"model": "EIGNN", "time": t, "pcc_mean": value, "pcc_all": value + t}
                               for t in (1.0, 2.0)])
    with pytest.raises(SystemExit, match="would be overwritten"):
        compare.main([str(tmp_path / f"s{k}") for k in range(3)] + ["--out", str(tmp_path / "s1")])
    compare.main([str(tmp_path / f"s{k}") for k in range(3)] + ["--seeds", "--out", str(tmp_path / "all")])
    assert "0.600±0.100" in capsys.readouterr().out
    rows = {r["time"]: r for r in metrics.read_pcc_csv(tmp_path / "all" / "pcc.csv")}
    assert rows[2.0]["pcc_all"] == pytest.approx(2.6)
    lines = (tmp_path / "all" / "pcc_seeds.csv").read_text().splitlines()
    assert lines[0] == "model,time,runs,pcc_mean,pcc_mean_std,pcc_all,pcc_all_std"
    assert [float(x) for x in lines[1].split(",")[2:]] == pytest.approx([3, 0.6, 0.1, 1.6, 0.1])


def test_training_on_files_labelled_at_different_times_is_refused_before_any_work(tmp_path):
    from eignn_jax import dataset
    files = sorted(DEFAULT_DATA.glob("*.npz"))[:3]
    for path in files[:2]:
        shutil.copy(path, tmp_path)
    config = dataset.load_configuration(files[2])
    extras = {k: v[:6] if k == "md_disp" else v for k, v in config.extras.items()}
    fewer = dataclasses.replace(config, times=config.times[:6], propensity=config.propensity[:6], extras=extras)
    dataset.write_configuration(tmp_path / files[2].name, fewer)
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit, match=f"{files[2].name}: its labels are at t = "):
        train_main.main(["--config", "default", "--workdir", str(workdir), f"--set=data.path={tmp_path}",
                         "--set=data.n_train=2", "--set=data.n_test=1"])
    assert not (workdir / "graph_cache").exists()


@pytest.mark.slow
def test_evaluate_adds_the_noise_ceiling_when_every_file_has_split_half_labels(trained_run, tmp_path, capsys):
    from eignn_jax import dataset, metrics
    sources = sorted(DEFAULT_DATA.glob("*.npz"))[:3]
    rng = np.random.default_rng(0)
    stored = []
    for folder in ("all", "some"):
        (tmp_path / folder).mkdir()
    for k, source in enumerate(sources):
        with np.load(source) as data:
            arrays = dict(data)
        shutil.copy(source, tmp_path / "some" / source.name)
        prop = arrays["md_prop"]
        noise = rng.normal(size=prop.shape) * 0.3 * prop.std(axis=1, keepdims=True)
        arrays[dataset.KEY_HALF_PROPENSITY] = np.stack([prop + noise, prop - noise]).astype(np.float32)
        np.savez(tmp_path / "all" / source.name, **arrays)
        if k:
            np.savez(tmp_path / "some" / source.name, **arrays)
        stored.append(arrays)
    evaluate_main.main(["--workdir", str(trained_run), "--data", str(tmp_path / "all"), "--out", str(tmp_path / "a")])
    rows = [r for r in metrics.read_pcc_csv(tmp_path / "a" / "pcc.csv") if r["model"] == metrics.NOISE_CEILING]
    expected = metrics.split_half_ceiling([a[dataset.KEY_HALF_PROPENSITY] for a in stored],
                                          [a["types"] == 1 for a in stored])
    assert len(rows) == len(stored[0]["times"])
    np.testing.assert_allclose([r["pcc_all"] for r in rows], expected["pcc_all"], rtol=1e-12)
    np.testing.assert_allclose([r["pcc_mean"] for r in rows], expected["pcc_mean"], rtol=1e-12)
    assert "noise ceiling Pcc(all)" in capsys.readouterr().out
    # One file without them: no ceiling, and the file is named.
    evaluate_main.main(["--workdir", str(trained_run), "--data", str(tmp_path / "some"), "--out", str(tmp_path / "s")])
    rows = metrics.read_pcc_csv(tmp_path / "s" / "pcc.csv")
    assert metrics.NOISE_CEILING not in {r["model"] for r in rows}
    lacking = [l for l in capsys.readouterr().out.splitlines() if l.startswith(f"{metrics.NOISE_CEILING}: not computed")]
    assert len(lacking) == 1 and sources[0].name in lacking[0] and sources[1].name not in lacking[0]
