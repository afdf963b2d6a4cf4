"""Put several evaluated runs side by side: one table, one csv, one plot.

    python -m experiments.compare runs/ka_dev runs/ka_dev_B --out runs/compare

Each run's ``pcc.csv`` is read; a model evaluated in more than one run (such as the |d|
baseline, fitted on the same training files) must have identical rows, and is kept once.
"""

import argparse
import pathlib
import sys

from eignn_jax import experiment, metrics, plotting


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
    args = parser.parse_args(argv)
    paths = [pathlib.Path(run) / "pcc.csv" for run in args.runs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        sys.exit(f"error: no evaluation in {', '.join(missing)}; run experiments.evaluate first")
    try:
        rows = merge([metrics.read_pcc_csv(p) for p in paths], [str(p) for p in paths])
    except ValueError as error:
        sys.exit(f"error: {error}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics.write_pcc_csv(out / "pcc.csv", rows)
    plotting.plot_pcc(rows, out / "pcc.png")
    print(experiment.format_table(rows))
    print(f"wrote {out / 'pcc.csv'} and {out / 'pcc.png'}")


if __name__ == "__main__":
    main()
