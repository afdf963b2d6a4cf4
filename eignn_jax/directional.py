"""Directional analysis: do particles move along their displacement to equilibrium?
(EIGNN paper §5.3, Fig. 9.)

For each particle i of a configuration the model's input vector is
d^equi_i = r^equi_i − r^initial_i (minimum image, the displacement of the graph,
:mod:`eignn_jax.graph`), and the dynamics give the iso-configurational mean displacement
d^MD_i(t) = ⟨Δr_i(t)⟩ over runs (``md_disp``). The angle between them,

    cos θ_i(t) = d^MD_i(t) · d^equi_i / (|d^MD_i(t)| |d^equi_i|),

says whether a particle's average motion points the way the equilibrium structure
(inherent or cage state) says: cos θ = 1 along it, −1 against it, and a mean of 0 over
particles whose directions are unrelated.

Per time scale this module pools cos θ over the particles (type A by default) of all
given configurations: its distribution (histogram on [−1, 1]), its mean with the standard
error of the mean, and the mean over the 10 % most mobile particles of each
configuration (largest ``md_prop`` at that time). The analysis functions are pure numpy;
:func:`run` reads files, writes ``directional.csv`` and three figures.

Units: lengths σ, times τ (Lennard-Jones units of the A–A interaction).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import pathlib
from typing import Callable, Sequence

import numpy as np

from eignn_jax import dataset, files, plotting

MIN_NORM = 1e-8
"""σ. A displacement shorter than this has no direction worth the name (float32 ``md_disp``
rounds a few 1e-8 σ; real |d^equi| and |d^MD| are 1e-3 σ and more): a particle whose
d^MD(t) or d^equi is shorter is left out at that time (its cos θ is NaN)."""

MOBILE_FRACTION = 0.10
"""Share of the selected particles of each configuration counted as the most mobile."""

HISTOGRAM_BINS = 40
"""Equal bins of cos θ on [−1, 1]."""

CSV_NAME = "directional.csv"
CSV_COLUMNS = ("t", "mean_cos", "stderr", "mean_cos_mobile10", "n")
FIGURE_NAMES = ("directional_hist.png", "directional_mean.png", "directional_slice.png")

_KEY_DISPLACEMENT = "md_disp"
_NO_DISPLACEMENT = ("GlassBench files carry no md_disp: the directional analysis needs "
                    "iso-configurational mean displacements, e.g. from experiments.simulate")


# ----------------------------------------------------------------------------
# Pure numpy analysis
# ----------------------------------------------------------------------------


def cosines(md_disp: np.ndarray, d_equi: np.ndarray, min_norm: float = MIN_NORM) -> np.ndarray:
    """cos θ_i(t) [T, N] float64 between d^MD_i(t) and d^equi_i; NaN where either is shorter
    than ``min_norm`` (σ).

    md_disp: [T, N, 3] (σ), d^MD.  d_equi: [N, 3] (σ).
    Values are clipped to [−1, 1] (round-off can step just outside).
    Raises ValueError if the shapes disagree.
    """
    md_disp = np.asarray(md_disp, dtype=np.float64)
    d_equi = np.asarray(d_equi, dtype=np.float64)
    if md_disp.ndim != 3 or md_disp.shape[2] != 3 or d_equi.shape != md_disp.shape[1:]:
        raise ValueError(f"md_disp must be [T, N, 3] and d_equi [N, 3] with the same N; "
                         f"got {md_disp.shape} and {d_equi.shape}")
    norm_md = np.linalg.norm(md_disp, axis=-1)
    norm_equi = np.linalg.norm(d_equi, axis=-1)
    valid = (norm_md >= min_norm) & (norm_equi >= min_norm)[None, :]
    dot = np.einsum("tnk,nk->tn", md_disp, d_equi)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.clip(dot / (norm_md * norm_equi[None, :]), -1.0, 1.0)
    return np.where(valid, result, np.nan)


def most_mobile(propensity: np.ndarray, selected: np.ndarray, fraction: float = MOBILE_FRACTION) -> np.ndarray:
    """[T, N] bool: at each time, the round(fraction · M) (at least 1) of the M ``selected``
    particles with the largest propensity (ties broken by particle order).

    propensity: [T, N] (σ), ``md_prop``.  selected: [N] bool, M ≥ 1 True.
    Raises ValueError for a fraction outside (0, 1], no selected particle or mismatched shapes.
    """
    propensity = np.asarray(propensity, dtype=np.float64)
    selected = np.asarray(selected, dtype=bool)
    if propensity.ndim != 2 or selected.shape != propensity.shape[1:]:
        raise ValueError(f"propensity must be [T, N] and selected [N]; got {propensity.shape}, {selected.shape}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    candidates = np.flatnonzero(selected)
    if candidates.size == 0:
        raise ValueError("no particle is selected")
    count = max(1, int(round(fraction * candidates.size)))
    mask = np.zeros(propensity.shape, dtype=bool)
    for t, row in enumerate(propensity):
        top = candidates[np.argsort(-row[candidates], kind="stable")[:count]]
        mask[t, top] = True
    return mask


@dataclasses.dataclass(frozen=True)
class DirectionalTable:
    """Statistics of cos θ per time scale, pooled over particles and configurations.

    times: [T] (τ).  mean_cos, stderr: [T] mean of cos θ and its standard error
      std/√n (sample std, ddof = 1; it treats particles as independent, so it
      understates the spread between configurations).  mean_cos_mobile10: [T] mean over
      the most mobile particles (:data:`MOBILE_FRACTION` of each configuration).
    n, n_mobile: [T] int, particles counted (those with both norms ≥ :data:`MIN_NORM`).
    edges: [B + 1] bin edges on [−1, 1].  counts: [T, B] int histogram of cos θ.
    """

    times: np.ndarray
    mean_cos: np.ndarray
    stderr: np.ndarray
    mean_cos_mobile10: np.ndarray
    n: np.ndarray
    n_mobile: np.ndarray
    edges: np.ndarray
    counts: np.ndarray

    def rows(self) -> list[dict]:
        """One dict per time scale with the keys :data:`CSV_COLUMNS`."""
        return [{"t": float(t), "mean_cos": float(m), "stderr": float(s), "mean_cos_mobile10": float(k),
                 "n": int(n)}
                for t, m, s, k, n in zip(self.times, self.mean_cos, self.stderr, self.mean_cos_mobile10, self.n)]


def summarise(times: np.ndarray, cos: Sequence[np.ndarray], mobile: Sequence[np.ndarray],
              bins: int = HISTOGRAM_BINS) -> DirectionalTable:
    """Pool per-configuration cos θ into a :class:`DirectionalTable`.

    times: [T] (τ).  cos: per configuration, [T, M_c] cos θ of its selected particles (NaN =
      left out).  mobile: per configuration, [T, M_c] bool, the most mobile of them.
    A time with fewer than 2 counted particles gets NaN for the mean / error it lacks.
    Raises ValueError if the shapes disagree or there is no configuration.
    """
    times = np.asarray(times, dtype=np.float64)
    if not cos or len(cos) != len(mobile):
        raise ValueError(f"need one mobile mask per cos array and at least one; got {len(cos)} and {len(mobile)}")
    for c, m in zip(cos, mobile):
        if np.shape(c) != np.shape(m) or np.shape(c)[0] != len(times):
            raise ValueError(f"cos {np.shape(c)} and mobile {np.shape(m)} must both be [T = {len(times)}, M]")
    pooled = np.concatenate([np.asarray(c, dtype=np.float64) for c in cos], axis=1)
    pooled_mobile = np.concatenate([np.asarray(m, dtype=bool) for m in mobile], axis=1)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    columns = {key: np.full(len(times), np.nan) for key in ("mean", "stderr", "mobile")}
    n, n_mobile = np.zeros(len(times), int), np.zeros(len(times), int)
    counts = np.zeros((len(times), bins), int)
    for t, (row, row_mobile) in enumerate(zip(pooled, pooled_mobile)):
        valid = np.isfinite(row)
        values, mobile_values = row[valid], row[valid & row_mobile]
        n[t], n_mobile[t] = values.size, mobile_values.size
        counts[t] = np.histogram(values, bins=edges)[0]
        if values.size:
            columns["mean"][t] = values.mean()
        if values.size > 1:
            columns["stderr"][t] = values.std(ddof=1) / np.sqrt(values.size)
        if mobile_values.size:
            columns["mobile"][t] = mobile_values.mean()
    return DirectionalTable(times, columns["mean"], columns["stderr"], columns["mobile"], n, n_mobile,
                            edges, counts)


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------


def md_displacements(config: dataset.Configuration) -> np.ndarray:
    """d^MD [T, N, 3] (σ), the ``md_disp`` of a configuration.

    Raises DataError naming the file when it has none (GlassBench files do not).
    """
    if _KEY_DISPLACEMENT not in config.extras:
        raise dataset.DataError(config.path or "<in-memory configuration>", _KEY_DISPLACEMENT, _NO_DISPLACEMENT)
    return np.asarray(config.extras[_KEY_DISPLACEMENT])


def configuration_cosines(config: dataset.Configuration, kind: str = "inherent", all_types: bool = False
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cos θ [T, M], most mobile [T, M] bool, selected [N] bool) of one configuration: its
    type-A particles (all with ``all_types``), d^equi of the ``kind`` structure.

    Raises DataError naming the file and key: no ``md_disp``, no ``md_prop``, no structure of
    that kind, or one whose median distance from the initial positions exceeds
    ``dataset.MAX_MEDIAN_DISPLACEMENT`` (another particle order; see :func:`eignn_jax.dataset.displacements`).
    """
    path = config.path or "<in-memory configuration>"
    md_disp = md_displacements(config)
    if config.propensity is None:
        raise dataset.DataError(path, "md_prop", "needed to pick the most mobile particles")
    d_equi = dataset.displacements(config, kind)
    selected = np.ones(config.n_particles, bool) if all_types else config.is_type_a
    if not selected.any():
        raise dataset.DataError(path, "types", "holds no type-A particle (pass all_types to use every particle)")
    cos = cosines(md_disp, d_equi)
    mobile = most_mobile(config.propensity, selected)
    return cos[:, selected], mobile[:, selected], selected


def write_csv(path, table: DirectionalTable) -> None:
    """``directional.csv``: header :data:`CSV_COLUMNS`, one row per time, floats in full
    precision (repr), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in table.rows():
        writer.writerow([repr(row[c]) if isinstance(row[c], float) else str(row[c]) for c in CSV_COLUMNS])
    files.atomic_write(path, buffer.getvalue())


def format_table(table: DirectionalTable) -> str:
    """Plain-text table, one line per time scale."""
    lines = [f"{'t (τ)':>9} {'mean cos θ':>11} {'stderr':>8} {'mobile 10 %':>12} {'n':>7}"]
    lines += [f"{r['t']:>9g} {r['mean_cos']:>11.4f} {r['stderr']:>8.4f} {r['mean_cos_mobile10']:>12.4f} "
              f"{r['n']:>7d}" for r in table.rows()]
    return "\n".join(lines)


def run(paths: Sequence[str | os.PathLike], out: str | os.PathLike, kind: str = "inherent",
        all_types: bool = False, log: Callable[[str], None] = print):
    """The directional analysis of configuration files, written to ``out``.

    paths: GlassBench-layout ``.npz`` files with ``md_disp``, ``md_prop`` and the ``kind``
      (``'inherent'`` or ``'cage'``) structure, all on the same time grid.
    Writes ``out/directional.csv`` (:data:`CSV_COLUMNS`), ``directional_hist.png``
    (distributions of cos θ), ``directional_mean.png`` (mean cos θ against t) and
    ``directional_slice.png`` (a slab of the first file: d^MD at the first time and at the
    time scale of :func:`eignn_jax.dataset.tau_alpha_time_index`, and d^equi), together or not
    at all; inputs are only read. Logs the table.
    Returns (table, {figure name: matplotlib Figure}).
    Raises DataError naming the file (missing ``md_disp`` etc., another time grid),
    ValueError for no paths, an unknown kind or an output that is one of the inputs, and
    OSError naming what cannot be written.
    """
    paths = [pathlib.Path(p) for p in paths]
    if not paths:
        raise ValueError("no configuration files given")
    if kind not in ("inherent", "cage"):
        raise ValueError(f"unknown equilibrium kind {kind!r}; expected 'inherent' or 'cage'")
    out = pathlib.Path(out)
    targets = [out / name for name in (CSV_NAME, *FIGURE_NAMES)]
    clash = {p.resolve() for p in targets} & {p.resolve() for p in paths}
    if clash:
        raise ValueError(f"{sorted(map(str, clash))[0]} is an input and would be overwritten: choose another --out")
    files.writable_directory(out)

    cos, mobile = [], []
    first = times = None
    for path in paths:
        config = dataset.load_configuration(path)
        c, m, _ = configuration_cosines(config, kind, all_types)
        if times is None:
            first, times = config, np.asarray(config.times, np.float64)
        elif not np.array_equal(np.asarray(config.times, np.float64), times):
            raise dataset.DataError(path, "times", f"{np.asarray(config.times).tolist()} differ from "
                                                   f"{times.tolist()} of {paths[0]}: pool files of one time grid")
        cos.append(c)
        mobile.append(m)
    table = summarise(times, cos, mobile)

    selection = "all particles" if all_types else "type A"
    what = f"{len(paths)} configuration(s), {kind} structures, {selection}"
    early, middle = 0, dataset.tau_alpha_time_index(times, paths[0].parent)
    d_equi = dataset.displacements(first, kind)
    md_disp = md_displacements(first)
    first_cos = cosines(md_disp, d_equi)
    panels = [(f"d^MD, t = {times[k]:g} τ", md_disp[k], first_cos[k]) for k in dict.fromkeys((early, middle))]
    panels.append((f"d^equi ({kind})", d_equi, None))
    figures = {}
    with files.output_set(*targets):
        write_csv(out / CSV_NAME, table)
        figures[FIGURE_NAMES[0]] = plotting.plot_cosine_distributions(
            table.edges, table.counts, times, out / FIGURE_NAMES[0], title=what)
        figures[FIGURE_NAMES[1]] = plotting.plot_mean_cosine(
            times, table.mean_cos, table.stderr, table.mean_cos_mobile10, out / FIGURE_NAMES[1], title=what)
        figures[FIGURE_NAMES[2]] = plotting.plot_displacement_slice(
            first.positions, first.box, first.is_type_a, panels, path=out / FIGURE_NAMES[2],
            title=paths[0].name)
    log(f"cos θ between d^MD(t) and d^equi over {what}")
    log(format_table(table))
    log(f"wrote {out / CSV_NAME} and {', '.join(FIGURE_NAMES)} beside it")
    return table, figures
