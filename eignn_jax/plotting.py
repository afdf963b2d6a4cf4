"""Figures of evaluation results and predictions.

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas
rather than through pyplot, so no display is needed and the process-wide
pyplot backend and figure registry are left untouched. Each function returns
its Figure and, given a path, also saves it as a PNG (atomically).
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import EllipseCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from eignn_jax.files import atomic_write
from eignn_jax.physics import periodic

# Drawn diameters (σ) of A and B particles in the maps: 0.6 σ_AA and 0.6 σ_BB of the KA
# mixture, so that the particles of a 2 σ slab, seen through its thickness, overlap little.
_DIAMETER_A, _DIAMETER_B = 0.6, 0.6 * 0.88


def _new_figure(width: float, height: float, layout: str | None = None) -> Figure:
    figure = Figure(figsize=(width, height), dpi=120, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _save_png(figure: Figure, path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write(path, buffer.getvalue())


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


def plot_pcc(rows: Iterable[dict], path=None, title: str | None = None) -> Figure:
    """Plot Pearson correlation against time, one colour per model, and save a PNG.

    rows: dicts with model (str), time (float, LJ time units, > 0 for the log
    axis), pcc_mean and pcc_all (float), optionally pcc_all_std (spread over runs,
    drawn as a band). Solid lines show pcc_all (all configurations pooled),
    dashed lines pcc_mean (mean over configurations).
    path: output PNG path (None: not saved).  title: optional figure title.
    """
    grouped = _rows_by_model(rows)
    figure = _new_figure(6.0, 4.2)
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
    if path is not None:
        _save_png(figure, path)
    return figure


def z_scores(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """values [N] or [N, T] (per column) minus their mean over the rows ``mask`` [N] bool
    selects (all if None), over their standard deviation there (left unscaled where it is 0)."""
    values = np.asarray(values, dtype=np.float64)
    selected = values if mask is None else values[np.asarray(mask, dtype=bool)]
    std = selected.std(axis=0)
    return (values - selected.mean(axis=0)) / np.where(std > 0, std, 1.0)


def plot_propensity_scatter(true: np.ndarray, predicted: np.ndarray, times: Sequence[float],
                            pcc: Sequence[float], path=None, title: str | None = None) -> Figure:
    """Predicted against true propensity, one hexbin panel per time scale.

    true: [M, T] propensities (σ) of the scored particles, pooled over configurations.
    predicted: [M, T] the model's predictions for them (any affine scale: σ or standardised).
    times: [T] (τ).  pcc: [T] Pearson correlations shown in the panel titles (Pcc(all) of
      the same particles: standardising does not change it).
    Both axes are z-scores per time scale over the M particles, so a perfect prediction lies
    on the dashed diagonal. Colour: particles per hexagon (log scale, shared by the panels).
    path: output PNG (None: not saved).  title: figure title.
    Raises ValueError if the shapes disagree.
    """
    true, predicted = np.asarray(true), np.asarray(predicted)
    if true.shape != predicted.shape or true.ndim != 2 or not true.shape[1] == len(times) == len(pcc):
        raise ValueError(f"true {true.shape} and predicted {predicted.shape} must both be [M, T] "
                         f"with T = {len(times)} times and {len(pcc)} Pcc values")
    x, y = z_scores(true), z_scores(predicted)
    limit = float(np.ceil(max(np.percentile(np.abs(x), 99.5), np.percentile(np.abs(y), 99.5), 1.0)))
    columns = min(4, len(times))
    rows = math.ceil(len(times) / columns)
    figure = _new_figure(2.9 * columns + 1.2, 3.0 * rows + 0.8, layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False)
    hexes = []
    for k, axes in enumerate(panels.flat):
        if k >= len(times):
            axes.remove()
            continue
        hexes.append(axes.hexbin(x[:, k], y[:, k], gridsize=30, extent=(-limit, limit, -limit, limit),
                                 mincnt=1, cmap="viridis", norm=LogNorm(), linewidths=0))
        axes.plot([-limit, limit], [-limit, limit], color="0.4", linestyle="--", linewidth=0.8)
        axes.set_xlim(-limit, limit)
        axes.set_ylim(-limit, limit)
        axes.set_aspect("equal")
        axes.set_title(f"t = {times[k]:g} τ, Pcc = {pcc[k]:.3f}", fontsize="medium")
        # Labels on the outer panels only (the panels share their limits): x below the lowest
        # panel of each column, which may be in the row above the last, y on the left column.
        if k + columns < len(times):
            axes.tick_params(labelbottom=False)
        else:
            axes.set_xlabel("true propensity (z-score)")
        if k % columns:
            axes.tick_params(labelleft=False)
        else:
            axes.set_ylabel("predicted (z-score)")
    top = max(float(h.get_array().max()) for h in hexes)
    for h in hexes:
        h.set_norm(LogNorm(vmin=1, vmax=max(top, 2.0)))
    figure.colorbar(hexes[-1], ax=list(panels.flat[: len(times)]), label="particles per hexagon",
                    shrink=0.9)
    if title:
        figure.suptitle(title)
    if path is not None:
        _save_png(figure, path)
    return figure


def plot_propensity_map(positions: np.ndarray, box: np.ndarray, type_a: np.ndarray,
                        panels: Sequence[tuple[str, np.ndarray, str]], slab: float = 1.0,
                        path=None, title: str | None = None) -> Figure:
    """Particles of a slab |z| < slab of the box, seen along z, coloured by propensity.

    positions: [N, 3] (σ, any periodic image; wrapped into [−L/2, L/2)).  box: [3] side
      lengths (σ).  type_a: [N] bool: A particles are coloured, B particles drawn grey.
    panels: side by side, each (title, values [N] of which the A ones are shown, colour bar
      label). All panels share one colour scale (2nd to 98th percentile of the shown values),
      so they compare directly.
    slab: half thickness (σ).  path: output PNG (None: not saved).
    title: start of the figure title (the slab and the colouring are said after it).
    Discs are drawn at 0.6 times the A and B diameters (1 and 0.88 σ), those nearest z = 0 on top.
    Raises ValueError if no A particle lies in the slab or the shapes disagree.
    """
    box = periodic.as_box(box)
    wrapped = periodic.wrap(periodic.as_positions(positions), box)
    type_a = np.asarray(type_a, dtype=bool)
    if type_a.shape != (len(wrapped),) or any(np.shape(v) != type_a.shape for _, v, _ in panels):
        raise ValueError(f"type_a and every panel's values must be [N] with N = {len(wrapped)}")
    inside = np.abs(wrapped[:, 2]) < slab
    if not (inside & type_a).any():
        raise ValueError(f"no A particle within |z| < {slab} σ")
    order = np.flatnonzero(inside)[np.argsort(-np.abs(wrapped[inside, 2]))]   # far from z = 0 first
    shown_a, shown_b = order[type_a[order]], order[~type_a[order]]
    pooled = np.concatenate([np.asarray(v, dtype=np.float64)[shown_a] for _, v, _ in panels])
    low, high = np.percentile(pooled, [2, 98])
    norm = Normalize(vmin=low, vmax=high if high > low else low + 1.0)

    figure = _new_figure(4.6 * len(panels), 4.4, layout="constrained")
    for k, (panel_title, values, label) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        for which, diameter in ((shown_b, _DIAMETER_B), (shown_a, _DIAMETER_A)):
            discs = EllipseCollection(np.full(len(which), diameter), np.full(len(which), diameter),
                                      np.zeros(len(which)), units="xy", offsets=wrapped[which, :2],
                                      offset_transform=axes.transData, edgecolors="0.2", linewidths=0.3)
            if which is shown_a:
                discs.set_array(np.asarray(values, dtype=np.float64)[which])
                discs.set_cmap("viridis")
                discs.set_norm(norm)
                coloured = discs
            else:
                discs.set_facecolor("0.85")
            axes.add_collection(discs)
        axes.set_xlim(-box[0] / 2, box[0] / 2)
        axes.set_ylim(-box[1] / 2, box[1] / 2)
        axes.set_aspect("equal")
        axes.set_xlabel("x (σ)")
        axes.set_ylabel("y (σ)")
        axes.set_title(panel_title, fontsize="medium")
        figure.colorbar(coloured, ax=axes, label=label, shrink=0.85)
    where = f"slab |z| < {slab:g} σ, type A coloured, type B grey"
    figure.suptitle(f"{title}: {where}" if title else where, fontsize="medium")
    if path is not None:
        _save_png(figure, path)
    return figure
