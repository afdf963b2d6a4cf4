"""The ablation and depth study: its plan of runs, and one tiny end-to-end study."""

import hashlib

import pytest

from eignn_jax import config as config_lib, experiment, metrics, study
from experiments import common
from tests.conftest import DEFAULT_DATA, TINY_TRAINING


def tiny_config():
    return common.load_config("default", [s.removeprefix("--set=") for s in TINY_TRAINING])


def test_plan_names_overrides_and_seeds():
    base = config_lib.override(tiny_config(), "model.num_layers=3")
    runs = study.plan(base, seeds=[0, 1], models=["EIGNN", "A", "B"], depths=[1, 3, 5])
    assert [(r.name, r.seed) for r in runs] == [
        (n, s) for n in ("EIGNN", "EIGNN-A", "EIGNN-B", "EIGNN-L1", "EIGNN-L5") for s in (0, 1)]
    # The config's own depth (3) is the EIGNN run, not trained again as EIGNN-L3.
    assert len({r.directory for r in runs}) == len(runs)
    by_name = {(r.name, r.seed): r.config for r in runs}
    assert {n: by_name[(n, 0)].model.variant for n in ("EIGNN", "EIGNN-A", "EIGNN-B", "EIGNN-L1")} == {
        "EIGNN": "full", "EIGNN-A": "no_alpha0", "EIGNN-B": "invariant", "EIGNN-L1": "full"}
    assert [by_name[(n, 1)].model.num_layers for n in ("EIGNN", "EIGNN-B", "EIGNN-L1", "EIGNN-L5")] == [3, 3, 1, 5]
    assert all(c.train.seed == s and c.name == n for (n, s), c in by_name.items())
    # Everything else is the base config's.
    assert all(c.data == base.data and c.train.epochs == base.train.epochs
               and c.model.width == base.model.width for c in by_name.values())
    assert runs[0].directory == "EIGNN_s0"


def test_plan_keeps_the_own_depth_run_without_the_full_model_and_refuses_bad_lists():
    base = tiny_config()   # one layer
    assert [r.name for r in study.plan(base, seeds=[0], models=["B"], depths=[1, 2])] == [
        "EIGNN-B", "EIGNN", "EIGNN-L2"]
    assert [r.name for r in study.plan(base, seeds=[0], models=["A"], depths=[])] == ["EIGNN-A"]
    for kwargs, message in ((dict(models=["C"]), "unknown model"), (dict(depths=[0]), "≥ 1"),
                            (dict(seeds=[1, 1]), "repeats"), (dict(seeds=[]), "no seeds"),
                            (dict(seeds=[-1]), "seed must be ≥ 0")):
        with pytest.raises(ValueError, match=message):
            study.plan(base, **kwargs)


def test_verdict_compares_the_gap_with_the_sum_of_the_spreads():
    rows = [{"model": m, "time": t, "runs": 3, "pcc_all": a, "pcc_all_std": s, "pcc_mean": a, "pcc_mean_std": s}
            for m, t, a, s in (("EIGNN", 0.1, 0.6, 0.05), ("EIGNN-B", 0.1, 0.4, 0.05),
                               ("EIGNN", 1.0, 0.5, 0.05), ("EIGNN-B", 1.0, 0.42, 0.05))]
    lines = study.verdicts(rows)
    assert len(lines) == 2
    assert "t = 0.1: EIGNN exceeds EIGNN-B" in lines[0]
    assert "t = 1: EIGNN does not exceed EIGNN-B" in lines[1]   # gap 0.08 < 0.05 + 0.05
    assert "not in the study" in study.verdicts(rows[:1] + rows[2:3])[0]


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_tiny_study_end_to_end_then_skips_finished_runs(tmp_path, monkeypatch, capsys):
    from experiments import study as study_main
    inputs = digest(DEFAULT_DATA)
    out = tmp_path / "study"
    args = ["--config", "default", "--out", str(out), "--seeds", "0,1", "--models", "EIGNN,B", "--depths", "",
            *TINY_TRAINING]
    study_main.main(args)
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"EIGNN_s0", "EIGNN_s1", "EIGNN-B_s0", "EIGNN-B_s1",
                                              "study.csv", "study.png"}
    lines = (out / "study.csv").read_text().splitlines()
    assert lines[0] == "model,time,runs,pcc_mean,pcc_mean_std,pcc_all,pcc_all_std"
    rows = [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
    times = {float(r["time"]) for r in rows}
    assert {r["model"] for r in rows} == {"EIGNN", "EIGNN-B", experiment.BASELINE_NAME}
    assert len(rows) == 3 * len(times)
    # Each model's row summarises its two seeds, whose own evaluations it reproduces.
    for name in ("EIGNN", "EIGNN-B"):
        seeds = [{r["time"]: r for r in metrics.read_pcc_csv(out / f"{name}_s{s}" / "pcc.csv") if r["model"] == name}
                 for s in (0, 1)]
        for row in (r for r in rows if r["model"] == name):
            t = float(row["time"])
            assert row["runs"] == "2"
            assert float(row["pcc_all"]) == pytest.approx((seeds[0][t]["pcc_all"] + seeds[1][t]["pcc_all"]) / 2)
            assert float(row["pcc_all_std"]) == pytest.approx(abs(seeds[0][t]["pcc_all"] - seeds[1][t]["pcc_all"]) / 2 ** 0.5)
    # The two seeds trained differently.
    assert any(float(r["pcc_all_std"]) > 0 for r in rows if r["model"] == "EIGNN")
    assert printed.count("EIGNN exceeds EIGNN-B") + printed.count("EIGNN does not exceed EIGNN-B") == len(times)
    assert "±" in printed
    assert digest(DEFAULT_DATA) == inputs

    # Again: every run is finished, so nothing is trained or evaluated, and the same table is written.
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained or evaluated again")
    monkeypatch.setattr(experiment, "run_training", refuse)
    monkeypatch.setattr(experiment, "evaluate", refuse)
    study_main.main(args)
    assert (out / "study.csv").read_text().splitlines() == lines
    assert capsys.readouterr().out.count("finished, skipped") == 4

    # An unfinished run (no evaluation yet) is resumed, and only it.
    monkeypatch.undo()
    (out / "EIGNN-B_s1" / "pcc.csv").unlink()
    trained = []
    real = experiment.run_training
    monkeypatch.setattr(experiment, "run_training",
                        lambda config, workdir, log=print: (trained.append(workdir.name), real(config, workdir, log))[1])
    study_main.main(args)
    assert trained == ["EIGNN-B_s1"]
    assert (out / "study.csv").read_text().splitlines() == lines
    assert digest(DEFAULT_DATA) == inputs
