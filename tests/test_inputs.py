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
        equilibrate_main.main([str(tmp_path), "--kind", "cage", "--temperature", "640"])
    assert (tmp_path / source.name).read_bytes() == before


def test_equilibrium_failures_name_the_file_and_field(tmp_path):
    import dataclasses
    import numpy as np
    from eignn_jax import dataset
    config = dataset.load_configuration(sorted(DEFAULT_DATA.glob("*.npz"))[0])
    keep = np.abs(config.positions).max(1) < 1.9       # a 3.8 σ cube: too small for the 2.5 σ range
    small = dataclasses.replace(config, types=config.types[keep], positions=config.positions[keep],
                                inherent=None, box=np.full(3, 3.8), propensity=None, extras={})
    dataset.write_configuration(tmp_path / "small.npz", small)
    with pytest.raises(SystemExit, match=r"small.npz.*initial_positions.*inherent structure failed.*box"):
        equilibrate_main.main([str(tmp_path)])
