"""The figures: what each panel shows and how it is labelled (not how it looks pixel by pixel)."""

import json

import numpy as np
import pytest
from matplotlib.collections import EllipseCollection, PolyCollection

from eignn_jax import dataset, experiment, plotting
from tests.conftest import DEFAULT_DATA

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def correlated(rng, m, times, strength):
    true = rng.gamma(2.0, 0.3, (m, len(times)))
    predicted = 5.0 + 0.1 * (true + rng.normal(0, strength, true.shape))   # another affine scale
    return true, predicted


def panels_of(figure):
    """The axes holding data (colour bars left out)."""
    return [axes for axes in figure.axes if axes.get_label() != "<colorbar>"]


def test_scatter_has_one_labelled_panel_per_time_scale_with_its_pcc(tmp_path):
    rng = np.random.default_rng(0)
    times = [0.13, 1.3, 8.0, 40.0, 200.0]
    true, predicted = correlated(rng, 400, times, 0.3)
    pcc = [0.91, 0.82, 0.73, 0.64, 0.55]
    figure = plotting.plot_propensity_scatter(true, predicted, times, pcc, tmp_path / "scatter.png", title="run")
    assert (tmp_path / "scatter.png").read_bytes()[:8] == PNG_SIGNATURE
    panels = panels_of(figure)
    assert len(panels) == len(times)
    assert len(figure.axes) == len(times) + 1                      # and one shared colour bar
    # Each panel names its own time scale and Pcc, in order.
    assert [axes.get_title() for axes in panels] == [f"t = {t:g} τ, Pcc = {p:.3f}" for t, p in zip(times, pcc)]
    # Two rows of four: x labels on the lowest panel of each column, y labels on the left column.
    assert {axes.get_xlabel() for axes in panels[1:]} == {"true propensity (z-score)"}
    assert panels[0].get_xlabel() == "" and panels[4].get_ylabel() == "predicted (z-score)"
    for axes in panels:
        hexes = [c for c in axes.collections if isinstance(c, PolyCollection)]
        assert len(hexes) == 1
        # z-scores: the axes are centred on 0 whatever the units of the inputs.
        assert axes.get_xlim() == axes.get_ylim() and axes.get_xlim()[0] == -axes.get_xlim()[1]
        assert hexes[0].get_array().sum() == pytest.approx(len(true), rel=0.02)


def test_scatter_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="must both be"):
        plotting.plot_propensity_scatter(np.zeros((5, 2)), np.zeros((5, 3)), [1, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="Pcc values"):
        plotting.plot_propensity_scatter(np.zeros((5, 2)), np.zeros((5, 2)), [1, 2], [0.5])


def slab_system(rng, n=300, side=8.0):
    positions = rng.uniform(-side / 2, side / 2, (n, 3))
    type_a = rng.random(n) < 0.8
    return positions, np.full(3, side), type_a


def test_map_shows_the_slab_through_the_periodic_boundary(tmp_path):
    rng = np.random.default_rng(1)
    positions, box, type_a = slab_system(rng)
    # Another image of a particle in the slab (z = −0.5 σ) is in the slab too.
    positions[0] = [0.0, 0.0, box[2] - 0.5]
    type_a[0] = True
    in_slab = np.abs(positions[:, 2] - box[2] * np.round(positions[:, 2] / box[2])) < 1.0
    values = rng.normal(size=len(positions))
    figure = plotting.plot_propensity_map(
        positions, box, type_a, [("true, t = 8 τ", values, "true (z-score)"),
                                 ("predicted, t = 8 τ", 0.5 * values, "predicted (standardised)")],
        path=tmp_path / "map.png", title="N1000_1.npz")
    assert (tmp_path / "map.png").read_bytes()[:8] == PNG_SIGNATURE
    panels = panels_of(figure)
    assert [axes.get_title() for axes in panels] == ["true, t = 8 τ", "predicted, t = 8 τ"]
    assert len(figure.axes) == 4                                   # a colour bar per panel
    assert sorted(axes.get_label() for axes in figure.axes).count("<colorbar>") == 2
    assert "N1000_1.npz" in figure.get_suptitle() and "|z| < 1 σ" in figure.get_suptitle()
    norms = []
    for axes, shown in zip(panels, (values, 0.5 * values)):
        assert (axes.get_xlabel(), axes.get_ylabel()) == ("x (σ)", "y (σ)")
        assert axes.get_aspect() == 1.0
        assert axes.get_xlim() == (-4.0, 4.0)
        grey, coloured = [c for c in axes.collections if isinstance(c, EllipseCollection)]
        assert len(coloured.get_offsets()) == int((in_slab & type_a).sum())
        assert len(grey.get_offsets()) == int((in_slab & ~type_a).sum())
        # The coloured discs are the A particles of the slab, with their values.
        assert sorted(coloured.get_array()) == pytest.approx(sorted(shown[in_slab & type_a]))
        norms.append((coloured.norm.vmin, coloured.norm.vmax))
    # One colour scale for both panels, so that they compare.
    assert norms[0] == norms[1]


def test_map_without_a_particles_in_the_slab_is_an_error():
    positions = np.array([[0.0, 0.0, 2.0], [1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="no A particle"):
        plotting.plot_propensity_map(positions, [6.0, 6.0, 6.0], np.array([True, False]),
                                     [("predicted", np.zeros(2), "σ")])


def test_the_map_time_is_the_one_nearest_tau_alpha_else_the_middle(tmp_path):
    times = np.array([0.13, 0.4, 1.3, 4.0, 8.0, 13.0, 25.0, 40.0])
    assert dataset.tau_alpha_time_index(times, DEFAULT_DATA) == 4       # meta.json: τ_α = 7.8
    assert dataset.tau_alpha_time_index(times, tmp_path) == 4           # no meta.json: the middle one
    (tmp_path / dataset.META_NAME).write_text(json.dumps({"tau_alpha_assumed": 30.0}))
    assert dataset.tau_alpha_time_index(times, tmp_path) == 6
    assert dataset.tau_alpha_time_index(times[:3], tmp_path) == 2


@pytest.mark.slow
def test_evaluate_and_predict_write_their_figures(trained_run, tmp_path):
    rows = experiment.evaluate(trained_run, out_dir=tmp_path / "eval", log=lambda _: None)
    for name in ("pcc.png", "scatter.png", "map.png"):
        assert (tmp_path / "eval" / name).read_bytes()[:8] == PNG_SIGNATURE
    assert len(rows) == 2 * 8
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]
    experiment.predict_files(trained_run, [source], tmp_path / "predicted", log=lambda _: None)
    assert (tmp_path / "predicted" / experiment.PREDICTION_MAP_NAME).read_bytes()[:8] == PNG_SIGNATURE
