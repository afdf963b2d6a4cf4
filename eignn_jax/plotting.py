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
from eignn_jax.metrics import BASELINE_NAME, NOISE_CEILING
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


def _spreads_by_model(rows: Iterable[dict], metric: str) -> dict:
    """{model: ``<metric>_std`` [T] sorted by time} for the models whose rows carry one."""
    grouped = defaultdict(list)
    for row in rows:
        if f"{metric}_std" in row:
            grouped[str(row["model"])].append((float(row["time"]), float(row[f"{metric}_std"])))
    return {model: np.array(sorted(values))[:, 1] for model, values in grouped.items()}


def _model_colours(models: Sequence[str]) -> dict:
    """One colour per model: the default cycle C0–C9, then tab20b (the published tables at
    T = 0.44 alone hold 11 models, more than one cycle), one shade of each of its five hues
    before the next shade, so that neighbours differ in hue."""
    from matplotlib import colormaps
    extra = colormaps["tab20b"]
    return {model: f"C{k}" if k < 10 else extra((4 * (k - 10) + (k - 10) // 5) % 20)
            for k, model in enumerate(models)}


def plot_pcc(rows: Iterable[dict], path=None, title: str | None = None,
             reference: Iterable[dict] | None = None, reference_label: str = "published") -> Figure:
    """Plot Pearson correlation against time and save a PNG: Pcc(all) (all configurations
    pooled) in the left panel, Pcc(mean) (mean over configurations) in the right one.

    rows: dicts with model (str), time (float, LJ time units, > 0 for the log
    axis), pcc_mean and pcc_all (float), optionally pcc_all_std / pcc_mean_std (spread over
    runs, drawn as a band): solid lines with markers, one colour per model; the rows of
    :data:`eignn_jax.metrics.NOISE_CEILING` as a black dotted line and those of
    :data:`eignn_jax.metrics.BASELINE_NAME` as a grey dashed one.
    reference: rows of the same form from elsewhere (e.g. published tables), drawn as dashed
    lines without markers on their own times and labelled "<model> (<reference_label>)"; a
    model present in both keeps one colour.
    path: output PNG path (None: not saved).  title: optional figure title.
    """
    rows = list(rows)
    reference = list(reference or ())
    grouped, references = _rows_by_model(rows), _rows_by_model(reference)
    colours = _model_colours([m for m in dict.fromkeys([*grouped, *references])
                             if m not in (NOISE_CEILING, BASELINE_NAME)])
    figure = _new_figure(11.0 if reference else 9.5, 4.2, layout="constrained")
    panels = figure.subplots(1, 2, sharex=True, sharey=True)
    for axes, metric, column in ((panels[0], "pcc_all", 1), (panels[1], "pcc_mean", 2)):
        spreads = _spreads_by_model(rows, metric)
        for model, values in grouped.items():
            time, pcc = values[0], values[column]
            if model == NOISE_CEILING:   # what the labels allow, not a model: a black dotted line
                axes.plot(time, pcc, color="black", linestyle=":", linewidth=1.5, label=model)
                continue
            if model == BASELINE_NAME:   # the one-feature reference, not a model: grey dashes
                axes.plot(time, pcc, color="0.45", linestyle="--", linewidth=1.2, label=model)
                continue
            axes.plot(time, pcc, color=colours[model], linestyle="-", marker="o", markersize=3,
                      label=model)
            if model in spreads:   # ± one standard deviation over runs (seeds)
                axes.fill_between(time, pcc - spreads[model], pcc + spreads[model],
                                  color=colours[model], alpha=0.2, linewidth=0)
        for model, values in references.items():
            axes.plot(values[0], values[column], color=colours[model], linestyle="--",
                      linewidth=1.2, label=f"{model} ({reference_label})")
        axes.set_xscale("log")
        axes.set_xlabel("t (LJ time units)")
        axes.set_title("Pcc(all): particles of all configurations pooled" if metric == "pcc_all"
                       else "Pcc(mean): mean over configurations", fontsize="medium")
        axes.grid(True, which="major", alpha=0.3)
    panels[0].set_ylabel("Pearson correlation")
    if title:
        figure.suptitle(title)
    if grouped or references:
        figure.legend(*panels[0].get_legend_handles_labels(), loc="outside right upper",
                      fontsize="small")
    if path is not None:
        _save_png(figure, path)
    return figure


def plot_transfer_lines(rows: Sequence[dict], path=None, title: str | None = None) -> Figure:
    """Temperature transfer (paper Figs. 5, 6): one panel per test temperature, Pcc(all)
    against t/τ_α of the test grid, one line per training source (± one standard deviation
    over seeds as a band), and the test set's noise ceiling dotted where known.

    rows: :func:`eignn_jax.transfer.run`'s rows (train, test, t_over_tau_alpha, pcc_all,
    pcc_all_std, ceiling_all). path: output PNG (None: not saved).
    """
    tests = list(dict.fromkeys(r["test"] for r in rows))
    sources = list(dict.fromkeys(r["train"] for r in rows))
    colours = _model_colours(sources)
    figure = _new_figure(3.6 * len(tests) + 1.6, 3.8, layout="constrained")
    panels = np.atleast_1d(figure.subplots(1, len(tests), sharey=True))
    for axes, test in zip(panels, tests):
        for source in sources:
            cells = [r for r in rows if r["test"] == test and r["train"] == source]
            x = np.array([r["t_over_tau_alpha"] for r in cells])
            y = np.array([r["pcc_all"] for r in cells])
            spread = np.array([r["pcc_all_std"] for r in cells])
            own = source == test
            axes.plot(x, y, color=colours[source], marker="o", markersize=3, linewidth=2.2 if own else 1.2,
                      label=f"trained at {source}")
            if np.any(spread > 0):
                axes.fill_between(x, y - spread, y + spread, color=colours[source], alpha=0.15, linewidth=0)
        ceiling = [r for r in rows if r["test"] == test and r["train"] == sources[0]]
        if any(math.isfinite(r["ceiling_all"]) for r in ceiling):
            axes.plot([r["t_over_tau_alpha"] for r in ceiling], [r["ceiling_all"] for r in ceiling],
                      color="black", linestyle=":", linewidth=1.5, label=NOISE_CEILING)
        axes.set_xscale("log")
        axes.set_xlabel("t / τ_α (of the test temperature)")
        axes.set_title(f"tested at {test}", fontsize="medium")
        axes.grid(True, which="major", alpha=0.3)
    panels[0].set_ylabel("Pcc(all)")
    if title:
        figure.suptitle(title)
    handles = {}
    for axes in panels:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small")
    if path is not None:
        _save_png(figure, path)
    return figure


def plot_transfer_matrix(rows: Sequence[dict], path=None, title: str | None = None,
                         metric: str = "pcc_all") -> Figure:
    """The transfer matrix as heat maps, one panel per time scale (the k-th time of each test
    grid, labelled with its t/τ_α): rows the training sources, columns the test temperatures,
    each cell annotated with its value (blank where no output matched the time).

    rows: :func:`eignn_jax.transfer.run`'s rows. path: output PNG (None: not saved).
    """
    tests = list(dict.fromkeys(r["test"] for r in rows))
    sources = list(dict.fromkeys(r["train"] for r in rows))
    per_test = {t: [r for r in rows if r["test"] == t and r["train"] == sources[0]] for t in tests}
    n_times = max(len(v) for v in per_test.values())
    values = np.full((n_times, len(sources), len(tests)), np.nan)
    for r in rows:
        j = [c["test_time"] for c in per_test[r["test"]]].index(r["test_time"])
        values[j, sources.index(r["train"]), tests.index(r["test"])] = r[metric]
    columns = min(4, n_times)
    grid_rows = math.ceil(n_times / columns)
    figure = _new_figure(2.3 * columns + 1.2, 2.1 * grid_rows + 0.8, layout="constrained")
    panels = np.atleast_1d(figure.subplots(grid_rows, columns, squeeze=False)).reshape(-1)
    finite = values[np.isfinite(values)]
    norm = Normalize(vmin=min(0.0, float(finite.min())) if finite.size else 0.0,
                     vmax=float(finite.max()) if finite.size else 1.0)
    image = None
    for j, axes in enumerate(panels):
        if j >= n_times:
            axes.set_visible(False)
            continue
        image = axes.imshow(values[j], cmap="viridis", norm=norm, aspect="auto")
        for a in range(len(sources)):
            for b in range(len(tests)):
                if np.isfinite(values[j, a, b]):
                    bright = norm(values[j, a, b]) > 0.6
                    axes.text(b, a, f"{values[j, a, b]:.2f}", ha="center", va="center", fontsize="x-small",
                              color="black" if bright else "white")
        scaled = sorted({round(c["t_over_tau_alpha"], 3) for t in tests for c in per_test[t][j:j + 1]})
        axes.set_title("t/τ_α = " + ", ".join(f"{x:.3g}" for x in scaled), fontsize="small")
        axes.set_xticks(range(len(tests)), tests, fontsize="x-small")
        axes.set_yticks(range(len(sources)), sources, fontsize="x-small")
    if image is not None:
        figure.colorbar(image, ax=list(panels[:n_times]), shrink=0.8,
                        label={"pcc_all": "Pcc(all)", "pcc_mean": "Pcc(mean)"}.get(metric, metric))
    if title:
        figure.suptitle(title)
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


def plot_cosine_distributions(edges: np.ndarray, counts: np.ndarray, times: Sequence[float],
                              path=None, title: str | None = None) -> Figure:
    """Distributions of cos θ between d^MD(t) and d^equi, one step histogram per time scale,
    coloured from early (dark) to late (light) (EIGNN paper §5.3, Fig. 9).

    edges: [B + 1] bin edges of cos θ on [−1, 1].  counts: [T, B] particles per bin.
    times: [T] (τ).  Each histogram is normalised to unit area (a probability density), so
    time scales with different particle counts compare; the dotted line is the density 1/2 of
    directions unrelated in 3-D (cos θ uniform on [−1, 1]).
    path: output PNG (None: not saved).  title: figure title.
    Raises ValueError if the shapes disagree.
    """
    edges, counts = np.asarray(edges, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape != (len(times), len(edges) - 1):
        raise ValueError(f"counts must be [T, B] = [{len(times)}, {len(edges) - 1}], got {counts.shape}")
    figure = _new_figure(6.0, 4.2)
    axes = figure.add_subplot(1, 1, 1)
    widths = np.diff(edges)
    shades = np.linspace(0.0, 0.85, len(times)) if len(times) > 1 else [0.0]
    for row, t, shade in zip(counts, times, shades):
        total = row.sum()
        density = row / (total * widths) if total > 0 else np.zeros_like(row)
        axes.stairs(density, edges, color=_shade_colour(shade), linewidth=1.4, label=f"t = {t:g} τ")
    axes.axhline(0.5, color="0.5", linestyle=":", linewidth=1.0, label="unrelated directions")
    axes.set_xlim(edges[0], edges[-1])
    axes.set_ylim(bottom=0.0)
    axes.set_xlabel("cos θ  (d^MD(t), d^equi)")
    axes.set_ylabel("probability density")
    if title:
        axes.set_title(title, fontsize="medium")
    axes.legend(fontsize="small", loc="upper left", ncol=2)
    figure.tight_layout()
    if path is not None:
        _save_png(figure, path)
    return figure


def _shade_colour(shade: float):
    """Colour of a series at ``shade`` in [0, 1] along viridis (early/dark to late/light)."""
    from matplotlib import colormaps   # the colour-map registry, without pyplot's global state
    return colormaps["viridis"](float(shade))


def plot_mean_cosine(times: Sequence[float], mean: np.ndarray, stderr: np.ndarray,
                     mean_mobile: np.ndarray | None = None, path=None, title: str | None = None) -> Figure:
    """Mean cos θ between d^MD(t) and d^equi against t (log axis) with ± one standard error
    (EIGNN paper §5.3, Fig. 9); optionally the mean over the 10 % most mobile particles.

    times: [T] (τ, > 0).  mean, stderr: [T].  mean_mobile: [T] or None.
    path: output PNG (None: not saved).  title: figure title.
    Raises ValueError if the shapes disagree.
    """
    times = np.asarray(times, dtype=np.float64)
    mean, stderr = np.asarray(mean, dtype=np.float64), np.asarray(stderr, dtype=np.float64)
    if mean.shape != times.shape or stderr.shape != times.shape or (
            mean_mobile is not None and np.shape(mean_mobile) != times.shape):
        raise ValueError(f"mean, stderr (and mean_mobile) must be [T] with T = {len(times)}")
    figure = _new_figure(6.0, 4.2)
    axes = figure.add_subplot(1, 1, 1)
    axes.errorbar(times, mean, yerr=stderr, color="C0", marker="o", markersize=4, capsize=3,
                  label="all selected particles (± standard error)")
    if mean_mobile is not None:
        axes.plot(times, mean_mobile, color="C3", marker="s", markersize=4, linestyle="--",
                  label="10 % most mobile")
    axes.axhline(0.0, color="0.5", linestyle=":", linewidth=1.0)
    axes.set_xscale("log")
    axes.set_xlabel("t (τ)")
    axes.set_ylabel("mean cos θ  (d^MD(t), d^equi)")
    if title:
        axes.set_title(title, fontsize="medium")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    figure.tight_layout()
    if path is not None:
        _save_png(figure, path)
    return figure


def _nice_scale(lengths: np.ndarray, target: float) -> float:
    """A factor 1, 2 or 5 × 10^k that draws the 90th percentile of ``lengths`` (σ) at most
    ``target`` σ long (1 when every length is 0)."""
    typical = float(np.percentile(lengths, 90)) if len(lengths) else 0.0
    if typical <= 0:
        return 1.0
    exact = target / typical
    decade = 10.0 ** math.floor(math.log10(exact))
    return max(step * decade for step in (1.0, 2.0, 5.0) if step * decade <= exact)


def plot_displacement_slice(positions: np.ndarray, box: np.ndarray, type_a: np.ndarray,
                            panels: Sequence[tuple[str, np.ndarray, np.ndarray | None]], slab: float = 1.0,
                            path=None, title: str | None = None) -> Figure:
    """Displacement arrows of the particles of a slab |z| < slab, seen along z (their x and y
    components), one panel per vector field (EIGNN paper §5.3, Fig. 9).

    positions: [N, 3] (σ, any periodic image; wrapped into [−L/2, L/2)).  box: [3] (σ).
    type_a: [N] bool; B particles and their arrows are grey.
    panels: side by side, each (title, vectors [N, 3] (σ), values [N] or None): with values
      (cos θ), the A arrows are coloured by them on [−1, 1] (coolwarm, colour bar); without,
      they are black. Each panel scales its arrows by its own factor 1, 2 or 5 × 10^k
      (said in its title) so that most are about 0.8 σ long; the slab is drawn as small discs.
    slab: half thickness (σ).  path: output PNG (None: not saved).  title: figure title start.
    Raises ValueError if no particle lies in the slab or the shapes disagree.
    """
    box = periodic.as_box(box)
    wrapped = periodic.wrap(periodic.as_positions(positions), box)
    type_a = np.asarray(type_a, dtype=bool)
    if type_a.shape != (len(wrapped),) or any(np.shape(v) != wrapped.shape for _, v, _ in panels) or any(
            c is not None and np.shape(c) != type_a.shape for _, _, c in panels):
        raise ValueError(f"type_a [N], every panel's vectors [N, 3] and values [N] must share N = {len(wrapped)}")
    inside = np.abs(wrapped[:, 2]) < slab
    if not inside.any():
        raise ValueError(f"no particle within |z| < {slab} σ")
    shown_a, shown_b = np.flatnonzero(inside & type_a), np.flatnonzero(inside & ~type_a)
    norm = Normalize(vmin=-1.0, vmax=1.0)

    figure = _new_figure(4.6 * len(panels), 4.6, layout="constrained")
    for k, (panel_title, vectors, values) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        vectors = np.asarray(vectors, dtype=np.float64)
        scale = _nice_scale(np.linalg.norm(vectors[inside, :2], axis=-1), 0.8)
        for which, diameter in ((shown_b, _DIAMETER_B), (shown_a, _DIAMETER_A)):
            discs = EllipseCollection(np.full(len(which), diameter / 2), np.full(len(which), diameter / 2),
                                      np.zeros(len(which)), units="xy", offsets=wrapped[which, :2],
                                      offset_transform=axes.transData, facecolors="0.92",
                                      edgecolors="0.6", linewidths=0.3)
            axes.add_collection(discs)
        arrow = dict(angles="xy", scale_units="xy", scale=1.0 / scale, width=0.006, headwidth=3.5,
                     headlength=4.0, headaxislength=3.5)
        axes.quiver(wrapped[shown_b, 0], wrapped[shown_b, 1], vectors[shown_b, 0], vectors[shown_b, 1],
                    color="0.6", **arrow)
        if values is None:
            axes.quiver(wrapped[shown_a, 0], wrapped[shown_a, 1], vectors[shown_a, 0], vectors[shown_a, 1],
                        color="black", **arrow)
        else:
            coloured = axes.quiver(wrapped[shown_a, 0], wrapped[shown_a, 1], vectors[shown_a, 0],
                                   vectors[shown_a, 1], np.asarray(values, dtype=np.float64)[shown_a],
                                   cmap="coolwarm", norm=norm, **arrow)
            figure.colorbar(coloured, ax=axes, label="cos θ with d^equi", shrink=0.8)
        axes.set_xlim(-box[0] / 2, box[0] / 2)
        axes.set_ylim(-box[1] / 2, box[1] / 2)
        axes.set_aspect("equal")
        axes.set_xlabel("x (σ)")
        axes.set_ylabel("y (σ)")
        axes.set_title(f"{panel_title}\narrows ×{scale:g}", fontsize="medium")
    where = f"slab |z| < {slab:g} σ, xy components, type B grey"
    figure.suptitle(f"{title}: {where}" if title else where, fontsize="medium")
    if path is not None:
        _save_png(figure, path)
    return figure
