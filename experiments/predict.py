"""Predict per-particle propensities of raw configurations with a trained run.

    python -m experiments.predict --workdir runs/ka_dev my_configs/ --out predictions/

Inputs are GlassBench-layout .npz files (``types``, ``initial_positions``, optional
``box``); labels are not needed, and missing equilibrium positions (of the kind the run
was trained with) are computed first. Writes, per file, ``.npz`` and extended ``.xyz``
(opens in OVITO and ASE) with the predicted propensity at every trained time scale.
"""

import argparse
import sys


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a trained run directory")
    parser.add_argument("inputs", nargs="+", help=".npz files or folders of them")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--temperature", type=float, default=None, help="for cage states, if not in meta.json")
    args = parser.parse_args(argv)

    from eignn_jax import dataset, experiment
    try:
        experiment.predict_files(args.workdir, dataset.expand_inputs(args.inputs), args.out,
                                 temperature=args.temperature)
    except (dataset.DataError, ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
