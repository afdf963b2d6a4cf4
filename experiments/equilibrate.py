"""Add equilibrium structures to GlassBench-layout files.

    python -m experiments.equilibrate data/folder --kind inherent --out data_with_is/
    python -m experiments.equilibrate a.npz b.npz --kind both --temperature 0.44 --in-place

Writes ``initial_positions_inherent`` (L-BFGS to max |F| < 1e-4) and/or
``initial_positions_cage`` (cage-state Monte Carlo at the configuration's temperature:
--temperature, else ``T`` in a meta.json beside the files, else ``T<value>_`` in the file
name; the temperature used and its source are printed, and stored as ``cage_temperature``).
The completed files go to --out (inputs untouched), or with --in-place replace the inputs.
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


def output_paths(paths: list[pathlib.Path], out: pathlib.Path | None) -> list[pathlib.Path]:
    """Where each input's completed file goes: ``out/<name>``, or the input itself (in place).

    Raises ValueError if two inputs share a name, or if ``out`` is an input's own folder
    (say --in-place for that).
    """
    if out is None:
        return list(paths)
    names = [p.name for p in paths]
    clashing = sorted({n for n in names if names.count(n) > 1})
    if clashing:
        raise ValueError(f"several inputs are named {clashing[0]}; equilibrate them into separate --out folders")
    for path in paths:
        if path.parent.resolve() == out.resolve():
            raise ValueError(f"--out {out} holds the input {path}; use --in-place to add the structures "
                             f"to the inputs themselves")
    return [out / p.name for p in paths]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help=".npz files or folders of them")
    parser.add_argument("--kind", choices=["inherent", "cage", "both"], default="inherent")
    parser.add_argument("--temperature", type=float, default=None, help="for cage states")
    parser.add_argument("--seed", type=int, default=0, help="Monte Carlo seed for cage states")
    parser.add_argument("--force", action="store_true", help="recompute structures already present")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=pathlib.Path, default=None,
                       help="folder for the completed files (the inputs are left as they are)")
    where.add_argument("--in-place", action="store_true",
                       help="add the structures to the input files themselves (each rewritten atomically)")
    args = parser.parse_args(argv)

    from eignn_jax import dataset, equilibrium, files

    def say(line: str) -> None:
        print(line, flush=True)

    kinds = equilibrium.KINDS if args.kind == "both" else (args.kind,)
    try:
        paths = dataset.expand_inputs(args.inputs)
        targets = output_paths(paths, args.out)
        # A folder that cannot be written is found before minimising.
        for folder in sorted({target.parent for target in targets}):
            files.writable_directory(folder)
        for k, (path, target) in enumerate(zip(paths, targets)):
            # Resuming into --out: continue from what an earlier run completed there.
            loaded = target if target.exists() else path
            config = dataset.load_configuration(loaded)
            todo = [kind for kind in kinds if args.force or not equilibrium.has_equilibrium(config, kind)]
            if not todo:
                say(f"[{k + 1}/{len(paths)}] {path.name}: already done")
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
            say(f"[{k + 1}/{len(paths)}] {path.name}: {json.dumps(summaries)}")
    except (dataset.DataError, ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
