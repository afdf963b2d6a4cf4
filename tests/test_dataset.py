"""Tests for eignn_jax.dataset: reading, validating, writing and listing configurations."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from eignn_jax import dataset
from eignn_jax.physics.kob_andersen import DENSITY
from eignn_jax.dataset import (
    GLASSBENCH_TIMES,
    Configuration,
    DataError,
    glassbench_split,
    list_configurations,
    load_configuration,
    split_paths,
    write_configuration,
)

# A real dev-set file made by another pipeline, and a file of our own embedded default data.
from tests.conftest import DEFAULT_DATA, DEV_SET_FILE  # noqa: E402

_DEV_FILE = DEV_SET_FILE
_OWN_FILE = DEFAULT_DATA / "N1000T0.64_1.npz"


def _lattice_positions(n_side: int, box_side: float, seed: int, jitter: float = 0.2) -> np.ndarray:
    """[n_side**3, 3] float64 jittered simple-cubic positions wrapped to [-L/2, L/2), σ.

    The jitter is well below half the lattice spacing, so no two particles can overlap.
    """
    rng = np.random.default_rng(seed)
    spacing = box_side / n_side
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    pos = (grid + 0.5) * spacing + rng.uniform(-jitter, jitter, grid.shape) * spacing
    return np.mod(pos + box_side / 2, box_side) - box_side / 2


def _raw_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _assert_same_arrays(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key]), key


# ----------------------------------------------------------------------------
# Real dev data
# ----------------------------------------------------------------------------


def test_reads_dev_file():
    config = load_configuration(_DEV_FILE, require=("md_prop", "initial_positions_inherent"))
    assert config.path == str(_DEV_FILE)
    assert config.n_particles == 1000
    assert config.box.dtype == np.float64 and config.box.shape == (3,)
    np.testing.assert_allclose(config.box, 9.41036, rtol=1e-6)
    assert int(config.is_type_a.sum()) == 800
    assert config.positions.shape == (1000, 3)
    assert config.propensity.shape == (8, 1000)
    np.testing.assert_allclose(config.times, [0.13, 0.4, 1.3, 4.0, 8.0, 13.0, 25.0, 40.0], rtol=1e-6)
    assert config.box_stored and config.times_stored
    assert set(config.extras) == {"md_disp"}
    assert config.extras["md_disp"].shape == (8, 1000, 3)
    assert config.equilibrium("inherent") is config.inherent
    assert config.cage is None


@pytest.mark.parametrize("path", [_DEV_FILE, _OWN_FILE], ids=["dev_set", "default_data"])
def test_real_file_round_trip(path, tmp_path):
    out = tmp_path / path.name
    write_configuration(out, load_configuration(path))
    _assert_same_arrays(_raw_npz(path), _raw_npz(out))
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


# ----------------------------------------------------------------------------
# Synthetic GlassBench-like file (no box, no times)
# ----------------------------------------------------------------------------


def _glassbench_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    n = 4096
    side = (n / DENSITY) ** (1 / 3)
    rng = np.random.default_rng(seed)
    types = np.where(rng.permutation(n) < int(0.8 * n), 1, 2).astype(np.int64)
    positions = _lattice_positions(16, side, seed).astype(np.float32)
    return {
        "types": types,
        "initial_positions": positions,
        "initial_positions_inherent": _lattice_positions(16, side, seed + 1).astype(np.float32),
        "initial_positions_cage": _lattice_positions(16, side, seed + 2),  # float64 on purpose
        "md_prop": rng.uniform(0.0, 2.0, (10, n)).astype(np.float32),
        "bb_prop": rng.uniform(0.0, 1.0, (n, 10)),
        "BOTAN": rng.normal(size=(3, n)).astype(np.float16),
    }


def test_glassbench_like_file(tmp_path):
    arrays = _glassbench_arrays()
    src = tmp_path / "N4096T0.44_1.npz"
    np.savez(src, **arrays)

    config = load_configuration(src)
    np.testing.assert_allclose(config.box, (4096 / 1.2) ** (1 / 3))
    np.testing.assert_allclose(config.box, 15.0566, atol=1e-4)
    assert not config.box_stored and not config.times_stored
    assert tuple(config.times) == GLASSBENCH_TIMES
    assert set(config.extras) == {"bb_prop", "BOTAN"}
    assert config.equilibrium("cage") is config.cage
    assert config.types.dtype == np.int64 and config.cage.dtype == np.float64

    out = tmp_path / "copy" / src.name
    out.parent.mkdir()
    write_configuration(out, config)
    rewritten = _raw_npz(out)
    assert "box" not in rewritten and "times" not in rewritten
    _assert_same_arrays(arrays, rewritten)

    again = load_configuration(out)
    for name in ("types", "positions", "box", "inherent", "cage", "propensity", "times"):
        original, reread = getattr(config, name), getattr(again, name)
        assert original.dtype == reread.dtype and np.array_equal(original, reread), name
    assert set(again.extras) == set(config.extras)


def test_positions_in_zero_to_l_convention_accepted(tmp_path):
    arrays = _glassbench_arrays()
    side = (4096 / DENSITY) ** (1 / 3)
    arrays["initial_positions"] = np.mod(arrays["initial_positions"], np.float32(side))
    path = tmp_path / "N4096T0.44_1.npz"
    np.savez(path, **arrays)
    assert load_configuration(path).positions.min() >= 0


def test_write_refuses_box_it_could_not_recover(tmp_path):
    config = Configuration(
        path="",
        types=np.ones(8, dtype=np.int32),
        positions=_lattice_positions(2, 5.0, 0),
        box=np.full(3, 5.0),
        box_stored=False,
    )
    with pytest.raises(DataError, match="box"):
        write_configuration(tmp_path / "x_1.npz", config)
    write_configuration(tmp_path / "x_1.npz", Configuration(**{**vars(config), "box_stored": True}))
    np.testing.assert_array_equal(load_configuration(tmp_path / "x_1.npz").box, 5.0)


# ----------------------------------------------------------------------------
# Malformed files
# ----------------------------------------------------------------------------

_SMALL_N = 64
_SMALL_BOX = 5.0


def _small_arrays() -> dict[str, np.ndarray]:
    """A valid small configuration with every key our own data sets use."""
    rng = np.random.default_rng(1)
    n = _SMALL_N
    return {
        "types": np.where(np.arange(n) < 51, 1, 2).astype(np.int32),
        "initial_positions": _lattice_positions(4, _SMALL_BOX, 1).astype(np.float32),
        "initial_positions_inherent": _lattice_positions(4, _SMALL_BOX, 2).astype(np.float32),
        "md_prop": rng.uniform(0, 1, (8, n)).astype(np.float32),
        "md_disp": rng.normal(size=(8, n, 3)).astype(np.float32),
        "times": np.array([0.13, 0.4, 1.3, 4, 8, 13, 25, 40], dtype=np.float32),
        "box": np.full(3, _SMALL_BOX, dtype=np.float32),
    }


def _edit(arrays, key, value):
    arrays = dict(arrays)
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    return arrays


def _set_row(key, row, value):
    def change(arrays):
        array = arrays[key].copy()
        array[row] = value
        return _edit(arrays, key, array)

    return change


def _periodic_pair(arrays):
    # Particle 5 just inside -L/2, particle 17 just inside +L/2: 5e-4 σ apart through the boundary.
    pos = arrays["initial_positions"].copy()
    pos[5] = [-_SMALL_BOX / 2 + 2e-4, 0.1, 0.1]
    pos[17] = [_SMALL_BOX / 2 - 3e-4, 0.1, 0.1]
    return _edit(arrays, "initial_positions", pos)


def _shifted_copy(arrays):
    # Particle 17 is particle 5 moved by one full box: a different image of the same point.
    pos = arrays["initial_positions"].copy()
    pos[5, 0] = -1.0
    pos[17] = pos[5] + [_SMALL_BOX, 0, 0]
    return _edit(arrays, "initial_positions", pos)


_MALFORMED = {
    # name: (edit of the valid arrays, field that must be reported, extra text expected)
    "missing types": (lambda a: _edit(a, "types", None), "types", "missing"),
    "missing positions": (lambda a: _edit(a, "initial_positions", None), "initial_positions", "missing"),
    "positions wrong N": (
        lambda a: _edit(a, "initial_positions", a["initial_positions"][:-1]),
        "initial_positions",
        "shape",
    ),
    "2-D system": (
        lambda a: _edit(a, "initial_positions", a["initial_positions"][:, :2]),
        "initial_positions",
        "3-D",
    ),
    "int positions": (
        lambda a: _edit(a, "initial_positions", a["initial_positions"].astype(np.int64)),
        "initial_positions",
        "floating",
    ),
    "NaN position": (_set_row("initial_positions", 3, np.nan), "initial_positions", "non-finite"),
    "unknown type 3": (_set_row("types", 9, 3), "types", "unknown particle type 3"),
    "float types": (
        lambda a: _edit(a, "types", a["types"].astype(np.float64)),
        "types",
        "integer",
    ),
    "no particles": (
        lambda a: {"types": np.zeros(0, np.int32), "initial_positions": np.zeros((0, 3), np.float32)},
        "types",
        "at least one",
    ),
    "far outside box": (
        _set_row("initial_positions", 4, [0.0, 1.01 * _SMALL_BOX, 0.0]),
        "initial_positions",
        "box",
    ),
    "duplicate particle": (
        lambda a: _set_row("initial_positions", 17, a["initial_positions"][5])(a),
        "initial_positions",
        "5 and 17",
    ),
    "duplicate across boundary": (_periodic_pair, "initial_positions", "5 and 17"),
    "duplicate one box apart": (_shifted_copy, "initial_positions", "5 and 17"),
    "inherent wrong shape": (
        lambda a: _edit(a, "initial_positions_inherent", a["initial_positions_inherent"].T.copy()),
        "initial_positions_inherent",
        "shape",
    ),
    "inherent duplicate": (
        lambda a: _set_row("initial_positions_inherent", 17, a["initial_positions_inherent"][5])(a),
        "initial_positions_inherent",
        "5 and 17",
    ),
    "md_prop NaN": (_set_row("md_prop", 2, np.nan), "md_prop", "non-finite"),
    "md_prop negative": (_set_row("md_prop", 2, -0.5), "md_prop", "non-negative"),
    "md_prop wrong N": (lambda a: _edit(a, "md_prop", a["md_prop"][:, :-1]), "md_prop", "shape"),
    "md_disp NaN": (_set_row("md_disp", 1, np.inf), "md_disp", "non-finite"),
    "md_disp wrong T": (lambda a: _edit(a, "md_disp", a["md_disp"][:-1]), "md_disp", "T = 7"),
    "md_disp wrong shape": (lambda a: _edit(a, "md_disp", a["md_disp"][..., :2]), "md_disp", "shape"),
    "times not increasing": (_set_row("times", 4, 1.0), "times", "increasing"),
    "times wrong length": (lambda a: _edit(a, "times", a["times"][:-1]), "times", "T = 8"),
    "missing times with T=8": (lambda a: _edit(a, "times", None), "times", "times are needed"),
    "non-cubic box": (
        lambda a: _edit(a, "box", np.array([5.0, 5.0, 5.1], np.float32)),
        "box",
        "cubic",
    ),
    "negative box": (lambda a: _edit(a, "box", np.float64(-5.0)), "box", "positive"),
}


@pytest.mark.parametrize("case", sorted(_MALFORMED))
def test_malformed_file_raises(tmp_path, case):
    change, field, text = _MALFORMED[case]
    path = tmp_path / "bad_config_1.npz"
    np.savez(path, **change(_small_arrays()))
    with pytest.raises(DataError) as info:
        load_configuration(path)
    message = str(info.value)
    assert info.value.field == field
    assert path.name in message and f"'{field}'" in message
    assert text in message


def test_valid_small_file_loads(tmp_path):
    # Guards the malformed cases: each of them differs from this file by one edit only.
    path = tmp_path / "good_1.npz"
    np.savez(path, **_small_arrays())
    config = load_configuration(path)
    assert config.n_particles == _SMALL_N and config.box_dtype == np.float32


def _write_text(path):
    path.write_text("types,x,y,z\n1,0,0,0\n")


def _write_truncated(path):
    np.savez(path, **_small_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_npy(path):
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((4, 3)))


def _write_object_array(path):
    np.savez(path, **_small_arrays(), notes=np.array([{"a": 1}], dtype=object))


@pytest.mark.parametrize(
    "writer, field, text",
    [
        (_write_text, "<file>", "not an .npz"),
        (_write_npy, "<file>", ".npy"),
        (_write_truncated, "<file>", "not a readable .npz"),
        (_write_object_array, "notes", "object"),
    ],
    ids=["text file", "npy file", "truncated", "object array"],
)
def test_unreadable_file_raises(tmp_path, writer, field, text):
    path = tmp_path / "broken_1.npz"
    writer(path)
    with pytest.raises(DataError) as info:
        load_configuration(path)
    message = str(info.value)
    assert info.value.field == field
    assert path.name in message and field in message and text in message


def test_missing_file_raises(tmp_path):
    with pytest.raises(DataError, match="nowhere_1.npz"):
        load_configuration(tmp_path / "nowhere_1.npz")


def test_require_missing_key(tmp_path):
    path = tmp_path / "plain_1.npz"
    np.savez(path, **_small_arrays())
    with pytest.raises(DataError) as info:
        load_configuration(path, require=("md_prop", "initial_positions_cage"))
    assert info.value.field == "initial_positions_cage"
    assert path.name in str(info.value) and "initial_positions_cage" in str(info.value)


def test_equilibrium_kinds(tmp_path):
    path = tmp_path / "plain_1.npz"
    np.savez(path, **_small_arrays())
    config = load_configuration(path)
    with pytest.raises(DataError) as info:
        config.equilibrium("cage")
    assert path.name in str(info.value) and "initial_positions_cage" in str(info.value)
    with pytest.raises(ValueError, match="unknown"):
        config.equilibrium("thermal")
    assert config.equilibrium("inherent").shape == (_SMALL_N, 3)


def test_data_error_pickles():
    import pickle

    error = pickle.loads(pickle.dumps(DataError("/a/b_1.npz", "types", "bad")))
    assert (error.path, error.field, str(error)) == ("/a/b_1.npz", "types", "/a/b_1.npz: field 'types': bad")


# ----------------------------------------------------------------------------
# Folders and splits
# ----------------------------------------------------------------------------


def _touch_npz(folder: pathlib.Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_list_configurations_natural_order(tmp_path):
    _touch_npz(tmp_path, ["N1000T0.64_10.npz", "N1000T0.64_2.npz", "N1000T0.64_1.npz", "notes.txt"])
    names = [p.name for p in list_configurations(tmp_path)]
    assert names == ["N1000T0.64_1.npz", "N1000T0.64_2.npz", "N1000T0.64_10.npz"]


def test_list_configurations_errors(tmp_path):
    with pytest.raises(DataError, match="empty_dir"):
        (tmp_path / "empty_dir").mkdir()
        list_configurations(tmp_path / "empty_dir")
    with pytest.raises(DataError, match="no_such_dir"):
        list_configurations(tmp_path / "no_such_dir")


def test_split_paths():
    paths = [f"c_{i}.npz" for i in range(1, 21)]
    train, test = split_paths(paths, 12, 5, seed=3)
    assert len(train) == 12 and len(test) == 5
    assert not set(train) & set(test)
    assert set(train) | set(test) <= set(paths)
    assert (train, test) == split_paths(paths, 12, 5, seed=3)
    assert (train, test) != split_paths(paths, 12, 5, seed=4)
    with pytest.raises(ValueError):
        split_paths(paths, 16, 5, seed=0)


def test_glassbench_split(tmp_path):
    root = tmp_path / "KA_models" / "T0.44"
    _touch_npz(root / "train", [f"N4096T0.44_{i}.npz" for i in (1, 2, 10)])
    assert glassbench_split(root) is None  # no test/ folder yet
    _touch_npz(root / "test", ["N4096T0.44_3.npz"])
    train, test = glassbench_split(root)
    assert [p.name for p in train] == ["N4096T0.44_1.npz", "N4096T0.44_2.npz", "N4096T0.44_10.npz"]
    assert [p.name for p in test] == ["N4096T0.44_3.npz"]
    assert glassbench_split(tmp_path) is None


def test_find_overlap_is_periodic():
    box = np.full(3, 10.0)
    positions = np.array([[0.0, 0.0, 0.0], [9.9995, 0.0, 0.0], [5.0, 5.0, 5.0]])
    i, j, d = dataset.find_overlap(positions, box)
    assert (i, j) == (0, 1) and d == pytest.approx(5e-4)
    assert dataset.find_overlap(positions[[0, 2]], box) is None


@pytest.mark.parametrize("location, expected", [
    ("N4096T0.64_3.npz", 0.64), ("KA_models/T0.50/train/N4096T0.50_3.npz", 0.50),
    ("KA_models/T0.56/test/config_3.npz", 0.56), ("elsewhere/config_3.npz", None),
])
def test_glassbench_files_without_times_get_their_temperatures_grid(tmp_path, location, expected):
    """GlassBench's time grid differs per temperature; a file that does not say which
    temperature it is from must carry its times."""
    from eignn_jax.dataset import GLASSBENCH_TIME_GRIDS
    path = tmp_path / location
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **_glassbench_arrays())
    if expected is None:
        with pytest.raises(DataError, match="config_3.npz.*'times'.*times are needed"):
            load_configuration(path)
    else:
        assert tuple(load_configuration(path).times) == GLASSBENCH_TIME_GRIDS[expected]


def test_a_box_in_other_units_is_named(tmp_path):
    """Fractional coordinates with a unit box: the error names the box, not a neighbour search."""
    rng = np.random.default_rng(0)
    path = tmp_path / "fractional.npz"
    np.savez(path, types=np.ones(50, np.int32), initial_positions=rng.random((50, 3)), box=np.ones(3))
    with pytest.raises(dataset.DataError, match=r"box.*other units than σ"):
        dataset.load_configuration(path)
