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
from experiments import equilibrate as equilibrate_main, predict as predict_main
from tests.conftest import DEFAULT_DATA

# Minutes on 2 cores: the full suite only (pytest -m "not slow" leaves them out).
pytestmark = pytest.mark.slow

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
    process = subprocess.Popen([sys.executable, "-m", "experiments.equilibrate", str(tmp_path), "--in-place"],
                               stdout=subprocess.PIPE, text=True)
    first_line = process.stdout.readline()          # one file done and written
    process.kill()
    process.wait()
    assert first_line.startswith("[1/3]"), first_line
    done = [dataset.load_configuration(p).inherent is not None for p in sorted(tmp_path.glob("*.npz"))]
    assert done[0] and not all(done[1:])             # every file still loads: none half-written
    assert not list(tmp_path.glob(".*tmp"))

    equilibrate_main.main([str(tmp_path), "--in-place"])
    contents = {p.name: p.read_bytes() for p in tmp_path.glob("*.npz")}
    for path in tmp_path.glob("*.npz"):
        config = dataset.load_configuration(path)
        assert config.inherent is not None and config.inherent.dtype == np.float64
    equilibrate_main.main([str(tmp_path), "--in-place"])           # nothing left to do: files untouched
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


def checksums(folder):
    import hashlib
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_predict_never_writes_over_its_inputs_or_its_own_outputs(trained_run, tmp_path, capsys):
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / source.name)
    before = checksums(tmp_path)
    # --out is the folder holding the input: refused before anything is written.
    with pytest.raises(SystemExit, match="would overwrite the input"):
        predict_main.main(["--workdir", str(trained_run), str(tmp_path / "a"), "--out", str(tmp_path / "a")])
    # Two inputs with one name: distinct outputs, each recording its input.
    predict_main.main(["--workdir", str(trained_run), str(tmp_path / "a" / source.name),
                       str(tmp_path / "b" / source.name), "--out", str(tmp_path / "out")])
    for folder in ("a", "b"):
        with np.load(tmp_path / "out" / f"{folder}_{source.name}") as out:
            assert str(out["source"]) == str((tmp_path / folder / source.name).resolve())
    # An existing file that is not a prediction is never replaced.
    (tmp_path / "data").mkdir()
    shutil.copy(source, tmp_path / "data" / source.name)
    with pytest.raises(SystemExit, match="not a prediction file"):
        predict_main.main(["--workdir", str(trained_run), str(tmp_path / "a"), "--out", str(tmp_path / "data")])
    after = checksums(tmp_path)
    assert {p: after[p] for p in before} == before


def test_evaluate_refuses_labels_at_other_times_and_files_without_scored_particles(trained_run, tmp_path):
    from experiments import evaluate as evaluate_main
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]
    config = dataset.load_configuration(source)
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    dataset.write_configuration(shifted / source.name, dataclasses.replace(config, times=config.times * 2))
    with pytest.raises(SystemExit, match="labels are at t = "):
        evaluate_main.main(["--workdir", str(trained_run), "--data", str(shifted)])
    only_b = tmp_path / "only_b"
    only_b.mkdir()
    dataset.write_configuration(only_b / source.name,
                                dataclasses.replace(config, types=np.full_like(config.types, 2)))
    with pytest.raises(SystemExit, match="0 labelled type-A particle"):
        evaluate_main.main(["--workdir", str(trained_run), "--data", str(only_b)])


def test_equilibrate_into_another_folder_leaves_the_inputs_untouched(tmp_path):
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]
    raw = tmp_path / "raw"
    raw.mkdir()
    strip_inherent(source, raw / source.name)
    before = checksums(raw)
    with pytest.raises(SystemExit, match="use --in-place"):
        equilibrate_main.main([str(raw), "--out", str(raw)])
    equilibrate_main.main([str(raw), "--out", str(tmp_path / "done")])
    assert checksums(raw) == before
    assert dataset.load_configuration(tmp_path / "done" / source.name).inherent is not None
    with pytest.raises(SystemExit):       # where the structures go must be said
        equilibrate_main.main([str(raw)])
