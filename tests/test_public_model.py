"""The public implementation's layout reproduces its published checkpoint, stage by stage.

Reference data (not part of the project): ``../shared/reference/public_eignn/``, the public
T = 0.44 EIGNN-Cage checkpoint and its outputs on one dev configuration.
"""

import pathlib

import jax
import jraph
import numpy as np
import pytest

from eignn_jax import dataset, graph as graph_lib, torch_checkpoint
from eignn_jax.public_model import (EquivariantBatchNorm, PublicEIGNN, config_from_state_dict,
                                    variables_from_state_dict)

REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "public_eignn"
DEV_FILE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ka3d_T064_N1000" / "N1000T0.64_1.npz"
CHECKPOINT = REFERENCE / "t044_EIGNN_cage.pt"
# Float32, deterministic reference: each stage within this fraction of its largest value.
STAGE_TOLERANCE = 1e-4

pytestmark = pytest.mark.skipif(not CHECKPOINT.exists(), reason=f"reference data not at {REFERENCE}")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(REFERENCE / "N1000T0.64_1_inputs.npz")), dict(np.load(REFERENCE / "N1000T0.64_1_outputs.npz"))


@pytest.fixture(scope="module")
def state():
    return torch_checkpoint.load_state_dict(CHECKPOINT)


def graph_from_model_tensors(inputs) -> jraph.GraphsTuple:
    """The reference's model-level tensors as one of our graphs: its edges (row 0 source j,
    row 1 target i) and vectors r_i − r_j, expressed as positions plus integer cell shifts."""
    positions = inputs["initial_positions"].astype(np.float64)
    box = inputs["box"].astype(np.float64)
    senders, receivers = inputs["model_edge_index"].astype(np.int32)
    bond = -inputs["model_edge_vector_init"].astype(np.float64)        # r_j − r_i
    shifts = np.round((bond - (positions[senders] - positions[receivers])) / box)
    n = len(positions)
    nodes = {"positions": positions.astype(np.float32),
             "displacements": inputs["model_displacement"].astype(np.float32),
             "species": (inputs["model_x_types"] - 1).astype(np.int32),
             "energy": inputs["model_pe"].astype(np.float32),
             "targets": np.zeros((n, 10), np.float32), "target_mask": np.zeros(n, bool)}
    return jraph.GraphsTuple(nodes=nodes, edges={"shifts": shifts.astype(np.float32)},
                             senders=senders, receivers=receivers,
                             globals={"cell": np.diag(box).astype(np.float32)[None]},
                             n_node=np.array([n], np.int32), n_edge=np.array([len(senders)], np.int32))


def run(state, graph):
    """(outputs [N, 10] for each particle's own species, intermediates) on the real nodes."""
    config = config_from_state_dict(state)
    padded = graph_lib.pad_graph(graph, graph_lib.padding_budget([graph]))
    model = PublicEIGNN(config)
    variables = variables_from_state_dict(state, model.init(jax.random.PRNGKey(0), padded))
    outputs, captured = jax.jit(lambda v, g: model.apply(v, g, mutable=["intermediates"]))(variables, padded)
    n = int(graph.n_node[0])
    return np.asarray(outputs)[:n], jax.tree.map(lambda x: np.asarray(x)[:n], captured["intermediates"])


def own_species_columns(output: np.ndarray, types: np.ndarray) -> np.ndarray:
    """[N, 20] (10 times × A, then × B) → [N, 10], each particle's own species."""
    return np.where((types == 2)[:, None], output[:, 10:], output[:, :10])


def relative_error(actual, expected) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def test_config_read_from_the_checkpoint(state):
    config = config_from_state_dict(state)
    assert (config.width, config.num_layers, config.l_max, config.num_bessel, config.num_outputs) == (32, 7, 2, 8, 10)


@pytest.mark.slow
def test_reproduces_every_stage_from_the_model_tensors(reference, state):
    inputs, expected = reference
    outputs, stages = run(state, graph_from_model_tensors(inputs))
    errors = {"lin_embedding.out": relative_error(stages["embedding"][0], expected["lin_embedding.out"])}
    for k in range(7):
        layer = stages[f"layer_{k}"]
        (h, h_eq), = layer["updated"]
        errors[f"interactions.{k}.I2EConv.out0"] = relative_error(h, expected[f"interactions.{k}.I2EConv.out0"])
        errors[f"interactions.{k}.I2EConv.out1"] = relative_error(h_eq, expected[f"interactions.{k}.I2EConv.out1"])
        (h, h_eq), = layer["normalised"]
        errors[f"interactions.{k}.out0"] = relative_error(h, expected[f"interactions.{k}.out0"])
        if k == 6:
            # The last layer's equivariant BatchNorm feeds nothing, so the model skips it;
            # its function is checked here on the reference's own weights.
            h_eq = EquivariantBatchNorm(2).apply({
                "params": {"weight": state["interactions.6.e_norm.weight"], "bias": state["interactions.6.e_norm.bias"]},
                "batch_stats": {"mean": state["interactions.6.e_norm.running_mean"],
                                "var": state["interactions.6.e_norm.running_var"]}}, layer["updated"][0][1])
        errors[f"interactions.{k}.out1"] = relative_error(h_eq, expected[f"interactions.{k}.out1"])
    errors["final_invariant"] = relative_error(stages["final_invariant"][0], expected["final_invariant"])
    errors["agg_3.out"] = relative_error(stages["decoder_aggregate"][0], expected["agg_3.out"])
    errors["output"] = relative_error(outputs, own_species_columns(expected["output"], inputs["types"]))
    print({k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < STAGE_TOLERANCE, {k: v for k, v in errors.items() if v >= STAGE_TOLERANCE}


@pytest.mark.slow
def test_reproduces_the_output_from_the_raw_configuration(reference, state):
    """Our own preprocessing: union graph, unshifted energy on the inherent structure."""
    inputs, expected = reference
    configuration = dataset.load_configuration(DEV_FILE)
    graph = graph_lib.build_graph(configuration, graph_lib.GraphConfig(
        equilibrium="inherent", energy_structure="inherent", energy_shifted=False))
    ours = set(zip(graph.senders.tolist(), graph.receivers.tolist()))
    theirs = set(zip(*inputs["model_edge_index"].tolist()))
    assert ours == theirs
    assert relative_error(graph.nodes["energy"], inputs["model_pe"]) < 1e-5
    outputs, _ = run(state, graph)
    assert relative_error(outputs, own_species_columns(expected["output"], inputs["types"])) < STAGE_TOLERANCE


def test_reader_gives_the_checkpoints_arrays(state):
    """Every array of the published state dict, read without PyTorch, equals the reference's."""
    weights = np.load(REFERENCE / "public_eignn_t044_cage_weights.npz")
    assert all(np.array_equal(state[k], weights[k]) for k in weights.files)


def test_a_state_dict_of_another_layout_is_refused(state):
    broken = {k: v for k, v in state.items() if k != "interactions.3.E2IConv.lin_r.bias"}
    config = config_from_state_dict(state)
    graph = graph_from_model_tensors(dict(np.load(REFERENCE / "N1000T0.64_1_inputs.npz")))
    padded = graph_lib.pad_graph(graph, graph_lib.padding_budget([graph]))
    # Shapes only: the importer reads nothing else from the template.
    template = jax.eval_shape(lambda: PublicEIGNN(config).init(jax.random.PRNGKey(0), padded))
    with pytest.raises(ValueError, match="interactions.3.E2IConv.lin_r.bias"):
        variables_from_state_dict(broken, template)
    with pytest.raises(ValueError, match="does not use"):
        variables_from_state_dict({**state, "extra.weight": np.ones(3, np.float32)}, template)


@pytest.mark.slow
def test_imported_checkpoint_predicts_and_evaluates_like_a_run(tmp_path, reference, capsys):
    """import_public → predict gives the reference outputs for both species from the raw
    file; evaluate scores labelled files; inputs are left byte-identical."""
    import hashlib
    from eignn_jax import metrics
    from experiments import evaluate as evaluate_main, import_public, predict as predict_main
    inputs, expected = reference
    workdir = tmp_path / "public_t044"
    # The reference stands the dev set's inherent structure in for the equilibrium structure.
    import_public.main([str(CHECKPOINT), "--workdir", str(workdir), "--equilibrium", "inherent"])
    assert "T = 0.44 (the file name" in capsys.readouterr().out
    checksum = hashlib.sha256(DEV_FILE.read_bytes()).hexdigest()
    predict_main.main(["--workdir", str(workdir), str(DEV_FILE), "--out", str(tmp_path / "out")])
    assert hashlib.sha256(DEV_FILE.read_bytes()).hexdigest() == checksum
    with np.load(tmp_path / "out" / DEV_FILE.name) as written:
        predicted = written["predicted_standardised"].T
        assert "predicted_propensity" not in written.files   # no propensity scale in the checkpoint
    assert relative_error(predicted, own_species_columns(expected["output"], inputs["types"])) < STAGE_TOLERANCE
    header = (tmp_path / "out" / DEV_FILE.with_suffix(".xyz").name).read_text().splitlines()[1]
    assert "std_prop_9" in header and 'times="0.13 1.3' in header

    # A GlassBench-layout labelled file (10 time rows, no 'times' key: T = 0.44's grid).
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    with np.load(DEV_FILE) as data:
        arrays = {k: data[k] for k in ("types", "initial_positions", "initial_positions_inherent")}
        labels = np.concatenate([data["md_prop"], data["md_prop"][-2:]])       # [10, N]
    np.savez(labelled / "N1000T0.44_1.npz", **arrays, md_prop=labels)
    evaluate_main.main(["--workdir", str(workdir), "--data", str(labelled)])
    rows = metrics.read_pcc_csv(workdir / "eval_labelled" / "pcc.csv")
    assert {r["model"] for r in rows} == {"t044_EIGNN_cage (public)"}
    is_a = inputs["types"] == 1
    direct = [np.corrcoef(predicted[is_a, t], labels[t, is_a])[0, 1] for t in range(10)]
    np.testing.assert_allclose([r["pcc_all"] for r in rows], direct, atol=1e-5)


@pytest.mark.slow
def test_import_errors_are_one_line_naming_the_file(tmp_path, state):
    from experiments import import_public
    with pytest.raises(SystemExit, match=r"t044_EIGNN_cage.pt: the model predicts 10 time scales .* 3 times"):
        import_public.main([str(CHECKPOINT), "--workdir", str(tmp_path / "a"), "--times", "1", "2", "3"])
    assert not (tmp_path / "a").exists()
    import_public.main([str(CHECKPOINT), "--workdir", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="already holds a run"):
        import_public.main([str(CHECKPOINT), "--workdir", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="no such file"):
        import_public.main([str(tmp_path / "none.pt"), "--workdir", str(tmp_path / "c"), "--temperature", "0.44",
                            "--equilibrium", "cage"])
    odd = {**state, "interactions.0.I2EConv.lin1.weight": np.zeros((32, 80), np.float32)}
    with pytest.raises(ValueError, match=r"80 gate inputs \(2·32 \+ 1 \+ 2·N_b expected\)"):
        config_from_state_dict(odd)
    with pytest.raises(ValueError, match="missing or misshapen 'lin_embedding.weight'"):
        config_from_state_dict({k: v for k, v in state.items() if k != "lin_embedding.weight"})
