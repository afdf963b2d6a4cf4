"""The ablation and depth study (EIGNN paper Fig. 8): train, evaluate and summarise over seeds.

    python -m experiments.study --config ka_dev --out runs/study
    python -m experiments.study --config default --out runs/study --seeds 0,1 --models EIGNN,B --depths 1,5

One run per model (EIGNN, EIGNN-A: model.variant=no_alpha0, EIGNN-B: model.variant=invariant)
or depth (EIGNN-L<n>: the full model with model.num_layers=n; the config's own depth is the
EIGNN run) and seed (train.seed), in OUT/<name>_s<seed>/. Running it again skips finished
runs (those with a pcc.csv) and resumes the others from their checkpoints. Writes
OUT/study.csv (mean and sample standard deviation over seeds) and OUT/study.png (± one
standard deviation as bands), prints the table and, per time scale, whether EIGNN's mean
Pcc(all) exceeds EIGNN-B's by more than the sum of their two standard deviations.
"""

import argparse
import sys

from experiments import common


def main(argv=None) -> None:
    from eignn_jax import study
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="study folder: one run directory per model and seed")
    parser.add_argument("--seeds", type=common.integers, default=list(study.DEFAULT_SEEDS),
                        help="train.seed values, e.g. 0,1,2 (default)")
    parser.add_argument("--models", type=lambda text: [m for m in text.split(",") if m],
                        default=list(study.DEFAULT_MODELS),
                        help=f"models at the config's depth, from {','.join(study.MODELS)} (default: all)")
    parser.add_argument("--depths", type=common.integers, default=list(study.DEFAULT_DEPTHS),
                        help="numbers of layers of the full model, e.g. 1,3,5,7 (default); '' for none")
    common.add_runtime_arguments(parser, training=True)
    args = parser.parse_args(argv)
    common.start_runtime(args)
    config = common.load_config(args.config, args.overrides)

    from eignn_jax import dataset, experiment
    try:
        runs = study.plan(config, seeds=args.seeds, models=args.models, depths=args.depths)
        rows = study.run(runs, args.out)
    except (dataset.DataError, ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"error: {error}")
    print(experiment.format_table(rows))
    for line in study.verdicts(rows):
        print(line)
    print(f"wrote {args.out}/{study.CSV_NAME} and {study.PLOT_NAME}")


if __name__ == "__main__":
    main()
