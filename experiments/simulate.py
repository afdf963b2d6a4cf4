"""Generate Kob–Andersen configurations with iso-configurational propensities (OpenMM).

    python -m experiments.simulate --out data/sim_T064 --temperature 0.64 --configs 20
    python -m experiments.simulate --out data/sim_T056 --temperature 0.56 --tau-alpha 22.6 --workers 2
    python -m experiments.simulate --check --temperature 0.64          # validation report
    python -m experiments.simulate --check-data FOLDER --configs 12    # tau_alpha of a data set

Needs the optional extra: pip install 'eignn_jax[sim]'. One Markov chain (melt, equilibrate
for --equilibrate τ_α, then one configuration every --spacing τ_α, Langevin) feeds --runs NVE
runs per configuration, spread over --workers local processes (or the workers of a Dask
cluster with --scheduler). Each configuration is written, atomically, as
N{n}T{T}_{i}.npz in the GlassBench layout (types, initial_positions,
initial_positions_inherent from eignn_jax.physics.minimise, md_prop, md_disp, bb_prop,
md_prop_half (the propensity of each half of the runs, for the noise ceiling), times, box),
with a meta.json holding every parameter and the engine version. Existing files are
skipped and the chain resumes from its checkpoint (<out>/.simulate/chain.npz), so a killed
run continues where it stopped when started again with the same arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from eignn_jax import files, generation
from eignn_jax.physics import md
from experiments import common


def write_report(path: str | None, report: dict) -> None:
    """Write a --check / --check-data report as JSON (atomically) if a path was given."""
    if path:
        files.atomic_write(path, json.dumps(report, indent=1) + "\n")


def print_check(report: dict, reference: dict | None) -> None:
    """Print a --check report as a table beside the reference values (and data, if given)."""
    tau_ref = generation.reference_tau_alpha(report["temperature"])
    rows = [("NVE drift / particle / 1e4 steps (dt = %g)" % report["dt"],
             f"{report['drift_per_particle_per_1e4_steps']:.2e}",
             f"≈ {generation.REFERENCE['drift_per_particle_per_1e4_steps']:.0e} (magnitude)"),
            ("tau_alpha (F_s, q = 7.25, A)",
             f"{report['tau_alpha']:.2f} (origins {report['tau_alpha_origin_mean']:.1f} "
             f"± {report['tau_alpha_origin_stderr']:.1f})",
             f"{tau_ref}" if tau_ref is not None else "-")]
    for name, peak in report["g_first_peaks"].items():
        ref = "-"
        if reference and name in reference.get("g_first_peaks", {}):
            other = reference["g_first_peaks"][name]
            ref = f"r = {other['r']:.3f}, g = {other['g']:.2f} (reference data)"
        rows.append((f"g_{name} first peak", f"r = {peak['r']:.3f}, g = {peak['g']:.2f}", ref))
    width = max(len(r[0]) for r in rows)
    print(f"\ncheck: N = {report['n']}, T = {report['temperature']}, {report['nve_steps']} NVE steps "
          f"({report['nve_steps_per_second']:.0f} steps/s), {report['engine']}")
    print(f"{'quantity':<{width}}  {'measured':<24}  reference")
    for name, value, ref in rows:
        print(f"{name:<{width}}  {value:<24}  {ref}")
    print("F_s(t):", " ".join(f"{t:.3g}:{f:.3f}" for t, f in zip(report["f_s"]["times"], report["f_s"]["values"])))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (generation), or the JSON report (--check)")
    parser.add_argument("--check", action="store_true", help="validation run: NVE drift, g(r) peaks, tau_alpha")
    parser.add_argument("--n", type=int, default=1000, help="particles (default 1000)")
    parser.add_argument("--temperature", type=float, default=0.64)
    parser.add_argument("--tau-alpha", type=float, default=None,
                        help="tau_alpha used as the unit of --equilibrate and --spacing "
                             "(default: the reference value at 0.64 / 0.56, else required)")
    parser.add_argument("--equilibrate", type=float, default=100.0, help="equilibration, in tau_alpha (default 100)")
    parser.add_argument("--spacing", type=float, default=10.0, help="between configurations, in tau_alpha (default 10)")
    parser.add_argument("--configs", type=int, default=None,
                        help="configurations to generate (default 20); with --check-data, files used (default 8)")
    parser.add_argument("--runs", type=int, default=None,
                        help="NVE runs per configuration (default 8); with --check-data, per file (default 2)")
    parser.add_argument("--times", default=",".join(f"{t:g}" for t in md.DEFAULT_TIMES),
                        help="comma-separated sample times (tau)")
    parser.add_argument("--dt", type=float, default=0.005)
    parser.add_argument("--melt-temperature", type=float, default=2.0)
    parser.add_argument("--melt-time", type=float, default=20.0, help="tau")
    parser.add_argument("--friction", type=float, default=1.0, help="Langevin friction of the chain (1/tau)")
    parser.add_argument("--bond-in", type=float, default=1.4, help="bond if r_ij(0) < this x sigma_ab")
    parser.add_argument("--bond-out", type=float, default=1.7, help="broken if r_ij(t) > this x sigma_ab")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--platform", default="CPU", help="OpenMM platform: CPU, CUDA, OpenCL, Reference")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="local worker processes for the NVE runs (0: in this process)")
    parser.add_argument("--run-threads", type=int, default=1, help="OpenMM CPU threads per worker")
    parser.add_argument("--chain-threads", type=int, default=1,
                        help="OpenMM CPU threads of the chain (default 1: with more, OpenMM sums forces in a "
                             "varying order and the chaotic dynamics make the data differ bit for bit from run "
                             "to run; 0: all cores)")
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:8786)")
    parser.add_argument("--segments", type=int, default=8, help="--check: NVE segments (time origins)")
    parser.add_argument("--segment-time", type=float, default=None,
                        help="--check: length of each NVE segment, tau (default 5 tau_alpha)")
    parser.add_argument("--reference-data", default=None,
                        help="--check: a data folder whose g(r) peaks are printed beside ours")
    parser.add_argument("--check-data", default=None, metavar="FOLDER",
                        help="tau_alpha from NVE runs started at the configurations of FOLDER (any data set, "
                             "e.g. another pipeline's) at --temperature, over 8 tau_alpha")
    common.add_runtime_arguments(parser)
    args = parser.parse_args(argv)
    common.start_runtime(args)
    check_data = args.check_data is not None
    args.configs = args.configs if args.configs is not None else (8 if check_data else 20)
    args.runs = args.runs if args.runs is not None else (2 if check_data else 8)

    try:
        import openmm  # noqa: F401
    except ImportError:
        sys.exit("error: OpenMM is not installed: pip install 'eignn_jax[sim]'")
    reference_tau = generation.reference_tau_alpha(args.temperature)
    tau_alpha = args.tau_alpha or reference_tau
    if tau_alpha is None:
        sys.exit(f"error: no reference tau_alpha at T = {args.temperature}: pass --tau-alpha")
    try:
        protocol = md.Protocol(
            n=args.n, temperature=args.temperature, dt=args.dt, melt_temperature=args.melt_temperature,
            melt_time=args.melt_time, equilibration_time=round(args.equilibrate * tau_alpha, 6),
            spacing=round(args.spacing * tau_alpha, 6), friction=args.friction, runs=args.runs,
            times=tuple(float(t) for t in args.times.split(",")), bond_in=args.bond_in, bond_out=args.bond_out,
            seed=args.seed, platform=args.platform)
    except ValueError as error:
        sys.exit(f"error: {error}")

    execution = generation.Execution(workers=args.workers, scheduler=args.scheduler, run_threads=args.run_threads,
                                     chain_threads=args.chain_threads or None)
    try:
        if check_data:
            report = generation.check_data_folder(args.check_data, protocol, tau_alpha, args.configs, execution)
            print(f"\ncheck-data: {report['files']} files x {args.runs} runs from {args.check_data}, T = "
                  f"{args.temperature:g}: tau_alpha {report['tau_alpha']:.2f} of the mean F_s, "
                  f"{report['tau_alpha_configuration_mean']:.2f} ± {report['tau_alpha_configuration_stderr']:.2f} "
                  f"per configuration (reference {reference_tau if reference_tau is not None else '-'})")
            write_report(args.out, report)
            return
        if args.check:
            segment_time = args.segment_time or 5.0 * tau_alpha
            report = generation.check(protocol, segments=args.segments, segment_time=segment_time,
                                      threads=execution.chain_threads)
            reference = generation.reference_peaks(args.reference_data) if args.reference_data else None
            if reference:
                report["reference_data"] = {"folder": args.reference_data, **reference}
            print_check(report, reference)
            write_report(args.out, report)
            return
        if not args.out:
            sys.exit("error: --out is required (or --check)")
        command = "python -m experiments.simulate " + " ".join(
            shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        generation.generate(args.out, protocol, args.configs, tau_alpha, execution, command)
    except generation.GenerationError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
