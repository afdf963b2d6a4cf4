"""Evaluate a trained run: Pcc(mean) and Pcc(all) per time scale, with the |d| baseline.

    python -m experiments.evaluate --workdir runs/default
    python -m experiments.evaluate --workdir runs/ka_dev --data /path/to/other/folder
    python -m experiments.evaluate --workdir runs/inh --data KA_models/T0.44/test --published DIR

Without --data the run's own test split is used; with it, every file of that folder.
Writes pcc.csv and the figures pcc.png (Pcc against time), scatter.png (predicted against
true propensity, one panel per time scale) and map.png (a slab of the first configuration
coloured by true and by predicted propensity).

Published models whose predictions the evaluated files carry (GlassBench test files: BOTAN,
CAGE, GlassMLP, SE3) are scored beside it on the same particles and time scales. --published
names a folder of published Pcc tables (pcc_all_TTT.csv and pcc_mean_TTT.csv, T = TTT / 100,
as in the public EIGNN repository's results/): those of the data's temperature are drawn
dashed in pcc.png and printed under the table, on their own time grid.
"""

import argparse
import sys

from experiments import common


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a trained run directory")
    parser.add_argument("--data", default=None, help="folder of GlassBench-layout files to evaluate on")
    parser.add_argument("--out", default=None, help="where to write pcc.csv and the figures")
    parser.add_argument("--published", default=None, metavar="DIR",
                        help="folder of published Pcc tables (pcc_all_TTT.csv, pcc_mean_TTT.csv) to draw "
                             "as reference lines at the data's temperature")
    common.add_runtime_arguments(parser)
    args = parser.parse_args(argv)
    common.start_runtime(args)

    from eignn_jax import dataset, experiment
    try:
        experiment.evaluate(args.workdir, data=args.data, out_dir=args.out, published=args.published)
    except (dataset.DataError, ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
