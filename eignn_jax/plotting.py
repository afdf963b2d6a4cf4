"""Figures of evaluation results.

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas
rather than through pyplot, so no display is needed and the process-wide
pyplot backend and figure registry are left untouched.
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Iterable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eignn_jax.files import atomic_write


def _rows_by_model(rows: Iterable[dict]) -> dict:
    """Group Pcc rows per model, sorted by time.

    rows: dicts with model, time, pcc_mean, pcc_all.
    Returns {model: (time [T], pcc_all [T], pcc_mean [T])} as float64 arrays,
    models in order of first appearance.
    """
    grouped = defaultdict(list)
    for row in rows:
        grouped[str(row["model"])].append(
            (float(row["time"]), float(row["pcc_all"]), float(row["pcc_mean"]))
        )
    result = {}
    for model, values in grouped.items():
        values = np.array(sorted(values), dtype=np.float64).reshape(-1, 3)
        result[model] = (values[:, 0], values[:, 1], values[:, 2])
    return result


def _spreads_by_model(rows: Iterable[dict]) -> dict:
    """{model: pcc_all_std [T] sorted by time} for the models whose rows carry one."""
    grouped = defaultdict(list)
    for row in rows:
        if "pcc_all_std" in row:
            grouped[str(row["model"])].append((float(row["time"]), float(row["pcc_all_std"])))
    return {model: np.array(sorted(values))[:, 1] for model, values in grouped.items()}


def plot_pcc(rows: Iterable[dict], path, title: str | None = None) -> None:
    """Plot Pearson correlation against time, one colour per model, and save a PNG.

    rows: dicts with model (str), time (float, LJ time units, > 0 for the log
    axis), pcc_mean and pcc_all (float), optionally pcc_all_std (spread over runs,
    drawn as a band). Solid lines show pcc_all (all configurations pooled),
    dashed lines pcc_mean (mean over configurations).
    path: output PNG path; written atomically.  title: optional figure title.
    """
    grouped = _rows_by_model(rows)
    figure = Figure(figsize=(6.0, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    colours = [f"C{k % 10}" for k in range(len(grouped))]
    spreads = _spreads_by_model(rows)
    for colour, (model, (time, pcc_all, pcc_mean)) in zip(colours, grouped.items()):
        axes.plot(time, pcc_all, color=colour, linestyle="-", marker="o",
                  markersize=3, label=f"{model} (all)")
        if model in spreads:   # ± one standard deviation over runs (seeds)
            axes.fill_between(time, pcc_all - spreads[model], pcc_all + spreads[model],
                              color=colour, alpha=0.2, linewidth=0)
        axes.plot(time, pcc_mean, color=colour, linestyle="--", marker="o",
                  markersize=3, fillstyle="none", label=f"{model} (mean)")
    axes.set_xscale("log")
    axes.set_xlabel("t (LJ time units)")
    axes.set_ylabel("Pearson correlation")
    if title:
        axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)
    if grouped:
        axes.legend(fontsize="small", loc="best")
    figure.tight_layout()

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write(path, buffer.getvalue())
