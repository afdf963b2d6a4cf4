"""Loss, optimiser, jitted train/predict steps and the resumable training loop."""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from eignn_jax import checkpointing, compilation, files, graph as graph_lib, metrics, parallel, progress
from eignn_jax.config import TrainConfig
from eignn_jax.model import EIGNN, ModelConfig


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


# ----------------------------------------------------------------------------- loss

def node_graph_index(n_node: jax.Array, n_nodes_total: int) -> jax.Array:
    """[N] index of the graph each node belongs to, from the [G] node counts."""
    return jnp.repeat(jnp.arange(n_node.shape[0]), n_node, total_repeat_length=n_nodes_total)


def graph_losses(predictions: jax.Array, targets: jax.Array, mask: jax.Array, n_node: jax.Array | None = None,
                 epsilon: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Paper eq. 22 per graph: ([G] losses, [G] weights).

    Each graph's targets are standardised per time scale with the mean and std of its own
    masked (type-A) particles; its loss is the mean squared error over those particles and
    time scales. A graph without masked particles (jraph's padding graph) has weight 0,
    every other graph weight 1, so a batch's loss is a sum over graphs divided by a count:
    it splits exactly across devices.

    predictions, targets: [N, T]; mask: [N] bool; n_node: [G] (None: all nodes one graph).
    """
    n_node = jnp.array([predictions.shape[0]]) if n_node is None else n_node
    n_graph = n_node.shape[0]
    segments = node_graph_index(n_node, predictions.shape[0])
    weight = mask.astype(predictions.dtype)
    count = jax.ops.segment_sum(weight, segments, num_segments=n_graph)           # [G]
    safe_count = jnp.maximum(count, 1.0)[:, None]
    weight = weight[:, None]
    mean = jax.ops.segment_sum(targets * weight, segments, num_segments=n_graph) / safe_count
    centred = targets - mean[segments]
    variance = jax.ops.segment_sum(centred ** 2 * weight, segments, num_segments=n_graph) / safe_count
    standardised = centred * jax.lax.rsqrt(variance + epsilon)[segments]
    errors = ((predictions - standardised) ** 2 * weight).sum(-1)
    losses = jax.ops.segment_sum(errors, segments, num_segments=n_graph) / (safe_count[:, 0] * predictions.shape[-1])
    return losses, (count > 0).astype(predictions.dtype)


def standardised_mse(predictions: jax.Array, targets: jax.Array, mask: jax.Array,
                     n_node: jax.Array | None = None) -> jax.Array:
    """Mean over a batch's graphs of :func:`graph_losses` (one graph per batch: eq. 22 itself)."""
    losses, weights = graph_losses(predictions, targets, mask, n_node)
    return (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def loss_sum_and_count(model: EIGNN, params, graph: jraph.GraphsTuple,
                       dropout_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(sum of the per-graph losses, number of labelled graphs) of one padded batch.

    dropout_key: None evaluates; a key trains (dropout on).
    """
    train = dropout_key is not None
    predictions = model.apply(params, graph, train=train, rngs={"dropout": dropout_key} if train else None)
    losses, weights = graph_losses(predictions, graph.nodes["targets"], graph.nodes["target_mask"], graph.n_node)
    return (losses * weights).sum(), weights.sum()


# ----------------------------------------------------------------------------- steps

def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Step number (from 0) → learning rate: config.learning_rate, multiplied by
    lr_decay_factor from the first step after each epoch in lr_decay_epochs."""
    return optax.piecewise_constant_schedule(
        config.learning_rate,
        {int(epoch * steps_per_epoch): config.lr_decay_factor for epoch in config.lr_decay_epochs})


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.adam(learning_rate_schedule(config, steps_per_epoch), b1=config.adam_b1, b2=config.adam_b2))


def init_state(model: EIGNN, optimizer: optax.GradientTransformation, example: jraph.GraphsTuple,
               seed: int, program_key: str | None = None) -> TrainState:
    """The training state at step 0: ``model``'s parameters drawn from ``seed`` for graphs
    shaped like ``example`` (a padded batch), and ``optimizer``'s initial state.

    Made by one compiled program: run eagerly, the initialisation compiles each of its ~300
    operations on its own, which cost 12–24 s of CPU per process at paper size on 2 cores.
    ``model.init`` must be a pure function of its arguments (flax modules are).
    program_key: keep the program in the traced-program cache (``TracedFunction``).
    """
    def initial(key, graph):
        params = model.init(key, graph)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

    return TracedFunction(initial, program_key)(jax.random.PRNGKey(seed), example)


def program_key(kind: str, *configs) -> str:
    """A ``program_key`` for ``TracedFunction``: ``kind`` (which function) and the reprs of
    the frozen configs that determine it, e.g. ``program_key('train_step', model_config,
    train_config, steps_per_epoch)``."""
    return "|".join([kind, *map(repr, configs)])


class TracedFunction:
    """A jitted function that counts the programs it made (one per input signature).

    program_key: when given, and ``compilation.enable_persistent_cache`` has turned the
      caches on, the traced program is kept in the traced-program cache
      (``compilation.load_or_export``) under this key: a later process with the same key,
      package code, libraries and input shapes loads it instead of tracing ``fn`` (the paper-size
      train step: ~2 s of tracing and lowering). The caller promises that ``fn`` is
      determined by the key and the package's code (e.g. the key holds the model and
      optimizer configs and the seed that ``fn`` closes over). Only for single-device
      programs (``jit_kwargs`` with no shardings).

    ``traces``: programs made so far, traced or loaded; ``loaded``: how many of them came
    from the traced-program cache.
    """

    def __init__(self, fn: Callable, program_key: str | None = None, **jit_kwargs):
        self.traces = 0
        self.loaded = 0
        self._fn = fn
        self._jit_kwargs = jit_kwargs
        if program_key is not None and set(jit_kwargs) - {"donate_argnums"}:
            raise ValueError(f"a program_key is for single-device programs; got {sorted(jit_kwargs)}")
        self._program_key = program_key
        self._programs: dict = {}      # input signature → (jitted flat call, output tree) or None

        def counted(*args):
            self.traces += 1
            return fn(*args)

        self._jitted = jax.jit(counted, **jit_kwargs)

    def _program(self, args: tuple):
        """(jitted flat call, flat inputs, output tree) from the traced-program cache, or
        None when that cache is not in use."""
        directory = compilation.traced_program_directory()
        if self._program_key is None or directory is None:
            return None
        leaves, in_tree = jax.tree.flatten(args)
        signature = (in_tree, tuple(str(jax.typeof(leaf)) for leaf in leaves))
        if signature not in self._programs:
            found = compilation.load_or_export(self._fn, args, self._program_key, directory)
            if found is None:            # not to be kept: jit as usual for this signature
                self._programs[signature] = None
                return None
            call, out_tree, source = found
            self.loaded += source == "loaded"

            def counted(*flat_args):
                self.traces += 1
                return call(*flat_args)

            # Donated arguments by leaf; inputs placed on the default device, so that the
            # first call (fresh arrays) and later ones (this program's outputs) share one
            # compiled executable.
            donate = self._jit_kwargs.get("donate_argnums", ())
            donate = {donate} if isinstance(donate, int) else set(donate)
            donated = [i for i, owner in enumerate(_leaf_owners(args)) if owner in donate]
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            self._programs[signature] = (jax.jit(counted, donate_argnums=donated, in_shardings=device),
                                         out_tree)
        if self._programs[signature] is None:
            return None
        jitted, out_tree = self._programs[signature]
        return jitted, leaves, out_tree

    def __call__(self, *args):
        program = self._program(args)
        if program is None:
            return self._jitted(*args)
        jitted, leaves, out_tree = program
        return jax.tree.unflatten(out_tree, jitted(*leaves))

    def lower(self, *args):
        """The jitted function lowered for ``args`` (``.compile().as_text()`` gives its HLO)."""
        program = self._program(args)
        if program is None:
            return self._jitted.lower(*args)
        jitted, leaves, _ = program
        return jitted.lower(*leaves)


def _leaf_owners(args: tuple) -> list[int]:
    """For each leaf of ``jax.tree.flatten(args)``, the index of the argument it belongs to."""
    return [k for k, arg in enumerate(args) for _ in jax.tree.leaves(arg)]


def make_train_step(model: EIGNN, optimizer: optax.GradientTransformation, seed: int = 0,
                    mesh: jax.sharding.Mesh | None = None,
                    edge_mesh: jax.sharding.Mesh | None = None,
                    program_key: str | None = None) -> TracedFunction:
    """(state, padded graph) → (new state, loss); one compilation per padding budget.

    mesh: None trains on one device. A data mesh (:func:`eignn_jax.parallel.data_mesh`)
      trains data-parallel: the state is replicated over it (``parallel.replicate``) and a
      batch is a [D, ...] stack of shards sharded over it (``parallel.sharded_batches``);
      the loss is that of the same global batch on one device.
    edge_mesh: an edge mesh (:func:`eignn_jax.parallel.edge_mesh`) splits each batch's edges
      over its devices (``parallel.place_edge_sharded``; state replicated): the same loss
      and update as one device, up to float rounding. Not together with ``mesh``.
    Dropout keys are derived from ``seed`` and the step number, so a resumed run draws
    the same masks as an uninterrupted one.
    program_key: keep the traced step in the traced-program cache (``TracedFunction``; single
      device only): it must determine ``model``, ``optimizer`` and ``seed``
      (:func:`program_key` of their configs).
    """

    def batch_sums(params, graph: jraph.GraphsTuple, dropout_key: jax.Array):
        if mesh is None:
            return loss_sum_and_count(model, params, graph, dropout_key)
        return parallel.sum_over_shards(lambda shard, key: loss_sum_and_count(model, params, shard, key),
                                        graph, dropout_key)

    def step(state: TrainState, graph: jraph.GraphsTuple):
        dropout_key = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)

        def loss_fn(params):
            total, count = batch_sums(params, graph, dropout_key)
            return total / jnp.maximum(count, 1.0)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), loss

    if mesh is not None and edge_mesh is not None:
        raise ValueError("data-parallel and edge-parallel steps cannot be combined")
    shardings = {}
    if mesh is not None:
        shardings = parallel.step_shardings(mesh)
    elif edge_mesh is not None:
        shardings = parallel.edge_step_shardings(edge_mesh)
    if shardings:
        program_key = None      # the traced-program cache holds single-device programs
    return TracedFunction(step, program_key, donate_argnums=(0,), **shardings)


def make_predict_step(model: EIGNN, program_key: str | None = None) -> TracedFunction:
    """(params, padded graph) → ([N, T] predictions, loss). program_key: as for
    :func:`make_train_step`, determining ``model``."""

    def predict(params, graph: jraph.GraphsTuple):
        predictions = model.apply(params, graph)
        loss = standardised_mse(predictions, graph.nodes["targets"], graph.nodes["target_mask"], graph.n_node)
        return predictions, loss

    return TracedFunction(predict, program_key)


def predict_graphs(predict_step: TracedFunction, params, graphs: Sequence[jraph.GraphsTuple],
                   budget: graph_lib.PaddingBudget) -> tuple[list[np.ndarray], float]:
    """Predictions [N_k, T] for each unpadded graph, and the mean loss over graphs."""
    outputs, losses = [], []
    for g, padded in zip(graphs, graph_lib.batches(graphs, budget, batch_size=1)):
        predictions, loss = predict_step(params, padded)
        outputs.append(np.asarray(predictions[: int(g.n_node[0])]))
        losses.append(float(loss))
    return outputs, float(np.mean(losses)) if losses else float("nan")


# ----------------------------------------------------------------------------- loop

def pcc_summary(predictions, graphs) -> dict:
    table = metrics.pcc_table(predictions, [g.nodes["targets"] for g in graphs],
                              [g.nodes["target_mask"] for g in graphs])
    return {k: [round(float(x), 4) for x in v] for k, v in table.items()}


TENSORBOARD_DIR = "tensorboard"   # inside the workdir


def tensorboard_scalars(record: dict, times: Sequence[float] | None = None) -> dict[str, float]:
    """The scalars of one epoch's metrics record, by TensorBoard tag.

    Tags: ``loss/train``, ``loss/test``, ``loss/validation`` (standardised MSE, eq. 22),
    ``learning_rate``, and per time scale ``pcc_all_test/t_<t>``, ``pcc_all_validation/t_<t>``
    (t in τ from ``times`` [T], e.g. ``t_0.13``; ``index_<k>`` when times are not given). What
    the record does not hold (no validation files) is left out. Tags use only characters that
    TensorBoard keeps as they are.
    """
    named = {"loss/train": "train_loss", "loss/test": "test_loss", "loss/validation": "validation_loss",
             "learning_rate": "learning_rate"}
    scalars = {tag: float(record[key]) for tag, key in named.items() if record.get(key) is not None}
    for split in ("test", "validation"):
        for k, value in enumerate(record.get(f"{split}_pcc_all") or []):
            scalars[f"pcc_all_{split}/" + (f"t_{times[k]:g}" if times else f"index_{k}")] = float(value)
    return scalars


def _tensorboard_writer(logdir: pathlib.Path, purge_from: int):
    """tensorboardX's writer into ``logdir``; TensorBoard's reader discards the events of
    epochs ≥ purge_from that earlier processes wrote there (they are written again).

    Raises ImportError saying what to install when tensorboardX is missing.
    """
    try:
        import tensorboardX
    except ImportError as error:
        raise ImportError("train.tensorboard=true needs tensorboardX, which is not installed: "
                          "pip install 'eignn_jax[tensorboard]'") from error
    return tensorboardX.SummaryWriter(str(logdir), purge_step=purge_from)


def _add_scalars(writer, record: dict, times: Sequence[float] | None) -> None:
    for tag, value in tensorboard_scalars(record, times).items():
        writer.add_scalar(tag, value, record["epoch"])
    writer.flush()   # so that a TensorBoard watching the run sees each epoch


def train(model_config: ModelConfig, train_config: TrainConfig,
          train_graphs: Sequence[jraph.GraphsTuple], test_graphs: Sequence[jraph.GraphsTuple],
          workdir: pathlib.Path, metadata: dict, log: Callable[[str], None] = print,
          validation_graphs: Sequence[jraph.GraphsTuple] = ()) -> TrainState:
    """Trains, checkpointing every epoch; a run interrupted at any point resumes where it stopped.

    metadata: JSON-serialisable description of the run, saved with every checkpoint.
    validation_graphs: if given, the epoch with the lowest validation loss is also kept in
      ``workdir/best`` (model selection never looks at the test graphs, which are only logged).
    Writes one JSON line of metrics per epoch to ``workdir/metrics.jsonl`` and to ``log``
    (losses, the epoch's learning rate, Pcc(all) per time scale on the test and validation
    graphs, times); with ``train_config.tensorboard`` also as TensorBoard scalars
    (:func:`tensorboard_scalars`, step = epoch, tags naming ``metadata["times"]`` if given)
    in ``workdir/tensorboard/``. Progress within the run goes to stderr
    (:func:`eignn_jax.progress.progress`).
    A checkpoint step left incomplete (e.g. its ``state/`` deleted) is set aside and training
    resumes from the newest complete one, saying so in ``log``.
    Raises ValueError if another process is training in ``workdir``
    (:func:`eignn_jax.checkpointing.workdir_lock`), ImportError if TensorBoard logging is on
    and tensorboardX is not installed.
    """
    workdir = pathlib.Path(workdir)
    # The processes of one jax.distributed run share the workdir: the first holds the lock.
    lock = checkpointing.workdir_lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        return _train(model_config, train_config, train_graphs, test_graphs, workdir, metadata, log,
                      validation_graphs)


def _match_metrics_to_checkpoint(metrics_path: pathlib.Path, saved: dict) -> None:
    """Makes ``metrics.jsonl`` hold exactly one line per epoch up to the checkpoint's: lines of
    epochs after it (to be redone) are dropped, and a line lost to a kill right after the
    checkpoint was written is restored from the checkpoint's metadata."""
    lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
    kept = [line for line in lines if line.strip() and json.loads(line)["epoch"] <= saved["epoch"] + 1]
    last = json.loads(kept[-1])["epoch"] if kept else 0
    if last == saved["epoch"] and "metrics" in saved:
        kept.append(json.dumps(saved["metrics"]))
    if kept != lines:
        files.atomic_write(metrics_path, "".join(line + "\n" for line in kept))


def _train(model_config: ModelConfig, train_config: TrainConfig,
           train_graphs: Sequence[jraph.GraphsTuple], test_graphs: Sequence[jraph.GraphsTuple],
           workdir: pathlib.Path, metadata: dict, log: Callable[[str], None],
           validation_graphs: Sequence[jraph.GraphsTuple]) -> TrainState:
    """:func:`train` in a locked workdir."""
    model = EIGNN(model_config)
    mesh, edge_mesh, shard_size = None, None, train_config.batch_size
    if train_config.data_parallel:
        mesh = parallel.data_mesh()
        shard_size = parallel.check_batch_size(train_config.batch_size, mesh.devices.size)
    elif train_config.edge_parallel:
        edge_mesh = parallel.edge_mesh()
    # Several processes (jax.distributed) all train and checkpoint; only the first writes logs.
    primary = jax.process_index() == 0
    if not primary:
        log = lambda _: None  # noqa: E731
    budget = graph_lib.padding_budget(
        list(train_graphs) + list(test_graphs) + list(validation_graphs), shard_size)
    steps_per_epoch = -(-len(train_graphs) // train_config.batch_size)
    optimizer = make_optimizer(train_config, steps_per_epoch)
    schedule = learning_rate_schedule(train_config, steps_per_epoch)
    example = next(graph_lib.batches(train_graphs, budget, shard_size))
    state = init_state(model, optimizer, example, train_config.seed,
                       program_key("init_state", model_config, train_config, steps_per_epoch))
    if mesh is not None:
        state = parallel.replicate(state, mesh)
        log(f"data-parallel: {train_config.batch_size} graphs per step over {mesh.devices.size} devices "
            f"({jax.process_count()} process(es))")
    if edge_mesh is not None:
        state = parallel.replicate(state, edge_mesh)
        log(f"edge-parallel: each batch's edges split over {edge_mesh.devices.size} device(s)")

    manager = checkpointing.CheckpointManager(workdir / "checkpoints", train_config.keep_checkpoints, log=log)
    metrics_path = workdir / "metrics.jsonl"
    start_epoch = 0
    restored = manager.restore_latest(state)
    if restored is not None:
        state, saved = restored
        start_epoch = saved["epoch"] + 1
        log(f"resuming after epoch {saved['epoch'] + 1} (step {int(state.step)})")
        if primary:
            _match_metrics_to_checkpoint(metrics_path, saved)

    best_manager = checkpointing.CheckpointManager(workdir / "best", 1, log=log) if validation_graphs else None
    best_saved = best_manager.restore_metadata() if best_manager else None
    best_loss = best_saved["validation_loss"] if best_saved else float("inf")

    train_step = make_train_step(model, optimizer, train_config.seed, mesh, edge_mesh,
                                 program_key("train_step", model_config, train_config, steps_per_epoch))
    predict_step = make_predict_step(model, program_key("predict_step", model_config))
    rng = np.random.default_rng(train_config.seed)
    epoch_orders = [rng.permutation(len(train_graphs)) for _ in range(train_config.epochs)]

    writer, times = contextlib.nullcontext(), metadata.get("times")
    if train_config.tensorboard and primary:
        # From the last checkpointed epoch on, what an earlier process logged is replaced: a kill
        # may have come after that epoch's checkpoint but before its scalars were written.
        writer = _tensorboard_writer(workdir / TENSORBOARD_DIR, purge_from=max(start_epoch, 1))
        if restored is not None and "metrics" in saved:
            _add_scalars(writer, saved["metrics"], times)
    shown = progress.progress(train_config.epochs * steps_per_epoch, "training", unit="step",
                              initial=start_epoch * steps_per_epoch, enabled=primary)
    with writer, shown as steps_done:
        for epoch in range(start_epoch, train_config.epochs):
            started = time.perf_counter()
            losses = []
            if edge_mesh is not None:
                epoch_batches = (parallel.place_edge_sharded(b, edge_mesh) for b in graph_lib.batches(
                    train_graphs, budget, train_config.batch_size, epoch_orders[epoch]))
            elif mesh is None:
                epoch_batches = graph_lib.batches(train_graphs, budget, train_config.batch_size,
                                                  epoch_orders[epoch])
            else:
                epoch_batches = parallel.sharded_batches(train_graphs, budget, train_config.batch_size, mesh,
                                                         epoch_orders[epoch])
            for batch in epoch_batches:
                state, loss = train_step(state, batch)
                losses.append(loss)
                steps_done.update()
            train_loss = float(np.mean(jax.device_get(losses)))
            if not np.isfinite(train_loss):
                raise FloatingPointError(f"training loss became {train_loss} in epoch {epoch + 1}")
            train_seconds = time.perf_counter() - started
            # Evaluation runs on one local device, on this process's copy of the replicated params.
            eval_params = state.params if mesh is None and edge_mesh is None else jax.tree_util.tree_map(
                lambda x: x.addressable_shards[0].data, state.params)
            predictions, test_loss = predict_graphs(predict_step, eval_params, test_graphs, budget)
            record = {
                "epoch": epoch + 1, "step": int(state.step), "train_loss": round(train_loss, 5),
                "test_loss": round(test_loss, 5),
                # The rate this epoch's steps used (constant within an epoch).
                "learning_rate": float(f"{float(schedule(epoch * steps_per_epoch)):.6g}"),
                "train_seconds": round(train_seconds, 2),
                "seconds_per_step": round(train_seconds / steps_per_epoch, 4),
                "train_step_compilations": train_step.traces,
                # Of those, loaded from the traced-program cache instead of traced.
                "train_step_programs_loaded": train_step.loaded,
                "test_pcc_all": pcc_summary(predictions, test_graphs)["pcc_all"] if test_graphs else None,
            }
            if validation_graphs:
                validation_predictions, validation_loss = predict_graphs(predict_step, eval_params,
                                                                         validation_graphs, budget)
                if jax.process_count() > 1:
                    # Every process must take the same decision: orbax saves are collective.
                    from jax.experimental import multihost_utils
                    validation_loss = float(multihost_utils.broadcast_one_to_all(np.float32(validation_loss)))
                record["validation_loss"] = round(validation_loss, 5)
                record["validation_pcc_all"] = pcc_summary(validation_predictions, validation_graphs)["pcc_all"]
                if validation_loss < best_loss:
                    best_loss = validation_loss
                    best_manager.save(epoch, state,
                                      {**metadata, "epoch": epoch, "validation_loss": validation_loss})
            # Checkpoint first, with the epoch's metrics line: a run killed between the two writes
            # redoes no epoch, and resuming restores the line from the checkpoint.
            manager.save(epoch, state, {**metadata, "epoch": epoch, "metrics": record})
            if primary:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if train_config.tensorboard and primary:
                _add_scalars(writer, record, times)
            log(json.dumps(record))
    manager.close()
    if best_manager:
        best_manager.close()
    return state
