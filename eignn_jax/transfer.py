"""Temperature transfer and all-temperature training (EIGNN paper Figs. 5 and 6) as one set of runs.

One model is trained per data folder (a temperature, ``T<T>_s<seed>/``) and, optionally, one
on the union of the folders' training splits (``all_s<seed>/``, ``DataConfig.paths``). Each
is scored on the test split of every folder (the split the folder's own run is tested on),
which gives the matrix Pcc[trained at T_a, tested at T_b] per time scale of T_b.

**Matching times.** Each temperature has its own time grid. A model trained at T_a predicts
at its grid t_a; to score it at T_b's time t_b, the output k whose time is nearest t_b is
used, nearest in units of each temperature's τ_α (``match="tau_alpha"``: t_a[k] / τ_α(T_a)
against t_b / τ_α(T_b)) or in absolute time (``match="time"``), on a log scale. A time of
T_b without an output within a factor ``tolerance`` is left out (nan). The all-temperature
model knows each file's grid: its output k is the k-th time of every folder it was trained
on, so on those folders it is scored row for row.

τ_α of a folder: the ``tau_alpha_assumed`` of its meta.json (written by
``experiments.simulate``), else the reference value of its temperature
(:data:`eignn_jax.generation.REFERENCE`), else one given by the caller.

Outputs in the transfer folder: ``transfer.csv`` (one row per training source, test folder
and time of the test grid: the matched output's time, Pcc(mean) and Pcc(all) as mean and
sample standard deviation over seeds, and the test set's noise ceiling where its files carry
split-half labels), ``transfer.png`` (one panel per test temperature: Pcc(all) against t/τ_α,
one line per training source) and ``transfer_matrix.png`` (one panel per time scale: the
matrix as a heat map). Finished runs (with a ``pcc.csv``) are skipped on a rerun; unfinished
ones resume from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Callable, Mapping, Sequence

import jraph
import numpy as np

from eignn_jax import architectures, dataset, experiment, files, generation, graph as graph_lib, metrics, training
from eignn_jax.config import ExperimentConfig, check

ALL = "all"
MATCHES = ("tau_alpha", "time")
DEFAULT_TOLERANCE = 1.25
CSV_NAME, PLOT_NAME, MATRIX_NAME = "transfer.csv", "transfer.png", "transfer_matrix.png"
CSV_COLUMNS = ("train", "test", "test_time", "t_over_tau_alpha", "model_time", "pcc_mean", "pcc_mean_std",
               "pcc_all", "pcc_all_std", "runs", "ceiling_mean", "ceiling_all")
FINISHED_NAME = "pcc.csv"   # written by experiment.evaluate, last of a run's outputs


@dataclasses.dataclass(frozen=True)
class Folder:
    """One data folder of the study: its label (``T0.56``), temperature (ε/k_B) and τ_α (τ)."""

    path: str
    label: str
    temperature: float
    tau_alpha: float


def describe_folders(paths: Sequence[str], tau_alpha: Mapping[float, float] | None = None) -> list[Folder]:
    """A :class:`Folder` per path: the temperature from the files' names or meta.json
    (:func:`eignn_jax.experiment.data_temperature`), τ_α as the module docstring says.

    tau_alpha: τ_α by temperature, used where a folder records none and there is no reference.
    Raises ValueError naming the folder when its temperature or τ_α is unknown, or when two
    folders are at one temperature (their rows would be indistinguishable).
    """
    folders = []
    for path in paths:
        listed = dataset.list_configurations(path)
        if not listed:
            raise ValueError(f"{path}: no configurations (.npz files) in it")
        temperature = experiment.data_temperature(listed)
        recorded = (dataset.folder_meta(path) or {}).get(dataset.META_TAU_ALPHA)
        tau = (recorded if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and recorded > 0
               else generation.reference_tau_alpha(temperature) or (tau_alpha or {}).get(temperature))
        if tau is None:
            raise ValueError(f"{path}: τ_α at T = {temperature:g} is unknown: its {dataset.META_NAME} records "
                             f"no {dataset.META_TAU_ALPHA} and there is no reference value; give it "
                             f"(--tau-alpha {temperature:g}=VALUE)")
        folders.append(Folder(path=str(path), label=f"T{temperature:g}", temperature=temperature,
                              tau_alpha=float(tau)))
    labels = [f.label for f in folders]
    if len(set(labels)) != len(labels):
        raise ValueError("two data folders are at one temperature: " + ", ".join(
            f"{f.path} ({f.label})" for f in folders))
    return folders


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One training of the study: ``config`` trained on the folder ``source`` (a
    :class:`Folder` label, or :data:`ALL`) with ``train.seed`` = ``seed``."""

    source: str
    seed: int
    config: ExperimentConfig

    @property
    def directory(self) -> str:
        return f"{self.source}_s{self.seed}"


def plan(config: ExperimentConfig, folders: Sequence[Folder], seeds: Sequence[int] = (0,),
         all_temperatures: bool = True) -> list[PlannedRun]:
    """One run per folder and seed, and one on all folders together per seed.

    config: the base config; each run replaces ``data.path`` (or ``data.paths`` for the
      all-temperature run: n_train / n_test / n_validation then count per folder) and
      ``train.seed``; the name becomes ``EIGNN@<source>``.
    Raises ValueError for no folders, no or repeated seeds, or a config that fails
    :func:`eignn_jax.config.check`.
    """
    if not folders:
        raise ValueError("no data folders")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give distinct seeds, got {list(seeds)}")
    sources = [(f.label, dict(path=f.path, paths=())) for f in folders]
    if all_temperatures and len(folders) > 1:
        sources.append((ALL, dict(path="", paths=tuple(f.path for f in folders))))
    runs = []
    for source, data in sources:
        for seed in seeds:
            run_config = dataclasses.replace(
                config, name=f"{config.name}@{source}", data=dataclasses.replace(config.data, **data),
                train=dataclasses.replace(config.train, seed=seed))
            check(run_config)
            runs.append(PlannedRun(source=source, seed=seed, config=run_config))
    return runs


def match_outputs(model_times, test_times, model_tau: float = 1.0, test_tau: float = 1.0,
                  tolerance: float = DEFAULT_TOLERANCE) -> list[int | None]:
    """For each test time, the index of the model output nearest it on a log scale, or None
    if none is within a factor ``tolerance``.

    model_times [T_a], test_times [T_b] (τ, > 0), each divided by its τ (pass τ_α for
    matching in units of τ_α, 1 for absolute times). Raises ValueError for tolerance < 1.
    """
    if not tolerance >= 1:
        raise ValueError(f"tolerance is a factor ≥ 1, got {tolerance}")
    scaled = np.log(np.asarray(model_times, np.float64) / model_tau)
    matched = []
    for t in np.log(np.asarray(test_times, np.float64) / test_tau):
        k = int(np.argmin(np.abs(scaled - t)))
        matched.append(k if abs(scaled[k] - t) <= math.log(tolerance) + 1e-12 else None)
    return matched


def score(run: experiment.TrainedRun, graphs: Sequence[jraph.GraphsTuple], outputs: Sequence[int | None]) -> dict:
    """Pcc(mean) and Pcc(all) [T_b] of ``run``'s predictions on ``graphs`` (labels at T_b
    times), output ``outputs[j]`` against label row j (nan where it is None)."""
    num_outputs = run.config.model.num_outputs
    # The labels may be at another number of times than the outputs: the loss the predict
    # step also computes needs targets of the outputs' shape, and is not used here.
    unlabelled = [g._replace(nodes={**g.nodes, "targets": np.zeros((g.nodes["targets"].shape[0], num_outputs),
                                                                   np.float32)}) for g in graphs]
    budget = graph_lib.padding_budget(unlabelled, batch_size=1)
    predict_step = training.make_predict_step(architectures.build(run.config.model),
                                              training.program_key("predict_step", run.config.model))
    predictions, _ = training.predict_graphs(predict_step, run.params, unlabelled, budget)
    n_times = graphs[0].nodes["targets"].shape[1]
    table = {"pcc_mean": np.full(n_times, np.nan), "pcc_all": np.full(n_times, np.nan)}
    for j, k in enumerate(outputs):
        if k is None:
            continue
        one = metrics.pcc_table([p[:, k] for p in predictions], [g.nodes["targets"][:, j] for g in graphs],
                                [g.nodes["target_mask"] for g in graphs])
        table["pcc_mean"][j], table["pcc_all"][j] = one["pcc_mean"][0], one["pcc_all"][0]
    return table


def run(runs: Sequence[PlannedRun], folders: Sequence[Folder], out: pathlib.Path | str,
        match: str = "tau_alpha", tolerance: float = DEFAULT_TOLERANCE,
        log: Callable[[str], None] = print) -> list[dict]:
    """Trains and evaluates the unfinished ``runs`` (:func:`plan`) in ``out``, scores every
    run on every folder's test split, writes ``transfer.csv``, ``transfer.png`` and
    ``transfer_matrix.png`` (module docstring) and returns the CSV's rows (dicts of
    :data:`CSV_COLUMNS`).

    Raises ValueError for an unknown ``match``, or (from training and evaluation) for bad
    data or a run directory holding another config; OSError from writing.
    """
    if match not in MATCHES:
        raise ValueError(f"match must be one of {MATCHES}, got {match!r}")
    out = files.writable_directory(out)
    for k, planned in enumerate(runs, 1):
        workdir = out / planned.directory
        if _finished(workdir, planned.config):
            log(f"[{k}/{len(runs)}] {planned.directory}: finished, skipped")
            continue
        log(f"[{k}/{len(runs)}] {planned.directory}: training")
        experiment.run_training(planned.config, workdir, log=log)
        experiment.evaluate(workdir, log=log)

    base = runs[0].config
    cache = out / "graph_cache"
    tests, ceilings = {}, {}
    for folder in folders:
        _, paths = experiment.split_files(dataclasses.replace(base.data, path=folder.path, paths=()))
        tests[folder.label] = (paths, graph_lib.load_graphs(paths, base.graph, cache, progress=True))
        halves = experiment.label_halves(paths, log)
        if halves is not None:
            ceilings[folder.label] = metrics.split_half_ceiling(
                halves, [g.nodes["target_mask"] for g in tests[folder.label][1]])
    by_label = {f.label: f for f in folders}
    scores: dict[tuple[str, str], list[dict]] = {}
    for planned in runs:
        trained = experiment.load_trained(out / planned.directory)
        grids = {str(pathlib.Path(f)): g for f, g in (trained.metadata.get("time_grids") or {}).items()}
        for folder in folders:
            paths, graphs = tests[folder.label]
            test_times = _label_times(paths)
            if planned.source == ALL and str(pathlib.Path(folder.path)) in grids:
                outputs = list(range(len(test_times)))      # trained on this folder's own grid
            else:
                trained_on = by_label.get(planned.source)
                model_times = np.asarray(trained.metadata["times"])
                model_tau = trained_on.tau_alpha if (match == "tau_alpha" and trained_on) else 1.0
                test_tau = folder.tau_alpha if match == "tau_alpha" else 1.0
                outputs = match_outputs(model_times, test_times, model_tau, test_tau, tolerance)
            model_times = _output_times(trained.metadata, folder, planned.source == ALL, grids)
            scores.setdefault((planned.source, folder.label), []).append(
                {"table": score(trained, graphs, outputs), "outputs": outputs, "model_times": model_times})
    rows = _summarise(scores, folders, tests, ceilings)
    with files.output_set(out / CSV_NAME, out / PLOT_NAME, out / MATRIX_NAME):
        write_csv(out / CSV_NAME, rows)
        from eignn_jax import plotting
        seeds = sorted({p.seed for p in runs})
        plotting.plot_transfer_lines(rows, out / PLOT_NAME,
                                     title=f"temperature transfer ({match} matching), seeds {', '.join(map(str, seeds))}")
        plotting.plot_transfer_matrix(rows, out / MATRIX_NAME, title="Pcc(all): trained at (rows), tested at (columns)")
    return rows


def _finished(workdir: pathlib.Path, config: ExperimentConfig) -> bool:
    """Whether a run was trained and evaluated: its ``pcc.csv``, or, for a run on several
    folders (evaluated one folder at a time), that of every folder."""
    if config.data.paths:
        return all((workdir / f"eval_{pathlib.Path(f).name}" / FINISHED_NAME).exists() for f in config.data.paths)
    return (workdir / FINISHED_NAME).exists()


def _label_times(paths: Sequence[pathlib.Path]) -> np.ndarray:
    return dataset.load_configuration(paths[0], require=("md_prop",)).times


def _output_times(metadata: dict, folder: Folder, all_run: bool, grids: Mapping[str, list]) -> np.ndarray:
    """The times of a run's outputs as seen from ``folder``: its own grid for the
    all-temperature run trained on it, else the run's training grid."""
    if all_run and str(pathlib.Path(folder.path)) in grids:
        return np.asarray(grids[str(pathlib.Path(folder.path))])
    return np.asarray(metadata["times"])


def _summarise(scores, folders, tests, ceilings) -> list[dict]:
    """Rows of :data:`CSV_COLUMNS`: mean and sample standard deviation over seeds."""
    rows = []
    for (source, label), per_seed in scores.items():
        folder = next(f for f in folders if f.label == label)
        test_times = _label_times(tests[label][0])
        ceiling = ceilings.get(label)
        for j, t in enumerate(test_times):
            k = per_seed[0]["outputs"][j]
            values = {m: np.array([s["table"][m][j] for s in per_seed]) for m in ("pcc_mean", "pcc_all")}
            spread = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0   # noqa: E731
            rows.append({
                "train": source, "test": label, "test_time": float(t),
                "t_over_tau_alpha": float(t / folder.tau_alpha),
                "model_time": float(per_seed[0]["model_times"][k]) if k is not None else math.nan,
                "pcc_mean": float(values["pcc_mean"].mean()), "pcc_mean_std": spread(values["pcc_mean"]),
                "pcc_all": float(values["pcc_all"].mean()), "pcc_all_std": spread(values["pcc_all"]),
                "runs": len(per_seed),
                "ceiling_mean": float(ceiling["pcc_mean"][j]) if ceiling else math.nan,
                "ceiling_all": float(ceiling["pcc_all"][j]) if ceiling else math.nan})
    return rows


def write_csv(path: pathlib.Path | str, rows: Sequence[dict]) -> None:
    """``rows`` as CSV with the header :data:`CSV_COLUMNS` (atomically), floats exactly (repr;
    nan as ``nan``)."""
    lines = [",".join(CSV_COLUMNS)]
    for row in rows:
        # repr: floats round-trip exactly.
        lines.append(",".join(repr(row[c]) if isinstance(row[c], float) else str(row[c]) for c in CSV_COLUMNS))
    files.atomic_write(path, "\n".join(lines) + "\n")


def format_matrix(rows: Sequence[dict], metric: str = "pcc_all") -> str:
    """The matrix as text: one block per test folder, a line per training source, a column
    per time of the test grid (t/τ_α in the header)."""
    lines = []
    for label in dict.fromkeys(r["test"] for r in rows):
        block = [r for r in rows if r["test"] == label]
        scaled = list(dict.fromkeys(r["t_over_tau_alpha"] for r in block))
        lines.append(f"tested at {label}, {metric}; t/τ_α: " + " ".join(f"{x:7.3g}" for x in scaled))
        for source in dict.fromkeys(r["train"] for r in block):
            cells = [r for r in block if r["train"] == source]
            text = " ".join("    nan" if math.isnan(r[metric]) else f"{r[metric]:7.3f}" for r in cells)
            lines.append(f"  trained at {source:<8}  {text}")
        ceiling = [r[f"ceiling_{metric.split('_')[1]}"] for r in block if r["train"] == block[0]["train"]]
        if not all(math.isnan(c) for c in ceiling):
            lines.append(f"  {metrics.NOISE_CEILING:<19} " + " ".join(f"{c:7.3f}" for c in ceiling))
    return "\n".join(lines)


__all__ = ["ALL", "CSV_COLUMNS", "Folder", "MATCHES", "PlannedRun", "describe_folders", "format_matrix",
           "match_outputs", "plan", "run", "score", "write_csv"]
