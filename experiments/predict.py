"""Predict per-particle propensities of raw configurations with a trained run.

    python -m experiments.predict --workdir runs/ka_dev my_configs/ --out predictions/
    python -m experiments.predict --workdir runs/ka_dev run.lammpstrj --frames 0:100:10 --type-map 0:A,1:B \\
        --dump --out predictions/

Inputs are GlassBench-layout .npz files (``types``, ``initial_positions``, optional
``box``), LAMMPS dumps (.dump, .lammpstrj) and data files (.data, .lmp), extended XYZ
(.xyz, .extxyz) or GSD (.gsd) files, and folders of them (every file with one of these
extensions); see eignn_jax.formats. Labels are not needed, and missing equilibrium
positions (of the kind the run was trained with) are computed first. Writes, per
configuration, ``.npz`` and extended ``.xyz`` (opens in OVITO and ASE), and with --dump a
LAMMPS ``.dump``, with the predicted propensity at every trained time scale; frame k of a
trajectory ``name.dump`` gives ``name_frame<k>.*``.
"""

import argparse
import sys


def main(argv=None) -> None:
    from eignn_jax import formats
    from experiments import common
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a trained run directory")
    parser.add_argument("inputs", nargs="+", help="configuration files or folders of them")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--temperature", type=float, default=None, help="for cage states, if not in meta.json")
    parser.add_argument("--dump", action="store_true",
                        help="also write each prediction as a LAMMPS text dump (columns d_prop_<k>)")
    common.add_reader_arguments(parser)
    common.add_runtime_arguments(parser)
    args = parser.parse_args(argv)
    common.start_runtime(args)

    from eignn_jax import dataset, experiment
    try:
        experiment.predict_files(args.workdir, dataset.expand_inputs(args.inputs, formats.SUFFIXES), args.out,
                                 temperature=args.temperature, format=args.format, frames=args.frames,
                                 type_map=args.type_map, dump=args.dump)
    except (dataset.DataError, ValueError, FileNotFoundError, RuntimeError, OSError, ImportError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
