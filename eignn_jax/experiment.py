"""The end-to-end pipeline behind ``experiments.train`` and ``experiments.evaluate``.

A run directory (``workdir``) holds:
  checkpoints/     orbax checkpoints: train state + metadata (config, times, baseline fit, split,
                   data provenance)
  graph_cache/     preprocessed graphs, reused by later runs and evaluations
  config.json      the run's config (graph cutoffs, model, training)
  data_provenance.json  how its data were made (:func:`data_provenance`)
  metrics.jsonl    one JSON line per epoch
  tensorboard/     the same per epoch as TensorBoard events (with train.tensorboard=true)
  pcc.csv, pcc.png evaluation of the trained model, the |d| baseline and the published models
                   whose predictions the evaluated files carry
  scatter.png, map.png  predicted against true propensity; a slab of the first test file
  pcc_provenance.json   what that evaluation ran on
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import pathlib
from typing import Callable, Mapping, Sequence

import jax
import jraph
import numpy as np

from eignn_jax import (architectures, checkpointing, dataset, equilibrium, files, graph as graph_lib, metrics,
                       plotting, progress, training)
from eignn_jax.config import DataConfig, ExperimentConfig, from_dict, to_dict
from eignn_jax.feature_scales import fit_feature_scales
from eignn_jax.model import MODEL_REVISION, for_graph_size

BASELINE_NAME = metrics.BASELINE_NAME     # the name evaluate gives the |d| baseline's rows
# Written beside a run's config.json, and beside each evaluation's pcc.csv.
PROVENANCE_NAME = "data_provenance.json"
EVALUATION_PROVENANCE_NAME = "pcc_provenance.json"


def split_files(data: DataConfig) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """(train files, test files) for a data config; see :class:`eignn_jax.config.DataConfig`.

    With several folders (``data.paths``) each is split on its own and the lists are
    concatenated in the folders' order.
    """
    if data.paths:
        splits = [split_files(dataclasses.replace(data, path=folder, paths=())) for folder in data.paths]
        return [p for train, _ in splits for p in train], [p for _, test in splits for p in test]
    root = pathlib.Path(data.path).expanduser()
    layout = dataset.glassbench_split(root)
    if layout is not None:
        train, test = layout
        return (train[: data.n_train] if data.n_train else train), (test[: data.n_test] if data.n_test else test)
    paths = dataset.list_configurations(root)
    n_test = data.n_test or len(paths) - data.n_train
    try:
        return dataset.split_paths(paths, data.n_train, n_test, data.split_seed)
    except ValueError as error:
        raise ValueError(f"{root}: cannot split {len(paths)} files into {data.n_train} train "
                         f"and {n_test} test: {error}") from error


def data_provenance(paths: Sequence[pathlib.Path | str]) -> dict:
    """How the files at ``paths`` were made, per folder: ``{folder: {"meta": its meta.json
    (how the data were generated) or None, "equilibrate": the entries of these files in its
    equilibrate record (how their structures were computed, :func:`equilibrium.read_record`)
    or None}}``.

    Raises DataError naming a meta.json or record that cannot be read.
    """
    folders: dict[pathlib.Path, list[str]] = {}
    for path in map(pathlib.Path, paths):
        folders.setdefault(path.parent, []).append(path.name)
    return {str(folder): {"meta": dataset.folder_meta(folder), "equilibrate": equilibrium.read_record(folder, names)}
            for folder, names in folders.items()}


def describe_provenance(provenance: dict | None) -> list[str]:
    """One line per folder of a :func:`data_provenance` (None: not recorded), for logs."""
    if provenance is None:
        return ["data provenance not recorded (a run trained before it was, or an imported checkpoint)"]
    lines = []
    for folder, facts in provenance.items():
        meta, record = facts["meta"], facts["equilibrate"]
        generated = f"no {dataset.META_NAME}"
        if meta:
            generated = f"{dataset.META_NAME}: " + ", ".join(
                f"{key} {meta[key]}" for key in ("T", "n", "seed", "engine") if key in meta)
        computed = f"no {equilibrium.RECORD_NAME}"
        if record:
            methods = sorted({settings["method"] for settings in record["settings"].values()})
            computed = (f"{equilibrium.RECORD_NAME}: structures of {len(record['files'])} file(s) "
                        f"by {', '.join(methods)}")
        lines.append(f"{folder}: {generated}; {computed}")
    return lines


def _graph_features(graphs) -> list[np.ndarray]:
    return [np.linalg.norm(g.nodes["displacements"], axis=-1) for g in graphs]


def _targets(graphs):
    return [g.nodes["targets"] for g in graphs], [g.nodes["target_mask"] for g in graphs]


def _what_is_computed(config: dict) -> dict:
    """A config in JSON form without the settings that change how, not what, a run computes."""
    config = json.loads(json.dumps(config))
    for how in ("data_parallel", "edge_parallel", "tensorboard"):
        config.get("train", {}).pop(how, None)
    return config


def run_training(config: ExperimentConfig, workdir: pathlib.Path | str,
                 log: Callable[[str], None] = print) -> None:
    """Builds (or loads cached) graphs, fits input scales and the baseline, and trains.

    Resuming: if ``workdir`` has checkpoints, the config saved there must match ``config``
    (``train.data_parallel``, ``train.edge_parallel`` and ``train.tensorboard`` may differ: a run
    can resume on another number of devices, with or without TensorBoard events).
    With several processes (``jax.distributed``) only the first logs and writes config.json.
    """
    primary = jax.process_index() == 0
    if not primary:
        log = lambda _: None  # noqa: E731
    workdir = pathlib.Path(workdir)
    if config.model.architecture != "paper":
        raise ValueError(f"model.architecture={config.model.architecture!r} runs imported checkpoints "
                         f"(experiments.import_public); only the paper architecture is trained")
    files.writable_directory(workdir)
    # One training process per run directory: a second one is refused before it writes anything.
    with checkpointing.workdir_lock(workdir) if primary else contextlib.nullcontext():
        _prepare_and_train(config, workdir, log, primary)


def _prepare_and_train(config: ExperimentConfig, workdir: pathlib.Path, log: Callable[[str], None],
                       primary: bool) -> None:
    train_files, test_files = split_files(config.data)
    if not train_files:
        raise ValueError(f"no training files in {', '.join(config.data.folders)}")
    # Every file's labels at its folder's times, checked before any work.
    grids = time_grids(train_files + test_files)
    times = next(iter(grids.values()))
    log(f"{config.name}: {len(train_files)} train / {len(test_files)} test configurations from "
        f"{', '.join(config.data.folders)}, {len(times)} time scales")
    validation_files = []
    if config.data.n_validation:
        train_files, validation_files = dataset.split_paths(
            train_files, len(train_files) - config.data.n_validation, config.data.n_validation,
            config.data.split_seed)
    cache = workdir / "graph_cache"
    train_graphs = graph_lib.load_graphs(train_files, config.graph, cache, progress=primary)
    validation_graphs = graph_lib.load_graphs(validation_files, config.graph, cache, progress=primary)
    test_graphs = graph_lib.load_graphs(test_files, config.graph, cache, progress=primary)

    model_config = dataclasses.replace(
        config.model, num_outputs=len(times), scales=fit_feature_scales(train_graphs))
    config = dataclasses.replace(config, model=model_config)
    slope, intercept = metrics.fit_linear_baseline(_graph_features(train_graphs), *_targets(train_graphs))
    masked_targets = np.concatenate([g.nodes["targets"][g.nodes["target_mask"]] for g in train_graphs])
    metadata = {
        "model_revision": MODEL_REVISION,
        "config": to_dict(config),
        "times": [float(t) for t in times],
        # Each data folder's own time grid (several only for a run on several folders).
        "time_grids": {folder: [float(t) for t in grid] for folder, grid in grids.items()},
        # The model predicts standardised propensities; these map them back to σ for users.
        "target_mean": [float(x) for x in masked_targets.mean(0)],
        "target_std": [float(x) for x in masked_targets.std(0)],
        "baseline": {"slope": [float(x) for x in slope], "intercept": [float(x) for x in intercept]},
        "train_files": [str(p) for p in train_files],
        "validation_files": [str(p) for p in validation_files],
        "test_files": [str(p) for p in test_files],
        "data_provenance": data_provenance(train_files + validation_files + test_files),
    }
    saved = checkpointing.CheckpointManager(workdir / "checkpoints", log=log).restore_metadata()
    if saved is not None:
        check_model_revision(saved, workdir)
    # Compared in JSON form: tuples come back from a checkpoint as lists.
    if saved is not None and _what_is_computed(saved["config"]) != _what_is_computed(metadata["config"]):
        raise ValueError(f"{workdir} holds a run with a different config; use another --workdir")
    if primary:
        files.atomic_write(workdir / "config.json", json.dumps(metadata["config"], indent=1))
        files.atomic_write(workdir / PROVENANCE_NAME, json.dumps(metadata["data_provenance"], indent=1))
    training.train(config.model, config.train, train_graphs, test_graphs, workdir, metadata, log,
                   validation_graphs=validation_graphs)


def check_model_revision(metadata: dict, workdir: pathlib.Path) -> None:
    """Raises ValueError if a run's checkpoint was written by a model whose parameters mean
    something else than in this version (see ``model.MODEL_REVISION``)."""
    revision = metadata.get("model_revision", 1)
    if revision != MODEL_REVISION:
        raise ValueError(
            f"{workdir} was trained with EIGNN model revision {revision}; this version is revision "
            f"{MODEL_REVISION} (the scalarisation now reads each layer's new equivariant features, "
            f"paper eqs. 14-16), so its parameters would compute something else. Retrain it in a "
            f"new --workdir.")


def check_label_times(paths: Sequence[pathlib.Path], times: np.ndarray, whose: str) -> None:
    """Raises ValueError, before any work, naming the first file whose labels are not at
    ``times`` [T] (τ), ``whose`` times (e.g. "the model's"): predictions and tables are
    labelled with those times, so every file must be at them."""
    for path in paths:
        label_times = dataset.load_configuration(path, require=("md_prop",)).times
        if len(label_times) != len(times) or not np.allclose(label_times, times, rtol=1e-6):
            raise ValueError(
                f"{path}: its labels are at t = {' '.join(f'{t:g}' for t in label_times)}, not at "
                f"{whose} t = {' '.join(f'{t:g}' for t in times)}")


def time_grids(paths: Sequence[pathlib.Path]) -> dict[str, np.ndarray]:
    """{folder: label times [T] (τ)} of the files at ``paths``, folders in order of first
    appearance. Every file must be at its folder's times (those of its first file there),
    and every folder must have the same number T of time scales: the model's output k is
    the k-th time of each file's own grid.

    Raises ValueError naming the first file off its folder's grid, or the folders whose
    numbers of time scales differ; DataError for a file without labels.
    """
    grids: dict[str, np.ndarray] = {}
    by_folder: dict[str, list[pathlib.Path]] = {}
    for path in map(pathlib.Path, paths):
        by_folder.setdefault(str(path.parent), []).append(path)
    for folder, members in by_folder.items():
        grids[folder] = dataset.load_configuration(members[0], require=("md_prop",)).times
        check_label_times(members, grids[folder], f"{members[0].name}'s")
    counts = {folder: len(grid) for folder, grid in grids.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"the data folders have different numbers of time scales ({counts}): one model "
                         f"predicts one value per time scale, so every folder needs the same number")
    return grids


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    config: ExperimentConfig
    params: dict
    metadata: dict


def load_trained(workdir: pathlib.Path | str) -> TrainedRun:
    """The run's best-on-validation checkpoint if it has one, else its latest, with its config."""
    workdir = pathlib.Path(workdir)
    # Read-only: a mistyped --workdir raises FileNotFoundError instead of creating folders.
    manager = None
    if (workdir / "best").is_dir():
        manager = checkpointing.CheckpointManager(workdir / "best", create=False)
    if manager is None or manager.latest_step() is None:
        manager = checkpointing.CheckpointManager(workdir / "checkpoints", create=False)
    metadata = manager.restore_metadata()
    if metadata is None:
        raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}; train first")
    check_model_revision(metadata, workdir)
    config = from_dict(ExperimentConfig, metadata["config"])
    # The state template needs an example graph of the right kind: a tiny synthetic one.
    model = architectures.build(config.model)
    optimizer = training.make_optimizer(config.train, steps_per_epoch=1)
    template = training.init_state(model, optimizer, _template_graph(config.model.num_outputs), 0,
                                   training.program_key("template", config.model, config.train, 1))
    state, metadata = manager.restore_latest(template)
    manager.close()
    return TrainedRun(config=config, params=state.params, metadata=metadata)


def model_times(metadata: dict, paths: Sequence[pathlib.Path]) -> np.ndarray:
    """The times [T] (τ) of a trained run's outputs for the files at ``paths``: the run's
    time grid, or, for a run trained on several folders with their own grids, the grid of
    those folders the first file is on (by its label times).

    Raises ValueError, naming the file and the run's grids, when a run with several grids
    has none the file is on, or when ``paths`` mix the grids.
    """
    grids = [np.asarray(g) for g in (metadata.get("time_grids") or {}).values()]
    if len(grids) <= 1 or not paths:
        return np.asarray(metadata["times"])
    own = dataset.load_configuration(paths[0], require=("md_prop",)).times
    for grid in grids:
        if len(grid) == len(own) and np.allclose(grid, own, rtol=1e-6):
            return grid
    raise ValueError(f"{paths[0]}: its labels are at t = {' '.join(f'{t:g}' for t in own)}, none of the "
                     f"grids the model was trained on: " + "; ".join(' '.join(f'{t:g}' for t in g) for g in grids))


def _template_graph(num_outputs: int):
    """A 2-node padded graph; parameter shapes do not depend on graph size."""
    nodes = {
        "positions": np.zeros((2, 3), np.float32), "displacements": np.zeros((2, 3), np.float32),
        "species": np.zeros(2, np.int32), "energy": np.zeros(2, np.float32),
        "targets": np.zeros((2, num_outputs), np.float32), "target_mask": np.zeros(2, bool)}
    g = jraph.GraphsTuple(nodes=nodes, edges={"shifts": np.zeros((1, 3), np.float32)},
                          senders=np.array([1], np.int32), receivers=np.array([0], np.int32),
                          globals={"cell": np.eye(3, dtype=np.float32)[None] * 5},
                          n_node=np.array([2], np.int32), n_edge=np.array([1], np.int32))
    return graph_lib.pad_graph(g, graph_lib.PaddingBudget(n_node=4, n_edge=2, n_graph=2))


def evaluate(workdir: pathlib.Path | str, data: pathlib.Path | str | None = None,
             out_dir: pathlib.Path | str | None = None, log: Callable[[str], None] = print,
             published: pathlib.Path | str | None = None) -> list[dict]:
    """Pcc(mean), Pcc(all) per time scale of the trained model, the |d| baseline and the
    published models whose predictions the evaluated files carry.

    data: None → the run's own test split; else every file of that folder (transfer).
    When every evaluated file carries ``md_prop_half`` (our generator's split-half labels),
    the table gains the rows of :data:`metrics.NOISE_CEILING`: the best Pcc the labels'
    run-to-run noise allows (:func:`metrics.split_half_ceiling`).
    Published models (:attr:`dataset.Configuration.published`, e.g. CAGE in GlassBench test
    files) are scored with the same metric on the same particles (type A) and time scales as
    the model, each only if every evaluated file carries it (one log line names the files
    that lack it otherwise); their rows join the table, pcc.csv and pcc.png.
    published: a folder of published Pcc tables (:func:`read_published_pcc`); those of the
    evaluated data's temperature (:func:`data_temperature`) are drawn as dashed reference
    lines in pcc.png and printed under the table, on their own time grid. They are not
    written to pcc.csv, which holds only what was scored here.
    Writes ``pcc.csv``, ``pcc.png``, ``scatter.png`` (the model's predicted against the true
    propensity of every scored particle, one panel per time scale), ``map.png`` (a slab of
    the first evaluated file coloured by true and by predicted propensity at the time scale
    of :func:`eignn_jax.dataset.tau_alpha_time_index`) and ``pcc_provenance.json`` (the run, its checkpoint's
    epoch, the graph config, :func:`data_provenance` of the training and of the evaluated
    files) to ``out_dir`` (default: the workdir, or ``workdir/eval_<folder name>`` for
    another folder) and returns the rows.
    A run trained on several folders with their own time grids (``data.paths``) is
    evaluated on its test split one folder at a time, into ``out_dir/eval_<folder name>``;
    the returned rows then carry a ``data`` key, the folder.

    Raises DataError naming the file and key for a published prediction without one row per
    time scale of the labels, and ValueError naming the file for a temperature without
    published tables, before any prediction is computed.
    """
    workdir = pathlib.Path(workdir)
    run = load_trained(workdir)
    selected = "lowest validation loss" if "validation_loss" in run.metadata else "last epoch"
    log(f"evaluating the checkpoint of epoch {run.metadata['epoch'] + 1} ({selected}), trained on:")
    for line in describe_provenance(run.metadata.get("data_provenance")):
        log(f"  {line}")
    grids = run.metadata.get("time_grids") or {}
    if data is None and len(grids) > 1:
        # Trained on several folders with their own grids: one evaluation per folder.
        out_dir = pathlib.Path(out_dir) if out_dir else workdir
        test_files = [pathlib.Path(p) for p in run.metadata["test_files"]]
        rows = []
        for folder in grids:
            paths = [p for p in test_files if str(p.parent) == folder]
            log(f"test files of {folder}:")
            rows += [{**row, "data": folder} for row in _evaluate_files(
                run, workdir, paths, out_dir / f"eval_{pathlib.Path(folder).name}", log, published)]
        return rows
    if data is None:
        paths = [pathlib.Path(p) for p in run.metadata["test_files"]]
        out_dir = pathlib.Path(out_dir) if out_dir else workdir
    else:
        paths = dataset.list_configurations(data)
        out_dir = pathlib.Path(out_dir) if out_dir else workdir / f"eval_{pathlib.Path(data).name}"
    return _evaluate_files(run, workdir, paths, out_dir, log, published)


def _evaluate_files(run: TrainedRun, workdir: pathlib.Path, paths: list[pathlib.Path], out_dir: pathlib.Path,
                    log: Callable[[str], None], published: pathlib.Path | str | None) -> list[dict]:
    """:func:`evaluate` of ``run`` on the files at ``paths``, written to ``out_dir``."""
    if not paths:
        raise ValueError("no test configurations to evaluate" + (
            "; this run was imported and has no test split: pass --data FOLDER"
            if run.metadata.get("imported_from") else ""))
    times = model_times(run.metadata, paths)
    check_label_times(paths, times, "the model's")
    reference, temperature = None, None
    if published is not None:
        temperature = data_temperature(paths)
        reference = read_published_pcc(published, temperature)
    others = published_predictions(paths, len(times), log)
    halves = label_halves(paths, log)
    files.writable_directory(out_dir)
    graphs = graph_lib.load_graphs(paths, run.config.graph, workdir / "graph_cache", progress=True)
    scored = sum(int(g.nodes["target_mask"].sum()) for g in graphs)
    if scored < 2:
        raise ValueError(f"{len(paths)} file(s) hold {scored} labelled type-A particle(s): a Pearson "
                         f"correlation needs at least 2 (files: {', '.join(str(f) for f in paths[:3])})")

    budget = graph_lib.padding_budget(graphs, batch_size=1)
    predict_step = training.make_predict_step(architectures.build(run.config.model),
                                              training.program_key("predict_step", run.config.model))
    predictions, _ = training.predict_graphs(predict_step, run.params, graphs, budget)
    baseline = None   # an imported checkpoint comes without training data to fit the baseline on
    if run.metadata.get("baseline"):
        baseline = metrics.predict_linear_baseline(
            _graph_features(graphs), np.asarray(run.metadata["baseline"]["slope"]),
            np.asarray(run.metadata["baseline"]["intercept"]))

    targets, masks = _targets(graphs)
    rows, tables = [], {}
    for name, preds in ((run.config.name, predictions), (BASELINE_NAME, baseline), *others.items()):
        if preds is None:
            continue
        table = tables[name] = metrics.pcc_table(preds, targets, masks)
        rows += [{"model": name, "time": float(t), "pcc_mean": float(m), "pcc_all": float(a)}
                 for t, m, a in zip(times, table["pcc_mean"], table["pcc_all"])]
    if halves is not None:
        ceiling = metrics.split_half_ceiling(halves, masks)
        rows += [{"model": metrics.NOISE_CEILING, "time": float(t), "pcc_mean": float(m), "pcc_all": float(a)}
                 for t, m, a in zip(times, ceiling["pcc_mean"], ceiling["pcc_all"])]
    provenance = {"run": str(workdir.resolve()), "epoch": run.metadata["epoch"] + 1,
                  "graph": to_dict(run.config.graph), "trained_on": run.metadata.get("data_provenance"),
                  "evaluated_on": data_provenance(paths), "published_models_scored": list(others),
                  "published_reference": None if reference is None else {
                      "folder": str(pathlib.Path(published).resolve()), "temperature": temperature}}
    # The map: the first file, at one time scale; true values standardised like the model's.
    k = dataset.tau_alpha_time_index(times, paths[0].parent)
    first = graphs[0]
    map_panels = [
        (f"true, t = {times[k]:g} τ", plotting.z_scores(targets[0][:, k], masks[0]), "true propensity (z-score)"),
        (f"predicted, t = {times[k]:g} τ", predictions[0][:, k], "predicted propensity (standardised)")]
    figures = ("pcc.png", "scatter.png", "map.png")
    with files.output_set(out_dir / "pcc.csv", *(out_dir / name for name in figures),
                          out_dir / EVALUATION_PROVENANCE_NAME):
        metrics.write_pcc_csv(out_dir / "pcc.csv", rows)
        plotting.plot_pcc(rows, out_dir / "pcc.png",
                          title=f"{run.config.name} on {len(paths)} configurations",
                          reference=reference,
                          reference_label=f"published, T = {temperature:g}" if reference else "published")
        plotting.plot_propensity_scatter(
            np.concatenate([t[m] for t, m in zip(targets, masks)]),
            np.concatenate([p[m] for p, m in zip(predictions, masks)]),
            times, tables[run.config.name]["pcc_all"], out_dir / "scatter.png",
            title=f"{run.config.name} on the type-A particles of {len(paths)} configurations")
        plotting.plot_propensity_map(first.nodes["positions"], np.diag(first.globals["cell"][0]),
                                     np.asarray(first.nodes["species"]) == 0, map_panels,
                                     path=out_dir / "map.png", title=paths[0].name)
        files.atomic_write(out_dir / EVALUATION_PROVENANCE_NAME, json.dumps(provenance, indent=1))
    log(format_table(rows))
    if reference is not None:
        log(f"published Pcc at T = {temperature:g} ({published}), on its own time grid, not the "
            f"evaluated files' (dashed in pcc.png):")
        log(format_table(reference))
    log(f"wrote {out_dir / 'pcc.csv'} and {', '.join(figures)} beside it")
    return rows


def published_predictions(paths: Sequence[pathlib.Path], n_times: int,
                          log: Callable[[str], None] = print) -> dict[str, list[np.ndarray]]:
    """The published models' predictions to score beside the model: {name: [N_k, T] float
    per file of ``paths``}, for each of :data:`dataset.PUBLISHED_MODELS` that every file
    carries (:attr:`dataset.Configuration.published`); rows transposed to the graphs'
    particle-major layout, particles in file order like the labels.

    A model that only some files carry is not scored: one log line names the files that
    lack it. Raises DataError naming the file and key when a carried array has not
    ``n_times`` rows (one per time scale of the labels): its rows could not be matched to
    the label times.
    """
    carried: dict[str, list[np.ndarray]] = {}
    lacking: dict[str, list[str]] = {}
    for path in paths:
        config = dataset.load_configuration(path)
        for name in dataset.PUBLISHED_MODELS:
            prediction = config.published.get(name)
            if prediction is None:
                lacking.setdefault(name, []).append(path.name)
                continue
            if prediction.shape[0] != n_times:
                raise dataset.DataError(
                    path, name, f"has {prediction.shape[0]} rows but the labels have T = {n_times} "
                    f"time scales: a published prediction is scored with one row per time scale")
            carried.setdefault(name, []).append(prediction.T)
    for name in carried:
        if name in lacking:
            names = lacking[name]
            log(f"{name}: not scored: {len(names)} of the {len(paths)} evaluated files lack it "
                f"({', '.join(names[:5])}{f' and {len(names) - 5} more' if len(names) > 5 else ''})")
    scored = {name: predictions for name, predictions in carried.items() if name not in lacking}
    if scored:
        log(f"also scored on the same type-A particles and time scales: {', '.join(scored)} "
            f"(predictions the evaluated files carry)")
    return scored


def label_halves(paths: Sequence[pathlib.Path], log: Callable[[str], None] = print) -> list[np.ndarray] | None:
    """The split-half propensities (``md_prop_half`` [2, T, N_k], particles in file order like
    the labels) of every file of ``paths``, for the noise ceiling
    (:func:`eignn_jax.metrics.split_half_ceiling`), or None when any file lacks them
    (GlassBench files, data sets made before they were stored); one log line says so when
    only some carry them."""
    halves = [dataset.load_configuration(path).extras.get(dataset.KEY_HALF_PROPENSITY) for path in paths]
    lacking = [path.name for path, h in zip(paths, halves) if h is None]
    if lacking:
        if len(lacking) < len(paths):
            log(f"{metrics.NOISE_CEILING}: not computed: {len(lacking)} of the {len(paths)} evaluated files "
                f"lack {dataset.KEY_HALF_PROPENSITY} ({', '.join(lacking[:5])}"
                f"{f' and {len(lacking) - 5} more' if len(lacking) > 5 else ''})")
        return None
    return halves


def data_temperature(paths: Sequence[pathlib.Path]) -> float:
    """The temperature (ε/k_B, 2 decimals) of the files at ``paths``: each file's GlassBench
    name or folder (:func:`dataset.glassbench_temperature`), else the ``T`` of its folder's
    meta.json.

    Raises ValueError naming a file whose temperature neither states, or the files of two
    different temperatures.
    """
    found: dict[float, pathlib.Path] = {}
    for path in map(pathlib.Path, paths):
        temperature = dataset.glassbench_temperature(path)
        if temperature is None:
            meta_t = (dataset.folder_meta(path.parent) or {}).get("T")
            if isinstance(meta_t, (int, float)) and not isinstance(meta_t, bool):
                temperature = round(float(meta_t), 2)
        if temperature is None:
            raise ValueError(f"{path}: its temperature is unknown: neither its name or folder is "
                             f"GlassBench's (N4096T0.44_7.npz, T0.44/) nor does "
                             f"{path.parent / dataset.META_NAME} give T")
        found.setdefault(temperature, path)
    if len(found) > 1:
        raise ValueError("the evaluated files are at different temperatures: " + ", ".join(
            f"T = {t:g} ({p})" for t, p in found.items()))
    return next(iter(found))


# Published Pcc tables, one pair per temperature T: pcc_all_TTT.csv and pcc_mean_TTT.csv
# (TTT = 100 T, e.g. 044), columns t and one per model (public EIGNN repository, results/).
PUBLISHED_TABLES = ("pcc_all", "pcc_mean")
# pcc_mean_044.csv calls SE3 "SE(3)-GNN"; pcc_all_044.csv and every other table say SE3.
_PUBLISHED_ALIASES = {"SE(3)-GNN": "SE3"}


def read_published_pcc(folder: pathlib.Path | str, temperature: float) -> list[dict]:
    """Published Pcc rows of ``temperature`` from ``folder``'s ``pcc_all_TTT.csv`` and
    ``pcc_mean_TTT.csv`` (TTT = 100 T, zero-padded: 044 for T = 0.44).

    Returns rows {model, time (τ, the table's own grid), pcc_mean, pcc_all} per model and
    time, models in the order of pcc_all's columns, then those only pcc_mean lists
    (``SE(3)-GNN`` read as ``SE3``); a metric the other table does not list a model for is nan.
    Raises ValueError naming the file when it does not exist (with the temperatures the
    folder has tables for) or is not a table of numbers headed by ``t``, or when the two
    files list different times.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such directory of published Pcc tables")
    code = f"{round(temperature * 100):03d}"
    tables = {}
    for metric in PUBLISHED_TABLES:
        path = folder / f"{metric}_{code}.csv"
        if not path.is_file():
            have = sorted(int(p.stem.rsplit("_", 1)[1]) / 100 for p in folder.glob(f"{metric}_[0-9][0-9][0-9].csv"))
            raise ValueError(f"{path}: no published Pcc table for T = {temperature:g} (this folder has "
                             f"them for T = {', '.join(f'{t:g}' for t in have) or 'none'})")
        tables[metric] = _read_published_table(path)
    (times_all, all_), (times_mean, mean) = tables["pcc_all"], tables["pcc_mean"]
    paths = f"{folder / f'pcc_all_{code}.csv'} and pcc_mean_{code}.csv"
    if len(times_all) != len(times_mean) or not np.allclose(times_all, times_mean, rtol=1e-6):
        raise ValueError(f"{paths} list different times: {times_all} and {times_mean}")
    # At T = 0.44 pcc_all also lists simple descriptors (SBO, DEN, ...) that pcc_mean lacks.
    missing = np.full(len(times_all), np.nan)
    return [{"model": model, "time": float(t), "pcc_mean": float(m), "pcc_all": float(a)}
            for model in dict.fromkeys([*all_, *mean])
            for t, m, a in zip(times_all, mean.get(model, missing), all_.get(model, missing))]


def _read_published_table(path: pathlib.Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(times [K] τ, {model: Pcc [K]}) of one published table; ValueError naming the file."""
    with open(path, newline="") as handle:
        lines = [line for line in csv.reader(handle) if line]
    if not lines or lines[0][0].strip() != "t" or len(lines[0]) < 2 or len(lines) < 2:
        raise ValueError(f"{path}: expected a header 't,<model>,...' and one row per time")
    models = [_PUBLISHED_ALIASES.get(name.strip(), name.strip()) for name in lines[0][1:]]
    if len(set(models)) != len(models):
        raise ValueError(f"{path}: a model appears twice in the header {lines[0]}")
    for k, line in enumerate(lines[1:], start=2):
        if len(line) != len(models) + 1:
            raise ValueError(f"{path}: line {k} has {len(line)} cells under a header of {len(models) + 1}")
    try:
        values = np.array([[float(cell) for cell in line] for line in lines[1:]], dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{path}: not a table of numbers ({error})") from None
    if not (np.all(values[:, 0] > 0) and np.all(np.diff(values[:, 0]) > 0)):
        raise ValueError(f"{path}: times must be positive and increasing, got {values[:, 0]}")
    return values[:, 0], {model: values[:, k + 1] for k, model in enumerate(models)}


def format_table(rows: Sequence[dict]) -> str:
    """Plain-text table: one line per model and metric, one column per time; 'mean±std'
    and the run count where rows summarise several runs (``metrics.summarise_runs``)."""
    times = sorted({r["time"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    lookup = {(r["model"], r["time"]): r for r in rows}
    spread = all("runs" in r for r in rows)
    column = 12 if spread else 8
    name_width = max(len(m) for m in models) + (16 if spread else 12)
    lines = ["t".ljust(name_width) + "".join(f"{t:>{column}g}" for t in times)]
    for model in models:
        for metric in ("pcc_mean", "pcc_all"):
            label = f"{model} {metric.replace('pcc_', 'Pcc(')})"
            if spread:
                label += f" ×{lookup[(model, times[0])]['runs']}"
                cells = [f"{lookup[(model, t)][metric]:>7.3f}±{lookup[(model, t)][metric + '_std']:.3f}"
                         for t in times]
            else:
                cells = [f"{lookup[(model, t)][metric]:8.3f}" for t in times]
            lines.append(label.ljust(name_width) + "".join(cells))
    return "\n".join(lines)


PREDICTION_KEY = "predicted_standardised"
PREDICTION_MAP_NAME = "map.png"   # in the output folder of predict_files


def prediction_paths(inputs: Sequence[pathlib.Path | str], out_dir: pathlib.Path,
                     stems: Sequence[str] | None = None,
                     companions: Sequence[str] = (".xyz",)) -> list[pathlib.Path]:
    """``out_dir/<stem>.npz`` for each input (``<parent>_<stem>.npz`` where stems clash).

    stems: one output name (without extension) per input, e.g. a frame's
      :attr:`formats.Frame.stem`; None: each input's name without its extension.
      An input may appear once per frame it holds.
    companions: extensions of the files written beside each ``.npz`` (``.xyz``, ``.dump``).
    Raises ValueError, before anything is written, if an output would be one of the inputs,
    two outputs would coincide, or an output would replace an existing file that is not a
    prediction (its ``.npz`` or ``.xyz``).
    """
    inputs = [pathlib.Path(p) for p in inputs]
    stems = [p.stem for p in inputs] if stems is None else list(stems)
    clashing = {n for n in stems if stems.count(n) > 1}
    targets = [out_dir / (f"{p.parent.name}_{stem}.npz" if stem in clashing else f"{stem}.npz")
               for p, stem in zip(inputs, stems)]
    resolved_inputs = {p.resolve(): p for p in inputs}
    seen: dict[pathlib.Path, pathlib.Path] = {}
    for source, target in zip(inputs, targets):
        for output in (target, *(target.with_suffix(suffix) for suffix in companions)):
            if output.resolve() in resolved_inputs:
                raise ValueError(f"{output} would overwrite the input {resolved_inputs[output.resolve()]}; "
                                 f"choose another --out")
        if target.resolve() in seen:
            raise ValueError(f"{seen[target.resolve()]} and {source} would both be written to {target}")
        seen[target.resolve()] = source
        if target.exists() and not _is_prediction(target):
            raise ValueError(f"{target} exists and is not a prediction file; refusing to replace it")
    return targets


def _is_prediction(path: pathlib.Path) -> bool:
    try:
        with np.load(path) as data:
            return PREDICTION_KEY in data.files
    except (OSError, ValueError):
        return False


def predict_files(workdir: pathlib.Path | str, paths: Sequence[pathlib.Path | str],
                  out_dir: pathlib.Path | str, *, temperature: float | None = None,
                  format: str | None = None, frames: slice | Sequence[int] | None = None,
                  type_map: Mapping[str, int] | None = None, dump: bool = False,
                  log: Callable[[str], None] = print) -> list[pathlib.Path]:
    """Raw configurations → per-particle propensities at every trained time scale.

    Inputs are read by :func:`formats.read_frames` (``.npz``, LAMMPS dump and data,
    extended XYZ, GSD; ``format``, ``frames`` and ``type_map`` as there), every one before
    anything is computed. Equilibrium positions of the kind the run was trained with are
    computed when a configuration lacks them. For each configuration writes
    ``out_dir/<stem>.npz``, where ``<stem>`` is the input's name without its extension, or
    ``<stem>_frame<k>`` for frame k of a trajectory (keys ``types``,
    ``initial_positions``, the equilibrium positions used, ``predicted_propensity`` [T, N]
    in σ, ``predicted_standardised`` [T, N], ``times``, ``box``, ``source``: the input's
    path, ``source_frame``: the frame's index (trajectories only), ``workdir``: the run's,
    ``graph_cutoff`` in σ, and as JSON text ``equilibrium_computed``: how the structures
    computed here went, and
    ``equilibrium_settings``: kind → the parameters that made each structure used (from
    :class:`equilibrium.EquilibriumReport`, or the record beside the input; null when
    unknown)) and ``out_dir/<stem>.xyz``
    (extended XYZ: species, positions, displacement to equilibrium, one column per time
    ``prop_0 … prop_{T−1}``; the times are listed in the header); with ``dump``, also
    ``out_dir/<stem>.dump`` (LAMMPS text dump, :func:`formats.format_lammps_dump`: ``id type
    x y z`` and one column per time, ``d_prop_0 … d_prop_{T−1}``). For the first configuration
    also ``out_dir/map.png``: a slab of it coloured by the predicted propensity at the time
    scale of :func:`eignn_jax.dataset.tau_alpha_time_index`. Returns the npz paths.

    Outputs never replace an input or each other (clashing names get the input's folder
    name as a prefix; see :func:`prediction_paths`).

    A run imported from a published checkpoint carries no propensity scale (the public
    model predicts propensities standardised per species, and the checkpoint does not hold
    the statistics): then only ``predicted_standardised`` is written, and the XYZ columns
    are ``std_prop_0 …`` (dump columns ``d_std_prop_0 …``).
    """
    from eignn_jax import formats, xyz
    run = load_trained(workdir)
    log(f"model {pathlib.Path(workdir).resolve()}, trained on:")
    for line in describe_provenance(run.metadata.get("data_provenance")):
        log(f"  {line}")
    kind = run.config.graph.equilibrium
    # Structures the graph needs: the equilibrium one, and the inherent one for the energy.
    needed = [kind] + (["inherent"] if run.config.graph.energy_structure == "inherent" and kind != "inherent" else [])
    times = np.asarray(run.metadata["times"])
    scaled = run.metadata.get("target_mean") is not None
    if not scaled:
        log("this run has no propensity scale (an imported checkpoint): writing standardised "
            "propensities, each species standardised over its own particles")
    predict_steps = {}   # one per model config (chunked or not), each compiled per budget
    out_dir = pathlib.Path(out_dir)
    inputs = [frame for path in paths
              for frame in formats.read_frames(path, format=format, frames=frames, type_map=type_map)]
    companions = (".xyz", ".dump") if dump else (".xyz",)
    targets = prediction_paths([frame.path for frame in inputs], out_dir, [frame.stem for frame in inputs],
                               companions)
    files.writable_directory(out_dir)
    written = []

    def predict_one(frame: formats.Frame, target: pathlib.Path) -> None:
        path, config = frame.path, frame.configuration
        label = pathlib.Path(config.path).name     # the file's name, and the frame's index in it
        recorded = equilibrium.recorded_settings(path)
        settings = {needed_kind: recorded.get(needed_kind) for needed_kind in needed}
        computed = {}
        for needed_kind in needed:
            if not equilibrium.has_equilibrium(config, needed_kind):
                config, report = equilibrium.add_structure(config, needed_kind, path, temperature=temperature,
                                                           log=log)
                settings[needed_kind] = report.settings
                computed[needed_kind] = report.summary
                log(f"{label}: computed the {needed_kind} structure {json.dumps(report.summary)}")
        log(f"{label}: N = {config.n_particles}, box {' × '.join(f'{b:.4f}' for b in config.box)} σ, "
            f"graph cutoff {run.config.graph.cutoff} σ")
        g = graph_lib.build_graph(config, run.config.graph)
        n = config.n_particles
        # Labels are not needed to predict; zero targets keep the step's shapes.
        g = g._replace(nodes={**g.nodes, "targets": np.zeros((n, len(times)), np.float32)})
        model_config = for_graph_size(run.config.model, int(g.n_edge[0]))
        if model_config not in predict_steps:
            predict_steps[model_config] = training.make_predict_step(
                architectures.build(model_config), training.program_key("predict_step", model_config))
        [standardised], _ = training.predict_graphs(predict_steps[model_config], run.params, [g],
                                                    graph_lib.padding_budget([g]))
        if not np.all(np.isfinite(standardised)):
            raise ValueError(f"{config.path}: the model's predictions are not finite ({config.n_particles} "
                             f"particles); nothing written for it")
        arrays = {"types": np.asarray(config.types), "initial_positions": np.asarray(config.positions),
                  "source": np.asarray(str(path.resolve())),
                  **{f"initial_positions_{name}": np.asarray(config.equilibrium(name)) for name in needed},
                  PREDICTION_KEY: standardised.T.astype(np.float32),
                  "times": times.astype(np.float64), "box": np.asarray(config.box),
                  "graph_cutoff": np.float64(run.config.graph.cutoff),
                  "workdir": np.asarray(str(pathlib.Path(workdir).resolve())),
                  # How the equilibrium structures used were made here (JSON; {} if read from the file).
                  "equilibrium_computed": np.asarray(json.dumps(computed)),
                  "equilibrium_settings": np.asarray(json.dumps(settings))}
        if frame.index is not None:
            arrays["source_frame"] = np.int64(frame.index)
        if scaled:
            propensity = (standardised * np.asarray(run.metadata["target_std"])
                          + np.asarray(run.metadata["target_mean"]))           # [N, T], σ
            arrays["predicted_propensity"] = propensity.T.astype(np.float32)
            columns = {f"prop_{t}": propensity[:, t] for t in range(len(times))}
        else:
            columns = {f"std_prop_{t}": standardised[:, t] for t in range(len(times))}
        with files.output_set(*(target.with_suffix(suffix) for suffix in (".npz", *companions))):
            files.atomic_savez(target, arrays)
            xyz.write_extended_xyz(
                target.with_suffix(".xyz"), config.types, config.positions, config.box,
                {"disp": g.nodes["displacements"], **columns},
                info={"times": " ".join(f"{t:g}" for t in times), "model": run.config.name,
                      "equilibrium": kind, "source": str(path.resolve()),
                      **({} if frame.index is None else {"source_frame": str(frame.index)})})
            if dump:
                formats.write_lammps_dump(target.with_suffix(".dump"), config.types, config.positions,
                                          config.box, {f"d_{name}": values for name, values in columns.items()})
        if target == targets[0]:
            # One map, of the first configuration: a look at the predictions that costs little.
            k = dataset.tau_alpha_time_index(times, path.parent)
            plotting.plot_propensity_map(
                config.positions, config.box, config.is_type_a,
                [(f"predicted, t = {times[k]:g} τ", (propensity if scaled else standardised)[:, k],
                  "predicted propensity (σ)" if scaled else "predicted propensity (standardised)")],
                path=out_dir / PREDICTION_MAP_NAME, title=target.stem)

    with progress.progress(len(inputs), "predictions", unit="configuration") as shown:
        for k, (frame, target) in enumerate(zip(inputs, targets)):
            try:
                predict_one(frame, target)
            except (dataset.DataError, ValueError, RuntimeError, OSError):
                done = ", ".join(p.name for p in written) or "none"
                log(f"stopped at {frame.configuration.path}: {len(written)} of {len(inputs)} configuration(s) "
                    f"done before it ({done})")
                raise
            written.append(target)
            log(f"[{k + 1}/{len(inputs)}] {pathlib.Path(frame.configuration.path).name} → {target} and "
                f"{', '.join(target.with_suffix(suffix).name for suffix in companions)}"
                + (f"; map in {PREDICTION_MAP_NAME}" if k == 0 else ""))
            shown.update()
    return written


def import_public_checkpoint(checkpoint: pathlib.Path | str, workdir: pathlib.Path | str, *,
                             times: Sequence[float], equilibrium: str, name: str,
                             provenance: dict | None = None, log: Callable[[str], None] = print) -> None:
    """A published checkpoint of the public EIGNN code (``.pt``) → a run directory that
    ``evaluate`` and ``predict_files`` read like a trained one.

    times: [T] τ, the time scales of the checkpoint's outputs (not stored in it).
    equilibrium: 'inherent' or 'cage', the structure its displacement vectors come from.
    The graph is built as the public code builds it: E_i unshifted, on the inherent structure.
    provenance: extra JSON facts recorded with the run (e.g. where the times came from).
    Raises CheckpointFileError/ValueError (naming the file or entry) for a file that is not
    a public EIGNN checkpoint, and ValueError if ``workdir`` already holds a run.
    """
    import hashlib
    from eignn_jax import public_model, torch_checkpoint
    from eignn_jax.config import GraphConfig
    checkpoint, workdir = pathlib.Path(checkpoint), pathlib.Path(workdir)
    if (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir()):
        raise ValueError(f"{workdir} already holds a run; choose another --workdir")
    content = torch_checkpoint.load(checkpoint)   # read once: the state dict and the epoch
    state = torch_checkpoint.state_dict_of(content, checkpoint)
    try:
        model_config = public_model.config_from_state_dict(state)
        if len(times) != model_config.num_outputs:
            raise ValueError(f"the model predicts {model_config.num_outputs} time scales per species, "
                             f"but {len(times)} times were given")
        config = ExperimentConfig(
            name=name, model=model_config,
            graph=GraphConfig(cutoff=public_model.PUBLIC_CUTOFF, equilibrium=equilibrium,
                              energy_structure="inherent", energy_shifted=False))
        optimizer = training.make_optimizer(config.train, steps_per_epoch=1)
        template = training.init_state(architectures.build(model_config), optimizer,
                                       _template_graph(model_config.num_outputs), 0)
        variables = public_model.variables_from_state_dict(state, template.params)
    except ValueError as error:
        raise ValueError(f"{checkpoint}: {error}") from error
    epoch = content.get("epoch") if isinstance(content, dict) else None
    epoch = epoch if isinstance(epoch, int) and epoch >= 0 else 0
    metadata = {
        "model_revision": MODEL_REVISION,
        "config": to_dict(config),
        "times": [float(t) for t in times],
        "target_mean": None, "target_std": None, "baseline": None,
        "train_files": [], "validation_files": [], "test_files": [],
        "imported_from": {"path": str(checkpoint.resolve()),
                          "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
                          **(provenance or {})},
        "epoch": epoch,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    manager = checkpointing.CheckpointManager(workdir / "checkpoints")
    manager.save(epoch, template.replace(params=variables, opt_state=optimizer.init(variables)), metadata)
    manager.close()
    files.atomic_write(workdir / "config.json", json.dumps(metadata["config"], indent=1))
    log(f"imported {checkpoint.name} (epoch {epoch + 1}, {model_config.num_layers} layers, width "
        f"{model_config.width}, {model_config.num_outputs} times × 2 species) into {workdir}")
