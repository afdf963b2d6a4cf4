"""Train EIGNN, then evaluate it on the test split.

    python -m experiments.train --config default --workdir runs/default
    python -m experiments.train --config ka_dev --workdir runs/ka_dev --set model.variant=invariant

Re-running with the same --workdir resumes from the latest checkpoint.
"""

import argparse
import sys

from experiments import common


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_config_arguments(parser)
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, results)")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    args = parser.parse_args(argv)
    config = common.load_config(args.config, args.overrides)

    from eignn_jax import dataset, experiment
    try:
        experiment.run_training(config, args.workdir)
        if not args.no_eval:
            experiment.evaluate(args.workdir)
    except (dataset.DataError, ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
