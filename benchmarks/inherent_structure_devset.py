"""Our inherent structures against the ones shipped with a data set.

    python -m benchmarks.inherent_structure_devset [folder] [--from-shipped] [--method fire|lbfgs|openmm]

With --from-shipped the minimisation starts from the shipped inherent structure instead
of the initial positions: a check that our tighter minimum is the same basin.
--method picks the minimiser (default: ``eignn_jax.physics.minimise.DEFAULT_METHOD``), with its
default config (:class:`eignn_jax.physics.minimise.FireConfig` or ``LbfgsConfig``). ``openmm``
(needs the ``[sim]`` extra) is a reference point: OpenMM's own L-BFGS
(``LocalEnergyMinimizer``, CPU platform, tolerance 1e-3, the KA force of
``eignn_jax.physics.md``) from the initial positions, then finished by our default
minimiser to max |F| < 1e-4 (which stays in that basin, as --from-shipped shows).

Default folder: ``../shared/data/ka3d_T064_N1000`` (the 32-file dev set), else the one
dev-set file kept in ``tests/data`` (the embedded default data is made by our own
generator, whose inherent structures come from our minimiser). For every file, minimises
``initial_positions`` and prints one JSON line: wall time (the first file's includes
compilation), iterations (all, and in float64), energy evaluations, final max |F| (ε/σ)
and whether it is below
1e-4 (inherent_structure raises otherwise), our energy per particle,
the shipped ``initial_positions_inherent``'s energy per particle (both with
``kob_andersen.per_particle_energy``), |Δe| and the mean minimum-image distance
|Δr| (σ) between the two structures. A summary line follows: how many runs
reached max |F| < 1e-4, how many agree with the shipped energy within 1e-3 ε
per particle, the mean |Δr| of those that do and of those that do not (different
minima), and the median wall time, iterations and evaluations.
"""

import argparse
import json
import pathlib
import time

import numpy as np

from eignn_jax import dataset
from eignn_jax.physics import kob_andersen, minimise
from eignn_jax.physics.periodic import wrap

ENERGY_AGREEMENT = 1e-3  # ε per particle
FORCE_TOLERANCE = 1e-4  # ε/σ

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CANDIDATES = (_ROOT.parent / "shared" / "data" / "ka3d_T064_N1000", _ROOT / "tests" / "data")


def openmm_minimum(positions, types, box, tolerance: float = 1e-3) -> np.ndarray:
    """[N, 3] float64: OpenMM's LocalEnergyMinimizer (L-BFGS) on the KA system from ``positions``."""
    import openmm
    from eignn_jax.physics import md

    context = md.make_context(md.build_system(types, box), openmm.VerletIntegrator(0.005), threads=1)
    context.setPositions(np.asarray(positions, np.float64))
    openmm.LocalEnergyMinimizer.minimize(context, tolerance, 0)
    return np.asarray(context.getState(getPositions=True).getPositions(asNumpy=True)._value, np.float64)


def compare(path, from_shipped: bool = False, method: str = minimise.DEFAULT_METHOD) -> dict:
    """Minimise one file's initial positions (or shipped inherent structure) and compare."""
    config = dataset.load_configuration(path)
    started = time.perf_counter()
    start = config.inherent if from_shipped else config.positions
    if method == "openmm":
        start = openmm_minimum(start, config.types, config.box)
    result = minimise.inherent_structure(start, config.types, config.box,
                                         method=minimise.DEFAULT_METHOD if method == "openmm" else method)
    seconds = time.perf_counter() - started
    ours = float(np.mean(kob_andersen.per_particle_energy(result.positions, config.types, config.box)))
    shipped = float(np.mean(kob_andersen.per_particle_energy(config.inherent, config.types, config.box)))
    shift = wrap(result.positions - np.asarray(config.inherent, np.float64), config.box)
    return {
        "file": pathlib.Path(path).name,
        "seconds": round(seconds, 2),
        "iterations": result.iterations,
        "float64_iterations": result.float64_iterations,
        "evaluations": result.evaluations,
        "max_force": float(f"{result.max_force:.4g}"),
        "converged": bool(result.max_force < FORCE_TOLERANCE),
        "energy_per_particle": round(ours, 6),
        "shipped_energy_per_particle": round(shipped, 6),
        "abs_delta_energy": float(f"{abs(ours - shipped):.3g}"),
        "mean_abs_delta_r": round(float(np.mean(np.linalg.norm(shift, axis=1))), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=None)
    parser.add_argument("--from-shipped", action="store_true")
    parser.add_argument("--method", choices=sorted(minimise.METHODS) + ["openmm"], default=minimise.DEFAULT_METHOD)
    args = parser.parse_args()
    if args.folder is not None:
        folder = pathlib.Path(args.folder)
    else:
        folder = next(c for c in _CANDIDATES if c.is_dir())
    from_shipped = args.from_shipped
    rows = []
    for path in dataset.list_configurations(folder):
        row = compare(path, from_shipped, args.method)
        rows.append(row)
        print(json.dumps(row), flush=True)
    converged = sum(r["converged"] for r in rows)
    agree = [r for r in rows if r["abs_delta_energy"] < ENERGY_AGREEMENT]
    differ = [r for r in rows if r["abs_delta_energy"] >= ENERGY_AGREEMENT]
    print(json.dumps({
        "summary": str(folder),
        "method": args.method,
        "start": "shipped inherent structure" if from_shipped else "initial positions",
        "files": len(rows),
        "converged_below_1e-4": converged,
        "energy_agrees_within_1e-3": len(agree),
        "agreeing_files": [r["file"] for r in agree],
        "mean_abs_delta_r_agreeing": round(float(np.mean([r["mean_abs_delta_r"] for r in agree])), 4) if agree else None,
        "mean_abs_delta_r_differing": round(float(np.mean([r["mean_abs_delta_r"] for r in differ])), 4) if differ else None,
        "same_structure_mean_abs_delta_r_below_0.01": sum(r["mean_abs_delta_r"] < 0.01 for r in rows),
        "median_seconds": round(float(np.median([r["seconds"] for r in rows])), 2),
        "median_iterations": int(np.median([r["iterations"] for r in rows])),
        "median_evaluations": int(np.median([r["evaluations"] for r in rows])),
    }), flush=True)


if __name__ == "__main__":
    main()
