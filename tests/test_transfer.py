"""Temperature transfer and all-temperature training: time matching, folders, the whole command."""

import hashlib
import json
import math
import pathlib

import numpy as np
import pytest

from eignn_jax import config as config_lib, dataset, experiment, metrics, transfer
from experiments import transfer as transfer_main
from experiments.common import load_config
from tests.conftest import DEFAULT_DATA


def test_outputs_are_matched_on_a_log_scale_within_the_tolerance():
    # A grid scaled by the ratio of the τ_α: matched one to one in units of τ_α.
    grid = np.array([0.13, 0.4, 1.3, 4.0, 40.0])
    assert transfer.match_outputs(grid, grid * 2.9, 7.8, 7.8 * 2.9) == [0, 1, 2, 3, 4]
    # In absolute time only where a time is within the factor: 0.377 ~ 0.4, 1.16 ~ 1.3,
    # 3.77 ~ 4; 11.6 and 116 have no counterpart.
    assert transfer.match_outputs(grid, grid * 2.9, tolerance=1.25) == [1, 2, 3, None, None]
    assert transfer.match_outputs(grid, [0.15, 3.0, 100.0], tolerance=1.25) == [0, None, None]
    assert transfer.match_outputs(grid, [0.15, 3.0, 100.0], tolerance=3.0) == [0, 3, 4]
    with pytest.raises(ValueError, match="tolerance"):
        transfer.match_outputs(grid, grid, tolerance=0.5)


def _folder(path: pathlib.Path, sources, meta: dict | None, scale: float = 1.0, seed: int = 0) -> pathlib.Path:
    """Copies of ``sources`` in ``path`` with times × ``scale``, split-half labels and a meta.json."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k, source in enumerate(sources):
        with np.load(source) as data:
            arrays = dict(data)
        arrays["times"] = arrays["times"] * scale
        noise = rng.normal(size=arrays["md_prop"].shape) * 0.2 * arrays["md_prop"].std(axis=1, keepdims=True)
        arrays[dataset.KEY_HALF_PROPENSITY] = np.stack([arrays["md_prop"] + noise,
                                                        arrays["md_prop"] - noise]).astype(np.float32)
        np.savez(path / f"sample_{k}.npz", **arrays)
    if meta is not None:
        (path / dataset.META_NAME).write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def two_temperatures(tmp_path_factory):
    root = tmp_path_factory.mktemp("temperatures")
    sources = sorted(DEFAULT_DATA.glob("*.npz"))
    cold = _folder(root / "cold", sources[:3], {"T": 0.64})                 # τ_α from the reference: 7.8
    warm = _folder(root / "warm", sources[3:6], {"T": 0.7, dataset.META_TAU_ALPHA: 3.9}, scale=0.5, seed=1)
    return cold, warm


def test_folders_know_their_temperature_and_tau_alpha(two_temperatures, tmp_path):
    cold, warm = two_temperatures
    folders = transfer.describe_folders([str(cold), str(warm)])
    assert [(f.label, f.temperature, f.tau_alpha) for f in folders] == [("T0.64", 0.64, 7.8), ("T0.7", 0.7, 3.9)]
    unknown = _folder(tmp_path / "unknown", sorted(DEFAULT_DATA.glob("*.npz"))[:1], {"T": 0.9})
    with pytest.raises(ValueError, match=f"{unknown}.*τ_α at T = 0.9 is unknown"):
        transfer.describe_folders([str(unknown)])
    assert transfer.describe_folders([str(unknown)], {0.9: 1.5})[0].tau_alpha == 1.5
    with pytest.raises(ValueError, match="two data folders are at one temperature"):
        transfer.describe_folders([str(cold), str(DEFAULT_DATA)])


def test_several_folders_are_split_each_and_need_equal_numbers_of_times(two_temperatures, tmp_path):
    cold, warm = two_temperatures
    data = config_lib.DataConfig(paths=(str(cold), str(warm)), n_train=2, n_test=1)
    train, test = experiment.split_files(data)
    assert [p.parent for p in train] == [cold, cold, warm, warm] and [p.parent for p in test] == [cold, warm]
    grids = experiment.time_grids(train + test)
    np.testing.assert_allclose(grids[str(warm)], grids[str(cold)] * 0.5)
    short = tmp_path / "short"
    short.mkdir()
    with np.load(train[0]) as source:
        arrays = {k: v[:4] if k in ("md_prop", "md_disp", "times") else v for k, v in source.items()
                  if k != dataset.KEY_HALF_PROPENSITY}
    np.savez(short / "s.npz", **arrays)
    with pytest.raises(ValueError, match="different numbers of time scales"):
        experiment.time_grids(train + [short / "s.npz"])
    with pytest.raises(ValueError, match="not both"):
        config_lib.check(config_lib.ExperimentConfig(data=config_lib.DataConfig(path="a", paths=("b",))))


TINY = ["--set", "model.width=8", "--set", "model.num_layers=1", "--set", "train.epochs=1",
        "--set", "train.lr_decay_epochs=[]", "--set", "data.n_train=2", "--set", "data.n_test=1"]


@pytest.mark.slow
def test_transfer_matrix_end_to_end(two_temperatures, tmp_path, capsys):
    cold, warm = two_temperatures
    digest = lambda: {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted([*cold.iterdir(), *warm.iterdir()])}
    before = digest()
    out = tmp_path / "transfer"
    transfer_main.main([str(cold), str(warm), "--out", str(out), *TINY])
    printed = capsys.readouterr().out
    assert digest() == before     # inputs untouched
    rows = list(csv_rows(out / transfer.CSV_NAME))
    assert {(r["train"], r["test"]) for r in rows} == {(a, b) for a in ("T0.64", "T0.7", "all") for b in ("T0.64", "T0.7")}
    assert len(rows) == 3 * 2 * 8
    for name in (transfer.PLOT_NAME, transfer.MATRIX_NAME):
        assert (out / name).stat().st_size > 10_000
    # The diagonal is each run's own evaluation on its own test split.
    for label in ("T0.64", "T0.7"):
        own = {r["time"]: r for r in metrics.read_pcc_csv(out / f"{label}_s0" / "pcc.csv")
               if r["model"] == f"EIGNN@{label}"}
        for r in rows:
            if r["train"] == label and r["test"] == label:
                assert float(r["pcc_all"]) == pytest.approx(float(own[float(r["test_time"])]["pcc_all"]), abs=1e-9)
                assert float(r["model_time"]) == float(r["test_time"])
    # The grids are τ_α-scaled copies: every output matches in units of τ_α ...
    across = [r for r in rows if r["train"] == "T0.64" and r["test"] == "T0.7"]
    np.testing.assert_allclose([float(r["model_time"]) for r in across],
                               [float(r["test_time"]) * 2 for r in across], rtol=1e-6)
    # ... and the all-temperature model is scored at each folder's own grid, row for row,
    # equal to its own per-folder evaluation.
    for label, folder in (("T0.64", cold), ("T0.7", warm)):
        own = {r["time"]: r for r in metrics.read_pcc_csv(out / "all_s0" / f"eval_{folder.name}" / "pcc.csv")
               if r["model"] == "EIGNN@all"}
        for r in rows:
            if r["train"] == "all" and r["test"] == label:
                assert float(r["model_time"]) == float(r["test_time"])
                assert float(r["pcc_all"]) == pytest.approx(float(own[float(r["test_time"])]["pcc_all"]), abs=1e-9)
    # The noise ceiling of each test set, beside every Pcc.
    assert all(math.isfinite(float(r["ceiling_all"])) for r in rows)
    assert "tested at T0.7, pcc_all" in printed and "noise ceiling" in printed

    # A rerun trains nothing and writes the same table; absolute-time matching leaves the
    # times without a counterpart out.
    transfer_main.main([str(cold), str(warm), "--out", str(out), *TINY, "--match", "time"])
    printed = capsys.readouterr().out
    assert printed.count("finished, skipped") == 3
    rows = list(csv_rows(out / transfer.CSV_NAME))
    across = [r for r in rows if r["train"] == "T0.64" and r["test"] == "T0.7"]
    matched = [r for r in across if r["model_time"] != "nan"]
    assert 0 < len(matched) < len(across)
    for r in matched:
        assert 1 / 1.25 <= float(r["model_time"]) / float(r["test_time"]) <= 1.25
    assert all(r["pcc_all"] == "nan" for r in across if r["model_time"] == "nan")


def csv_rows(path):
    import csv
    with open(path, newline="") as handle:
        yield from csv.DictReader(handle)


def test_a_config_with_one_folder_and_several_is_refused_on_the_command_line():
    with pytest.raises(SystemExit, match="not both"):
        load_config("default", ['data.paths=["a", "b"]'])
