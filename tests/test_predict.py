"""experiments.predict and experiments.equilibrate, end to end on embedded files."""

import dataclasses
import shutil
import subprocess
import sys
import time

import ase.io
import numpy as np
import pytest

from eignn_jax import dataset, xyz
from experiments import equilibrate as equilibrate_main, predict as predict_main, train as train_main
from tests.conftest import DEFAULT_DATA

TINY = ["--set=model.width=8", "--set=model.num_layers=1", "--set=train.epochs=1",
        "--set=train.lr_decay_epochs=[]", "--set=data.n_train=2", "--set=data.n_test=1"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    train_main.main(["--config", "default", "--workdir", str(workdir), "--no-eval"] + TINY)
    return workdir


def test_predict_writes_npz_and_extended_xyz_readable_by_ase(trained_run, tmp_path):
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]
    predict_main.main(["--workdir", str(trained_run), str(source), "--out", str(tmp_path)])
    config = dataset.load_configuration(source)
    with np.load(tmp_path / source.name) as out:
        propensity = out["predicted_propensity"]
        assert propensity.shape == (8, config.n_particles)
        np.testing.assert_array_equal(out["initial_positions"], config.positions)
        np.testing.assert_array_equal(out["times"], config.times)
        # Mapped back to σ with the training set's statistics: same scale as the labels.
        assert np.all(np.isfinite(propensity))
        np.testing.assert_allclose(propensity.mean(1), config.propensity[:, config.is_type_a].mean(1), rtol=0.5)

    atoms = ase.io.read(tmp_path / source.with_suffix(".xyz").name)
    assert len(atoms) == config.n_particles
    np.testing.assert_array_equal(atoms.numbers, config.types)
    np.testing.assert_allclose(atoms.positions, config.positions, atol=1e-5)
    np.testing.assert_allclose(np.diag(atoms.cell), config.box, rtol=1e-7)
    np.testing.assert_allclose(atoms.arrays["prop_7"], propensity[7], rtol=1e-6)
    assert atoms.info["equilibrium"] == "inherent"


def test_extended_xyz_header():
    text = xyz.format_extended_xyz(np.array([1, 2]), np.zeros((2, 3)), np.array([3.0, 3, 3]),
                                   {"prop_0": np.array([0.5, 0.25])}, info={"times": "1 2"})
    lines = text.splitlines()
    assert lines[0] == "2" and len(lines) == 4
    assert 'Properties=species:S:1:pos:R:3:Z:I:1:prop_0:R:1' in lines[1]
    assert lines[2].split() == ["A", "0", "0", "0", "1", "0.5"]
    assert lines[3].split()[0] == "B"


def strip_inherent(source, target):
    config = dataset.load_configuration(source)
    dataset.write_configuration(target, dataclasses.replace(config, inherent=None))


def test_equilibrate_survives_being_killed_and_is_idempotent(tmp_path):
    sources = sorted(DEFAULT_DATA.glob("*.npz"))[:3]
    for source in sources:
        strip_inherent(source, tmp_path / source.name)
    process = subprocess.Popen([sys.executable, "-m", "experiments.equilibrate", str(tmp_path)],
                               stdout=subprocess.PIPE, text=True)
    first_line = process.stdout.readline()          # one file done and written
    process.kill()
    process.wait()
    assert first_line.startswith("[1/3]"), first_line
    done = [dataset.load_configuration(p).inherent is not None for p in sorted(tmp_path.glob("*.npz"))]
    assert done[0] and not all(done[1:])             # every file still loads: none half-written
    assert not list(tmp_path.glob(".*tmp"))

    equilibrate_main.main([str(tmp_path)])
    contents = {p.name: p.read_bytes() for p in tmp_path.glob("*.npz")}
    for path in tmp_path.glob("*.npz"):
        config = dataset.load_configuration(path)
        assert config.inherent is not None and config.inherent.dtype == np.float64
    equilibrate_main.main([str(tmp_path)])           # nothing left to do: files untouched
    assert contents == {p.name: p.read_bytes() for p in tmp_path.glob("*.npz")}


def test_predict_computes_missing_inherent_structures(trained_run, tmp_path):
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]
    raw = tmp_path / "raw"
    raw.mkdir()
    strip_inherent(source, raw / source.name)
    predict_main.main(["--workdir", str(trained_run), str(raw), "--out", str(tmp_path / "out")])
    with np.load(tmp_path / "out" / source.name) as out:
        assert out["initial_positions_inherent"].shape == (1000, 3)
        assert np.isfinite(out["predicted_propensity"]).all()
