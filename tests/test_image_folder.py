"""The ``image_folder`` dataset: listing, cropping/resizing, splits and unreadable files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from contract import check_item
from PIL import Image
from torch.utils.data import DataLoader

from scenedecomp.data import DatasetError, open_dataset
from scenedecomp.data.image_folder import ImageFolderDataset


def _save(path, arr, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for i in range(6):
        _save(root / f"a{i}.png", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    _save(root / "sub" / "b.JPG", rng.integers(0, 256, (30, 30, 3), dtype=np.uint8), "JPEG")
    _save(root / "gray.png", rng.integers(0, 256, (20, 20), dtype=np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root


def test_lists_crops_and_resizes(folder):
    ds = open_dataset(folder, split="train", image_size=16, split_mode="all")
    assert len(ds) == 8  # 6 PNG + nested JPG (any case) + grayscale PNG; .txt ignored
    item = ds[0]
    check_item(item)
    assert set(item) == {"image"} and item["image"].shape == (3, 16, 16)
    # centre square crop then bilinear resize, as computed directly with Pillow
    src = Image.open(folder / "a0.png").convert("RGB")
    expected = np.asarray(src.crop((10, 0, 50, 40)).resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal((item["image"] * 255).round().byte().permute(1, 2, 0).numpy(), expected)
    with pytest.warns(UserWarning, match=r"skipped 1 .*: gray\.png"):  # 20x20: too small for the box
        box = ImageFolderDataset(folder, image_size=8, crop=[5, 7, 16, 16], split_mode="all")
    expected = np.asarray(src.crop((7, 5, 23, 21)).resize((8, 8), Image.Resampling.BILINEAR))
    assert np.array_equal((box[0]["image"] * 255).round().byte().permute(1, 2, 0).numpy(), expected)
    gray = ImageFolderDataset(folder, image_size=12, channels=1, crop=None, split_mode="all")
    assert gray[0]["image"].shape == (1, 12, 12)
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 3, 16, 16)


def test_hash_splits_are_disjoint_and_stable(tmp_path):
    root = tmp_path / "many"
    for i in range(60):
        _save(root / f"{i:03d}.png", np.full((8, 8, 3), i, dtype=np.uint8))
    splits = {s: ImageFolderDataset(root, split=s, image_size=8) for s in ("train", "val", "test")}
    names = {s: {p.name for p in d.files} for s, d in splits.items()}
    assert sum(len(v) for v in names.values()) == 60
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    assert len(names["train"]) > 40
    # adding files does not move existing ones between splits
    _save(root / "new.png", np.zeros((8, 8, 3), dtype=np.uint8))
    again = {p.name for p in ImageFolderDataset(root, split="train", image_size=8).files}
    assert names["train"] <= again
    assert len(ImageFolderDataset(root, split="test", image_size=8, split_mode="all")) == 61


def test_subdirs_include_and_num_images(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            _save(tmp_path / "c" / split / f"{i}.png", np.zeros((10, 10, 3), dtype=np.uint8))
    assert len(ImageFolderDataset(tmp_path / "c", split="val", image_size=8, split_mode="subdirs")) == 2
    with pytest.raises(DatasetError, match="needs a test/ subfolder"):
        ImageFolderDataset(tmp_path / "c", split="test", image_size=8, split_mode="subdirs")
    scene = tmp_path / "scenenet" / "0" / "1"
    _save(scene / "photo" / "0.jpg", np.zeros((24, 32, 3), dtype=np.uint8), "JPEG")
    _save(scene / "photo" / "25.jpg", np.zeros((24, 32, 3), dtype=np.uint8), "JPEG")
    _save(scene / "depth" / "0.png", np.zeros((24, 32), dtype=np.uint16))
    ds = open_dataset(tmp_path / "scenenet", image_size=8, include="**/photo/*.jpg", split_mode="all")
    assert [p.name for p in ds.files] == ["0.jpg", "25.jpg"]
    assert len(open_dataset(tmp_path / "scenenet", image_size=8, include="**/photo/*.jpg", split_mode="all",
                            num_images=1)) == 1


def test_unreadable_files_skip_and_raise(folder):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (folder / "empty.jpg").write_bytes(b"")
    expected = r"skipped 2 unreadable image\(s\): broken\.png \(.+\), empty\.jpg \(.+\)$"
    with pytest.warns(UserWarning, match=expected) as rec:
        ds = open_dataset(folder, image_size=8, split_mode="all")
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    assert len(ds) == 8 and ds.skipped == ["broken.png", "empty.jpg"]
    with pytest.raises(DatasetError, match=r"broken\.png: unreadable image"):
        open_dataset(folder, image_size=8, split_mode="all", on_error="raise")


def test_decode_failure_midway(tmp_path):
    root = tmp_path / "t"
    good = _save(root / "a.png", np.full((16, 16, 3), 200, dtype=np.uint8))
    bad = _save(root / "b.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    _save(root / "c.png", np.full((16, 16, 3), 50, dtype=np.uint8))
    bad.write_bytes(bad.read_bytes()[:200])  # valid header, truncated pixel data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = ImageFolderDataset(root, image_size=4, split_mode="all")  # the header check passes
    assert len(ds) == 3
    with pytest.warns(UserWarning, match=r"b\.png: cannot decode image .* using the next image"):
        item = ds[1]
    assert torch.allclose(item["image"], torch.full((3, 4, 4), 50 / 255))
    strict = ImageFolderDataset(root, image_size=4, split_mode="all", on_error="raise")
    with pytest.raises(DatasetError, match=r"b\.png: cannot decode image"):
        strict[1]
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\): b\.png \("):
        full = ImageFolderDataset(root, image_size=4, split_mode="all", verify="full")
    assert [p.name for p in full.files] == ["a.png", "c.png"]
    assert good.exists()


def test_bad_options(folder, tmp_path):
    with pytest.raises(DatasetError, match="unknown image_folder option"):
        open_dataset(folder, image_size=8, colour="red")
    with pytest.raises(DatasetError, match="crop must be"):
        ImageFolderDataset(folder, crop="middle")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no readable images"):
        ImageFolderDataset(tmp_path / "empty", image_size=8)
    with pytest.raises(DatasetError, match="on_error"):
        ImageFolderDataset(folder, on_error="ignore")
    with pytest.warns(UserWarning, match="too small for the crop box"):
        ds = ImageFolderDataset(folder, image_size=8, crop=[0, 0, 35, 35], split_mode="all")
    assert {p.name for p in ds.files} == {f"a{i}.png" for i in range(6)}
    # seed / cache_dir from a training config are accepted
    assert len(open_dataset(folder, image_size=8, seed=1, cache_dir="x", split_mode="all")) == 8
