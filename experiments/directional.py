"""Directional analysis (EIGNN paper §5.3, Fig. 9): the angle between each particle's
iso-configurational mean displacement d^MD(t) and its displacement to equilibrium d^equi.

    python -m experiments.directional /path/to/folder --out runs/directional
    python -m experiments.directional a.npz b.npz --out runs/directional --kind cage --all-types

Inputs are GlassBench-layout .npz files (or folders of them) with md_disp and md_prop, as
experiments.simulate writes them. Writes OUT/directional.csv (t, mean_cos, stderr,
mean_cos_mobile10, n), directional_hist.png (distributions of cos θ per time),
directional_mean.png (mean cos θ against t) and directional_slice.png (arrows in a slab of
the first file), and prints the table. Type-A particles only unless --all-types.
"""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="configuration files or folders of them")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--kind", choices=("inherent", "cage"), default="inherent",
                        help="equilibrium structure d^equi points to (default: inherent)")
    parser.add_argument("--all-types", action="store_true", help="use A and B particles, not only A")
    args = parser.parse_args(argv)

    from eignn_jax import dataset, directional
    try:
        return directional.run(dataset.expand_inputs(args.inputs), args.out, kind=args.kind,
                               all_types=args.all_types)
    except (dataset.DataError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
