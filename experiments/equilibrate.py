"""Add equilibrium structures to configurations, written as GlassBench-layout files.

    python -m experiments.equilibrate data/folder --kind inherent --out data_with_is/
    python -m experiments.equilibrate a.npz b.npz --kind both --temperature 0.44 --in-place
    python -m experiments.equilibrate run.lammpstrj --frames -1 --type-map 0:A,1:B --out data_with_is/

Inputs are .npz files, LAMMPS dumps and data files, extended XYZ or GSD files, or folders
of them (every file with one of those extensions; see eignn_jax.formats). Each
configuration becomes ``<name>.npz`` (frame k of a trajectory ``<name>_frame<k>.npz``),
with ``types``, ``initial_positions`` and ``box``, plus what an .npz input held.

Writes ``initial_positions_inherent`` (L-BFGS to max |F| < 1e-4) and/or
``initial_positions_cage`` (cage-state Monte Carlo at the configuration's temperature:
--temperature, else ``T`` in a meta.json beside the files, else ``T<value>_`` in the file
name; the temperature used and its source are printed, and stored as ``cage_temperature``).
The completed files go to --out (inputs untouched), or with --in-place replace the inputs
(.npz inputs only).
Files that already hold the structure are skipped (--force recomputes). Each file is
written atomically, so a run killed at any moment leaves every file whole; running again
finishes the rest.

Beside the files it writes, ``equilibrate.json`` records for each file the input it came
from and, for each structure, the method, every field of the minimiser's or the cage
sampler's configuration and where the temperature came from (structures the input
already held keep what the record beside the input said of them).
"""

import argparse
import json
import pathlib
import sys


def output_paths(frames: list, out: pathlib.Path | None) -> list[pathlib.Path]:
    """Where each configuration (a :class:`eignn_jax.formats.Frame`) goes: ``out/<stem>.npz``,
    or the input itself (in place).

    Raises ValueError if two configurations would go to one file, or if ``out`` is an
    input's own folder (say --in-place for that).
    """
    if out is None:
        return [frame.path for frame in frames]
    names = [f"{frame.stem}.npz" for frame in frames]
    clashing = sorted({n for n in names if names.count(n) > 1})
    if clashing:
        raise ValueError(f"several inputs give {clashing[0]}; equilibrate them into separate --out folders")
    for frame in frames:
        if frame.path.parent.resolve() == out.resolve():
            raise ValueError(f"--out {out} holds the input {frame.path}; use --in-place to add the structures "
                             f"to .npz inputs themselves, or choose another --out")
    return [out / name for name in names]


def main(argv=None) -> None:
    from eignn_jax import formats
    from experiments import common
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="configuration files or folders of them")
    parser.add_argument("--kind", choices=["inherent", "cage", "both"], default="inherent")
    parser.add_argument("--temperature", type=float, default=None, help="for cage states")
    parser.add_argument("--seed", type=int, default=0, help="Monte Carlo seed for cage states")
    parser.add_argument("--force", action="store_true", help="recompute structures already present")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=pathlib.Path, default=None,
                       help="folder for the completed files (the inputs are left as they are)")
    where.add_argument("--in-place", action="store_true",
                       help="add the structures to the input files themselves (each rewritten atomically; "
                            ".npz inputs only)")
    common.add_reader_arguments(parser)
    common.add_runtime_arguments(parser)
    args = parser.parse_args(argv)
    common.start_runtime(args)

    from eignn_jax import dataset, equilibrium, files, progress

    def say(line: str) -> None:
        print(line, flush=True)

    kinds = equilibrium.KINDS if args.kind == "both" else (args.kind,)
    try:
        paths = dataset.expand_inputs(args.inputs, formats.SUFFIXES)
        if args.in_place:
            for path in paths:
                if formats.format_of(path, args.format) != "npz":
                    raise ValueError(f"{path}: --in-place rewrites .npz files only; write the structures "
                                     f"of other formats to .npz files with --out")
        frames = [frame for path in paths for frame in formats.read_frames(
            path, format=args.format, frames=args.frames, type_map=args.type_map)]
        targets = output_paths(frames, args.out)
        # A folder that cannot be written is found before minimising.
        for folder in sorted({target.parent for target in targets}):
            files.writable_directory(folder)
        with progress.progress(len(frames), "configurations", unit="configuration") as shown:
            for k, (frame, target) in enumerate(zip(frames, targets)):
                path, label = frame.path, pathlib.Path(frame.configuration.path).name
                # Resuming into --out: continue from what an earlier run completed there.
                loaded = target if target.exists() else path
                config = frame.configuration if loaded == path else dataset.load_configuration(loaded)
                todo = [kind for kind in kinds if args.force or not equilibrium.has_equilibrium(config, kind)]
                if not todo:
                    say(f"[{k + 1}/{len(frames)}] {label}: already done")
                    shown.update()
                    continue
                # The structures the file already holds keep what is known of how they were made.
                settings = {kind: recorded for kind, recorded in equilibrium.recorded_settings(loaded).items()
                            if equilibrium.has_equilibrium(config, kind)}
                summaries = {}
                for kind in todo:
                    config, report = equilibrium.add_structure(config, kind, path, temperature=args.temperature,
                                                               seed=args.seed, log=say)
                    settings[kind] = report.settings
                    summaries[kind] = {**report.summary, "seconds": report.seconds}
                equilibrium.record_structures(target, path, settings)
                dataset.write_configuration(target, config)
                # Reported only once written: a line on screen means the file is done.
                say(f"[{k + 1}/{len(frames)}] {label}: {json.dumps(summaries)}")
                shown.update()
    except (dataset.DataError, ValueError, FileNotFoundError, RuntimeError, OSError, ImportError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
