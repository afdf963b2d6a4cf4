"""Configurations from LAMMPS dumps and data files, extended XYZ and GSD (eignn_jax.formats):
written from the embedded .npz files by ASE, gsd or by hand, read back to the same
configuration, predicted alike, and refused with the file and the field named."""

import dataclasses
import sys

import ase
import ase.io
import gsd.hoomd
import numpy as np
import pytest

from eignn_jax import dataset, formats
from tests.conftest import DEFAULT_DATA

SOURCES = sorted(DEFAULT_DATA.glob("*.npz"))[:2]     # N1000T0.64_1 and _10: two distinct configurations

# Bounds of the box the dumps are written in: any origin, not only −L/2 or 0 (a reader
# that ignored it would shift every particle by it).
ORIGIN = -1.3

DUMP_COORDINATES = {
    # variant: (columns, coordinates from positions x wrapped into [lo, lo + L), images n)
    "unscaled": ("x y z", lambda x, lo, box, n: x),
    "scaled": ("xs ys zs", lambda x, lo, box, n: (x - lo) / box),
    "unwrapped": ("xu yu zu", lambda x, lo, box, n: x + n * box),
    "scaled_unwrapped": ("xsu ysu zsu", lambda x, lo, box, n: (x - lo) / box + n),
}


@pytest.fixture(scope="module")
def sources():
    return [dataset.load_configuration(path) for path in SOURCES]


def write_dump(path, configs, variant="unscaled", types=None, bounds="pp pp pp", tilt=0.0, box=None):
    """A LAMMPS text dump as LAMMPS writes one (17 significant digits here), rows in a
    random order (the ids say which particle is which), a mass column in the unscaled
    variant (both KA species weigh 1)."""
    rng = np.random.default_rng(0)
    columns, coordinates = DUMP_COORDINATES[variant]
    with open(path, "w") as out:
        for step, config in enumerate(configs):
            n, side = config.n_particles, config.box if box is None else np.asarray(box)
            lo = np.full(3, ORIGIN)
            x = lo + np.mod(config.positions - lo, side)
            values = coordinates(x, lo, side, rng.integers(-2, 3, size=(n, 3)))
            mass = variant == "unscaled"
            table = [np.arange(1, n + 1), config.types if types is None else types, *([np.ones(n)] if mass else []),
                     *values.T]
            out.write(f"ITEM: TIMESTEP\n{1000 * step}\nITEM: NUMBER OF ATOMS\n{n}\n")
            tilted = " xy xz yz" if tilt else ""
            out.write(f"ITEM: BOX BOUNDS{tilted} {bounds}\n")
            for axis in range(3):
                bounds_line = f"{float(lo[axis])!r} {float(lo[axis] + side[axis])!r}"
                out.write(bounds_line + (f" {tilt if axis == 0 else 0.0}\n" if tilt else "\n"))
            out.write(f"ITEM: ATOMS id type {'mass ' if mass else ''}{columns}\n")
            rows = np.column_stack(table)[rng.permutation(n)]
            np.savetxt(out, rows, fmt=["%d", "%d"] + ["%.17g"] * (rows.shape[1] - 2))


def ase_atoms(config):
    """The configuration as ASE Atoms, species by atomic number 1/2 (ASE knows no A/B),
    positions in [0, L)."""
    return ase.Atoms(numbers=config.types, positions=np.mod(config.positions, config.box),
                     cell=np.diag(config.box), pbc=True)


def write_gsd(path, configs, tilt=0.0):
    """A HOOMD trajectory; type names in the order B, A, so that type ids alone would mislead."""
    with gsd.hoomd.open(str(path), "w") as trajectory:
        for step, config in enumerate(configs):
            frame = gsd.hoomd.Frame()
            frame.configuration.step = step
            frame.configuration.box = [*config.box, tilt, 0.0, 0.0]
            frame.particles.N = config.n_particles
            frame.particles.types = ["B", "A"]
            frame.particles.typeid = (config.types == 1).astype(np.uint32)
            frame.particles.position = config.positions.astype(np.float32)
            trajectory.append(frame)


# GSD stores float32: half a unit in the last place of the box side and of |x| < L/2.
FLOAT32 = {"atol": float(np.spacing(np.float32(9.41 / 2))) / 2, "box_rtol": float(np.finfo(np.float32).eps) / 2}


def assert_same_configuration(read, config, atol, box_rtol=1e-15):
    """Same types; box and positions equal to the rounding of the format (``box_rtol``,
    ``atol`` in σ)."""
    np.testing.assert_array_equal(read.types, config.types)
    np.testing.assert_allclose(read.box, config.box, rtol=box_rtol)
    np.testing.assert_allclose(read.positions, config.positions, rtol=0, atol=atol)
    # Wrapped as GlassBench files are.
    assert np.all(read.positions >= -read.box / 2) and np.all(read.positions < read.box / 2)


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("variant", sorted(DUMP_COORDINATES))
def test_lammps_dump_frames_read_back_as_the_npz_configurations(tmp_path, sources, variant):
    path = tmp_path / f"{variant}.lammpstrj"
    write_dump(path, sources, variant)
    frames = formats.read_frames(path)
    assert [frame.index for frame in frames] == [0, 1]
    assert [frame.stem for frame in frames] == [f"{variant}_frame0", f"{variant}_frame1"]
    for frame, config in zip(frames, sources):
        # 17 significant digits: exact but for the round-off of shifting and scaling.
        assert_same_configuration(frame.configuration, config, atol=1e-12)
    assert frames[1].configuration.path == f"{path} (frame 1)"


def test_lammps_data_file_reads_back_as_the_npz_configuration(tmp_path, sources):
    path = tmp_path / "config.data"
    ase.io.write(path, ase_atoms(sources[0]), format="lammps-data", atom_style="atomic", masses=True,
                 specorder=["H", "He"])
    [frame] = formats.read_frames(path)
    assert frame.index is None and frame.stem == "config"
    assert_same_configuration(frame.configuration, sources[0], atol=1e-12)


def test_extended_xyz_frames_read_back_as_the_npz_configurations(tmp_path, sources):
    path = tmp_path / "two.xyz"
    ase.io.write(path, [ase_atoms(config) for config in sources], format="extxyz")
    frames = formats.read_frames(path)
    assert [frame.index for frame in frames] == [0, 1]
    for frame, config in zip(frames, sources):
        # ASE writes positions with 8 decimals: within 5e-9 σ.
        assert_same_configuration(frame.configuration, config, atol=5e-9 + 1e-12)


def test_gsd_frames_read_back_as_the_npz_configurations(tmp_path, sources):
    path = tmp_path / "two.gsd"
    write_gsd(path, sources)
    frames = formats.read_frames(path)
    assert [frame.index for frame in frames] == [0, 1]
    for frame, config in zip(frames, sources):
        assert_same_configuration(frame.configuration, config, **FLOAT32)


def test_npz_files_read_as_load_configuration_reads_them(sources):
    [frame] = formats.read_frames(SOURCES[0])
    assert frame.index is None and frame.stem == SOURCES[0].stem
    expected = dataset.configuration_arrays(sources[0])
    got = dataset.configuration_arrays(frame.configuration)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_our_own_extended_xyz_output_reads_back(tmp_path, sources):
    from eignn_jax import xyz
    path = tmp_path / "predicted.xyz"
    config = sources[0]
    xyz.write_extended_xyz(path, config.types, config.positions, config.box, {"prop_0": np.zeros(1000)})
    [frame] = formats.read_frames(path)
    # Our writer prints 7 significant digits (the box 8): within 5e-7 relative.
    assert_same_configuration(frame.configuration, config, atol=5e-7 * config.box[0] / 2, box_rtol=5e-8)


def test_predictions_written_as_a_lammps_dump_read_back_by_ase(tmp_path, sources):
    config = sources[0]
    values = np.random.default_rng(1).random((2, 1000)).astype(np.float32)
    path = tmp_path / "predicted.dump"
    formats.write_lammps_dump(path, config.types, config.positions, config.box,
                              {"d_prop_0": values[0], "d_prop_1": values[1]})
    atoms = ase.io.read(path, format="lammps-dump-text")
    np.testing.assert_array_equal(atoms.arrays["type"], config.types)
    # 9 significant digits: float32 values come back exactly.
    for k in range(2):
        np.testing.assert_array_equal(atoms.arrays[f"d_prop_{k}"].astype(np.float32), values[k])
    [frame] = formats.read_frames(path)
    assert_same_configuration(frame.configuration, config, atol=5e-9 * config.box[0] / 2)
    with pytest.raises(ValueError, match="whitespace"):
        formats.format_lammps_dump(config.types, config.positions, config.box, {"d prop": values[0]})


# ----------------------------------------------------------------------------- frames and types


def test_frames_pick_and_name_frames_and_refuse_missing_ones(tmp_path, sources):
    path = tmp_path / "three.xyz"
    ase.io.write(path, [ase_atoms(config) for config in (*sources, sources[0])], format="extxyz")
    picked = {text: [frame.index for frame in formats.read_frames(path, frames=formats.parse_frames(text))]
              for text in ("0:10:2", "1", "-1", "2,0", "1:", ":", "-2:", "::-1")}
    assert picked == {"0:10:2": [0, 2], "1": [1], "-1": [2], "2,0": [0, 2], "1:": [1, 2], ":": [0, 1, 2],
                      "-2:": [1, 2], "::-1": [0, 1, 2]}
    [frame] = formats.read_frames(path, frames=[1])
    assert_same_configuration(frame.configuration, sources[1], atol=5e-9 + 1e-12)
    with pytest.raises(dataset.DataError, match=r"three.xyz.*<frames>.*\[5\].*holds 3 frame"):
        formats.read_frames(path, frames=[0, 5])
    with pytest.raises(dataset.DataError, match=r"three.xyz.*\(3:\) pick none; the file holds 3 frame"):
        formats.read_frames(path, frames=slice(3, None))
    # A single-configuration file is frame 0.
    assert len(formats.read_frames(SOURCES[0], frames=[-1])) == 1
    with pytest.raises(dataset.DataError, match=r"\[1\]"):
        formats.read_frames(SOURCES[0], frames=[1])


@pytest.mark.parametrize("text, expected", [
    ("0:10:2", slice(0, 10, 2)), (":", slice(None)), ("-3:", slice(-3, None)), ("4", [4]), ("1, 4,7", [1, 4, 7]),
])
def test_parse_frames(text, expected):
    assert formats.parse_frames(text) == expected


@pytest.mark.parametrize("text", ["", "a", "1:2:3:4", "0:10:0", "1,,2", "1.5"])
def test_parse_frames_refuses_what_is_no_selection(text):
    with pytest.raises(ValueError, match="frames"):
        formats.parse_frames(text)


def test_parse_type_map():
    assert formats.parse_type_map("0:A,1:B") == {"0": 1, "1": 2}
    assert formats.parse_type_map(" Ni:A , P:b") == {"Ni": 1, "P": 2}
    assert formats.parse_type_map("01:A,2:A,3:B") == {"1": 1, "2": 1, "3": 2}
    for bad, message in [("0:A,1", "'1'"), ("0:C", "'0:C'"), (":A", "':A'"), ("1:A,01:B", "twice")]:
        with pytest.raises(ValueError, match=message):
            formats.parse_type_map(bad)


def test_zero_based_types_need_a_type_map_and_unknown_species_are_named(tmp_path, sources):
    path = tmp_path / "zero.dump"
    write_dump(path, sources[:1], types=sources[0].types - 1)
    with pytest.raises(dataset.DataError, match=r"zero.dump \(frame 0\): field 'types': species 0 \(800 "
                                                r"particle\(s\)\) is not in the type map 1:A,2:B,A:A,B:B"):
        formats.read_frames(path)
    [frame] = formats.read_frames(path, type_map=formats.parse_type_map("0:A,1:B"))
    assert_same_configuration(frame.configuration, sources[0], atol=1e-12)
    # Names are looked up before numbers: Ni and P in an XYZ file.
    atoms = ase.Atoms(symbols=np.where(sources[0].types == 1, "Ni", "P"), positions=sources[0].positions,
                      cell=np.diag(sources[0].box), pbc=True)
    ase.io.write(tmp_path / "nip.xyz", atoms, format="extxyz")
    with pytest.raises(dataset.DataError, match=r"species Ni / 28"):
        formats.read_frames(tmp_path / "nip.xyz")
    [frame] = formats.read_frames(tmp_path / "nip.xyz", type_map=formats.parse_type_map("Ni:A,P:B"))
    np.testing.assert_array_equal(frame.configuration.types, sources[0].types)


# ----------------------------------------------------------------------------- refusals


def test_tilted_cells_are_refused(tmp_path, sources):
    write_dump(tmp_path / "tilted.dump", sources[:1], tilt=0.5)
    with pytest.raises(dataset.DataError, match=r"tilted.dump \(frame 0\): field 'box': tilted \(triclinic\)"):
        formats.read_frames(tmp_path / "tilted.dump")
    write_gsd(tmp_path / "tilted.gsd", sources[:1], tilt=0.1)
    with pytest.raises(dataset.DataError, match=r"tilted.gsd \(frame 0\): field 'box': tilted"):
        formats.read_frames(tmp_path / "tilted.gsd")


def test_open_and_non_cubic_boxes_are_refused(tmp_path, sources):
    write_dump(tmp_path / "open.dump", sources[:1], bounds="ff pp pp")
    with pytest.raises(dataset.DataError, match=r"open.dump.*field 'box': not periodic along x"):
        formats.read_frames(tmp_path / "open.dump")
    stretched = sources[0].box * [1.0, 1.0, 1.5]
    write_dump(tmp_path / "long.dump", sources[:1], box=stretched)
    with pytest.raises(dataset.DataError, match=r"long.dump.*field 'box': only cubic boxes"):
        formats.read_frames(tmp_path / "long.dump")


def test_every_format_runs_the_npz_checks(tmp_path, sources):
    config = sources[0]
    positions = np.array(config.positions)
    positions[4] = positions[3] + [0.05, 0.0, 0.0]
    ase.io.write(tmp_path / "overlap.xyz", ase_atoms(dataclasses.replace(config, positions=positions)))
    with pytest.raises(dataset.DataError, match=r"overlap.xyz \(frame 0\): field 'initial_positions': "
                                                r"particles 3 and 4 are 0.05 σ apart"):
        formats.read_frames(tmp_path / "overlap.xyz")


def test_unreadable_and_unknown_files_name_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(dataset.DataError, match=r"notes.txt: field '<file>': unknown extension '.txt'.*--format"):
        formats.read_frames(tmp_path / "notes.txt")
    with pytest.raises(dataset.DataError, match=r"notes.txt: field '<file>': not a readable extxyz file"):
        formats.read_frames(tmp_path / "notes.txt", format="extxyz")
    with pytest.raises(dataset.DataError, match=r"notes.txt: field '<file>': not a readable GSD file"):
        formats.read_frames(tmp_path / "notes.txt", format="gsd")
    with pytest.raises(dataset.DataError, match=r"missing.dump: field '<file>': no such file"):
        formats.read_frames(tmp_path / "missing.dump")
    with pytest.raises(ValueError, match="unknown format 'pdb'"):
        formats.read_frames(tmp_path / "notes.txt", format="pdb")


def test_a_missing_reader_says_what_to_install(tmp_path, sources, monkeypatch):
    write_gsd(tmp_path / "one.gsd", sources[:1])
    monkeypatch.setitem(sys.modules, "gsd.hoomd", None)     # import gsd.hoomd now fails
    with pytest.raises(ImportError, match=r"pip install 'eignn_jax\[io\]'"):
        formats.read_frames(tmp_path / "one.gsd")


def test_folders_expand_to_every_supported_extension(tmp_path):
    for name in ("b_10.gsd", "b_2.dump", "a.xyz", "x.npz", "notes.txt", "meta.json"):
        (tmp_path / name).write_text("")
    names = [p.name for p in dataset.expand_inputs([tmp_path], formats.SUFFIXES)]
    assert names == ["a.xyz", "b_2.dump", "b_10.gsd", "x.npz"]
    assert [p.name for p in dataset.expand_inputs([tmp_path])] == ["x.npz"]


# ----------------------------------------------------------------------------- predictions


@pytest.mark.slow
def test_every_format_predicts_what_the_npz_file_predicts(trained_run, tmp_path, sources, monkeypatch):
    from eignn_jax import equilibrium
    from experiments import predict as predict_main
    config = sources[0]
    # No format but .npz carries an inherent structure, so predict computes one for each
    # input, the .npz reference (written without it) included. The minimiser, though, takes
    # inputs 1e-9 σ apart along other paths to points up to 1e-3 σ apart (each within its
    # max |F| < 1e-4 ε/σ), which moves edges across the cutoff; here every input gets
    # the stored structure instead, so that what differs is what the formats did.
    def stored_structure(read, kind, **_):
        assert kind == "inherent" and read.n_particles == config.n_particles
        return config.inherent, equilibrium.EquilibriumReport(kind, {"method": "stored"}, {}, 0.0)
    monkeypatch.setattr(equilibrium, "compute", stored_structure)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    dataset.write_configuration(inputs / "reference.npz", dataclasses.replace(config, inherent=None))
    for variant in DUMP_COORDINATES:
        write_dump(inputs / f"{variant}.dump", [config], variant)
    ase.io.write(inputs / "config.data", ase_atoms(config), format="lammps-data", atom_style="atomic",
                 specorder=["H", "He"])
    ase.io.write(inputs / "ase.xyz", ase_atoms(config), format="extxyz")
    write_gsd(inputs / "hoomd.gsd", [config])
    out = tmp_path / "out"
    predict_main.main(["--workdir", str(trained_run), str(inputs), "--out", str(out)])

    with np.load(out / "reference.npz") as reference:
        expected = reference["predicted_standardised"]
    # The model computes in float32, whose unit at |x| < L/2 is 4.8e-7 σ: the dumps' and
    # the data file's 17 digits round to the same float32 positions, XYZ's 8 decimals
    # (5e-9 σ) and GSD's float32 (2.4e-7 σ) to within one unit, which moves a
    # standardised prediction by ~1e-6.
    for name in ["config.npz", "ase_frame0.npz", "hoomd_frame0.npz", *(f"{v}_frame0.npz" for v in DUMP_COORDINATES)]:
        with np.load(out / name) as predicted:
            np.testing.assert_allclose(predicted["predicted_standardised"], expected, rtol=0, atol=1e-5,
                                       err_msg=name)
            np.testing.assert_array_equal(predicted["types"], config.types)
    assert sorted(p.name for p in out.glob("*.npz")) == sorted(
        ["reference.npz", "config.npz", "ase_frame0.npz", "hoomd_frame0.npz",
         *(f"{v}_frame0.npz" for v in DUMP_COORDINATES)])


@pytest.mark.slow
def test_predict_frames_of_a_zero_based_trajectory_into_npz_xyz_and_dump(trained_run, tmp_path, sources, capsys):
    from experiments import predict as predict_main
    path = tmp_path / "run.lammpstrj"
    write_dump(path, sources, types=sources[0].types - 1)
    out = tmp_path / "out"
    arguments = ["--workdir", str(trained_run), str(path), "--out", str(out), "--frames", "1", "--dump"]
    with pytest.raises(SystemExit, match=r"run.lammpstrj \(frame 1\): field 'types': species 0"):
        predict_main.main(arguments)
    assert not out.exists() or not any(out.iterdir())
    predict_main.main(arguments + ["--type-map", "0:A,1:B"])
    assert sorted(p.name for p in out.glob("run*")) == ["run_frame1.dump", "run_frame1.npz", "run_frame1.xyz"]
    with np.load(out / "run_frame1.npz") as predicted:
        assert int(predicted["source_frame"]) == 1
        np.testing.assert_allclose(predicted["initial_positions"], sources[1].positions, rtol=0, atol=1e-12)
        propensity = predicted["predicted_propensity"]
    atoms = ase.io.read(out / "run_frame1.dump", format="lammps-dump-text")
    np.testing.assert_array_equal(atoms.arrays["type"], sources[1].types)
    for k in range(len(propensity)):
        # The dump holds the predictions to 9 digits, the npz rounded to float32 (6e-8).
        np.testing.assert_allclose(atoms.arrays[f"d_prop_{k}"], propensity[k], rtol=1e-7)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        predict_main.main(arguments[:-3] + ["--frames", "1:x"])
    assert "argument --frames: frames '1:x': expected an index" in capsys.readouterr().err


@pytest.mark.slow
def test_equilibrate_writes_npz_files_for_frames_of_any_format(tmp_path, sources):
    from experiments import equilibrate as equilibrate_main
    path = tmp_path / "two.gsd"
    write_gsd(path, sources)
    before = path.read_bytes()
    with pytest.raises(SystemExit, match=r"two.gsd: --in-place rewrites .npz files only"):
        equilibrate_main.main([str(path), "--in-place"])
    equilibrate_main.main([str(path), "--frames", "-1", "--out", str(tmp_path / "done")])
    assert path.read_bytes() == before
    assert [p.name for p in (tmp_path / "done").glob("*.npz")] == ["two_frame1.npz"]
    done = dataset.load_configuration(tmp_path / "done" / "two_frame1.npz")
    assert done.inherent is not None
    assert_same_configuration(done, sources[1], **FLOAT32)
