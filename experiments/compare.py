"""Put several evaluated runs side by side: one table, one csv, one plot.

    python -m experiments.compare runs/ka_dev runs/ka_dev_B --out runs/compare

Each run's ``pcc.csv`` is read; a model evaluated in more than one run (such as the |d|
baseline, fitted on the same training files) must have identical rows, and is kept once.

    python -m experiments.compare runs/eignn_s0 runs/eignn_s1 runs/eignn_s2 runs/B_s0 ... --seeds --out runs/seeds

With --seeds, runs of one model name are seeds of it: the table gives the mean ± sample
standard deviation over them, ``pcc_seeds.csv`` adds the spreads and the run counts, and
the plot draws ± one standard deviation as a band.
"""

import argparse
import pathlib
import sys

from eignn_jax import experiment, files, metrics, plotting


def merge(tables: list[list[dict]], names: list[str]) -> list[dict]:
    merged: dict[tuple, dict] = {}
    for rows, name in zip(tables, names):
        for row in rows:
            key = (row["model"], row["time"])
            if key in merged and merged[key] != row:
                raise ValueError(f"{name}: model {row['model']!r} at t={row['time']} differs from an "
                                 "earlier run's; were they evaluated on the same configurations?")
            merged[key] = row
    return list(merged.values())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (or folders) holding pcc.csv")
    parser.add_argument("--out", required=True, help="folder for the merged pcc.csv and pcc.png")
    parser.add_argument("--seeds", action="store_true",
                        help="runs of one model name are seeds: mean ± standard deviation over them")
    args = parser.parse_args(argv)
    paths = [pathlib.Path(run) / "pcc.csv" for run in args.runs]
    if (pathlib.Path(args.out) / "pcc.csv").resolve() in {p.resolve() for p in paths}:
        sys.exit(f"error: --out {args.out} holds one of the runs compared; its pcc.csv would be "
                 f"overwritten: choose another folder")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        sys.exit(f"error: no evaluation in {', '.join(missing)}; run experiments.evaluate first")
    try:
        tables = [metrics.read_pcc_csv(p) for p in paths]
        rows = metrics.summarise_runs(tables) if args.seeds else merge(tables, [str(p) for p in paths])
    except ValueError as error:
        sys.exit(f"error: {error}")
    try:
        out = files.writable_directory(args.out)
        with files.output_set(out / "pcc.csv", out / "pcc.png", out / "pcc_seeds.csv"):
            metrics.write_pcc_csv(out / "pcc.csv", rows)
            plotting.plot_pcc(rows, out / "pcc.png")
            written = ["pcc.csv", "pcc.png"]
            if args.seeds:
                metrics.write_seed_csv(out / "pcc_seeds.csv", rows)
                written.append("pcc_seeds.csv")
    except OSError as error:
        sys.exit(f"error: {error}")
    print(experiment.format_table(rows))
    print(f"wrote {', '.join(str(out / name) for name in written)}")


if __name__ == "__main__":
    main()
