"""Data-parallel training over many devices, on one host or several, with ``jax.sharding``.

A global batch of B graphs is split into D shards of B/D graphs, one per device of a 1-D
mesh with axis ``'data'``. Each shard is merged and padded to the same budget, and the
shards are stacked along a new leading axis, so a batch is a GraphsTuple of [D, ...] arrays
sharded as ``PartitionSpec('data')``; params and optimiser state are replicated
(:func:`step_shardings`). The train step (:func:`eignn_jax.training.make_train_step` with a
mesh) sums the per-graph losses and the graph counts over the shards
(:func:`sum_over_shards`) and divides one by the other, which is the one-device loss of the
same global batch (the loss is a mean over graphs, see
:func:`eignn_jax.training.graph_losses`); XLA's SPMD partitioner turns the sums over the
sharded axis into all-reduces.

Every process builds and places only the shards of its own devices
(:func:`place_batch`), so the same code runs on one host with several devices and on
several hosts after ``jax.distributed.initialize()``.

Dropout: each shard draws its own mask (its key is the step key folded with the shard
index), so with ``decoder_dropout > 0`` the masks differ from a one-device run's; with
dropout off (the default) losses and updates equal the one-device ones up to float
rounding.

**Edge parallelism** (:func:`edge_mesh`, :func:`edge_sharding`): one graph per step, its
edges split over the devices, node arrays replicated. It uses several devices (the cores of
one CPU as simulated host devices, or several GPUs) for the paper's protocol of one graph
per step, and for a graph too large for one GPU's memory of edge intermediates.

This module knows meshes, shards and batches, not models or optimisers: training imports
it, never the other way round.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from eignn_jax import graph as graph_lib

AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(list(devices) if devices is not None else jax.devices()), (AXIS,))


def check_batch_size(batch_size: int, n_devices: int) -> int:
    """Graphs per device; a clear error when the global batch does not split evenly."""
    if batch_size % n_devices:
        raise ValueError(f"data-parallel training needs train.batch_size divisible by the number of "
                         f"devices: batch_size {batch_size}, {n_devices} devices")
    return batch_size // n_devices


def replicate(tree, mesh: Mesh):
    """A copy of ``tree`` on every device of ``mesh`` (each process supplies its own, equal, values)."""
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree)


def _empty_like(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """A batch of zero graphs with ``graph``'s fields (padded, it is all padding)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[:0], graph)


def pad_shard(graphs: Sequence[jraph.GraphsTuple], budget: graph_lib.PaddingBudget,
              template: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """``graphs`` merged and padded to ``budget``; no graphs → a shard of padding only (loss weight 0)."""
    if not graphs:
        return graph_lib.pad_graph(_empty_like(template), budget)
    return graph_lib.pad_graph(jraph.batch_np(list(graphs)) if len(graphs) > 1 else graphs[0], budget)


def place_batch(build_shard: Callable[[int], jraph.GraphsTuple], mesh: Mesh) -> jraph.GraphsTuple:
    """Global [D, ...] batch sharded over the mesh's devices; shard k = ``build_shard(k)``.

    Only the shards of this process's devices are built and transferred, so on several hosts
    each process loads its own share of the global batch.
    """
    n_shards = mesh.devices.size
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    index_map = sharding.addressable_devices_indices_map((n_shards,))
    local = {device: build_shard(index[0].start or 0) for device, index in index_map.items()}
    treedef = jax.tree_util.tree_structure(next(iter(local.values())))
    leaves = {device: jax.tree_util.tree_leaves(g) for device, g in local.items()}
    stacked = []
    for k in range(treedef.num_leaves):
        shape = (n_shards,) + np.shape(next(iter(leaves.values()))[k])
        pieces = [jax.device_put(np.asarray(leaves[device][k])[None], device) for device in local]
        stacked.append(jax.make_array_from_single_device_arrays(shape, sharding, pieces))
    return jax.tree_util.tree_unflatten(treedef, stacked)


def sharded_batches(graphs: Sequence[jraph.GraphsTuple], budget: graph_lib.PaddingBudget,
                    batch_size: int, mesh: Mesh, order: Sequence[int] | None = None
                    ) -> Iterator[jraph.GraphsTuple]:
    """Global batches of ``batch_size`` graphs in ``order``, split over the mesh's devices.

    ``budget`` is a per-shard budget (``padding_budget(graphs, batch_size // D)``). A last,
    incomplete batch fills the first shards; the rest hold padding only.
    """
    per_shard = check_batch_size(batch_size, mesh.devices.size)
    order = list(range(len(graphs)) if order is None else order)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        yield place_batch(lambda k: pad_shard([graphs[i] for i in chunk[k * per_shard:(k + 1) * per_shard]],
                                              budget, graphs[0]), mesh)


def step_shardings(mesh: Mesh) -> dict:
    """``jax.jit`` keyword arguments of a step (state, batch) → (state, loss) on ``mesh``: the
    state replicated, the batch split along its leading [D] shard axis, the loss replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec(AXIS))
    return {"in_shardings": (replicated, data), "out_shardings": (replicated, replicated)}


def sum_over_shards(shard_sums: Callable[[jraph.GraphsTuple, jax.Array], tuple[jax.Array, jax.Array]],
                    batch: jraph.GraphsTuple, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Σ totals, Σ counts) of ``shard_sums(shard, shard_key)`` over the D shards of a [D, ...]
    ``batch``; shard k's key is ``key`` folded with k, so each shard draws its own dropout."""
    n_shards = batch.n_node.shape[0]
    shard_keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(n_shards))
    totals, counts = jax.vmap(shard_sums)(batch, shard_keys)
    return totals.sum(), counts.sum()


# ----------------------------------------------------------------------------- edges

EDGE_AXIS = "edges"


def request_host_devices(count: int | None = None) -> int:
    """Ask XLA to present the CPU as ``count`` devices (default: the cores this process may
    use), so that edge- or data-parallel steps run on several cores; each device then
    runs its share of the computation on its own thread.

    Takes effect only if called before JAX initialises its backends (before the first
    array or device query); an ``XLA_FLAGS`` that already sets the count is left alone.
    Other platforms (GPU) are not affected. Returns the device count requested or found
    in ``XLA_FLAGS``.
    """
    import os
    import re
    flags = os.environ.get("XLA_FLAGS", "")
    found = re.search(r"--xla_force_host_platform_device_count=(\d+)", flags)
    if found:
        return int(found.group(1))
    count = count or len(os.sched_getaffinity(0))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    return count


def edge_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh with axis ``'edges'`` over ``devices`` (default: this process's local devices)."""
    return Mesh(np.asarray(list(devices) if devices is not None else jax.local_devices()), (EDGE_AXIS,))


def edge_sharding(mesh: Mesh) -> jraph.GraphsTuple:
    """Shardings of a padded graph (a pytree prefix of a GraphsTuple) for edge-parallel steps:
    the edge arrays (``senders``, ``receivers``, ``edges``) split along their [E] axis over
    the mesh, everything per node and per graph replicated.

    Under ``jax.jit`` XLA's SPMD partitioner then gives each device the messages of its
    edges (gathers from the replicated node arrays are local) and turns every sum over
    edges onto nodes into a local segment sum and an all-reduce over the devices; the
    backward pass likewise. Results equal the one-device step up to float rounding (the
    order of the sums changes).
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    edges = NamedSharding(mesh, PartitionSpec(EDGE_AXIS))
    return jraph.GraphsTuple(nodes=replicated, edges=edges, senders=edges, receivers=edges,
                             globals=replicated, n_node=replicated, n_edge=replicated)


def place_edge_sharded(graph: jraph.GraphsTuple, mesh: Mesh) -> jraph.GraphsTuple:
    """A padded graph on ``mesh``, sharded by :func:`edge_sharding`.

    Raises ValueError when its edge count (the padding budget's, a multiple of 1024) does
    not split evenly over the mesh's devices.
    """
    n_devices, n_edges = mesh.devices.size, graph.senders.shape[0]
    if n_edges % n_devices:
        raise ValueError(f"edge-parallel steps need the padded edge count ({n_edges}) divisible by the "
                         f"number of devices ({n_devices})")
    return jax.device_put(graph, edge_sharding(mesh))


def edge_step_shardings(mesh: Mesh) -> dict:
    """``jax.jit`` keyword arguments of a step (state, graph) → (state, loss) whose graph's edges
    are split over ``mesh`` (:func:`edge_sharding`); state and loss replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    return {"in_shardings": (replicated, edge_sharding(mesh)), "out_shardings": (replicated, replicated)}
