"""The OpenMM propensity generator (extra ``[sim]``): force field, observables, a tiny run."""

import dataclasses
import hashlib
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from eignn_jax import dataset, generation, graph as graph_lib, training
from eignn_jax.feature_scales import fit_feature_scales
from eignn_jax.model import ModelConfig
from eignn_jax.physics import kob_andersen, md, observables

# Minutes on 2 cores: the full suite only (pytest -m "not slow" leaves them out).
pytestmark = pytest.mark.slow

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


def test_openmm_energy_equals_the_package_potential(configuration):
    import openmm

    system = md.build_system(configuration.types, configuration.box)
    context = md.make_context(system, openmm.VerletIntegrator(0.005), threads=1)
    context.setPositions(np.asarray(configuration.positions, np.float64))
    openmm_energy = context.getState(getEnergy=True).getPotentialEnergy()._value
    ours = kob_andersen.per_particle_energy(np.asarray(configuration.positions, np.float64),
                                            configuration.types, np.asarray(configuration.box, np.float64)).sum()
    assert abs(openmm_energy - ours) < 1e-4 * abs(ours)


def test_reduced_temperature_maps_to_kelvin():
    # T = 1 ε/k_B is 1 kJ/mol / k_B: the thermostat's kT must be 1 in OpenMM's energy unit.
    assert md.kelvin(1.0) * 0.00831446261815324 == pytest.approx(1.0, rel=1e-12)


def test_maxwell_boltzmann_has_zero_momentum_and_the_temperature():
    v = md.maxwell_boltzmann(20000, 0.64, np.random.default_rng(0))
    np.testing.assert_allclose(v.mean(axis=0), 0.0, atol=1e-12)
    assert (v**2).mean() == pytest.approx(0.64, rel=0.02)


def test_self_intermediate_scattering_of_gaussian_displacements():
    # Isotropic Gaussian displacements with per-axis variance s²: F_s(q) = exp(−q² s² / 2).
    rng = np.random.default_rng(1)
    spreads = np.array([0.02, 0.1, 0.2])
    displacements = rng.normal(size=(3, 100000, 3)) * spreads[:, None, None]
    expected = np.exp(-(observables.SELF_SCATTERING_Q * spreads) ** 2 / 2)
    np.testing.assert_allclose(observables.self_intermediate_scattering(displacements), expected, atol=5e-3)


def test_relaxation_time_of_an_exponential():
    times = np.geomspace(0.01, 100, 40)
    assert observables.relaxation_time(times, np.exp(-times / 7.8)) == pytest.approx(7.8, rel=0.01)
    assert math.isnan(observables.relaxation_time(times, np.ones_like(times)))


def test_broken_bonds_on_a_hand_built_case():
    box = np.full(3, 10.0)
    types = np.array([1, 1, 2])
    # 0–1 bonded (1.0 < 1.4 σ_AA), 0–2 bonded (1.0 < 1.4 σ_AB = 1.12), 1–2 not (2 > 1.12).
    start = np.array([[0.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]])
    bonds = observables.bond_pairs(start, types, box, 1.4)
    assert sorted(map(tuple, bonds.tolist())) == [(0, 1), (0, 2)]
    later = start.copy()
    later[1, 0] = 2.0                                      # 0–1 now 2.0 > 1.7 σ_AA: broken
    later[2, 0] = -1.3 + box[0]                            # 0–2 at 1.3 < 1.7 · 0.8 = 1.36, other image
    fraction = observables.broken_bond_fraction(np.stack([start, later]), bonds, types, box, 1.7)
    np.testing.assert_allclose(fraction, [[0, 0, 0], [0.5, 1.0, 0.0]])


def with_option(command: list[str], flag: str, value) -> list[str]:
    """``command`` with the value after ``flag`` replaced."""
    changed = list(command)
    changed[changed.index(flag) + 1] = str(value)
    return changed


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("simulated")
    command = [sys.executable, "-m", "experiments.simulate", "--out", str(out), "--n", "400",
               "--configs", "2", "--runs", "2", "--times", "0.05,0.1", "--equilibrate", "1",
               "--spacing", "0.5", "--tau-alpha", "1", "--melt-time", "0.5", "--workers", "0"]
    subprocess.run(command, cwd=REPOSITORY, check=True, capture_output=True, text=True)
    return out, command


def test_tiny_run_yields_files_the_loader_and_trainer_accept(tiny_run, tmp_path):
    out, _ = tiny_run
    meta = json.loads((out / "meta.json").read_text())
    assert meta["runs"] == 2 and meta["engine"].startswith("openmm")
    configurations = [dataset.load_configuration(p) for p in dataset.list_configurations(out)]
    assert len(configurations) == 2
    for c in configurations:
        assert c.n_particles == 400
        np.testing.assert_allclose(c.times, [0.05, 0.1])
        assert np.asarray(c.propensity).shape == (2, 400) and np.all(np.asarray(c.propensity) > 0)
        # Mean |Δr| grows with time for almost every particle (2 runs, ballistic regime).
        assert np.mean(np.asarray(c.propensity)[1] > np.asarray(c.propensity)[0]) > 0.9
        assert c.inherent is not None
        # One run per half (R = 2): the halves are the runs, and average to md_prop.
        halves = c.extras[dataset.KEY_HALF_PROPENSITY]
        assert halves.shape == (2, 2, 400) and not np.array_equal(halves[0], halves[1])
        np.testing.assert_allclose(halves.mean(axis=0), c.propensity, rtol=1e-6)
    graphs = [graph_lib.build_graph(c, graph_lib.GraphConfig()) for c in configurations]
    model_config = ModelConfig(width=8, num_layers=1, num_outputs=2,
                               scales=fit_feature_scales(graphs))
    state = training.train(model_config, training.TrainConfig(epochs=1), graphs[:1], graphs[1:],
                           tmp_path / "run", {"source": "test"}, log=lambda _: None)
    assert int(state.step) == 1
    assert (tmp_path / "run" / "metrics.jsonl").exists()


def test_tiny_run_is_resumable_without_rewriting(tiny_run):
    out, command = tiny_run
    digest = lambda: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.npz"))}
    before = digest()
    result = subprocess.run(command, cwd=REPOSITORY, check=True, capture_output=True, text=True)
    assert "all 2 configurations already in" in result.stdout
    assert digest() == before


def test_generate_from_python_gives_the_files_of_the_command(tiny_run, tmp_path):
    # The library entry point with the protocol the command builds from its flags (τ_α = 1):
    # single-threaded OpenMM in both, so the same files bit for bit, and the same meta.json
    # but for the command line it records. A second call with another protocol is refused.
    serial, _ = tiny_run
    protocol = md.Protocol(n=400, runs=2, times=(0.05, 0.1), equilibration_time=1.0, spacing=0.5, melt_time=0.5)
    out = tmp_path / "python"
    lines = []
    paths = generation.generate(out, protocol, 2, tau_alpha=1.0, log=lines.append)
    assert [p.name for p in paths] == sorted(p.name for p in serial.glob("*.npz"))
    for path in paths:
        assert path.read_bytes() == (serial / path.name).read_bytes(), path.name
    ours, theirs = (json.loads((folder / "meta.json").read_text()) for folder in (out, serial))
    assert ours.pop("command") is None and theirs.pop("command").startswith("python -m experiments.simulate")
    assert ours == theirs
    assert lines[0] == "0 configuration(s) already done; 2 to go" and lines[-1].startswith("[2/2] N400T0.64_2.npz")
    with pytest.raises(generation.GenerationError, match="another protocol"):
        generation.generate(out, dataclasses.replace(protocol, seed=1), 2, tau_alpha=1.0, log=lines.append)


def test_runs_on_a_dask_cluster_give_the_files_of_the_serial_run(tiny_run, tmp_path):
    # The same protocol through a local Dask cluster (--scheduler): one worker process with
    # two threads, so two runs share a process at once. Single-threaded OpenMM everywhere
    # (chain and runs) is deterministic, so the files must be the same bit for bit.
    distributed = pytest.importorskip("distributed")
    serial, command = tiny_run
    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster:
        dask_command = with_option(command, "--out", out)
        # A context shared between threads can hang rather than fail: hence the timeout.
        subprocess.run(dask_command + ["--scheduler", cluster.scheduler_address], cwd=REPOSITORY,
                       check=True, capture_output=True, text=True, timeout=300)
    names = sorted(p.name for p in serial.glob("*.npz"))
    assert names == sorted(p.name for p in out.glob("*.npz")) and len(names) == 2
    for name in names:
        ours, theirs = dataset.load_configuration(out / name), dataset.load_configuration(serial / name)
        for field in ("positions", "inherent", "propensity"):
            np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field), err_msg=field)
        for extra in ("md_disp", "bb_prop"):
            np.testing.assert_array_equal(ours.extras[extra], theirs.extras[extra], err_msg=extra)


def test_check_report_on_a_short_run():
    # A short validation run (N = 400): the NVE energy is conserved, the first peaks of the
    # partial g(r) sit where the KA liquid has them, F_s starts at 1 and decays, and the
    # per-origin τ_α bracket the τ_α of the mean F_s.
    protocol = md.Protocol(n=400, temperature=0.8, melt_time=2.0, equilibration_time=10.0)
    report = generation.check(protocol, segments=3, segment_time=10.0, samples=16, threads=1, log=lambda _: None)
    assert report["nve_steps"] == 3 * 2000
    assert abs(report["drift_per_particle_per_1e4_steps"]) < 3e-3  # measured 9e-4 over this short run
    peaks = report["g_first_peaks"]
    assert 1.0 < peaks["AA"]["r"] < 1.15 and 0.8 < peaks["AB"]["r"] < 0.95
    assert peaks["AB"]["g"] > peaks["AA"]["g"] > 2.0
    values = np.asarray(report["f_s"]["values"])
    assert values[0] > 0.99 and values[-1] < 1 / math.e and np.all(np.diff(values) < 1e-3)
    per_origin = np.asarray(report["tau_alpha_per_origin"])
    assert per_origin.min() <= report["tau_alpha"] * 1.05 and report["tau_alpha"] <= per_origin.max() * 1.05
    assert 0 < report["tau_alpha"] < 10.0 and report["tau_alpha_origin_stderr"] >= 0


def test_check_data_reads_tau_alpha_off_runs_from_stored_configurations(tiny_run, tmp_path):
    # --check-data on the tiny data set, heated to T = 1.5 so that F_s decays within the
    # 8 τ_α = 8 τ of the runs: one τ_α per run, and one of their mean F_s.
    out, _ = tiny_run
    report_path = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "experiments.simulate", "--check-data", str(out), "--temperature", "1.5",
                    "--tau-alpha", "1", "--runs", "2", "--workers", "0", "--out", str(report_path)],
                   cwd=REPOSITORY, check=True, capture_output=True, text=True)
    report = json.loads(report_path.read_text())
    assert report["files"] == 2 and report["runs"] == 4 and len(report["tau_alpha_per_run"]) == 4
    values = np.asarray(report["f_s"]["values"])
    assert values[0] > 0.99 and values[-1] < 1 / math.e
    per_run = np.asarray(report["tau_alpha_per_run"])
    assert np.all(np.isfinite(per_run)) and np.all(per_run > 0)
    assert per_run.min() <= report["tau_alpha"] <= per_run.max()
    per_configuration = per_run.reshape(2, 2).mean(axis=1)          # runs are grouped by file
    np.testing.assert_allclose(report["tau_alpha_per_configuration"], per_configuration)
    assert report["tau_alpha_configuration_mean"] == pytest.approx(per_configuration.mean())
    assert report["tau_alpha_configuration_stderr"] == pytest.approx(per_configuration.std(ddof=1) / math.sqrt(2))


def test_a_run_extended_later_gives_the_files_of_one_run(tiny_run, tmp_path):
    # One configuration first, then the same command asking for two: the chain resumes
    # from its checkpoint, and both files are those of the run that made two at once.
    serial, command = tiny_run
    out = tmp_path / "extended"
    first = with_option(with_option(command, "--out", out), "--configs", 1)
    subprocess.run(first, cwd=REPOSITORY, check=True, capture_output=True, text=True)
    assert sorted(p.name for p in out.glob("*.npz")) == ["N400T0.64_1.npz"]
    assert (out / ".simulate" / "chain.npz").exists()
    second = with_option(first, "--configs", 2)
    result = subprocess.run(second, cwd=REPOSITORY, check=True, capture_output=True, text=True)
    assert "chain resumed" in result.stdout and "1 configuration(s) already done" in result.stdout
    for path in sorted(serial.glob("*.npz")):
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
