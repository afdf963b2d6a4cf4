"""The paper's ablation and depth study (EIGNN paper Fig. 8) as one set of runs.

One run per model (the full EIGNN, ablation A, ablation B, and the full model at other
depths) and seed, each in its own run directory ``<study dir>/<name>_s<seed>/`` as
``experiments.train`` would make it (:func:`eignn_jax.experiment.run_training`, then
:func:`eignn_jax.experiment.evaluate`). The runs are summarised over seeds
(:func:`eignn_jax.metrics.summarise_runs`) into ``study.csv`` and ``study.png``.

A run is finished when its evaluation (``pcc.csv``) exists: running the study again skips
it, and resumes an unfinished one from its latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Sequence

from eignn_jax import experiment, files, metrics, plotting
from eignn_jax.config import ExperimentConfig, check

FULL = "EIGNN"
# --models keys → (run name, ModelConfig.variant); paper §5.2: A drops α⁰, B keeps only
# invariant features.
MODELS = {FULL: (FULL, "full"), "A": (f"{FULL}-A", "no_alpha0"), "B": (f"{FULL}-B", "invariant")}
DEFAULT_MODELS = (FULL, "A", "B")
DEFAULT_DEPTHS = (1, 3, 5, 7)
DEFAULT_SEEDS = (0, 1, 2)
CSV_NAME, PLOT_NAME = "study.csv", "study.png"
FINISHED_NAME = "pcc.csv"   # written by experiment.evaluate, last of a run's outputs


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of the study: ``config`` (name, model variant, depth and train.seed set)
    trained in ``<study dir>/<directory>``."""

    name: str
    seed: int
    config: ExperimentConfig

    @property
    def directory(self) -> str:
        return f"{self.name}_s{self.seed}"


def depth_name(num_layers: int) -> str:
    return f"{FULL}-L{num_layers}"


def plan(config: ExperimentConfig, seeds: Sequence[int] = DEFAULT_SEEDS,
         models: Sequence[str] = DEFAULT_MODELS, depths: Sequence[int] = DEFAULT_DEPTHS) -> list[PlannedRun]:
    """The runs of the study, models first, then depths, seeds innermost.

    config: the base config; each run keeps it but for ``name``, ``model.variant``,
      ``model.num_layers`` (depth runs) and ``train.seed``.
    models: keys of :data:`MODELS` (``EIGNN``, ``A``, ``B``), at the config's depth.
    depths: numbers of layers N_L of the full model (``EIGNN-L<N_L>``). The config's own
      depth is the ``EIGNN`` run, planned once (as ``EIGNN`` even if ``models`` omits it).
    Raises ValueError for an unknown model key, a depth < 1, a negative seed, or a
    repeated model, depth or seed.
    """
    for what, values in (("models", models), ("depths", depths), ("seeds", seeds)):
        if len(set(values)) != len(values):
            raise ValueError(f"{what} repeats a value: {list(values)}")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}: choose from {list(MODELS)}")
    bad = [d for d in depths if not d >= 1]
    if bad:
        raise ValueError(f"depths must be ≥ 1 layer, got {bad}")
    if not seeds:
        raise ValueError("no seeds: give at least one")
    variants = [MODELS[m] for m in models]
    own_depth = config.model.num_layers
    if own_depth in depths and FULL not in models:
        variants.append(MODELS[FULL])
    layouts = [(name, variant, own_depth) for name, variant in variants]
    layouts += [(depth_name(d), "full", d) for d in depths if d != own_depth]
    runs = []
    for name, variant, depth in layouts:
        for seed in seeds:
            # TrainConfig refuses a negative seed here, naming the field.
            run_config = dataclasses.replace(
                config, name=name, model=dataclasses.replace(config.model, variant=variant, num_layers=depth),
                train=dataclasses.replace(config.train, seed=seed))
            check(run_config)
            runs.append(PlannedRun(name=name, seed=seed, config=run_config))
    return runs


def run(runs: Sequence[PlannedRun], study_dir: pathlib.Path | str,
        log: Callable[[str], None] = print) -> list[dict]:
    """Trains and evaluates the unfinished ``runs`` (see :func:`plan`) in ``study_dir``, then
    writes ``study.csv`` (:func:`eignn_jax.metrics.write_seed_csv`: per model and time,
    Pcc(mean) and Pcc(all) mean and sample standard deviation over seeds, and the run count)
    and ``study.png`` (:func:`eignn_jax.plotting.plot_pcc`, ± one standard deviation as bands).

    The |d| baseline rows of every run are summarised too (the same fit on the same
    training files: spread 0). Returns the summary rows.
    Raises ValueError (a run directory holding another config, bad data) or OSError from
    the training or evaluation of a run, and ValueError if two runs disagree on times.
    """
    study_dir = files.writable_directory(study_dir)
    tables = []
    for k, planned in enumerate(runs, 1):
        workdir = study_dir / planned.directory
        if (workdir / FINISHED_NAME).exists():
            log(f"[{k}/{len(runs)}] {planned.directory}: finished, skipped")
        else:
            log(f"[{k}/{len(runs)}] {planned.directory}: training")
            # Resumes from the run's latest checkpoint; a finished training trains no epoch.
            experiment.run_training(planned.config, workdir, log=log)
            experiment.evaluate(workdir, log=log)
        tables.append(metrics.read_pcc_csv(workdir / FINISHED_NAME))
    rows = metrics.summarise_runs(tables)
    with files.output_set(study_dir / CSV_NAME, study_dir / PLOT_NAME):
        metrics.write_seed_csv(study_dir / CSV_NAME, rows)
        seeds = sorted({planned.seed for planned in runs})
        plotting.plot_pcc(rows, study_dir / PLOT_NAME,
                          title=f"ablations and depths, mean ± std over seeds {', '.join(map(str, seeds))}")
    return rows


def verdicts(rows: Sequence[dict], model: str = FULL, ablation: str = MODELS["B"][0]) -> list[str]:
    """One line per time scale: whether ``model``'s mean Pcc(all) over seeds exceeds
    ``ablation``'s by more than the sum of their two sample standard deviations
    (mean_model − mean_ablation > std_model + std_ablation), from :func:`run`'s rows.

    Returns one line saying why there is no verdict when either model is not in ``rows``.
    """
    lookup = {(r["model"], r["time"]): r for r in rows}
    times = sorted({r["time"] for r in rows})
    missing = [m for m in (model, ablation) if not any(r["model"] == m for r in rows)]
    if missing:
        return [f"no verdict {model} against {ablation}: {', '.join(missing)} not in the study"]
    lines = []
    for t in times:
        ours, theirs = lookup.get((model, t)), lookup.get((ablation, t))
        if ours is None or theirs is None:
            lines.append(f"t = {t:g}: no verdict, {model if ours is None else ablation} has no row")
            continue
        gap = ours["pcc_all"] - theirs["pcc_all"]
        spread = ours["pcc_all_std"] + theirs["pcc_all_std"]
        word = "exceeds" if gap > spread else "does not exceed"
        lines.append(f"t = {t:g}: {model} {word} {ablation}: Pcc(all) {ours['pcc_all']:.3f} − "
                     f"{theirs['pcc_all']:.3f} = {gap:+.3f} against spreads {ours['pcc_all_std']:.3f} + "
                     f"{theirs['pcc_all_std']:.3f} = {spread:.3f}"
                     + (" (one seed: no spread)" if min(ours["runs"], theirs["runs"]) < 2 else ""))
    return lines


__all__ = ["MODELS", "PlannedRun", "depth_name", "plan", "run", "verdicts"]
