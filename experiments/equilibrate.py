"""Add equilibrium structures to GlassBench-layout files, in place.

    python -m experiments.equilibrate data/folder --kind inherent
    python -m experiments.equilibrate a.npz b.npz --kind both --temperature 0.44

Writes ``initial_positions_inherent`` (L-BFGS to max |F| < 1e-4) and/or
``initial_positions_cage`` (cage-state Monte Carlo at the configuration's temperature:
--temperature, else ``T`` in a meta.json beside the files, else ``T<value>_`` in the file
name; the temperature used and its source are printed, and stored as ``cage_temperature``). Files that already hold the structure are skipped (--force recomputes). Each file
is rewritten atomically, so a run killed at any moment leaves every file whole; running
again finishes the rest.
"""

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np


def expand(inputs: list[str]) -> list[pathlib.Path]:
    from eignn_jax import dataset
    paths = []
    for item in inputs:
        path = pathlib.Path(item)
        paths += dataset.list_configurations(path) if path.is_dir() else [path]
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help=".npz files or folders of them")
    parser.add_argument("--kind", choices=["inherent", "cage", "both"], default="inherent")
    parser.add_argument("--temperature", type=float, default=None, help="for cage states")
    parser.add_argument("--seed", type=int, default=0, help="Monte Carlo seed for cage states")
    parser.add_argument("--force", action="store_true", help="recompute structures already present")
    args = parser.parse_args(argv)

    from eignn_jax import dataset, equilibrium, files
    kinds = equilibrium.KINDS if args.kind == "both" else (args.kind,)
    try:
        paths = expand(args.inputs)
        # Files are rewritten in place: a folder that cannot be written is found before minimising.
        for folder in sorted({path.parent for path in paths}):
            files.writable_directory(folder)
        for k, path in enumerate(paths):
            config = dataset.load_configuration(path)
            todo = [kind for kind in kinds if args.force or not equilibrium.has_equilibrium(config, kind)]
            if not todo:
                print(f"[{k + 1}/{len(paths)}] {path.name}: already done", flush=True)
                continue
            summaries = {}
            for kind in todo:
                started = time.perf_counter()
                temperature = None
                if kind == "cage":
                    temperature, source = equilibrium.temperature_of(path, args.temperature)
                    print(f"{path.name}: cage state at T = {temperature} (from {source})", flush=True)
                positions, summary = equilibrium.compute(config, kind, temperature=temperature, seed=args.seed)
                config = equilibrium.with_equilibrium(config, kind, positions)
                if kind == "cage":   # stored with the structure it made
                    config = dataclasses.replace(
                        config, extras={**config.extras, "cage_temperature": np.float64(temperature)})
                summaries[kind] = {**summary, "seconds": round(time.perf_counter() - started, 2)}
            dataset.write_configuration(path, config)
            # Reported only once written: a line on screen means the file is done.
            print(f"[{k + 1}/{len(paths)}] {path.name}: {json.dumps(summaries)}", flush=True)
    except (dataset.DataError, ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
