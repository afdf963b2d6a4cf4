"""The directional analysis (EIGNN paper §5.3, Fig. 9): cos θ between d^MD(t) and d^equi."""

import csv
import hashlib
import math

import numpy as np
import pytest

from eignn_jax import dataset, directional
from eignn_jax.physics import periodic
from experiments import directional as directional_cli


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_cosines_match_a_particle_by_particle_loop():
    rng = np.random.default_rng(0)
    md = rng.normal(scale=0.3, size=(3, 50, 3))
    equi = rng.normal(scale=0.1, size=(50, 3))
    md[1, 7] = 0.0          # no motion at one time: no direction
    equi[11] = 0.0          # already at equilibrium: no direction at any time
    result = directional.cosines(md, equi)
    for t in range(3):
        for i in range(50):
            a, b = md[t, i], equi[i]
            na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
            if na < directional.MIN_NORM or nb < directional.MIN_NORM:
                assert np.isnan(result[t, i])
            else:
                assert result[t, i] == pytest.approx(sum(x * y for x, y in zip(a, b)) / (na * nb), abs=1e-12)
    assert np.isnan(result[1, 7]) and np.isnan(result[:, 11]).all() and np.isfinite(result[0, 7])


def test_rotating_both_vectors_leaves_the_cosines_unchanged():
    rng = np.random.default_rng(1)
    md, equi = rng.normal(size=(4, 200, 3)), rng.normal(size=(200, 3))
    rotation = _random_rotation(rng)
    np.testing.assert_allclose(directional.cosines(md @ rotation.T, equi @ rotation.T),
                               directional.cosines(md, equi), atol=1e-12)
    # Rotating only one of them does change them: the check above can fail.
    assert not np.allclose(directional.cosines(md @ rotation.T, equi), directional.cosines(md, equi), atol=1e-3)


def test_parallel_gives_one_and_antiparallel_minus_one():
    rng = np.random.default_rng(2)
    equi = rng.normal(scale=0.1, size=(100, 3))
    lengths = rng.uniform(0.01, 3.0, size=(5, 100, 1))
    np.testing.assert_allclose(directional.cosines(lengths * equi, equi), 1.0, atol=1e-12)
    np.testing.assert_allclose(directional.cosines(-lengths * equi, equi), -1.0, atol=1e-12)


def test_independent_random_directions_average_to_zero():
    # For directions uniform on the sphere cos θ is uniform on [−1, 1]: mean 0, variance 1/3.
    rng = np.random.default_rng(3)
    n = 20000
    cos = directional.cosines(rng.normal(size=(1, n, 3)), rng.normal(size=(n, 3)))
    table = directional.summarise([1.0], [cos], [np.zeros_like(cos, bool)])
    sigma = math.sqrt(1 / 3 / n)
    assert abs(table.mean_cos[0]) < 4 * sigma
    assert table.stderr[0] == pytest.approx(sigma, rel=0.05)
    # A flat histogram: every bin within 5 standard deviations of n / bins.
    expected = n / directional.HISTOGRAM_BINS
    assert np.all(np.abs(table.counts[0] - expected) < 5 * math.sqrt(expected))


def test_equilibrium_displacement_is_the_minimum_image():
    box = np.array([10.0, 10.0, 10.0])
    initial = np.array([[4.9, 0.0, 0.0], [0.0, -4.95, 1.0]])
    relaxed = np.array([[-4.9, 0.1, 0.0], [0.0, 4.95, 1.2]])   # across the boundary
    config = dataset.Configuration(path="", types=np.array([1, 2]), positions=initial, box=box, inherent=relaxed)
    d = dataset.displacements(config, "inherent")
    np.testing.assert_allclose(d, [[0.2, 0.1, 0.0], [0.0, -0.1, 0.2]], atol=1e-12)
    np.testing.assert_array_equal(d, periodic.wrap(relaxed - initial, box))


def test_summary_counts_the_most_mobile_tenth_and_skips_undirected_particles():
    n = 50
    cos = np.full((2, n), -1.0)
    propensity = np.tile(np.arange(n, dtype=float), (2, 1))
    propensity[1] = propensity[1, ::-1]                     # the other end is mobile at t = 2
    cos[0, -5:] = 1.0
    cos[1, :5] = 1.0
    cos[0, 0] = np.nan                                      # an undirected particle at t = 1
    mobile = directional.most_mobile(propensity, np.ones(n, bool))
    assert mobile.sum(axis=1).tolist() == [5, 5]
    table = directional.summarise([1.0, 2.0], [cos], [mobile])
    np.testing.assert_allclose(table.mean_cos_mobile10, [1.0, 1.0])
    assert table.n.tolist() == [49, 50]
    assert table.mean_cos[0] == pytest.approx((5 - 44) / 49)
    assert table.counts.sum(axis=1).tolist() == [49, 50]
    assert table.counts[1, -1] == 5 and table.counts[1, 0] == 45   # ±1 fall in the end bins


def test_most_mobile_ranks_only_the_selected_particles():
    propensity = np.array([[9.0, 1.0, 2.0, 3.0]])
    selected = np.array([False, True, True, True])          # particle 0 (say type B) is the fastest
    assert directional.most_mobile(propensity, selected, 0.34).tolist() == [[False, False, False, True]]


def _without_displacement(source, target):
    config = dataset.load_configuration(source)
    arrays = dataset.configuration_arrays(config)
    del arrays["md_disp"]
    np.savez(target, **arrays)


def test_a_file_without_md_disp_is_named(default_files, tmp_path):
    path = tmp_path / "glassbench_like.npz"
    _without_displacement(default_files[0], path)
    with pytest.raises(dataset.DataError, match="experiments.simulate") as error:
        directional.run([default_files[0], path], tmp_path / "out", log=lambda line: None)
    assert error.value.path == str(path) and error.value.field == "md_disp"
    assert not (tmp_path / "out" / directional.CSV_NAME).exists()


def test_type_selection(configuration):
    cos, mobile, selected = directional.configuration_cosines(configuration)
    assert cos.shape == (len(configuration.times), int(configuration.is_type_a.sum()))
    np.testing.assert_array_equal(selected, configuration.is_type_a)
    everything, _, _ = directional.configuration_cosines(configuration, all_types=True)
    assert everything.shape[1] == configuration.n_particles
    np.testing.assert_array_equal(everything[:, configuration.is_type_a], cos)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_command_end_to_end(default_files, tmp_path, capsys):
    inputs = default_files[:2]
    before = {p: _digest(p) for p in inputs}
    out = tmp_path / "directional"
    table, figures = directional_cli.main([*map(str, inputs), "--out", str(out)])

    assert {p: _digest(p) for p in inputs} == before
    for name in (directional.CSV_NAME, *directional.FIGURE_NAMES):
        assert (out / name).stat().st_size > 0
    with open(out / directional.CSV_NAME, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == directional.CSV_COLUMNS
    times = dataset.load_configuration(inputs[0]).times
    assert [float(r["t"]) for r in rows] == times.tolist()
    n_a = sum(int(dataset.load_configuration(p).is_type_a.sum()) for p in inputs)
    assert all(0 < int(r["n"]) <= n_a for r in rows)
    assert all(-1 <= float(r["mean_cos"]) <= 1 and float(r["stderr"]) > 0 for r in rows)
    np.testing.assert_allclose([float(r["mean_cos"]) for r in rows], table.mean_cos, rtol=0, atol=0)
    assert "mean cos θ" in capsys.readouterr().out

    hist = figures["directional_hist.png"].axes[0]
    assert hist.get_xlim() == (-1.0, 1.0) and len(hist.patches) == len(times)
    mean = figures["directional_mean.png"].axes[0]
    assert mean.get_xscale() == "log" and len(mean.containers) == 1   # the error bars
    titles = [a.get_title() for a in figures["directional_slice.png"].axes if a.get_title()]
    assert len(titles) == 3 and all("arrows ×" in t for t in titles)
    assert f"t = {times[0]:g} τ" in titles[0] and "d^equi" in titles[2]


def test_command_reports_bad_input(tmp_path):
    missing = tmp_path / "absent.npz"
    with pytest.raises(SystemExit, match="absent.npz"):
        directional_cli.main([str(missing), "--out", str(tmp_path / "out")])
