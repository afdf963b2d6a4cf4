"""Physical parameters come from somewhere a user can see, and are plausible."""

import json
import shutil

import pytest

from eignn_jax import equilibrium
from experiments import equilibrate as equilibrate_main
from tests.conftest import DEFAULT_DATA


def test_temperature_says_where_it_came_from_and_refuses_the_implausible(tmp_path):
    named = tmp_path / "N1000T0.64_3.npz"
    assert equilibrium.temperature_of(named) == (0.64, "file name")
    assert equilibrium.temperature_of(named, 0.5) == (0.5, "--temperature")
    (tmp_path / "meta.json").write_text(json.dumps({"T": 0.56}))
    assert equilibrium.temperature_of(named) == (0.56, str(tmp_path / "meta.json"))
    assert equilibrium.temperature_of(tmp_path / "other" / "config.npz") == (None, "nowhere")
    with pytest.raises(ValueError, match=r"temperature 64.0 \(from --temperature\) is outside"):
        equilibrium.temperature_of(named, 64.0)


def test_equilibrate_refuses_an_implausible_cage_temperature_before_sampling(tmp_path, capsys):
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]
    shutil.copy(source, tmp_path / source.name)
    before = (tmp_path / source.name).read_bytes()
    with pytest.raises(SystemExit, match="temperature 640.0 .from --temperature. is outside"):
        equilibrate_main.main([str(tmp_path), "--kind", "cage", "--temperature", "640", "--in-place"])
    assert (tmp_path / source.name).read_bytes() == before


def test_equilibrium_failures_name_the_file_and_field(tmp_path):
    import dataclasses
    import numpy as np
    from eignn_jax import dataset
    config = dataset.load_configuration(sorted(DEFAULT_DATA.glob("*.npz"))[0])
    keep = np.abs(config.positions).max(1) < 1.6       # in a 3.8 σ box: too small for the 2.5 σ range
    small = dataclasses.replace(config, types=config.types[keep], positions=config.positions[keep],
                                inherent=None, box=np.full(3, 3.8), propensity=None, extras={})
    dataset.write_configuration(tmp_path / "small.npz", small)
    with pytest.raises(SystemExit, match=r"small.npz.*initial_positions.*inherent structure failed.*box"):
        equilibrate_main.main([str(tmp_path), "--out", str(tmp_path / "out")])


def _default_configuration():
    from eignn_jax import dataset
    return dataset.load_configuration(sorted(DEFAULT_DATA.glob("*.npz"))[0])


@pytest.mark.parametrize("damage, field, message", [
    ("scaled", "initial_positions", "closer than 0.5 σ"),
    ("close_pair", "initial_positions", "particles 3 and 4 are 0.05 σ apart"),
])
def test_impossible_configurations_are_refused_on_loading(tmp_path, damage, field, message):
    import numpy as np
    from eignn_jax import dataset
    config = _default_configuration()
    positions = np.array(config.positions, np.float64)
    if damage == "scaled":      # [0, 1) coordinates with the box still in σ
        positions = (positions / config.box + 0.5) % 1.0
    else:
        positions[4] = positions[3] + [0.05, 0.0, 0.0]
    path = tmp_path / "bad.npz"
    arrays = {"types": config.types, "initial_positions": positions, "box": config.box}
    np.savez(path, **arrays)
    with pytest.raises(dataset.DataError, match=rf"bad.npz.*{field}.*{message}"):
        dataset.load_configuration(path)


def test_graphs_refuse_foreign_equilibrium_structures_and_name_the_file(tmp_path):
    import dataclasses
    import numpy as np
    from eignn_jax import dataset, graph as graph_lib
    config = _default_configuration()
    shuffled = dataclasses.replace(config, inherent=config.inherent[np.random.default_rng(0).permutation(1000)])
    with pytest.raises(dataset.DataError, match="initial_positions_inherent.*different particle orders"):
        graph_lib.build_graph(shuffled, graph_lib.GraphConfig())
    hot = np.array(config.inherent)
    hot[7] = hot[8] + [0.55, 0, 0]      # allowed by the loader, a pair energy of ~10³ ε
    with pytest.raises(dataset.DataError, match=r"initial_positions_inherent.*energies above 10"):
        graph_lib.build_graph(dataclasses.replace(config, inherent=hot), graph_lib.GraphConfig())
    with pytest.raises(dataset.DataError, match=r"N1000T0.64_1.npz.*box.*2\*cutoff"):
        graph_lib.build_graph(config, graph_lib.GraphConfig(cutoff=5.0))


def test_real_data_passes_every_plausibility_check():
    """The dev set (another pipeline, T = 0.64) and the generated default data load and
    build graphs under every check above."""
    from eignn_jax import dataset, graph as graph_lib
    from experiments.configs.ka_dev import DEV_DATA
    from tests.conftest import DEV_SET_FILE
    dev_set = sorted(DEV_DATA.glob("*.npz")) or [DEV_SET_FILE]   # the whole set where it is at hand
    for path in [*dev_set, *sorted(DEFAULT_DATA.glob("*.npz"))]:
        graph_lib.build_graph(dataset.load_configuration(path), graph_lib.GraphConfig())
