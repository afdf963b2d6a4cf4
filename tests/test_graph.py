"""Graph building: union edges, node fields, padding and the on-disk cache."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from eignn_jax import graph as graph_lib
from eignn_jax.physics import kob_andersen, neighbours, periodic


def edge_vectors(graph):
    cell = graph.globals["cell"][0].astype(np.float64)
    pos = graph.nodes["positions"].astype(np.float64)
    return pos[graph.senders] - pos[graph.receivers] + graph.edges["shifts"] @ cell


def test_edges_are_the_union_of_both_structures(real_graph, configuration):
    cutoff = graph_lib.GraphConfig().cutoff
    initial = edge_vectors(real_graph)
    equilibrium = initial + (real_graph.nodes["displacements"][real_graph.senders]
                             - real_graph.nodes["displacements"][real_graph.receivers])
    lengths_initial = np.linalg.norm(initial, axis=1)
    lengths_equilibrium = np.linalg.norm(equilibrium, axis=1)
    # Every edge is short in at least one structure, and every short pair of either is an edge.
    assert np.all(np.minimum(lengths_initial, lengths_equilibrium) < cutoff)
    edges = set(zip(real_graph.receivers.tolist(), real_graph.senders.tolist()))
    for positions in (configuration.positions, configuration.inherent):
        i, j, _ = neighbours.neighbour_pairs(positions, configuration.box, cutoff)
        assert set(zip(i.tolist(), j.tolist())) <= edges
    assert np.any(lengths_initial >= cutoff) and np.any(lengths_equilibrium >= cutoff)
    # Union edges are longer than the cutoff in one structure; at T = 0.64 a few are even longer
    # than the radial range r_max = 2.5 (their basis there is zero), but very few.
    beyond = np.maximum(lengths_initial, lengths_equilibrium) >= 2.5
    assert beyond.mean() < 0.01


def test_edge_vectors_are_minimum_images(real_graph, configuration):
    vectors = edge_vectors(real_graph)
    raw = (configuration.positions[real_graph.senders].astype(np.float64)
           - configuration.positions[real_graph.receivers])
    np.testing.assert_allclose(vectors, periodic.wrap(raw, configuration.box), atol=1e-5)
    assert np.allclose(real_graph.edges["shifts"], np.round(real_graph.edges["shifts"]))


def test_node_fields(real_graph, configuration):
    nodes = real_graph.nodes
    n = configuration.n_particles
    assert nodes["targets"].shape == (n, 8)
    np.testing.assert_array_equal(nodes["targets"], configuration.propensity.T)
    np.testing.assert_array_equal(nodes["target_mask"], configuration.types == 1)
    np.testing.assert_array_equal(nodes["species"], configuration.types - 1)
    displacement = periodic.wrap(configuration.inherent - configuration.positions, configuration.box)
    np.testing.assert_allclose(nodes["displacements"], displacement, atol=1e-6)
    # Energies on the (single-precision) inherent structures of the dev set: −7.57 … −7.61 per particle.
    assert -7.62 < nodes["energy"].mean() < -7.56
    on_initial = graph_lib.build_graph(configuration, graph_lib.GraphConfig(energy_structure="initial"))
    np.testing.assert_allclose(
        on_initial.nodes["energy"],
        kob_andersen.per_particle_energy(configuration.positions, configuration.types, configuration.box),
        rtol=1e-5)


def test_unlabelled_configuration_has_no_targets(configuration):
    unlabelled = dataclasses.replace(configuration, propensity=None, times=None)
    graph = graph_lib.build_graph(unlabelled, graph_lib.GraphConfig())
    assert graph.nodes["targets"].shape == (configuration.n_particles, 0)
    assert not graph.nodes["target_mask"].any()


def test_missing_equilibrium_structure_is_a_clear_error(configuration):
    from eignn_jax.dataset import DataError
    with pytest.raises(DataError, match="initial_positions_cage"):
        graph_lib.build_graph(configuration, graph_lib.GraphConfig(equilibrium="cage"))


def test_padding_keeps_real_data_and_masks_padding(real_graph):
    budget = graph_lib.padding_budget([real_graph])
    padded = graph_lib.pad_graph(real_graph, budget)
    n, e = int(real_graph.n_node[0]), int(real_graph.n_edge[0])
    assert padded.nodes["positions"].shape[0] == budget.n_node
    assert padded.senders.shape[0] == budget.n_edge
    assert not padded.nodes["target_mask"][n:].any()
    np.testing.assert_array_equal(padded.senders[:e], real_graph.senders)
    # Padding edges connect padding nodes only.
    assert np.all(padded.senders[e:] >= n) and np.all(padded.receivers[e:] >= n)
    np.testing.assert_array_equal(padded.globals["cell"][1], np.eye(3))
    with pytest.raises(ValueError, match="budget"):
        graph_lib.pad_graph(real_graph, graph_lib.PaddingBudget(n, e, 2))


def test_cache_round_trip_is_exact_and_reused(default_files, tmp_path):
    config = graph_lib.GraphConfig()
    fresh = graph_lib.load_graphs(default_files[:2], config, tmp_path)
    cached_files = sorted(tmp_path.glob("*.npz"))
    assert len(cached_files) == 2
    again = graph_lib.load_graphs(default_files[:2], config, tmp_path)
    for a, b in zip(fresh, again):
        for field in ("nodes", "edges", "globals"):
            for key in getattr(a, field):
                np.testing.assert_array_equal(getattr(a, field)[key], getattr(b, field)[key])
                assert getattr(a, field)[key].dtype == getattr(b, field)[key].dtype
        np.testing.assert_array_equal(a.senders, b.senders)
    # A different graph config is a different cache entry.
    graph_lib.load_graphs(default_files[:1], dataclasses.replace(config, cutoff=1.8), tmp_path)
    assert len(sorted(tmp_path.glob("*.npz"))) == 3


def test_padding_budget_fits_any_batch(default_files):
    graphs = graph_lib.load_graphs(default_files[:3], graph_lib.GraphConfig())
    budget = graph_lib.padding_budget(graphs, batch_size=2)
    orders = [[0, 1, 2], [2, 1, 0], [1, 2, 0]]
    shapes = {tuple(b.senders.shape) + tuple(b.nodes["positions"].shape)
              for order in orders for b in graph_lib.batches(graphs, budget, 2, order)}
    assert len(shapes) == 1
