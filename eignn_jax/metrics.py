"""Evaluation of per-particle predictions against dynamical propensities.

Scores are Pearson correlations per time scale, computed over the particles
selected by a mask (type A in the usual protocol). Configurations have their
own particle count N_k; every per-configuration quantity is passed as a list.

Shapes: predictions / targets are lists of [N_k, T] float arrays, masks are
lists of [N_k] bool, one-dimensional features are lists of [N_k] float.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Iterable, Sequence

import numpy as np

from eignn_jax import files

PCC_CSV_COLUMNS = ("model", "time", "pcc_mean", "pcc_all")
NOISE_CEILING = "noise ceiling"
"""Name of the rows of :func:`split_half_ceiling` in Pcc tables, CSVs and plots."""

BASELINE_NAME = "|d| line"
"""Name of the rows of the |d| baseline (:func:`fit_linear_baseline`) in Pcc tables, CSVs and plots."""


def pearson(x, y) -> float:
    """Pearson correlation coefficient of two 1-D samples.

    x, y: [M] float (any float dtype; accumulated in float64).
    Returns a float in [-1, 1], or nan if either sample is constant or M < 2,
    where the correlation is undefined.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.shape} vs {y.shape}")
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    # Centring first avoids the cancellation of the textbook Σxy - n x̄ȳ form.
    dx = x - x.mean()
    dy = y - y.mean()
    denominator = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    if denominator == 0.0:
        return math.nan
    # Round-off can push |r| a hair past 1 for perfectly correlated samples.
    return float(np.clip(np.dot(dx, dy) / denominator, -1.0, 1.0))


def _check_lists(predictions, targets, masks):
    """Validate matching per-configuration lists; return them as float64 / bool arrays."""
    if not (len(predictions) == len(targets) == len(masks)):
        raise ValueError(
            f"need one entry per configuration, got {len(predictions)} predictions, "
            f"{len(targets)} targets, {len(masks)} masks"
        )
    if len(predictions) == 0:
        raise ValueError("no configurations given")
    preds, targs, msks = [], [], []
    for k, (p, t, m) in enumerate(zip(predictions, targets, masks)):
        p = np.asarray(p, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        m = np.asarray(m, dtype=bool)
        if p.ndim == 1:
            p = p[:, None]
        if t.ndim == 1:
            t = t[:, None]
        if p.shape != t.shape or m.shape != (p.shape[0],):
            raise ValueError(
                f"configuration {k}: prediction {p.shape}, target {t.shape} and "
                f"mask {m.shape} do not match"
            )
        preds.append(p)
        targs.append(t)
        msks.append(m)
    n_times = {p.shape[1] for p in preds}
    if len(n_times) != 1:
        raise ValueError(f"configurations disagree on the number of time scales: {n_times}")
    return preds, targs, msks


def pcc_table(predictions, targets, masks) -> dict:
    """Pearson correlations per time scale over masked particles.

    predictions, targets: lists over configurations of [N_k, T] float.
    masks: list of [N_k] bool selecting the scored particles.

    Returns a dict with
      'pcc_mean': [T] float64, mean over configurations of the per-configuration
                  correlation (configurations where it is nan are skipped; nan
                  if all are);
      'pcc_all':  [T] float64, correlation of all masked particles of all
                  configurations pooled together.
    """
    preds, targs, msks = _check_lists(predictions, targets, masks)
    n_times = preds[0].shape[1]
    pooled_pred = np.concatenate([p[m] for p, m in zip(preds, msks)])
    pooled_targ = np.concatenate([t[m] for t, m in zip(targs, msks)])

    pcc_mean = np.full(n_times, np.nan)
    pcc_all = np.full(n_times, np.nan)
    for t in range(n_times):
        per_config = np.array(
            [pearson(p[m, t], y[m, t]) for p, y, m in zip(preds, targs, msks)]
        )
        finite = np.isfinite(per_config)
        if finite.any():
            pcc_mean[t] = per_config[finite].mean()
        pcc_all[t] = pearson(pooled_pred[:, t], pooled_targ[:, t])
    return {"pcc_mean": pcc_mean, "pcc_all": pcc_all}


def spearman_brown(half_correlation):
    """Reliability of the mean of all R runs from the correlation r of two halves of R/2 runs
    each: 2r / (1 + r) (Spearman–Brown prophecy formula for doubling the number of runs).

    half_correlation: float or array; values ≤ 0 (halves that do not agree) give nan.
    """
    r = np.asarray(half_correlation, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(r > 0, 2 * r / (1 + r), np.nan)


def split_half_ceiling(halves, masks) -> dict:
    """Highest Pcc any model can reach against labels averaged over R noisy runs.

    halves: list over configurations of [2, T, N_k] float, the propensity of each half of
      the iso-configurational runs (``md_prop_half``); masks: list of [N_k] bool.
    The labels are the true propensity plus run-to-run noise. With ρ the Spearman–Brown
    reliability of the R-run mean (:func:`spearman_brown` of the correlation of the two
    halves), the correlation of the labels with the noise-free propensity is √ρ: a model
    that predicted the noise-free propensity exactly would score Pcc = √ρ, and no model
    scores higher on average (classical test theory; the "noise ceiling").
    Returns {'pcc_mean': [T], 'pcc_all': [T]} like :func:`pcc_table`: the ceiling of each
    configuration averaged, and the ceiling of all particles pooled. nan where the halves
    do not correlate positively.
    """
    first = [np.asarray(h)[0].T for h in halves]
    second = [np.asarray(h)[1].T for h in halves]
    preds, targs, msks = _check_lists(first, second, masks)
    per_config = np.array([[pearson(a[m, t], b[m, t]) for t in range(a.shape[1])]
                           for a, b, m in zip(preds, targs, msks)])        # [K, T]
    ceilings = np.sqrt(spearman_brown(per_config))
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(ceilings)
        pcc_mean = np.where(finite.any(0), np.nansum(ceilings, 0) / np.maximum(finite.sum(0), 1), np.nan)
    pooled = pcc_table(preds, targs, msks)["pcc_all"]
    return {"pcc_mean": pcc_mean, "pcc_all": np.sqrt(spearman_brown(pooled))}


def fit_linear_baseline(features, targets, masks):
    """Least-squares line y_t ≈ a_t x + b_t per time scale, over masked particles.

    features: list of [N_k] float, a scalar per-particle descriptor (e.g. |d_i|, σ).
    targets: list of [N_k, T] float.  masks: list of [N_k] bool.
    Returns (slope [T] float64, intercept [T] float64).
    Raises ValueError if the pooled masked feature is constant (no line fits).
    """
    _, targs, msks = _check_lists(targets, targets, masks)
    feats = [np.asarray(f, dtype=np.float64).reshape(-1) for f in features]
    if len(feats) != len(targs):
        raise ValueError(f"{len(feats)} feature arrays for {len(targs)} configurations")
    for k, (f, t) in enumerate(zip(feats, targs)):
        if f.shape[0] != t.shape[0]:
            raise ValueError(f"configuration {k}: {f.shape[0]} features for {t.shape[0]} particles")
    x = np.concatenate([f[m] for f, m in zip(feats, msks)])
    y = np.concatenate([t[m] for t, m in zip(targs, msks)])
    if x.size < 2 or np.all(x == x[0]):
        raise ValueError("the masked feature is constant; a line cannot be fitted")
    # Closed-form simple regression on centred data: same minimiser as a
    # degree-1 polynomial fit, vectorised over time scales.
    dx = x - x.mean()
    slope = dx @ (y - y.mean(axis=0)) / (dx @ dx)
    intercept = y.mean(axis=0) - slope * x.mean()
    return slope, intercept


def predict_linear_baseline(features, slope, intercept):
    """Evaluate the fitted lines on every particle.

    features: list of [N_k] float.  slope, intercept: [T] float.
    Returns a list of [N_k, T] float64 predictions.
    """
    slope = np.asarray(slope, dtype=np.float64).reshape(-1)
    intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
    return [
        np.asarray(f, dtype=np.float64).reshape(-1, 1) * slope + intercept
        for f in features
    ]


def write_pcc_csv(path, rows: Iterable[dict]) -> None:
    """Write Pcc rows to a CSV file with header ``model,time,pcc_mean,pcc_all``.

    rows: dicts with keys model (str), time (float, LJ time units),
    pcc_mean and pcc_all (float, may be nan). Floats are written with full
    precision (repr) so a round trip is exact. The write is atomic.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PCC_CSV_COLUMNS)
    for row in rows:
        missing = [c for c in PCC_CSV_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"row {row!r} lacks {missing}")
        writer.writerow(
            [str(row["model"])] + [repr(float(row[c])) for c in PCC_CSV_COLUMNS[1:]]
        )
    files.atomic_write(path, buffer.getvalue())


def read_pcc_csv(path) -> list[dict]:
    """Read a file written by ``write_pcc_csv``.

    Returns a list of dicts: model (str), time, pcc_mean, pcc_all (float).
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != PCC_CSV_COLUMNS:
            raise ValueError(
                f"{path}: expected header {','.join(PCC_CSV_COLUMNS)}, got {reader.fieldnames}"
            )
        return [
            {
                "model": row["model"],
                "time": float(row["time"]),
                "pcc_mean": float(row["pcc_mean"]),
                "pcc_all": float(row["pcc_all"]),
            }
            for row in reader
        ]


def summarise_runs(tables: Sequence[Sequence[dict]]) -> list[dict]:
    """Mean and spread over runs (e.g. seeds) of each model's Pcc rows.

    tables: one list of Pcc rows (model, time, pcc_mean, pcc_all) per run. Rows of the
    same model and time across runs are summarised together.
    Returns rows with model, time, runs (count), pcc_mean, pcc_all (means over runs) and
    pcc_mean_std, pcc_all_std (sample standard deviations, ddof = 1; 0 for one run).
    """
    grouped: dict[tuple, list[dict]] = {}
    for rows in tables:
        for row in rows:
            grouped.setdefault((row["model"], float(row["time"])), []).append(row)
    summary = []
    for (model, time), rows in grouped.items():
        entry = {"model": model, "time": time, "runs": len(rows)}
        for metric in ("pcc_mean", "pcc_all"):
            values = np.array([r[metric] for r in rows], dtype=np.float64)
            entry[metric] = float(values.mean())
            entry[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


SEED_CSV_COLUMNS = ("model", "time", "runs", "pcc_mean", "pcc_mean_std", "pcc_all", "pcc_all_std")


def write_seed_csv(path, rows: Iterable[dict]) -> None:
    """Write :func:`summarise_runs` rows to a CSV file with header
    ``model,time,runs,pcc_mean,pcc_mean_std,pcc_all,pcc_all_std`` (means and sample
    standard deviations over runs; time in LJ time units). The write is atomic.
    Raises ValueError naming the columns a row lacks.
    """
    lines = [",".join(SEED_CSV_COLUMNS)]
    for row in rows:
        missing = [c for c in SEED_CSV_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"row {row!r} lacks {missing}")
        lines.append(",".join(str(row[c]) for c in SEED_CSV_COLUMNS))
    files.atomic_write(path, "\n".join(lines) + "\n")


__all__ = (
    "summarise_runs",
    "write_seed_csv",
    "pearson",
    "pcc_table",
    "NOISE_CEILING",
    "spearman_brown",
    "split_half_ceiling",
    "BASELINE_NAME",
    "fit_linear_baseline",
    "predict_linear_baseline",
    "write_pcc_csv",
    "read_pcc_csv",
)
