"""The torch-free checkpoint reader reads tensors and refuses everything else, one error each."""

import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from eignn_jax import torch_checkpoint
from eignn_jax.torch_checkpoint import CheckpointFileError

STORAGE = {"0": np.arange(4, dtype=np.float32).tobytes()}


def archive(path, pickled: bytes, storages=STORAGE, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ckpt/data.pkl", pickled)
        for key, data in storages.items():
            z.writestr(zipfile.ZipInfo(f"ckpt/data/{key}"), data, compress_type=compress)
    return path


def tensor_pickle(offset, size, stride, numel=4, modify_storage_type=False) -> bytes:
    """A pickle (protocol 2 opcodes, as torch writes them) of one tensor
    _rebuild_tensor_v2(storage '0' of ``numel`` floats, offset, size, stride)."""
    def integer(x):
        return b"J" + struct.pack("<i", x)
    out = io.BytesIO()
    out.write(b"\x80\x02")
    if modify_storage_type:    # GLOBAL torch.FloatStorage, BUILD {'dtype': 'x'}, POP
        out.write(b"ctorch\nFloatStorage\n}U\x05dtypeU\x01xsb0")
    out.write(b"ctorch._utils\n_rebuild_tensor_v2\n(")
    out.write(b"(U\x07storagectorch\nFloatStorage\nU\x010U\x03cpu" + integer(numel) + b"tQ")
    out.write(integer(offset))
    out.write(b"(" + b"".join(map(integer, size)) + b"t")
    out.write(b"(" + b"".join(map(integer, stride)) + b"t")
    out.write(b"tR.")
    return out.getvalue()


def test_reads_a_strided_tensor(tmp_path):
    tensor = torch_checkpoint.load(archive(tmp_path / "ok.pt", tensor_pickle(1, (2, 1), (2, 1))))
    np.testing.assert_array_equal(tensor, [[1.0], [3.0]])


@pytest.mark.parametrize("offset, size, stride, message", [
    (0, (3,), (-100000,), "stride must be non-negative"),     # would read memory before the data
    (-1, (60,), (1,), "offset must be non-negative"),
    (2, (4,), (1,), "does not fit its storage"),               # past the end of the data
    (0, (10**9,), (0,), "does not fit its storage"),           # a broadcast to exhaust memory
])
def test_tensors_outside_their_storage_are_refused(tmp_path, offset, size, stride, message):
    with pytest.raises(CheckpointFileError, match=f"bad.pt.*{message}"):
        torch_checkpoint.load(archive(tmp_path / "bad.pt", tensor_pickle(offset, size, stride)))


def test_a_file_cannot_change_the_reader_for_later_files(tmp_path):
    with pytest.raises(CheckpointFileError, match="refusing to modify torch.FloatStorage"):
        torch_checkpoint.load(archive(tmp_path / "bad.pt", tensor_pickle(0, (2,), (1,), modify_storage_type=True)))
    assert torch_checkpoint.load(archive(tmp_path / "ok.pt", tensor_pickle(0, (2,), (1,)))).tolist() == [0, 1]


def test_other_objects_and_malformed_archives_are_refused(tmp_path):
    with pytest.raises(CheckpointFileError, match=r"evil.pt.*posix.system|evil.pt.*os.system"):
        torch_checkpoint.load(archive(tmp_path / "evil.pt", pickle.dumps({"net": os.system})))
    with pytest.raises(CheckpointFileError, match="is not 4 stored float32 elements"):
        torch_checkpoint.load(archive(tmp_path / "zipped.pt", tensor_pickle(0, (2,), (1,)),
                                      compress=zipfile.ZIP_DEFLATED))
    with pytest.raises(CheckpointFileError, match="missing.pt: no such file"):
        torch_checkpoint.load(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointFileError, match="text.pt: not a PyTorch zip"):
        torch_checkpoint.load(tmp_path / "text.pt")
    with pytest.raises(CheckpointFileError, match="no state dict of numeric tensors"):
        torch_checkpoint.load_state_dict(archive(tmp_path / "words.pt", pickle.dumps({"net": {"w": "x"}})))
