"""Import a published checkpoint of the public EIGNN code as an eignn_jax run directory.

    python -m experiments.import_public t044_EIGNN_cage.pt --workdir runs/public_t044

Afterwards ``experiments.predict`` and ``experiments.evaluate`` work on the run directory
as on one trained here. The file is read without PyTorch, and only tensors are accepted
from its pickle. Its time scales and equilibrium kind are not stored in it: they are
taken from --temperature (GlassBench's time grid at that temperature) or --times, and
--equilibrium; where not given, from the file name (``t044`` → T = 0.44, ``cage`` or
``inh``), said on the terminal and recorded in the run's metadata.
"""

import argparse
import pathlib
import re
import sys


def from_file_name(path: pathlib.Path) -> tuple[float | None, str | None]:
    """(temperature, equilibrium kind) as the public code names its checkpoints, or None each."""
    match = re.search(r"t0?(\d)(\d\d)", path.stem.lower())
    temperature = float(f"{match.group(1)}.{match.group(2)}") if match else None
    kind = "cage" if "cage" in path.stem.lower() else "inherent" if "inh" in path.stem.lower() else None
    return temperature, kind


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=pathlib.Path, help="the public code's .pt file")
    parser.add_argument("--workdir", required=True, help="run directory to create")
    time_source = parser.add_mutually_exclusive_group()
    time_source.add_argument("--temperature", type=float, default=None,
                             help="GlassBench temperature the model was trained at (0.44, 0.50, 0.56, 0.64)")
    time_source.add_argument("--times", type=float, nargs="+", default=None, help="its time scales (τ), instead")
    parser.add_argument("--equilibrium", choices=("inherent", "cage"), default=None)
    parser.add_argument("--name", default=None, help="model name in tables (default: from the file)")
    args = parser.parse_args(argv)

    from eignn_jax import dataset, experiment
    named_temperature, named_kind = from_file_name(args.checkpoint)
    provenance = {}
    kind = args.equilibrium or named_kind
    if kind is None:
        sys.exit(f"error: {args.checkpoint.name}: give --equilibrium (inherent or cage)")
    if args.equilibrium is None:
        print(f"equilibrium structure: {kind} (from the file name; --equilibrium overrides)")
        provenance["equilibrium_from"] = "file name"
    times = args.times
    if times is not None:
        provenance["times_from"] = "--times"
    else:
        temperature = args.temperature if args.temperature is not None else named_temperature
        grid = dataset.GLASSBENCH_TIME_GRIDS.get(temperature)
        if grid is None:
            sys.exit(f"error: {args.checkpoint.name}: give --times, or --temperature with one of "
                     f"{sorted(dataset.GLASSBENCH_TIME_GRIDS)} (GlassBench's grids)")
        times = list(grid)
        source = "--temperature" if args.temperature is not None else "the file name; --temperature overrides"
        print(f"times: GlassBench's grid at T = {temperature} ({source}): {' '.join(f'{t:g}' for t in times)}")
        provenance.update(temperature=temperature, times_from=f"GlassBench grid at T = {temperature}")
    name = args.name or f"{args.checkpoint.stem} (public)"
    try:
        experiment.import_public_checkpoint(args.checkpoint, args.workdir, times=times, equilibrium=kind,
                                            name=name, provenance=provenance)
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
