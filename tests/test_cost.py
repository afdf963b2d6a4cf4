"""Parameter counting and the cost benchmark's rows (``benchmarks.cost``)."""

import jax
import numpy as np
import pytest

from benchmarks import cost
from eignn_jax import architectures, graph as graph_lib
from eignn_jax.model import PUBLIC_LAYOUT, ModelConfig, parameter_count


@pytest.fixture(scope="module")
def padded(real_graph):
    return next(iter(graph_lib.batches([real_graph], graph_lib.padding_budget([real_graph]), 1)))


def init_variables(padded, **overrides):
    settings = dict(width=8, num_layers=2, num_outputs=padded.nodes["targets"].shape[1])
    config = ModelConfig(**{**settings, **overrides})
    # Shapes only: tracing without compiling keeps these tests fast.
    return jax.eval_shape(architectures.build(config).init, jax.random.PRNGKey(0), padded)


def test_count_is_the_total_size_of_the_parameter_leaves(padded):
    variables = init_variables(padded)
    expected = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(variables["params"]))
    assert parameter_count(variables) == expected
    # The 'params' collection alone gives the same count.
    assert parameter_count(variables["params"]) == expected


def test_count_leaves_out_batchnorm_statistics(padded):
    variables = init_variables(padded, architecture="public", **PUBLIC_LAYOUT)
    assert "batch_stats" in variables
    assert parameter_count(variables) == parameter_count(variables["params"])
    with_state = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(variables))
    assert parameter_count(variables) < with_state


def test_ablations_have_fewer_parameters_than_the_full_model(padded):
    full = parameter_count(init_variables(padded))
    no_alpha0 = parameter_count(init_variables(padded, variant="no_alpha0"))
    invariant = parameter_count(init_variables(padded, variant="invariant"))
    assert invariant < no_alpha0 < full


def test_count_grows_with_width_and_layers(padded):
    base = parameter_count(init_variables(padded))
    assert parameter_count(init_variables(padded, width=16)) > base
    assert parameter_count(init_variables(padded, num_layers=3)) > base


def test_epoch_is_the_ka_dev_training_graphs():
    from experiments.configs import ka_dev
    data = ka_dev.get_config().data
    assert cost.steps_per_epoch() == data.n_train - data.n_validation


@pytest.mark.slow
def test_rows_and_table_for_a_tiny_model(real_graph):
    rows = cost.cost_rows([real_graph], steps=2, width=8, num_layers=1)
    assert [r["model"] for r in rows] == [name for name, _ in cost.MODELS]
    for row in rows:
        assert row["layers"] == 1 and row["width"] == 8
        assert row["parameters"] > 0
        assert row["compilations"] == 1   # the timed steps reuse the first step's compilation
        assert row["step_wall_s"] > 0 and row["step_cpu_s"] > 0
        assert row["epoch_wall_s"] == pytest.approx(row["step_wall_s"] * row["steps_per_epoch"], abs=0.01)
    by_model = {r["model"]: r for r in rows}
    assert by_model["ablation B (invariant)"]["parameters"] < by_model["EIGNN"]["parameters"]
    assert by_model["public layout"]["architecture"] == "public"
    text = cost.table(rows)
    assert len(text.splitlines()) == 2 + len(rows)
    assert all(r["model"] in text for r in rows)
