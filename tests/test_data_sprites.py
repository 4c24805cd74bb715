"""Tests for the generated sprite datasets (``shapes``, ``multi_sprites``) and the on-disk cache."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch
from arrays import assert_same_arrays
from contract import check_item
from torch.utils.data import DataLoader, default_collate

from scenedecomp.data import DatasetError, open_dataset
from scenedecomp.data import cache as cache_mod
from scenedecomp.data.cache import SceneArrayDataset, cache_key, default_cache_dir, load_arrays, save_arrays
from scenedecomp.data.synthetic import procedural, sprites


@pytest.fixture(scope="module")
def ms64():
    return sprites.generate_multi_sprites(300, image_size=64, seed=1)


@pytest.fixture(scope="module")
def ms32():
    return sprites.generate_multi_sprites(300, image_size=32, seed=1)


@pytest.fixture(scope="module")
def sh64():
    return sprites.generate_shapes(300, image_size=64, seed=1)


# --- determinism ----------------------------------------------------------------------------------------
def test_same_seed_gives_identical_arrays(ms32):
    assert_same_arrays(ms32, sprites.generate_multi_sprites(300, image_size=32, seed=1))
    assert_same_arrays(sprites.generate_shapes(50, 32, seed=4), sprites.generate_shapes(50, 32, seed=4))


def test_split_and_seed_change_the_scenes(ms32):
    val = sprites.generate_multi_sprites(300, image_size=32, seed=1, split="val")
    other = sprites.generate_multi_sprites(300, image_size=32, seed=2)
    for arrays in (val, other):
        assert not np.array_equal(arrays["image"], ms32["image"])
        assert not np.array_equal(arrays["factors.x"], ms32["factors.x"])
    assert not np.array_equal(sprites.generate_shapes(50, 32, split="val")["image"],
                              sprites.generate_shapes(50, 32, split="test")["image"])


def test_output_independent_of_chunking_and_threads():
    params = procedural.sample_params("multi_sprites", 0, "train", 100,
                                    lambda rng: sprites._sample_sprites_block(rng, 1, 4))
    one = procedural.render_all(params, 24, 4, sprites._render_sprites_chunk, chunk=7, workers=1)
    two = procedural.render_all(params, 24, 4, sprites._render_sprites_chunk, chunk=33, workers=2)
    assert_same_arrays(one, two)


def test_prefix_of_a_split_does_not_depend_on_num_images():
    small = sprites.generate_multi_sprites(1010, image_size=8, seed=5)
    large = sprites.generate_multi_sprites(1030, image_size=8, seed=5)  # crosses a parameter block
    assert_same_arrays(small, {key: value[:1010] for key, value in large.items()})


def test_small_size_renders_the_same_scenes(ms64, ms32):
    assert ms32["image"].shape == (300, 32, 32, 3) and ms32["mask"].shape == (300, 32, 32)
    for key in ms64:
        if key.startswith("factors."):
            np.testing.assert_array_equal(ms64[key], ms32[key])


# --- label maps, colours, counts ------------------------------------------------------------------------
def _expected_sprite_image(arrays):
    colors = np.concatenate([arrays["background_color"][:, None], arrays["factors.color"]], axis=1)
    palette = np.rint(colors * 255).astype(np.uint8)
    return palette[np.arange(len(palette))[:, None, None], arrays["mask"]]


@pytest.mark.parametrize("which", ["ms64", "ms32"])
def test_multi_sprites_label_map_matches_image(which, request):
    arrays = request.getfixturevalue(which)
    # label k>0 pixels have object k's colour; label 0 pixels have the background colour
    np.testing.assert_array_equal(arrays["image"], _expected_sprite_image(arrays))
    # every object colour is far enough from the background
    present = arrays["factors.shape"] > 0
    distance = np.linalg.norm(arrays["factors.color"] - arrays["background_color"][:, None], axis=-1)
    assert (distance[present] >= sprites.MIN_COLOR_DISTANCE - 1e-6).all()


def test_shapes_label_map_matches_image(sh64):
    palette = np.concatenate([np.zeros((300, 1), np.int64), sh64["factors.color"]], axis=1)
    expected = sprites.SHAPES_PALETTE[palette[np.arange(300)[:, None, None], sh64["mask"]]]
    np.testing.assert_array_equal(sh64["image"], expected)
    assert (sh64["image"][sh64["mask"] == 0] == 0).all()


@pytest.mark.parametrize("which, low, high", [("ms64", 1, 4), ("ms32", 1, 4), ("sh64", 0, 2)])
def test_counts_and_visibility_match_label_map(which, low, high, request):
    arrays = request.getfixturevalue(which)
    max_objects = arrays["visibility"].shape[1]
    for i in range(len(arrays["image"])):
        labels = set(np.unique(arrays["mask"][i]).tolist()) - {0}
        assert arrays["num_objects"][i] == len(labels)
        assert labels <= set(range(1, max_objects + 1))
        expected_visibility = [float(k + 1 in labels) for k in range(max_objects)]
        np.testing.assert_array_equal(arrays["visibility"][i], expected_visibility)
        # padding slots (shape 0) are never visible and carry zero factors
        padding = arrays["factors.shape"][i] == 0
        assert not arrays["visibility"][i][padding].any()
        for key, value in arrays.items():
            if key.startswith("factors."):
                assert not value[i][padding].any(), key
    counts = arrays["num_objects"]
    assert counts.dtype == np.int64 and counts.min() >= low and counts.max() <= high
    assert set(counts.tolist()) == set(range(low, high + 1))  # all counts occur in 300 images


def test_dtypes_and_factor_grid(ms64):
    assert ms64["image"].dtype == np.uint8 and ms64["mask"].dtype == np.uint8
    present = ms64["factors.shape"] > 0
    assert set(np.unique(ms64["factors.shape"][present])) == {1, 2, 3}
    assert np.isin(ms64["factors.scale"][present], sprites.SCALES.astype(np.float32)).all()
    assert np.isin(ms64["factors.orientation"][present], sprites.ORIENTATIONS.astype(np.float32)).all()
    for axis in ("x", "y"):
        assert np.isin(ms64[f"factors.{axis}"][present], sprites.POSITIONS.astype(np.float32)).all()
    for key, value in ms64.items():
        if key.startswith("factors."):
            assert value.dtype in (np.float32, np.int64), key


def _isolated_masks(arrays, render, params_keys, image_size):
    """Full (unoccluded) mask of every object slot, rendered alone: bool [N, O, S, S]."""
    n, o = arrays["factors.shape"].shape
    params = {key: arrays[f"factors.{key}"] for key in params_keys}
    out = np.zeros((n, o, image_size, image_size), dtype=bool)
    for k in range(o):
        alone = {key: np.where(np.arange(o)[None, :] == k, value, 0) for key, value in params.items()}
        alone["palette"] = np.zeros((n, o + 1, 3), np.uint8)
        out[:, k] = render(alone, image_size)[1] == k + 1
    return out


def test_occlusion_order(ms64):
    """Label k = sprite k's own pixels minus those of every later sprite; later sprites are on top."""
    keys = ("shape", "scale", "orientation", "x", "y")
    full = _isolated_masks(ms64, sprites._render_sprites_chunk, keys, 64)
    expected = np.zeros_like(ms64["mask"])
    for k in range(full.shape[1]):
        expected[full[:, k]] = k + 1
    np.testing.assert_array_equal(ms64["mask"], expected)
    for k in range(full.shape[1]):  # a later sprite's pixels never carry an earlier label
        later = full[:, k + 1:].any(axis=1)
        assert not ((ms64["mask"] <= k + 1) & (ms64["mask"] > 0) & later).any()
    # some scenes actually have occlusion, and fully hidden sprites are marked invisible
    assert (full.sum(axis=1) > 1).any()
    present = ms64["factors.shape"] > 0
    own_label = ms64["mask"][:, None] == np.arange(1, 5)[None, :, None, None]
    assert (ms64["visibility"] == (present & (full & own_label).any((2, 3)))).all()


def test_shapes_do_not_overlap_and_fit_inside(sh64):
    full = _isolated_masks(sh64, sprites._render_shapes_chunk, ("shape", "size", "x", "y"), 64)
    assert full.sum(axis=1).max() <= 1  # no pixel belongs to two objects
    present = sh64["factors.shape"] > 0
    np.testing.assert_array_equal(sh64["visibility"], present.astype(np.float32))
    area = full.sum(axis=(2, 3))
    size = sh64["factors.size"]
    assert ((size[present] >= 12) & (size[present] <= 20)).all()
    square = sh64["factors.shape"] == 2
    circle = sh64["factors.shape"] == 1
    assert (np.abs(area[square] - size[square] ** 2) <= 2 * size[square]).all()  # whole square inside
    assert (np.abs(area[circle] - np.pi * size[circle] ** 2 / 4) <= 2 * size[circle]).all()
    radius = size / 128
    for axis in ("x", "y"):
        centre = sh64[f"factors.{axis}"]
        assert ((centre - radius >= 0) & (centre + radius <= 1))[present].all()


def test_sprite_sizes_at_scale_one():
    """At 64x64 a scale-1 sprite at orientation 0 spans about 15-20 px."""
    one = lambda value: np.array([[value]], dtype=np.float32)  # noqa: E731
    widths = {}
    for code in (1, 2, 3):
        params = {"shape": np.array([[code]]), "scale": one(1.0), "orientation": one(0.0), "x": one(0.5),
                  "y": one(0.5), "palette": np.zeros((1, 2, 3), np.uint8)}
        mask = sprites._render_sprites_chunk(params, 64)[1][0] == 1
        rows, cols = np.nonzero(mask)
        widths[code] = (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
    assert widths[1] == (15, 15) or widths[1] == (16, 16)
    assert 18 <= widths[2][0] <= 20 and 9 <= widths[2][1] <= 10
    assert 18 <= widths[3][0] <= 20 and 18 <= widths[3][1] <= 20


# --- dataset class and registry ---------------------------------------------------------------------------
def test_open_dataset_multi_sprites_val(tmp_path, capsys):
    ds = open_dataset("multi_sprites", split="val", num_images=40, image_size=32, cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert "generating multi_sprites val: 40 images at 32x32 → " in err and str(tmp_path) in err
    assert len(ds) == 40 and ds.name == "multi_sprites" and ds.split == "val"
    assert ds.max_objects == 4 and ds.background_labels == (0,)
    item = ds[3]
    check_item(item)
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.int64
    assert item["num_objects"].shape == () and item["num_objects"].dtype == torch.int64
    assert item["visibility"].shape == (4,) and item["visibility"].dtype == torch.float32
    assert set(item["factors"]) == {"shape", "scale", "orientation", "x", "y", "color"}
    assert item["factors"]["color"].shape == (4, 3) and item["factors"]["shape"].dtype == torch.int64
    assert all(value.shape[0] == 4 for value in item["factors"].values())
    arrays = sprites.generate_multi_sprites(40, image_size=32, split="val")
    assert torch.equal(item["image"], torch.from_numpy(arrays["image"][3]).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["mask"], torch.from_numpy(arrays["mask"][3]).long())
    assert ds[-1]["num_objects"] == arrays["num_objects"][-1]
    with pytest.raises(IndexError):
        ds[40]


def test_shapes_dataset_items(tmp_path):
    ds = open_dataset("shapes", split="test", num_images=30, image_size=32, cache_dir=tmp_path)
    assert ds.max_objects == 2 and ds.image_size == (32, 32)
    for i in range(len(ds)):
        item = ds[i]
        check_item(item)
        assert 0 <= item["num_objects"] <= 2
        assert set(item["factors"]) == {"shape", "size", "x", "y", "color"}


def test_batch_fast_path_matches_items_and_collates(tmp_path):
    ds = open_dataset("multi_sprites", split="train", num_images=20, image_size=16, cache_dir=tmp_path)
    indices = [5, 0, 19, 5]
    reference = default_collate([ds[i] for i in indices])
    for batch in (ds.get_batch(indices), default_collate(ds.__getitems__(indices))):
        check_item(batch)
        assert batch.keys() == reference.keys()
        for key in ("image", "mask", "num_objects", "visibility"):
            assert batch[key].dtype == reference[key].dtype and torch.equal(batch[key], reference[key]), key
        for key, value in reference["factors"].items():
            assert torch.equal(batch["factors"][key], value), key
    loaded = list(DataLoader(ds, batch_size=8, shuffle=False))
    assert [len(batch["image"]) for batch in loaded] == [8, 8, 4]
    all_masks = torch.from_numpy(np.array(ds.arrays["mask"])).long()
    assert torch.equal(torch.cat([batch["mask"] for batch in loaded]), all_masks)
    assert loaded[0]["factors"]["color"].shape == (8, 4, 3)


def test_pickle_reopens_the_cache_file(tmp_path):
    ds = open_dataset("multi_sprites", split="train", num_images=20, image_size=16, cache_dir=tmp_path)
    blob = pickle.dumps(ds)
    assert len(blob) < 5_000  # the path travels, not the pixels
    clone = pickle.loads(blob)
    assert len(clone) == 20 and torch.equal(clone[7]["image"], ds[7]["image"])


def test_bad_options_raise_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="image_size"):
        open_dataset("multi_sprites", image_size=3, num_images=4, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="max_objects"):
        open_dataset("shapes", min_objects=2, max_objects=1, num_images=4, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="num_images"):
        open_dataset("shapes", num_images=0, cache_dir=tmp_path)


def test_in_memory_dataset_without_cache_file(sh64):
    ds = SceneArrayDataset(sh64, name="shapes", split="train")
    assert ds.max_objects == 2 and ds.path is None
    check_item(ds[0])
    assert torch.equal(pickle.loads(pickle.dumps(ds))[1]["mask"], ds[1]["mask"])


# --- cache ------------------------------------------------------------------------------------------------
def _cache_files(directory):
    return sorted(path.name for path in directory.iterdir())


def test_second_open_loads_from_disk(tmp_path, capsys):
    first = open_dataset("multi_sprites", split="val", num_images=30, image_size=16, cache_dir=tmp_path)
    assert "generating" in capsys.readouterr().err
    files = _cache_files(tmp_path)
    assert len(files) == 1 and files[0].endswith(".npz") and "multi_sprites_val_v1" in files[0]
    second = open_dataset("multi_sprites", split="val", num_images=30, image_size=16, cache_dir=tmp_path)
    assert capsys.readouterr().err == ""
    assert second.path == first.path
    assert_same_arrays(first.arrays, second.arrays)
    assert_same_arrays(second.arrays, sprites.generate_multi_sprites(30, image_size=16, split="val"))
    assert not second.arrays["image"].flags.writeable  # memory-mapped, read-only
    # other options go to other files
    open_dataset("multi_sprites", split="val", num_images=30, image_size=16, seed=1, cache_dir=tmp_path)
    open_dataset("shapes", split="val", num_images=30, image_size=16, cache_dir=tmp_path)
    assert len(_cache_files(tmp_path)) == 3


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SCENEDECOMP_CACHE", str(tmp_path / "env_cache"))
    assert default_cache_dir() == tmp_path / "env_cache"
    open_dataset("shapes", split="val", num_images=5, image_size=16)
    assert len(_cache_files(tmp_path / "env_cache")) == 1
    monkeypatch.delenv("SCENEDECOMP_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "scenedecomp")


def test_leftover_temp_file_is_not_a_complete_cache(tmp_path, capsys):
    options = {"image_size": 16, "num_images": 10, "seed": 0, "min_objects": 1, "max_objects": 4}
    final = tmp_path / f"{cache_key('multi_sprites', 'val', sprites.MULTI_SPRITES_VERSION, options)}.npz"
    leftover = final.with_name(f".{final.name}.tmp-12345-deadbeef")
    leftover.write_bytes(b"PK\x03\x04 half-written")
    ds = open_dataset("multi_sprites", split="val", cache_dir=tmp_path, **options)
    assert "generating" in capsys.readouterr().err
    assert ds.path == final and final.is_file()
    assert_same_arrays(ds.arrays, sprites.generate_multi_sprites(split="val", **options))


def test_interrupted_write_leaves_no_complete_file(tmp_path, monkeypatch):
    def crash(handle, **arrays):
        handle.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        open_dataset("shapes", split="val", num_images=5, image_size=16, cache_dir=tmp_path)
    assert _cache_files(tmp_path) == []


def test_damaged_cache_file_is_regenerated(tmp_path, capsys):
    ds = open_dataset("shapes", split="val", num_images=5, image_size=16, cache_dir=tmp_path)
    ds.path.write_bytes(b"not a zip file")
    again = open_dataset("shapes", split="val", num_images=5, image_size=16, cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert "unreadable" in err and "generating" in err
    assert_same_arrays(again.arrays, sprites.generate_shapes(5, 16, split="val"))


def test_save_and_load_arrays_roundtrip(tmp_path):
    arrays = {"a": np.arange(24, dtype=np.int64).reshape(2, 3, 4),
              "b": np.asfortranarray(np.eye(3, dtype=np.float32)),
              "empty": np.zeros((0, 4), np.uint8), "scalar": np.array(3.5)}
    path = save_arrays(tmp_path / "x.npz", arrays, {"hello": "world"})
    loaded, meta = load_arrays(path)
    assert meta == {"hello": "world"}
    assert_same_arrays(arrays, loaded)
    with zipfile.ZipFile(path) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    np.savez_compressed(tmp_path / "z.npz", **arrays)  # compressed files load too (into memory)
    assert_same_arrays(arrays, load_arrays(tmp_path / "z.npz")[0])


def test_cache_key_encodes_everything():
    base = {"image_size": 32, "num_images": 10}
    key = cache_key("multi_sprites", "train", 1, base)
    assert key.startswith("multi_sprites_train_v1_") and "image_size32" in key
    assert len({key, cache_key("multi_sprites", "val", 1, base), cache_key("multi_sprites", "train", 2, base),
                cache_key("shapes", "train", 1, base),
                cache_key("multi_sprites", "train", 1, {**base, "num_images": 11})}) == 5
