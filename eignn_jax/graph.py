"""From a configuration to a padded jraph graph (DESIGN §2, graph of paper §3.1).

A graph holds only *raw* per-particle and per-edge data; every geometric feature (edge
vectors, lengths, radial bases, spherical harmonics) is computed inside the model from
positions, displacement vectors and integer cell shifts. That way a rotation, an
inversion or a translation of the inputs acts on everything the network sees, and the
symmetry tests exercise the real code path.

Node fields (``graph.nodes``), N particles, T time scales:
  positions      [N, 3] float32, σ   initial positions, as stored (any periodic image)
  displacements  [N, 3] float32, σ   d_i = r_i^equi − r_i^init, minimum image
  species        [N]    int32        0 = A (file type 1), 1 = B (file type 2)
  energy         [N]    float32, ε   per-particle LJ energy ½ Σ_j V(r_ij)
  targets        [N, T] float32, σ   propensity ⟨|r_i(t) − r_i(0)|⟩ (zeros when unlabelled)
  target_mask    [N]    bool         particle enters the loss and the metrics (type A, labelled)
Edge fields (``graph.edges``), E directed edges, sender j → receiver i:
  shifts         [E, 3] float32      integer cell shifts: r_ij = x_j − x_i + shifts · cell
Graph fields (``graph.globals``):
  cell           [G, 3, 3] float32, σ  rows are the box vectors
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Sequence

import jraph
import numpy as np

from eignn_jax import dataset, files, progress as progress_lib
from eignn_jax.physics import kob_andersen, neighbours


@dataclasses.dataclass(frozen=True)
class GraphConfig:
    """How configurations become graphs.

    cutoff: σ, edges join pairs closer than this in the initial *or* equilibrium structure.
    equilibrium: which equilibrium structure gives d_i, 'inherent' or 'cage'.
    energy_structure: where E_i is evaluated: 'equilibrium' (the structure giving d_i),
      'initial', or 'inherent' (always the inherent structure, as the public code does
      for EIGNN-Cage too).
    energy_shifted: E_i from the KA potential shifted to zero at its cutoff (the model's
      definition); False: unshifted, as the public code's feature.
    """

    cutoff: float = 2.0
    equilibrium: str = "inherent"
    energy_structure: str = "equilibrium"
    energy_shifted: bool = True

    def __post_init__(self):
        if not self.cutoff > 0:
            raise ValueError(f"cutoff must be > 0 (σ), got {self.cutoff}")
        if self.equilibrium not in ("inherent", "cage"):
            raise ValueError(f"equilibrium must be 'inherent' or 'cage', got {self.equilibrium!r}")
        if self.energy_structure not in ("equilibrium", "initial", "inherent"):
            raise ValueError(f"energy_structure must be 'equilibrium', 'initial' or 'inherent', "
                             f"got {self.energy_structure!r}")


# Bounds that real Kob–Andersen data never reach (dev set, T = 0.64, the hottest GlassBench
# temperature, initial and inherent structures: median |d_i| ≤ 0.22 σ, per-particle
# energies ≤ −1.7 ε). Far beyond them a configuration is not the liquid the model knows.
MAX_PARTICLE_ENERGY = 10.0      # ε; overlapping pairs give 10²–10⁴ ε


def build_graph(config: dataset.Configuration, graph_config: GraphConfig) -> jraph.GraphsTuple:
    """One unpadded graph (numpy arrays) from one configuration; see the module docstring.

    Raises DataError naming the file and field when the equilibrium structure does not
    belong to the configuration (median |d_i| > dataset.MAX_MEDIAN_DISPLACEMENT, e.g. another
    particle order), when a particle's energy exceeds MAX_PARTICLE_ENERGY, or when the box
    is too small for the cutoff.
    """
    path = config.path or "<in-memory configuration>"
    kind = graph_config.equilibrium
    box = np.asarray(config.box, np.float64)
    initial = np.asarray(config.positions, np.float64)
    displacements = dataset.displacements(config, kind)
    relaxed = initial + displacements
    try:
        return _build(config, graph_config, box, initial, relaxed, displacements)
    except ValueError as error:
        if isinstance(error, dataset.DataError):
            raise
        # Neighbour searches know arrays, not files (e.g. a box too small for the cutoff).
        raise dataset.DataError(path, "box", str(error)) from error


def _build(config, graph_config, box, initial, relaxed, displacements) -> jraph.GraphsTuple:

    # The energy's pair search (KA_MAX_CUTOFF = 2.5 σ) also finds the graph pairs of the
    # equilibrium structure; union_pairs takes them instead of searching again.
    energy_structure = graph_config.energy_structure
    if energy_structure == "inherent" and graph_config.equilibrium == "inherent":
        energy_structure = "equilibrium"
    on_equilibrium = energy_structure == "equilibrium"
    energy_positions = {"equilibrium": relaxed, "initial": initial}.get(energy_structure)
    if energy_positions is None:
        energy_positions = np.asarray(config.equilibrium("inherent"), np.float64)
    share = on_equilibrium and graph_config.cutoff <= kob_andersen.MAX_CUTOFF
    energy_pairs = neighbours.SortedPairs(energy_positions, box, kob_andersen.MAX_CUTOFF,
                                          inner=graph_config.cutoff if share else None)
    energy = kob_andersen.per_particle_energy(energy_positions, config.types, box, pairs=energy_pairs,
                                           shifted=graph_config.energy_shifted)
    too_high = np.flatnonzero(energy > MAX_PARTICLE_ENERGY)
    if too_high.size:
        worst = int(too_high[np.argmax(energy[too_high])])
        field = "initial_positions" if energy_structure == "initial" else (
            f"initial_positions_{graph_config.equilibrium if on_equilibrium else 'inherent'}")
        raise dataset.DataError(
            config.path or "<in-memory configuration>", field,
            f"{too_high.size} particle(s) have potential energies above {MAX_PARTICLE_ENERGY} ε, "
            f"particle {worst} {energy[worst]:.3g} ε (real data: below −1.7 ε): overlapping particles, "
            f"or coordinates in other units than σ")
    pairs_b = energy_pairs.inner
    del energy_pairs  # its sorted edges are no longer needed; free them before the union
    centres, neighbour_ids, shifts = neighbours.union_pairs(
        initial, relaxed, box, graph_config.cutoff, pairs_b=pairs_b, shift_dtype=np.float32)

    n = config.n_particles
    if config.propensity is not None:
        targets = np.asarray(config.propensity, np.float32).T
        target_mask = config.is_type_a
    else:
        targets = np.zeros((n, 0), np.float32)
        target_mask = np.zeros(n, bool)

    nodes = {
        "positions": initial.astype(np.float32),
        "displacements": displacements.astype(np.float32),
        "species": (np.asarray(config.types) - 1).astype(np.int32),
        "energy": energy.astype(np.float32),
        "targets": targets,
        "target_mask": np.asarray(target_mask, bool),
    }
    return jraph.GraphsTuple(
        nodes=nodes,
        edges={"shifts": shifts},
        senders=neighbour_ids.astype(np.int32, copy=False),
        receivers=centres.astype(np.int32, copy=False),
        globals={"cell": np.diag(box).astype(np.float32)[None]},
        n_node=np.array([n], np.int32),
        n_edge=np.array([len(centres)], np.int32),
    )


# ----------------------------------------------------------------------------- caching

# 2: entries keyed by the file's content instead of its path, size and modification time.
_CACHE_VERSION = 2


def _file_digest(path: pathlib.Path) -> str:
    """sha256 (hex) of a file's bytes; DataError naming the file if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        raise dataset.DataError(path, dataset.FILE_FIELD, "no such file") from None
    except OSError as exc:
        raise dataset.DataError(path, dataset.FILE_FIELD, f"cannot open ({exc.strerror or exc})") from exc


def _cache_key(path: pathlib.Path, graph_config: GraphConfig) -> str:
    """Cache entry name of the graph of ``path`` under ``graph_config``.

    Keyed by the file's content, not its name, size or modification time: a file replaced by
    another of the same size within the file system's timestamp resolution (or restored with
    its old mtime by a copy tool) must not reuse the old graph. Hashing reads the file once,
    far less work than building its graph.
    """
    payload = json.dumps({
        "sha256": _file_digest(path), "config": dataclasses.asdict(graph_config), "version": _CACHE_VERSION,
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _save_graph(path: pathlib.Path, graph: jraph.GraphsTuple) -> None:
    arrays = {f"nodes/{k}": v for k, v in graph.nodes.items()}
    arrays.update({f"edges/{k}": v for k, v in graph.edges.items()})
    arrays.update({f"globals/{k}": v for k, v in graph.globals.items()})
    arrays.update(senders=graph.senders, receivers=graph.receivers,
                  n_node=graph.n_node, n_edge=graph.n_edge)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_savez(path, arrays)


def _load_graph(path: pathlib.Path) -> jraph.GraphsTuple:
    with np.load(path) as data:
        fields: dict[str, dict] = {"nodes": {}, "edges": {}, "globals": {}}
        for key in data.files:
            if "/" in key:
                group, name = key.split("/", 1)
                fields[group][name] = data[key]
        return jraph.GraphsTuple(
            nodes=fields["nodes"], edges=fields["edges"], globals=fields["globals"],
            senders=data["senders"], receivers=data["receivers"],
            n_node=data["n_node"], n_edge=data["n_edge"])


def load_graphs(paths: Sequence[pathlib.Path | str], graph_config: GraphConfig,
                cache_dir: pathlib.Path | str | None = None, *, require_labels: bool = True,
                progress: bool = False) -> list[jraph.GraphsTuple]:
    """Graphs for many files, built once and cached in ``cache_dir`` (keyed by content and config).

    A cache entry is keyed by the sha256 of the file's bytes and by the graph config, so
    replacing or editing a file or changing the cutoff rebuilds it, while a copy of a file
    elsewhere reuses it.
    require_labels: every file must hold ``md_prop`` (DataError naming the file otherwise,
      also when its graph comes from the cache).
    progress: show the count of files done on stderr (:func:`eignn_jax.progress.progress`).
    """
    require = [f"initial_positions_{graph_config.equilibrium}"]
    if require_labels:
        require.append("md_prop")
    graphs = []
    with progress_lib.progress(len(paths), "graphs", unit="file", enabled=progress) as shown:
        for path in map(pathlib.Path, paths):
            cached = pathlib.Path(cache_dir) / f"{_cache_key(path, graph_config)}.npz" if cache_dir else None
            if cached is not None and cached.exists():
                graph = _load_graph(cached)
                # The entry may have been built without labels (a prediction run): the file's
                # labels are then missing, which loading the file would have reported.
                if require_labels and graph.nodes["targets"].shape[1] == 0:
                    raise dataset.DataError(path, "md_prop", "required key is missing (the file has no labels)")
            else:
                graph = build_graph(dataset.load_configuration(path, require=require), graph_config)
                if cached is not None:
                    _save_graph(cached, graph)
            graphs.append(graph)
            shown.update()
    return graphs


# ----------------------------------------------------------------------------- padding

@dataclasses.dataclass(frozen=True)
class PaddingBudget:
    """Fixed array sizes for a batch, so the jitted step compiles once per budget.

    n_node and n_edge include the padding graph's share; n_graph counts it too.
    """

    n_node: int
    n_edge: int
    n_graph: int


def _round_up(x: int, multiple: int) -> int:
    return int(-(-x // multiple) * multiple)


def padding_budget(graphs: Sequence[jraph.GraphsTuple], batch_size: int = 1) -> PaddingBudget:
    """Smallest rounded budget that fits any ``batch_size`` of ``graphs`` plus one padding graph."""
    nodes = sorted((int(g.n_node.sum()) for g in graphs), reverse=True)
    edges = sorted((int(g.n_edge.sum()) for g in graphs), reverse=True)
    # One spare node: the padding graph needs at least one; rounding keeps budgets of similar
    # datasets equal so compiled steps can be reused between splits.
    return PaddingBudget(
        n_node=_round_up(sum(nodes[:batch_size]) + 1, 64),
        n_edge=_round_up(sum(edges[:batch_size]) + 1, 1024),
        n_graph=batch_size + 1,
    )


def pad_graph(graph: jraph.GraphsTuple, budget: PaddingBudget) -> jraph.GraphsTuple:
    """Pads a (batched) graph to ``budget``; padding nodes have target_mask False."""
    if int(graph.n_node.sum()) >= budget.n_node or int(graph.n_edge.sum()) > budget.n_edge \
            or len(graph.n_node) >= budget.n_graph:
        raise ValueError(
            f"graph with {int(graph.n_node.sum())} nodes, {int(graph.n_edge.sum())} edges and "
            f"{len(graph.n_node)} graphs exceeds the padding budget {budget}")
    padded = jraph.pad_with_graphs(graph, budget.n_node, budget.n_edge, budget.n_graph)
    # jraph pads the cell with zeros; a unit cell keeps every padded edge vector exactly zero
    # anyway (shifts are zero) and avoids a degenerate box in anything that inverts it.
    cell = np.array(padded.globals["cell"])
    n_real = len(graph.n_node)
    cell[n_real:] = np.eye(3, dtype=cell.dtype)
    return padded._replace(globals={**padded.globals, "cell": cell})


def batches(graphs: Sequence[jraph.GraphsTuple], budget: PaddingBudget, batch_size: int,
            order: Sequence[int] | None = None):
    """Yields padded batches of ``batch_size`` graphs in ``order`` (default: as given)."""
    order = range(len(graphs)) if order is None else order
    order = list(order)
    for start in range(0, len(order), batch_size):
        chunk = [graphs[i] for i in order[start:start + batch_size]]
        yield pad_graph(jraph.batch_np(chunk) if len(chunk) > 1 else chunk[0], budget)

