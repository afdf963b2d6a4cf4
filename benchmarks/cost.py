"""Benchmark: cost per model, as in the EIGNN paper's Fig. 7 (parameters, time per step and epoch).

    python -m benchmarks.cost                          # 4 dev graphs, 10 timed steps per model
    python -m benchmarks.cost --graphs 8 --steps 20 --json /tmp/cost.jsonl

One row per model, all at the paper size of the ``ka_dev`` config (7 layers, width 32,
ℓ_max 2): EIGNN (variant 'full'), ablation A ('no_alpha0'), ablation B ('invariant') and the
public implementation's layout (``architecture='public'``, ``model.PUBLIC_LAYOUT``). Each row
gives the number of trainable parameters (``model.parameter_count``), the compile time of
the first train step, the median wall and CPU seconds of the next ``--steps`` steps
(``benchmarks.train_step.time_steps``) and the time per epoch: the median step time × the
number of gradient steps of a ``ka_dev`` epoch (its training files less the validation
files, one graph per batch).

The public layout cannot be trained here (its BatchNorm layers would need running-statistics
updates), so its step is the same jitted train step run in evaluation mode: forward with the
BatchNorm statistics held fixed, backward and the Adam update of its parameters. That is the
cost of a step but without the statistics' update, which is small beside the edge work.

Graphs: the first ``--graphs`` files of the shared dev set (``ka_dev``'s data folder), or of
the embedded default data when that folder is absent; the output says which. The machine's
load average is printed before and after, as the times depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics

import jax

from benchmarks.train_step import prepare_step, time_steps
from eignn_jax import architectures, dataset, graph as graph_lib
from eignn_jax.feature_scales import fit_feature_scales
from eignn_jax.model import PUBLIC_LAYOUT, ModelConfig, parameter_count
from experiments import common
from experiments.configs import ka_dev
from experiments.configs.default import DEFAULT_DATA

# (row name, ModelConfig settings beyond the paper size).
MODELS = (
    ("EIGNN", dict(variant="full")),
    ("ablation A (no α⁰)", dict(variant="no_alpha0")),
    ("ablation B (invariant)", dict(variant="invariant")),
    ("public layout", dict(architecture="public", **PUBLIC_LAYOUT)),
)


class EvaluationMode:
    """A module whose ``apply`` always runs in evaluation mode with fixed non-parameter state.

    Lets ``training.make_train_step`` time the public layout: ``init`` returns only the
    'params' collection (so the gradient and Adam cover exactly the parameters) and ``apply``
    adds the collections kept at their initial values (BatchNorm statistics) and ignores
    ``train`` and dropout keys.
    """

    def __init__(self, module, example):
        # The non-parameter collections (BatchNorm's running mean 0 and variance 1) do not
        # depend on the key: made once here, so that ``init`` stays a pure function that
        # ``training.init_state`` can compile.
        variables = dict(jax.jit(module.init)(jax.random.PRNGKey(0), example))
        variables.pop("params")
        self.module = module
        self.state = variables

    def init(self, key, graph):
        return {"params": self.module.init(key, graph)["params"]}

    def apply(self, params, graph, train: bool = False, rngs=None):
        return self.module.apply({**params, **self.state}, graph, train=False)


def dev_graphs(n: int) -> tuple[str, list]:
    """(data folder, graphs of its first ``n`` files): ``ka_dev``'s folder, else the default data."""
    folder = ka_dev.DEV_DATA if pathlib.Path(ka_dev.DEV_DATA).is_dir() else DEFAULT_DATA
    files = dataset.list_configurations(folder)[:n]
    graph_config = graph_lib.GraphConfig()
    return str(folder), [graph_lib.build_graph(dataset.load_configuration(f), graph_config) for f in files]


def steps_per_epoch() -> int:
    """Gradient steps in one epoch of ``ka_dev`` (training files less validation ones, per batch)."""
    config = ka_dev.get_config()
    return (config.data.n_train - config.data.n_validation) // config.train.batch_size


def cost_rows(graphs: list, steps: int, models=MODELS, **size) -> list[dict]:
    """One dict per model of ``models``: parameters, compile, step and epoch times on ``graphs``.

    size: ModelConfig overrides of the paper size (e.g. ``width=8, num_layers=1`` for a
    quick check). Times are seconds; 'epoch' figures are the step medians × ``steps_per_epoch()``.
    """
    paper = ka_dev.get_config().model
    settings = dict(width=paper.width, num_layers=paper.num_layers, l_max=paper.l_max)
    settings.update(size)
    scales = fit_feature_scales(graphs)
    per_epoch = steps_per_epoch()
    rows = []
    for name, overrides in models:
        config = ModelConfig(**settings, **overrides, num_outputs=graphs[0].nodes["targets"].shape[1],
                             scales=scales)
        module = architectures.build(config)
        model = EvaluationMode(module, graphs[0]) if config.architecture == "public" else module
        step, state, batches = prepare_step(model, graphs)
        n_params = parameter_count(state.params)
        state, first, wall, cpu = time_steps(step, state, batches, steps)
        wall_s, cpu_s = statistics.median(wall), statistics.median(cpu)
        rows.append({
            "benchmark": "cost", "model": name, "architecture": config.architecture,
            "variant": config.variant, "layers": config.num_layers, "width": config.width,
            "l_max": config.l_max, "parameters": n_params,
            "compile_s": round(first, 2), "step_wall_s": round(wall_s, 4), "step_cpu_s": round(cpu_s, 4),
            "steps_per_epoch": per_epoch, "epoch_wall_s": round(wall_s * per_epoch, 2),
            "epoch_cpu_s": round(cpu_s * per_epoch, 2), "timed_steps": steps,
            "compilations": step.traces})
    return rows


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| model | parameters | compile s | step wall s | step CPU s | epoch wall s | epoch CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['compile_s']:.1f} | {r['step_wall_s']:.3f} | "
                     f"{r['step_cpu_s']:.3f} | {r['epoch_wall_s']:.1f} | {r['epoch_cpu_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", type=int, default=4, help="dev files to time on (cycled over)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model after the compiling one")
    parser.add_argument("--json", default=None, help="also write one JSON line per row to this file")
    common.add_memory_reuse_argument(parser, default=True)
    args = parser.parse_args()
    common.start_memory_reuse(args)

    load_before = os.getloadavg()
    folder, graphs = dev_graphs(args.graphs)
    rows = cost_rows(graphs, args.steps)
    load_after = os.getloadavg()

    n = [int(g.n_node[0]) for g in graphs]
    e = [int(g.n_edge[0]) for g in graphs]
    print(f"graphs: first {len(graphs)} files of {folder} (N = {min(n)}–{max(n)}, "
          f"{min(e)}–{max(e)} edges); device: {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
    print(f"load average (1, 5, 15 min): before {tuple(round(x, 2) for x in load_before)}, "
          f"after {tuple(round(x, 2) for x in load_after)}")
    data = ka_dev.get_config().data
    print(f"step times: median of {args.steps} steps after the compiling one; epoch = step × "
          f"{steps_per_epoch()} training graphs of ka_dev ({data.n_train} training files less "
          f"{data.n_validation} for validation)")
    print(table(rows))
    if args.json:
        context = {"data": folder, "graphs": len(graphs), "load_before": load_before, "load_after": load_after}
        with open(args.json, "w") as out:
            for row in rows:
                out.write(json.dumps({**row, **context}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
