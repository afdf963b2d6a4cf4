"""Operating-system failures end in one line naming the path and the reason, before the
expensive work where they can be foreseen, and never leave half an output set behind."""

import errno
import os
import shutil

import numpy as np
import pytest

from eignn_jax import files
from experiments import predict as predict_main, train as train_main
from tests.conftest import DEFAULT_DATA, TINY_TRAINING

# Minutes on 2 cores: the full suite only (pytest -m "not slow" leaves them out).
pytestmark = pytest.mark.slow

def test_paths_that_are_files_are_refused_with_one_line(trained_run, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match=f"{blocker} exists and is not a directory") as info:
        train_main.main(["--config", "default", "--workdir", str(blocker), "--no-eval"] + TINY_TRAINING)
    assert "\n" not in str(info.value)
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]
    with pytest.raises(SystemExit, match=f"{blocker} exists and is not a directory"):
        predict_main.main(["--workdir", str(trained_run), str(source), "--out", str(blocker)])


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch, failure):
    target = tmp_path / "result.npz"

    def failing_replace(src, dst):
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match=f"cannot write {target}: {os.strerror(failure)}"):
        files.atomic_savez(target, {"x": np.arange(3)})
    assert list(tmp_path.iterdir()) == []


def test_long_file_names_and_orphaned_temporaries(tmp_path):
    long_name = tmp_path / ("c" * 250 + ".npz")      # a temporary named after it would not fit
    files.atomic_savez(long_name, {"x": np.arange(3)})
    assert np.load(long_name)["x"].tolist() == [0, 1, 2]
    target = tmp_path / "out.npz"
    dead_pid = 2**22 + 12345                          # above Linux's pid_max: never a live process
    orphan = tmp_path / os.path.basename(files._temporary_name(str(target))).replace(
        f".{os.getpid()}.", f".{dead_pid}.")
    orphan.write_bytes(b"half a file")
    files.atomic_savez(target, {"x": np.arange(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([long_name.name, "out.npz"])


def test_prediction_outputs_are_written_as_a_set(trained_run, tmp_path, monkeypatch):
    """If the .xyz cannot be written, the .npz written just before is removed too."""
    from eignn_jax import xyz
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, f"cannot write {tmp_path}/x.xyz: No space left on device")

    monkeypatch.setattr(xyz, "write_extended_xyz", full_disk)
    with pytest.raises(SystemExit, match="No space left on device"):
        predict_main.main(["--workdir", str(trained_run), str(source), "--out", str(tmp_path / "out")])
    assert list((tmp_path / "out").iterdir()) == []


def test_equilibrate_checks_its_folders_before_minimising(tmp_path, monkeypatch):
    from experiments import equilibrate as equilibrate_main
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]
    shutil.copy(source, tmp_path / source.name)

    def unwritable(path):
        raise OSError(errno.EROFS, f"cannot write into {path}: Read-only file system")

    monkeypatch.setattr(files, "writable_directory", unwritable)
    with pytest.raises(SystemExit, match="Read-only file system"):
        equilibrate_main.main([str(tmp_path), "--kind", "inherent", "--force", "--in-place"])


def test_a_mistyped_workdir_is_an_error_and_creates_nothing(tmp_path):
    from experiments import evaluate as evaluate_main
    missing = tmp_path / "no_such_run"
    with pytest.raises(SystemExit, match=f"no checkpoint directory {missing}"):
        evaluate_main.main(["--workdir", str(missing)])
    source = sorted(DEFAULT_DATA.glob("*.npz"))[0]
    with pytest.raises(SystemExit, match="no checkpoint directory"):
        predict_main.main(["--workdir", str(missing), str(source), "--out", str(tmp_path / "out")])
    assert list(tmp_path.iterdir()) == []
