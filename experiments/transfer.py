"""Temperature transfer and all-temperature training (EIGNN paper Figs. 5, 6): train, cross-evaluate, tabulate.

    python -m experiments.transfer data/T056 ../shared/data/ka3d_T064_N1000 data/T080 --out runs/transfer \\
        --config default --set data.n_train=16 --set data.n_test=8 --seeds 0,1
    python -m experiments.transfer FOLDER_A FOLDER_B --out runs/transfer --match time --no-all

One model per data folder (a temperature) and seed in OUT/T<T>_s<seed>/, and one trained on
the training splits of all folders together in OUT/all_s<seed>/ (--no-all: not); the config's
data.n_train / n_test / n_validation / split_seed split each folder. Every model is scored on
every folder's test split. Each temperature has its own time grid: a model's output is
matched to a test time in units of each temperature's tau_alpha (--match tau_alpha, the
default) or in absolute time (--match time), within a factor --tolerance; the
all-temperature model is scored on each of its folders at that folder's own grid. tau_alpha
comes from each folder's meta.json (experiments.simulate records it), else the reference
value of its temperature, else --tau-alpha T=VALUE.

Writes OUT/transfer.csv, OUT/transfer.png (Pcc(all) against t/tau_alpha per test temperature)
and OUT/transfer_matrix.png (the matrix per time scale), and prints the matrix with the
noise ceiling of each test set whose files carry split-half labels. Finished runs are skipped
on a rerun, unfinished ones resume from their checkpoints.
"""

import argparse
import sys

from experiments import common


def tau_alpha_values(text: str) -> dict[float, float]:
    """``0.8=2.4,0.45=300`` → {0.8: 2.4, 0.45: 300.0}."""
    try:
        pairs = [item.split("=") for item in text.split(",") if item.strip()]
        values = {round(float(t), 2): float(v) for t, v in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T=VALUE pairs such as 0.8=2.4, got {text!r}") from None
    if any(not v > 0 for v in values.values()):
        raise argparse.ArgumentTypeError(f"tau_alpha values must be positive, got {text!r}")
    return values


def main(argv=None) -> None:
    from eignn_jax import transfer
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="data folders, one temperature each")
    common.add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="transfer folder: one run directory per source and seed")
    parser.add_argument("--seeds", type=common.integers, default=[0], help="train.seed values, e.g. 0,1 (default 0)")
    parser.add_argument("--no-all", dest="all_temperatures", action="store_false",
                        help="no all-temperature model")
    parser.add_argument("--match", choices=transfer.MATCHES, default="tau_alpha",
                        help="match times in units of tau_alpha (default) or in absolute time")
    parser.add_argument("--tolerance", type=float, default=transfer.DEFAULT_TOLERANCE,
                        help=f"largest factor between matched times (default {transfer.DEFAULT_TOLERANCE})")
    parser.add_argument("--tau-alpha", type=tau_alpha_values, default=None,
                        help="tau_alpha of temperatures whose folders record none, e.g. 0.8=2.4")
    common.add_runtime_arguments(parser, training=True)
    args = parser.parse_args(argv)
    common.start_runtime(args)
    config = common.load_config(args.config, args.overrides)

    from eignn_jax import dataset
    try:
        folders = transfer.describe_folders(args.folders, args.tau_alpha)
        for folder in folders:
            print(f"{folder.label}: {folder.path}, tau_alpha = {folder.tau_alpha:g}")
        runs = transfer.plan(config, folders, seeds=args.seeds, all_temperatures=args.all_temperatures)
        rows = transfer.run(runs, folders, args.out, match=args.match, tolerance=args.tolerance)
    except (dataset.DataError, ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"error: {error}")
    print(transfer.format_matrix(rows, "pcc_all"))
    print(transfer.format_matrix(rows, "pcc_mean"))
    print(f"wrote {args.out}/{transfer.CSV_NAME}, {transfer.PLOT_NAME} and {transfer.MATRIX_NAME}")


if __name__ == "__main__":
    main()
