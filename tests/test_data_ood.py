"""`open_dataset(DIR)` on a folder that `data convert --out DIR` wrote, and the multi_sprites OOD splits."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from tfrecord_writer import example, make_scene, write_tfrecord

from scenedecomp.data import DatasetError, open_dataset
from scenedecomp.data import convert as conv


def test_directory_with_one_converted_file_opens_it(tmp_path):
    rng = np.random.default_rng(0)
    src = write_tfrecord(tmp_path / "or.tfrecords", [example(make_scene("objects_room", rng)["features"])
                                                     for _ in range(4)], "gzip")
    out = conv.convert("objects_room", src, tmp_path / "out", splits=(1, 0, 0), progress=False)
    by_dir, by_file = open_dataset(tmp_path / "out"), open_dataset(out)
    assert type(by_dir).__name__ == "HDF5Dataset" and len(by_dir) == len(by_file) == 4
    assert torch.equal(by_dir[3]["image"], by_file[3]["image"]) and torch.equal(by_dir[3]["mask"], by_file[3]["mask"])
    # two converted files: refused in one line naming both, not opened as an (empty) image folder
    shutil.copy(out, tmp_path / "out" / "copy.h5")
    with pytest.raises(DatasetError, match=r"holds 2 converted files \(copy.h5, objects_room.h5\)"):
        open_dataset(tmp_path / "out")
