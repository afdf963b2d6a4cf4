"""The model's outputs respect the symmetries of the physics, on a real N = 1000 configuration.

Model-level transformations (rotations, inversion) act on the graph's raw vectors; the
physical ones (cubic symmetries, translations, periodic images, permutations) act on the
configuration and go through the whole graph-building pipeline.
"""

import dataclasses
import itertools

import jraph
import numpy as np
import pytest

from eignn_jax import dataset, graph as graph_lib
from tests.conftest import ModelRunner, small_model_config

RELATIVE_TOLERANCE = 1e-5


def assert_close(actual, expected, rtol=RELATIVE_TOLERANCE):
    scale = np.abs(expected).max()
    np.testing.assert_array_less(np.abs(actual - expected).max(), rtol * scale + 1e-7)


def random_orthogonal(rng, proper: bool) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q = -q
    return q


def transform_vectors(graph, matrix):
    """Applies x → M x to every vector of the graph: positions, displacements, cell rows."""
    nodes = dict(graph.nodes)
    nodes["positions"] = (nodes["positions"].astype(np.float64) @ matrix.T).astype(np.float32)
    nodes["displacements"] = (nodes["displacements"].astype(np.float64) @ matrix.T).astype(np.float32)
    cell = (graph.globals["cell"].astype(np.float64) @ matrix.T).astype(np.float32)
    return graph._replace(nodes=nodes, globals={"cell": cell})


def transformed_configuration(configuration, initial, inherent):
    return dataclasses.replace(configuration, positions=initial, inherent=inherent)


# The paper's size (7 layers, width 32, ℓ_max = 2): deep stacks are where a broken symmetry
# or an unread feature would compound.
PAPER_SIZE = dict(width=32, num_layers=7, l_max=2)


@pytest.fixture(scope="module", params=["full", "no_alpha0", "invariant"])
def runner(request, real_graph):
    return ModelRunner(small_model_config([real_graph], variant=request.param, **PAPER_SIZE), real_graph)


@pytest.fixture(scope="module")
def full_runner(real_graph):
    return ModelRunner(small_model_config([real_graph], **PAPER_SIZE), real_graph)


@pytest.mark.slow
@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "rotoinversion"])
def test_invariant_to_rotation_and_inversion(runner, real_graph, proper):
    rng = np.random.default_rng(1)
    expected = runner(real_graph)
    for _ in range(2):
        assert_close(runner(transform_vectors(real_graph, random_orthogonal(rng, proper))), expected)
    assert_close(runner(transform_vectors(real_graph, -np.eye(3))), expected)


@pytest.mark.slow
def test_even_declared_harmonics_break_inversion_only(real_graph):
    """Declaring displacement harmonics parity-even (as the public code does) is caught."""
    runner = ModelRunner(small_model_config([real_graph], harmonics_parity="even"), real_graph)
    expected = runner(real_graph)
    rotation = random_orthogonal(np.random.default_rng(2), proper=True)
    assert_close(runner(transform_vectors(real_graph, rotation)), expected)
    inverted = runner(transform_vectors(real_graph, -np.eye(3)))
    assert np.abs(inverted - expected).max() > 100 * RELATIVE_TOLERANCE * np.abs(expected).max()


def cubic_symmetries():
    """The 48 signed permutation matrices: the symmetry group of a cube."""
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            matrix[np.arange(3), perm] = signs
            yield matrix


@pytest.mark.slow
def test_invariant_to_the_48_cubic_symmetries(full_runner, configuration):
    """The box maps onto itself, so only positions change; the graph is rebuilt each time."""
    config = graph_lib.GraphConfig()
    expected = full_runner(graph_lib.build_graph(configuration, config))
    matrices = list(cubic_symmetries())
    assert len(matrices) == 48 and len({m.tobytes() for m in matrices}) == 48
    for matrix in matrices:
        moved = transformed_configuration(
            configuration, configuration.positions @ matrix.T, configuration.inherent @ matrix.T)
        assert_close(full_runner(graph_lib.build_graph(moved, config)), expected)


@pytest.mark.slow
def test_invariant_to_translation(full_runner, configuration):
    config = graph_lib.GraphConfig()
    expected = full_runner(graph_lib.build_graph(configuration, config))
    shift = np.array([0.37, -2.1, 4.05], np.float32)
    moved = transformed_configuration(configuration, configuration.positions + shift,
                                      configuration.inherent + shift)
    assert_close(full_runner(graph_lib.build_graph(moved, config)), expected)


@pytest.mark.slow
def test_invariant_to_periodic_images(full_runner, configuration):
    """Moving each particle (independently in each structure) by whole box vectors changes nothing."""
    config = graph_lib.GraphConfig()
    expected = full_runner(graph_lib.build_graph(configuration, config))
    rng = np.random.default_rng(3)
    box = configuration.box
    n = configuration.n_particles
    # Images within one box of the centre: the loader's bound on positions.
    initial = configuration.positions + rng.integers(-1, 2, (n, 3)) * box * (np.abs(configuration.positions) < box / 4)
    inherent = configuration.inherent + rng.integers(-1, 2, (n, 3)) * box * (np.abs(configuration.inherent) < box / 4)
    moved = transformed_configuration(configuration, initial.astype(np.float32), inherent.astype(np.float32))
    assert_close(full_runner(graph_lib.build_graph(moved, config)), expected)


@pytest.mark.slow
def test_equivariant_to_permutations(full_runner, configuration):
    config = graph_lib.GraphConfig()
    expected = full_runner(graph_lib.build_graph(configuration, config))
    perm = np.random.default_rng(4).permutation(configuration.n_particles)
    permuted = dataclasses.replace(
        configuration, types=configuration.types[perm], positions=configuration.positions[perm],
        inherent=configuration.inherent[perm], propensity=configuration.propensity[:, perm])
    assert_close(full_runner(graph_lib.build_graph(permuted, config)), expected[perm])


@pytest.mark.slow
def test_invariant_to_padding_budget(full_runner, real_graph):
    expected = full_runner(real_graph)
    larger = graph_lib.PaddingBudget(
        n_node=full_runner.budget.n_node + 777, n_edge=full_runner.budget.n_edge + 5000, n_graph=4)
    assert_close(full_runner(real_graph, larger), expected)


@pytest.mark.slow
def test_batched_graphs_do_not_interact(full_runner, real_graph, default_files):
    """Two graphs in one batch predict what each predicts alone (GraphNorm is per graph)."""
    other = graph_lib.build_graph(dataset.load_configuration(default_files[1]), graph_lib.GraphConfig())
    budget = graph_lib.padding_budget([real_graph, other], batch_size=2)
    both = full_runner(jraph.batch_np([real_graph, other]), budget)
    n = int(real_graph.n_node[0])
    assert_close(both[:n], full_runner(real_graph, budget))
    assert_close(both[n:], full_runner(other, budget))


def test_a_small_model_is_invariant_to_rotation_and_inversion(real_graph):
    """The fast tier's symmetry check (the paper-size suite above is in the full one)."""
    runner = ModelRunner(small_model_config([real_graph], width=8, num_layers=2), real_graph)
    expected = runner(real_graph)
    rng = np.random.default_rng(5)
    assert_close(runner(transform_vectors(real_graph, random_orthogonal(rng, proper=True))), expected)
    assert_close(runner(transform_vectors(real_graph, random_orthogonal(rng, proper=False))), expected)
