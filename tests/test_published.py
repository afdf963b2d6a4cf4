"""Published models beside ours: their predictions in data files, their published Pcc tables."""

import csv
import json
import pathlib

import numpy as np
import pytest
from scipy import stats

from eignn_jax import dataset, experiment, metrics
from eignn_jax.plotting import plot_pcc
from experiments import evaluate as evaluate_main
from tests.conftest import DEFAULT_DATA

PUBLISHED_PCC = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "published_pcc"
needs_published = pytest.mark.skipif(not PUBLISHED_PCC.is_dir(), reason=f"{PUBLISHED_PCC} is absent")


def _with_predictions(source: pathlib.Path, target: pathlib.Path, seed: int, **models) -> dict:
    """Copy of ``source`` at ``target`` with the arrays ``models`` (name → function of md_prop)."""
    with np.load(source) as data:
        arrays = dict(data)
    rng = np.random.default_rng(seed)
    arrays.update({name: make(arrays["md_prop"], rng) for name, make in models.items()})
    np.savez(target, **arrays)
    return arrays


def _noisy(prop, rng):
    return (prop + rng.normal(0.0, 0.5 * prop.std(), prop.shape)).astype(np.float32)


# --- reading -------------------------------------------------------------------------------


def test_files_keep_published_predictions_and_only_those(tmp_path):
    target = tmp_path / "N1000T0.64_1.npz"
    arrays = _with_predictions(DEFAULT_DATA / target.name, target, 0, SE3=lambda p, _: p,
                               CAGE=_noisy, OTHER=lambda p, _: p.copy())
    config = dataset.load_configuration(target)
    # Named models only: bb_prop and an unknown [T, N] array are not predictions.
    assert list(config.published) == ["CAGE", "SE3"]
    np.testing.assert_array_equal(config.published["CAGE"], arrays["CAGE"])
    assert "bb_prop" in config.extras and "OTHER" in config.extras
    # They are still written back, bit for bit.
    copy = tmp_path / "copy" / target.name
    copy.parent.mkdir()
    dataset.write_configuration(copy, config)
    with np.load(copy) as written:
        assert set(written.files) == set(arrays)
        np.testing.assert_array_equal(written["SE3"], arrays["SE3"])


@pytest.mark.parametrize("bad, problem", [
    (lambda p: p[:, :-1], "shape"),                        # one particle short
    (lambda p: p[0], "shape"),                             # 1-D
    (lambda p: np.where(np.arange(p.shape[1]) == 7, np.nan, p), "non-finite"),
    (lambda p: (p * 100).astype(np.int32), "floating"),
])
def test_a_bad_published_prediction_names_the_file_and_key(tmp_path, bad, problem):
    target = tmp_path / "N1000T0.64_1.npz"
    _with_predictions(DEFAULT_DATA / target.name, target, 0, CAGE=lambda p, _: bad(p))
    with pytest.raises(dataset.DataError, match=problem) as caught:
        dataset.load_configuration(target)
    assert caught.value.path == str(target) and caught.value.field == "CAGE"
    assert str(target) in str(caught.value) and "'CAGE'" in str(caught.value)


def test_predictions_for_other_time_scales_are_refused_naming_file_and_key(tmp_path):
    good, short = tmp_path / "N1000T0.64_1.npz", tmp_path / "N1000T0.64_2.npz"
    _with_predictions(DEFAULT_DATA / good.name, good, 0, SE3=lambda p, _: p)
    _with_predictions(DEFAULT_DATA / short.name, short, 1, SE3=lambda p, _: p[:3])
    with pytest.raises(dataset.DataError, match="3 rows but the labels have T = 8") as caught:
        experiment.published_predictions([good, short], 8, log=lambda _: None)
    assert caught.value.path == str(short) and caught.value.field == "SE3"


def test_a_model_only_some_files_carry_is_not_scored_and_the_files_are_named(tmp_path):
    names = ["N1000T0.64_1.npz", "N1000T0.64_2.npz", "N1000T0.64_3.npz"]
    paths = [tmp_path / name for name in names]
    for k, path in enumerate(paths):
        models = {"SE3": lambda p, _: p, "BOTAN": _noisy} if k != 1 else {"SE3": lambda p, _: p}
        _with_predictions(DEFAULT_DATA / path.name, path, k, **models)
    lines = []
    scored = experiment.published_predictions(paths, 8, log=lines.append)
    assert list(scored) == ["SE3"] and len(scored["SE3"]) == 3
    assert scored["SE3"][0].shape == (1000, 8)     # particle-major, like the graphs' targets
    missing = [line for line in lines if "BOTAN" in line]
    assert len(missing) == 1 and names[1] in missing[0] and "1 of the 3" in missing[0]
    assert names[0] not in missing[0] and names[2] not in missing[0]


# --- temperature and published tables ------------------------------------------------------


def test_data_temperature_from_names_or_meta_json(tmp_path):
    assert experiment.data_temperature(sorted(DEFAULT_DATA.glob("*.npz"))[:2]) == 0.64
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a_1.npz").touch()
    with pytest.raises(ValueError, match="a_1.npz: its temperature is unknown"):
        experiment.data_temperature([folder / "a_1.npz"])
    (folder / dataset.META_NAME).write_text(json.dumps({"T": 0.5}))
    assert experiment.data_temperature([folder / "a_1.npz"]) == 0.5
    with pytest.raises(ValueError, match="different temperatures"):
        experiment.data_temperature([folder / "a_1.npz", DEFAULT_DATA / "N1000T0.64_1.npz"])


def _read_columns(path: pathlib.Path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {column: [float(row[column]) for row in rows] for column in rows[0]}


@needs_published
@pytest.mark.parametrize("temperature", sorted(dataset.GLASSBENCH_TIME_GRIDS))
def test_published_tables_are_read_on_their_own_time_grid(temperature):
    rows = experiment.read_published_pcc(PUBLISHED_PCC, temperature)
    code = f"{round(temperature * 100):03d}"
    pooled, mean = (_read_columns(PUBLISHED_PCC / f"pcc_{metric}_{code}.csv") for metric in ("all", "mean"))
    mean = {"SE3" if name == "SE(3)-GNN" else name: values for name, values in mean.items()}
    models = list(dict.fromkeys(r["model"] for r in rows))
    assert models == list(pooled)[1:]      # pcc_mean lists no model pcc_all lacks
    assert {"BOTAN", "CAGE", "GlassMLP", "SE3", "EIGNN_Cage", "EIGNN_Inh"} <= set(mean)
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        # The tables' times are GlassBench's grid of that temperature.
        np.testing.assert_allclose([r["time"] for r in mine], dataset.GLASSBENCH_TIME_GRIDS[temperature])
        assert [r["pcc_all"] for r in mine] == pooled[model]
        if model in mean:   # pcc_mean_044.csv names SE3 "SE(3)-GNN" and lacks the descriptors
            assert [r["pcc_mean"] for r in mine] == mean[model]
        else:
            assert temperature == 0.44 and all(np.isnan(r["pcc_mean"]) for r in mine)


@needs_published
def test_a_temperature_without_published_tables_names_the_file():
    with pytest.raises(ValueError, match=r"pcc_all_070\.csv: no published Pcc table for T = 0.7 "
                                         r"\(this folder has them for T = 0.44, 0.5, 0.56, 0.64\)"):
        experiment.read_published_pcc(PUBLISHED_PCC, 0.7)


def test_published_tables_are_merged_per_model_and_bad_ones_refused_naming_the_files(tmp_path):
    (tmp_path / "pcc_all_064.csv").write_text("t,A,B\n0.1,0.5,0.6\n1,0.4,0.3\n")
    (tmp_path / "pcc_mean_064.csv").write_text("t,A,C\n0.1,0.45,0.55\n1,0.35,0.25\n")
    # A model one table lacks: nan for that metric, nothing invented.
    rows = {(r["model"], r["time"]): r for r in experiment.read_published_pcc(tmp_path, 0.64)}
    assert [m for m, t in rows if t == 0.1] == ["A", "B", "C"]
    assert (rows["A", 1.0]["pcc_all"], rows["A", 1.0]["pcc_mean"]) == (0.4, 0.35)
    assert np.isnan(rows["B", 0.1]["pcc_mean"]) and np.isnan(rows["C", 0.1]["pcc_all"])
    (tmp_path / "pcc_mean_064.csv").write_text("t,A,B\n0.1,0.5,0.6\n2,0.4,0.3\n")
    with pytest.raises(ValueError, match=r"pcc_all_064\.csv and pcc_mean_064\.csv list different times"):
        experiment.read_published_pcc(tmp_path, 0.64)
    (tmp_path / "pcc_mean_064.csv").write_text("t,A,B\n0.1,0.5\n1,0.4,0.3\n")
    with pytest.raises(ValueError, match=r"pcc_mean_064\.csv: line 2 has 2 cells"):
        experiment.read_published_pcc(tmp_path, 0.64)
    (tmp_path / "pcc_mean_064.csv").write_text("t,A,B\n0.1,0.5,x\n1,0.4,0.3\n")
    with pytest.raises(ValueError, match=r"pcc_mean_064\.csv: not a table of numbers"):
        experiment.read_published_pcc(tmp_path, 0.64)


def test_reference_curves_are_drawn_dashed_in_the_colour_of_the_same_model():
    rows = [{"model": m, "time": t, "pcc_mean": 0.5, "pcc_all": 0.6}
            for m in ("EIGNN", "CAGE") for t in (0.1, 1.0, 10.0)]
    reference = [{"model": m, "time": t, "pcc_mean": 0.4, "pcc_all": 0.45}
                 for m in ("CAGE", "BOTAN") for t in (0.2, 2.0)]
    figure = plot_pcc(rows, reference=reference, reference_label="published, T = 0.64")
    for axes in figure.axes[:2]:
        lines = {line.get_label(): line for line in axes.get_lines()}
        assert set(lines) == {"EIGNN", "CAGE", "CAGE (published, T = 0.64)", "BOTAN (published, T = 0.64)"}
        dashed = {label for label, line in lines.items() if line.get_linestyle() == "--"}
        assert dashed == {"CAGE (published, T = 0.64)", "BOTAN (published, T = 0.64)"}
        assert lines["CAGE"].get_color() == lines["CAGE (published, T = 0.64)"].get_color()
        assert len({line.get_color() for line in lines.values()}) == 3
        # On their own times, not the scored rows' ones.
        np.testing.assert_array_equal(lines["BOTAN (published, T = 0.64)"].get_xdata(), [0.2, 2.0])


# --- evaluate ------------------------------------------------------------------------------


def _brute_force_pcc(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(Pcc(mean) [T], Pcc(all) [T]) of (prediction [T, N], md_prop [T, N], type-A mask [N]) per file."""
    n_times = pairs[0][1].shape[0]
    per_file = np.array([[stats.pearsonr(p[t, a].astype(np.float64), y[t, a].astype(np.float64))[0]
                          for t in range(n_times)] for p, y, a in pairs])
    pooled = [stats.pearsonr(np.concatenate([p[t, a] for p, _, a in pairs]).astype(np.float64),
                             np.concatenate([y[t, a] for _, y, a in pairs]).astype(np.float64))[0]
              for t in range(n_times)]
    return per_file.mean(axis=0), np.array(pooled)


@pytest.mark.slow
def test_evaluate_scores_the_published_predictions_the_files_carry(trained_run, tmp_path, capsys):
    data = tmp_path / "T064"
    data.mkdir()
    sources = sorted(DEFAULT_DATA.glob("*.npz"))[:3]
    stored = []
    for k, source in enumerate(sources):
        models = {"CAGE": _noisy, "SE3": lambda p, _: p, "GlassMLP": lambda p, _: -p}
        if k != 2:
            models["BOTAN"] = _noisy
        stored.append(_with_predictions(source, data / source.name, k, **models))
    out = tmp_path / "out"
    args = ["--workdir", str(trained_run), "--data", str(data), "--out", str(out)]
    evaluate_main.main(args + (["--published", str(PUBLISHED_PCC)] if PUBLISHED_PCC.is_dir() else []))
    printed = capsys.readouterr().out

    rows = metrics.read_pcc_csv(out / "pcc.csv")
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    assert list(by_model) == ["EIGNN", experiment.BASELINE_NAME, "CAGE", "GlassMLP", "SE3"]
    times = [r["time"] for r in by_model["EIGNN"]]
    for model in ("CAGE", "GlassMLP", "SE3"):
        assert [r["time"] for r in by_model[model]] == times
    # Identical and negated labels: the metric's ends, exactly, at every time.
    assert all(r["pcc_mean"] == 1.0 and r["pcc_all"] == 1.0 for r in by_model["SE3"])
    assert all(r["pcc_mean"] == -1.0 and r["pcc_all"] == -1.0 for r in by_model["GlassMLP"])
    mean, pooled = _brute_force_pcc([(a["CAGE"], a["md_prop"], a["types"] == 1) for a in stored])
    np.testing.assert_allclose([r["pcc_mean"] for r in by_model["CAGE"]], mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose([r["pcc_all"] for r in by_model["CAGE"]], pooled, rtol=1e-9, atol=1e-12)
    assert 0.3 < pooled.min() < pooled.max() < 0.99     # noisy, not a copy
    # The model only two files carry: not scored, the file that lacks it named.
    lacking = [line for line in printed.splitlines() if line.startswith("BOTAN: not scored")]
    assert len(lacking) == 1 and sources[2].name in lacking[0] and sources[0].name not in lacking[0]
    assert "CAGE Pcc(all)" in printed and "SE3 Pcc(mean)" in printed
    provenance = json.loads((out / experiment.EVALUATION_PROVENANCE_NAME).read_text())
    assert provenance["published_models_scored"] == ["CAGE", "GlassMLP", "SE3"]

    if PUBLISHED_PCC.is_dir():
        # The published T = 0.64 curves, printed on their own grid, not written to pcc.csv.
        assert "published Pcc at T = 0.64" in printed and "own time grid" in printed
        table = printed[printed.index("published Pcc at T = 0.64"):]
        assert "EIGNN_Cage Pcc(all)" in table and f"{dataset.GLASSBENCH_TIME_GRIDS[0.64][0]:g}" in table
        assert "EIGNN_Cage" not in by_model
        assert provenance["published_reference"]["temperature"] == 0.64

    # A folder without tables of the data's temperature: an error naming the file, nothing written.
    other_tables = tmp_path / "tables"
    other_tables.mkdir()
    for metric in ("all", "mean"):
        (other_tables / f"pcc_{metric}_044.csv").write_text("t,A\n0.13,0.5\n1.3,0.4\n")
    with pytest.raises(SystemExit, match=r"pcc_all_064\.csv: no published Pcc table for T = 0.64"):
        evaluate_main.main(["--workdir", str(trained_run), "--data", str(data), "--out",
                            str(tmp_path / "out2"), "--published", str(other_tables)])
    assert not (tmp_path / "out2").exists()
