"""`open_dataset(DIR)` on a folder that `data convert --out DIR` wrote, and the multi_sprites OOD splits."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch
from tfrecord_writer import example, make_scene, write_tfrecord

from scenedecomp.data import DatasetError, open_dataset
from scenedecomp.data.cache import cache_key
from scenedecomp.data.deepmind import convert as conv
from scenedecomp.data.synthetic.sprites import generate_multi_sprites


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


def _digest(arrays):
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def test_existing_multi_sprites_splits_are_bit_identical():
    """Digests taken before the OOD splits existed: adding them changed no existing output or cache name."""
    assert _digest(generate_multi_sprites(num_images=1100, image_size=16, split="train")) == \
        "028063a75e170096db071ef5dcefa1a2c5e1dbb4fa93ba6d916d55280aad24b8"
    assert _digest(generate_multi_sprites(num_images=1100, image_size=16, split="test")) == \
        "4e59cedfefb3057164a8cef7f56bc7cfd2007b883f6f9b7b03b07655b434a7ac"
    options = {"image_size": 32, "num_images": 1000, "seed": 0, "min_objects": 1, "max_objects": 4}
    assert cache_key("multi_sprites", "test", 1, options) == \
        "multi_sprites_test_v1_image_size32_max_objects4_min_objects1_num_images1000_seed0_287f468a9f9b"


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def _open(split, cache, **kw):
    return open_dataset("multi_sprites", split=split, image_size=24, num_images=200, cache_dir=cache, **kw)


def test_ood_more_objects(cache):
    ds = _open("ood_more_objects", cache)
    count = (ds.arrays["factors.shape"] > 0).sum(1)
    assert set(count.tolist()) == {5, 6} and ds.max_objects == 6 and ds[0]["factors"]["x"].shape == (6,)
    assert ds.arrays["num_objects"].mean() > 4  # nearly all of them visible
    three = _open("ood_more_objects", cache, min_objects=0, max_objects=3)  # relative to the training range
    assert set((three.arrays["factors.shape"] > 0).sum(1).tolist()) == {4, 5}


def test_ood_identical_color(cache):
    ds = _open("ood_identical_color", cache)
    color, present = ds.arrays["factors.color"], ds.arrays["factors.shape"] > 0
    first = color[:, :1]
    assert np.all((color == first).all(-1) | ~present)
    bg = ds.arrays["background_color"]
    assert np.linalg.norm(first[:, 0] - bg, axis=-1).min() >= 0.25
    test = _open("test", cache)
    assert not np.all((test.arrays["factors.color"] == test.arrays["factors.color"][:, :1]).all(-1)
                      | ~(test.arrays["factors.shape"] > 0))


@pytest.mark.parametrize("split, low, high", [("ood_large_objects", 1.1, 1.5), ("ood_small_objects", 0.3, 0.45)])
def test_ood_scales(cache, split, low, high):
    ds = _open(split, cache)
    scale = ds.arrays["factors.scale"][ds.arrays["factors.shape"] > 0]
    assert scale.min() >= low - 1e-6 and scale.max() <= high + 1e-6 and len(np.unique(scale)) > 2
    area = (ds.arrays["mask"] > 0).mean()
    assert (area > (_open("test", cache).arrays["mask"] > 0).mean()) == (split == "ood_large_objects")


def test_unknown_split_lists_the_ood_splits(cache):
    with pytest.raises(DatasetError, match="ood_more_objects"):
        _open("ood_nothing", cache)
    with pytest.raises(DatasetError, match="unknown split"):
        open_dataset("shapes", split="ood_more_objects")
