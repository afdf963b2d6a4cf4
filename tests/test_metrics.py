"""Pearson scores, the linear baseline, the CSV format and the Pcc plot."""

import math

import numpy as np
import pytest
from scipy.stats import pearsonr

from eignn_jax.metrics import (
    fit_linear_baseline,
    pcc_table,
    pearson,
    predict_linear_baseline,
    read_pcc_csv,
    spearman_brown,
    split_half_ceiling,
    write_pcc_csv,
)
from eignn_jax.plotting import plot_pcc


def hand_pearson(x, y):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def random_dataset(rng, sizes=(50, 80, 65), n_times=4):
    """Correlated predictions / targets with type-A masks of varying particle counts."""
    predictions, targets, masks = [], [], []
    for n in sizes:
        target = rng.normal(size=(n, n_times))
        prediction = 0.6 * target + rng.normal(size=(n, n_times)) + rng.normal()
        mask = rng.uniform(size=n) < 0.8
        predictions.append(prediction.astype(np.float32))
        targets.append(target)
        masks.append(mask)
    return predictions, targets, masks


def test_pearson_matches_scipy_and_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    y = 0.3 * x + rng.normal(size=500) + 10.0
    assert pearson(x, y) == pytest.approx(pearsonr(x, y)[0], abs=1e-10)
    assert pearson(x, y) == pytest.approx(hand_pearson(x, y), abs=1e-10)
    assert pearson(x, x) == pytest.approx(1.0, abs=1e-12)
    assert pearson(x, -2 * x + 1) == pytest.approx(-1.0, abs=1e-12)


def test_pearson_float32_input_accumulates_in_float64():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=100_000) + 1000.0).astype(np.float32)
    y = (x - 1000.0) * 0.5 + rng.normal(size=100_000).astype(np.float32)
    expected = pearsonr(x.astype(np.float64), y.astype(np.float64))[0]
    assert pearson(x, y) == pytest.approx(expected, abs=1e-10)


def test_pearson_constant_is_nan():
    assert math.isnan(pearson(np.ones(10), np.arange(10.0)))
    assert math.isnan(pearson(np.arange(10.0), np.full(10, 3.0)))
    assert math.isnan(pearson([1.0], [2.0]))


def test_pcc_table_matches_hand_computation():
    rng = np.random.default_rng(2)
    predictions, targets, masks = random_dataset(rng)
    table = pcc_table(predictions, targets, masks)
    assert table["pcc_mean"].shape == (4,) and table["pcc_all"].shape == (4,)
    for t in range(4):
        per_config = [
            hand_pearson(p[m, t], y[m, t]) for p, y, m in zip(predictions, targets, masks)
        ]
        assert table["pcc_mean"][t] == pytest.approx(np.mean(per_config), abs=1e-10)
        pooled_p = np.concatenate([p[m, t] for p, m in zip(predictions, masks)])
        pooled_y = np.concatenate([y[m, t] for y, m in zip(targets, masks)])
        assert table["pcc_all"][t] == pytest.approx(pearsonr(pooled_p, pooled_y)[0], abs=1e-10)
    # Offsets differ between configurations, so pooling changes the score.
    assert not np.allclose(table["pcc_mean"], table["pcc_all"])


def test_pcc_table_honours_masks():
    rng = np.random.default_rng(3)
    predictions, targets, masks = random_dataset(rng)
    before = pcc_table(predictions, targets, masks)
    altered_p = [p.copy() for p in predictions]
    altered_y = [y.copy() for y in targets]
    for p, y, m in zip(altered_p, altered_y, masks):
        p[~m] = rng.normal(scale=100.0, size=p[~m].shape)
        y[~m] = rng.normal(scale=100.0, size=y[~m].shape)
    after = pcc_table(altered_p, altered_y, masks)
    np.testing.assert_array_equal(before["pcc_mean"], after["pcc_mean"])
    np.testing.assert_array_equal(before["pcc_all"], after["pcc_all"])
    # The unmasked entries do matter when the mask admits them.
    everyone = [np.ones_like(m) for m in masks]
    assert not np.allclose(
        pcc_table(altered_p, altered_y, everyone)["pcc_all"], before["pcc_all"]
    )


def test_pcc_mean_skips_undefined_configurations():
    rng = np.random.default_rng(7)
    predictions, targets, masks = random_dataset(rng)
    predictions[1] = np.zeros_like(predictions[1])  # constant: Pearson undefined
    table = pcc_table(predictions, targets, masks)
    for t in range(4):
        defined = [pearson(p[m, t], y[m, t]) for p, y, m in
                   zip([predictions[0], predictions[2]], [targets[0], targets[2]], [masks[0], masks[2]])]
        assert table["pcc_mean"][t] == pytest.approx(np.mean(defined), abs=1e-12)
        assert np.isfinite(table["pcc_all"][t])


def test_pcc_table_rejects_mismatched_inputs():
    rng = np.random.default_rng(4)
    predictions, targets, masks = random_dataset(rng)
    with pytest.raises(ValueError):
        pcc_table(predictions[:2], targets, masks)
    with pytest.raises(ValueError):
        pcc_table([predictions[0][:, :2]] + predictions[1:], targets, masks)


def test_linear_baseline_equals_polyfit():
    rng = np.random.default_rng(5)
    _, targets, masks = random_dataset(rng)
    features = [rng.uniform(0.0, 0.5, size=len(m)) for m in masks]
    targets = [y + 3.0 * f[:, None] for y, f in zip(targets, features)]
    slope, intercept = fit_linear_baseline(features, targets, masks)
    assert slope.shape == (4,) and intercept.shape == (4,)

    x = np.concatenate([f[m] for f, m in zip(features, masks)])
    for t in range(4):
        y = np.concatenate([y[m, t] for y, m in zip(targets, masks)])
        expected_slope, expected_intercept = np.polyfit(x, y, 1)
        assert slope[t] == pytest.approx(expected_slope, abs=1e-10)
        assert intercept[t] == pytest.approx(expected_intercept, abs=1e-10)

    predicted = predict_linear_baseline(features, slope, intercept)
    assert [p.shape for p in predicted] == [y.shape for y in targets]
    np.testing.assert_allclose(
        predicted[1][:, 2], slope[2] * features[1] + intercept[2], rtol=1e-12
    )


def test_linear_baseline_honours_masks_and_rejects_constant():
    rng = np.random.default_rng(6)
    _, targets, masks = random_dataset(rng)
    features = [rng.uniform(size=len(m)) for m in masks]
    fitted = fit_linear_baseline(features, targets, masks)
    perturbed = [y.copy() for y in targets]
    for y, m in zip(perturbed, masks):
        y[~m] += 50.0
    refitted = fit_linear_baseline(features, perturbed, masks)
    np.testing.assert_array_equal(fitted[0], refitted[0])
    np.testing.assert_array_equal(fitted[1], refitted[1])
    with pytest.raises(ValueError):
        fit_linear_baseline([np.ones(len(m)) for m in masks], targets, masks)


def test_csv_round_trip(tmp_path):
    rows = [
        {"model": "eignn", "time": 0.1, "pcc_mean": 0.123456789012345, "pcc_all": 0.2},
        {"model": "eignn", "time": 1e4, "pcc_mean": 0.7, "pcc_all": 0.71},
        {"model": "baseline, |d|", "time": 3.0, "pcc_mean": float("nan"), "pcc_all": -0.05},
    ]
    path = tmp_path / "pcc.csv"
    write_pcc_csv(path, rows)
    assert path.read_text().splitlines()[0] == "model,time,pcc_mean,pcc_all"
    back = read_pcc_csv(path)
    assert len(back) == len(rows)
    for original, read in zip(rows, back):
        assert read["model"] == original["model"]
        for key in ("time", "pcc_mean", "pcc_all"):
            if math.isnan(original[key]):
                assert math.isnan(read[key])
            else:
                assert read[key] == original[key]
    # No temporary files are left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["pcc.csv"]

    # Overwriting replaces the content.
    write_pcc_csv(path, rows[:1])
    assert len(read_pcc_csv(path)) == 1


def test_plot_pcc_writes_png(tmp_path):
    times = [0.5, 5.0, 50.0, 500.0]
    rows = [
        {"model": model, "time": t, "pcc_mean": base + 0.1 * k, "pcc_all": base + 0.1 * k + 0.02}
        for model, base in (("eignn", 0.4), ("baseline", 0.2))
        for k, t in enumerate(times)
    ]
    path = tmp_path / "pcc.png"
    plot_pcc(rows, path, title="KA T=0.64")
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pcc.png"]


# --- the split-half noise ceiling ------------------------------------------------------------


def _noisy_runs(rng, n_configs=3, n=6000, runs=8, noise=(0.5, 1.0, 2.0)):
    """Per configuration: the noise-free propensity [N, T] and R noisy runs [R, T, N] of it."""
    truths, run_sets = [], []
    for _ in range(n_configs):
        truth = rng.lognormal(size=(n, len(noise)))
        run_sets.append(truth.T[None] + rng.normal(size=(runs, len(noise), n)) * np.array(noise)[None, :, None])
        truths.append(truth)
    return truths, run_sets


def test_noise_ceiling_is_the_score_of_the_noise_free_propensity():
    rng = np.random.default_rng(3)
    truths, run_sets = _noisy_runs(rng)
    masks = [rng.uniform(size=t.shape[0]) < 0.8 for t in truths]
    labels = [r.mean(axis=0).T for r in run_sets]                          # md_prop [N, T]
    halves = [np.stack([r[:4].mean(0), r[4:].mean(0)]) for r in run_sets]   # md_prop_half [2, T, N]
    ceiling = split_half_ceiling(halves, masks)
    perfect = pcc_table(truths, labels, masks)
    # A model that knew the noise-free propensity scores the ceiling (sampling error ~0.01) ...
    np.testing.assert_allclose(ceiling["pcc_all"], perfect["pcc_all"], atol=0.015)
    np.testing.assert_allclose(ceiling["pcc_mean"], perfect["pcc_mean"], atol=0.015)
    # ... which falls as the runs get noisier, and a partly informed model stays below it.
    assert np.all(np.diff(ceiling["pcc_all"]) < 0) and ceiling["pcc_all"][0] < 1
    partial = pcc_table([t + rng.normal(size=t.shape) for t in truths], labels, masks)
    assert np.all(partial["pcc_all"] < ceiling["pcc_all"])
    # By hand: √(2r / (1 + r)) of the halves' correlation over the pooled masked particles.
    r = [pearsonr(np.concatenate([h[0, t][m] for h, m in zip(halves, masks)]),
                  np.concatenate([h[1, t][m] for h, m in zip(halves, masks)]))[0] for t in range(3)]
    np.testing.assert_allclose(ceiling["pcc_all"], np.sqrt(2 * np.array(r) / (1 + np.array(r))), rtol=1e-12)
    np.testing.assert_allclose(spearman_brown([0.5, 1.0]), [2 / 3, 1.0])


def test_noise_ceiling_is_nan_where_the_halves_do_not_agree():
    rng = np.random.default_rng(4)
    halves = [rng.normal(size=(2, 2, 500))]       # pure noise: the halves are uncorrelated
    halves[0][1, 1] = -halves[0][0, 1]             # anti-correlated halves at the second time
    ceiling = split_half_ceiling(halves, [np.ones(500, bool)])
    assert np.isnan(ceiling["pcc_all"][1]) and np.isnan(ceiling["pcc_mean"][1])
    assert np.isnan(spearman_brown(-0.2)) and np.isnan(spearman_brown(0.0))
