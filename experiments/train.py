"""Train EIGNN, then evaluate it on the test split.

    python -m experiments.train --config default --workdir runs/default
    python -m experiments.train --config ka_dev --workdir runs/ka_dev --set model.variant=invariant
    python -m experiments.train --config runs/ka_dev/config.json --workdir runs/ka_dev_again

Re-running with the same --workdir resumes from the latest checkpoint. --config takes a
config name or the config.json of a run, which repeats that run (--set still applies).
TensorBoard events of each epoch: --set train.tensorboard=true (pip install 'eignn_jax[tensorboard]').

Data-parallel over all local devices: --set train.data_parallel=true (batch_size divisible
by the device count). Each graph's edges over all local devices (on a CPU, its cores):
--set train.edge_parallel=true. Several hosts: start one process per host (or per GPU) with
--distributed; see "Many devices and many hosts" in README.md.
"""

import argparse
import dataclasses
import sys

from experiments import common


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_config_arguments(parser)
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, results)")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    parser.add_argument("--distributed", action="store_true",
                        help="one of several processes: call jax.distributed.initialize() first and train "
                             "data-parallel over the devices of all processes (implies "
                             "train.data_parallel=true and --no-eval; the workdir must be shared)")
    parser.add_argument("--coordinator-address", default=None,
                        help="with --distributed: host:port of process 0 (default: detected on SLURM or "
                             "Open MPI, else $JAX_COORDINATOR_ADDRESS)")
    parser.add_argument("--num-processes", type=int, default=None, help="with --distributed (default: detected)")
    parser.add_argument("--process-id", type=int, default=None, help="with --distributed (default: detected)")
    common.add_runtime_arguments(parser, training=True)
    args = parser.parse_args(argv)
    common.start_runtime(args)
    if args.distributed:
        import jax
        # Before anything touches a device.
        jax.distributed.initialize(coordinator_address=args.coordinator_address,
                                   num_processes=args.num_processes, process_id=args.process_id)
    config = common.load_config(args.config, args.overrides)
    if args.distributed:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, data_parallel=True))
    if config.train.edge_parallel:
        from eignn_jax import parallel
        parallel.request_host_devices()   # a CPU's cores as devices; before JAX starts its backend

    from eignn_jax import dataset, experiment
    try:
        experiment.run_training(config, args.workdir)
        if args.distributed:
            if jax.process_index() == 0:
                print(f"evaluate with one process: python -m experiments.evaluate --workdir {args.workdir}")
        elif not args.no_eval:
            experiment.evaluate(args.workdir)
    except (dataset.DataError, ValueError, FileNotFoundError, OSError, ImportError) as error:
        # ImportError: an optional extra that the config asks for is not installed.
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
