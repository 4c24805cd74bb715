"""Tests for the generated ``objects_room_like`` dataset (procedural rooms with Objects Room's labels)."""

from __future__ import annotations

import colorsys
import json
import pickle

import numpy as np
import pytest
import torch
from arrays import assert_same_arrays
from contract import check_item
from overrides import tiny_run
from tfrecord_writer import example, one_byte_strings, write_tfrecord
from torch.utils.data import default_collate

from scenedecomp.cli import main
from scenedecomp.data import DatasetError, available_datasets, open_dataset
from scenedecomp.data.deepmind import convert as conv
from scenedecomp.data.synthetic import rooms
from scenedecomp.data.synthetic.procedural import sample_params as _sample_params
from scenedecomp.metrics.segmentation import ari

BG = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def r64():
    return rooms.generate_objects_room_like(300, image_size=64, seed=1)


@pytest.fixture(scope="module")
def scenes():
    """Parameters of 400 training scenes, their render at 64x64 (image, labels, ray depth) and every object
    rendered alone (its whole silhouette, ``[N, O, S, S]``)."""
    p = _sample_params(rooms.NAME, 2, "train", 400, lambda rng: rooms._sample_block(rng, 1, 3))
    image, labels, depth = rooms.render_rooms(p, 64, return_depth=True)
    o = p["shape"].shape[1]
    alone, alone_depth = [], []
    for j in range(o):
        q = dict(p, shape=np.where(np.arange(o)[None] == j, p["shape"], 0))
        _, lab, dep = rooms.render_rooms(q, 64, return_depth=True)
        alone.append(lab == rooms.FIRST_OBJECT_LABEL + j)
        alone_depth.append(np.where(alone[-1], dep, np.inf))
    background = rooms.render_rooms(dict(p, shape=np.zeros_like(p["shape"])), 64, return_depth=True)
    return {"p": p, "image": image, "labels": labels, "depth": depth, "alone": np.stack(alone, 1),
            "alone_depth": np.stack(alone_depth, 1), "background": background}


# --- determinism ----------------------------------------------------------------------------------------
def test_same_seed_same_bytes_and_every_index_differs(r64):
    assert_same_arrays(r64, rooms.generate_objects_room_like(300, image_size=64, seed=1))
    flat = r64["image"].reshape(300, -1)
    assert len(np.unique(flat, axis=0)) == 300  # no two scenes alike
    for other in (rooms.generate_objects_room_like(300, image_size=64, seed=2),
                  rooms.generate_objects_room_like(300, image_size=64, seed=1, split="val")):
        assert not (other["image"] == r64["image"]).all(axis=(1, 2, 3)).any()


def test_output_independent_of_chunking_threads_and_split_length():
    small = rooms.generate_objects_room_like(1010, image_size=12, seed=5, workers=1)
    large = rooms.generate_objects_room_like(1030, image_size=12, seed=5, workers=2)  # crosses a block
    assert_same_arrays(small, {key: value[:1010] for key, value in large.items()})
    p = _sample_params(rooms.NAME, 0, "train", 50, lambda rng: rooms._sample_block(rng, 1, 3))
    assert_same_arrays(rooms._render_all(p, 20, 3, chunk=7, workers=1),
                       rooms._render_all(p, 20, 3, chunk=33, workers=2))


def test_other_sizes_render_the_same_scenes(r64):
    r24 = rooms.generate_objects_room_like(300, image_size=24, seed=1)
    assert r24["image"].shape == (300, 24, 24, 3) and r24["mask"].shape == (300, 24, 24)
    for key in r64:
        if key.startswith("factors.") or key in rooms.SCENE_KEYS:
            np.testing.assert_array_equal(r64[key], r24[key], err_msg=key)


# --- contract -----------------------------------------------------------------------------------------
def test_registered_dataset_follows_the_batch_contract(tmp_path):
    assert rooms.NAME in available_datasets()
    ds = open_dataset("objects_room_like", split="test", num_images=12, image_size=32, cache_dir=tmp_path)
    assert len(ds) == 12 and ds.image_size == (32, 32)
    assert ds.background_labels == BG and ds.max_objects == 3 and ds.num_slots == 7
    item = ds[5]
    check_item(item)
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.int64
    assert item["num_objects"].shape == () and item["num_objects"].dtype == torch.int64
    assert item["visibility"].shape == (3,) and item["visibility"].dtype == torch.float32
    assert set(item["factors"]) == set(rooms.FACTOR_KEYS)
    for key, value in item["factors"].items():
        assert value.shape == (3,), key
        assert value.dtype == (torch.int64 if key == "shape" else torch.float32), key
    arrays = rooms.generate_objects_room_like(12, image_size=32, split="test")
    assert torch.equal(item["image"], torch.from_numpy(arrays["image"][5]).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["mask"], torch.from_numpy(arrays["mask"][5]).long())
    batch = default_collate([ds[i] for i in range(4)])
    check_item(batch)
    assert batch["mask"].shape == (4, 32, 32) and batch["factors"]["x"].shape == (4, 3)
    for key, value in ds.get_batch(range(4)).items():
        if key != "factors":
            assert torch.equal(value, batch[key]), key
    clone = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker gets: the labels travel along
    assert clone.background_labels == BG and clone.num_slots == 7 and torch.equal(clone[5]["mask"], item["mask"])
    for key in rooms.SCENE_KEYS:
        assert ds.arrays[key].shape == (12,)


def test_bad_options_raise_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="image_size"):
        open_dataset("objects_room_like", image_size=4, num_images=2, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="max_objects"):
        open_dataset("objects_room_like", min_objects=3, max_objects=2, num_images=2, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="max_objects"):
        rooms.generate_objects_room_like(2, max_objects=252)
    with pytest.raises(DatasetError, match="unknown split"):
        open_dataset("objects_room_like", split="ood_large_objects", num_images=2, cache_dir=tmp_path)


# --- label map and counts -------------------------------------------------------------------------------
def test_label_values_background_regions_and_objects(r64):
    masks, shape = r64["mask"], r64["factors.shape"]
    assert r64["image"].dtype == np.uint8 and masks.dtype == np.uint8
    assert masks.max() <= 6
    present = [(masks == label).any(axis=(1, 2)) for label in range(7)]
    assert present[rooms.FLOOR].all() and present[rooms.LEFT_WALL].all() and present[rooms.RIGHT_WALL].all()
    assert present[rooms.SKY].mean() > 0.95
    for j in range(3):  # label 4 + j only where slot j holds an object
        assert not present[4 + j][shape[:, j] == 0].any()
    # each background region lies where its surface is: sky above the horizon, floor below it
    rows = (np.arange(64) + 0.5) / 64
    horizon = r64["horizon"][:, None, None]
    row_of = np.broadcast_to(rows[None, :, None], masks.shape)
    assert (row_of[masks == rooms.SKY] < np.broadcast_to(horizon, masks.shape)[masks == rooms.SKY]).all()
    assert (row_of[masks == rooms.FLOOR] > np.broadcast_to(horizon, masks.shape)[masks == rooms.FLOOR]).all()
    assert r64["horizon"].std() > 0.05 and 0.1 < r64["horizon"].min() < r64["horizon"].max() < 0.5
    # the left wall is on the left of the right wall in every row where both show
    for i in range(50):
        for row in range(64):
            left = np.flatnonzero(masks[i, row] == rooms.LEFT_WALL)
            right = np.flatnonzero(masks[i, row] == rooms.RIGHT_WALL)
            if len(left) and len(right):
                assert left.max() < right.min()


def test_num_objects_counts_visible_object_labels(r64):
    for i in range(300):
        labels = set(np.unique(r64["mask"][i]).tolist()) - set(BG)
        assert r64["num_objects"][i] == len(labels)
        np.testing.assert_array_equal(r64["visibility"][i], [float(4 + j in labels) for j in range(3)])
        padding = r64["factors.shape"][i] == 0
        for key in rooms.FACTOR_KEYS:
            assert not r64[f"factors.{key}"][i][padding].any(), key
    placed = (r64["factors.shape"] > 0).sum(axis=1)
    assert set(placed.tolist()) == {1, 2, 3} and r64["num_objects"].dtype == np.int64
    assert (r64["num_objects"] <= placed).all() and (r64["num_objects"] >= 1).all()


def test_a_fully_hidden_object_keeps_its_slot_but_is_not_counted():
    """Object 1 (small sphere) stands right behind object 0 (big cube) on the line of sight."""
    p = _sample_params(rooms.NAME, 0, "train", 1, lambda rng: rooms._sample_block(rng, 3, 3))
    p = {key: value.copy() for key, value in p.items()}
    cam = np.array([p["cam_x"][0], p["cam_z"][0]], np.float64)
    heading = np.array([np.cos(p["yaw"][0]), np.sin(p["yaw"][0])])
    p["shape"][0] = [rooms.CUBE, rooms.SPHERE, 0]
    p["size"][0] = [1.25, 0.75, 0]
    near, far = cam + 3.0 * heading, cam + 4.5 * heading
    p["pos_x"][0, :2], p["pos_z"][0, :2] = [near[0], far[0]], [near[1], far[1]]
    arrays = rooms._render_all(p, 64, 3)
    alone = rooms.render_rooms(dict(p, shape=np.array([[0, rooms.SPHERE, 0]])), 64)[1]
    assert (alone == 5).sum() > 20  # the sphere alone is well visible ...
    assert set(np.unique(arrays["mask"][0]).tolist()) == {0, 1, 2, 3, 4}  # ... but hidden in the scene
    np.testing.assert_array_equal(arrays["visibility"][0], [1, 0, 0])
    assert arrays["num_objects"][0] == 1


def test_hidden_objects_in_a_larger_sample_are_marked_invisible():
    arrays = rooms.generate_objects_room_like(1000, image_size=32, seed=3)
    placed = arrays["factors.shape"] > 0
    hidden = placed & (arrays["visibility"] == 0)
    assert 0 < hidden.sum() < 0.05 * placed.sum()  # it happens, rarely
    for i, j in zip(*np.nonzero(hidden), strict=True):
        assert not (arrays["mask"][i] == 4 + j).any() and arrays["factors.size"][i, j] > 0


# --- geometry: occlusion, factors, perspective ------------------------------------------------------------
def test_every_pixel_shows_the_nearest_surface(scenes):
    """The label map is a z-buffer over the background and every object rendered on its own."""
    candidates = np.concatenate([scenes["background"][2][:, None], scenes["alone_depth"]], axis=1)
    nearest = candidates.argmin(axis=1)
    expected = np.where(nearest == 0, scenes["background"][1], 3 + nearest)
    np.testing.assert_array_equal(scenes["labels"], expected)
    np.testing.assert_array_equal(scenes["depth"], candidates.min(axis=1))
    # background pixels keep the colour they have without objects
    bg = scenes["labels"] < 4
    np.testing.assert_array_equal(scenes["image"][bg], scenes["background"][0][bg])


def test_nearer_objects_occlude_farther_ones(scenes):
    alone, labels, depth = scenes["alone"], scenes["labels"], scenes["p"]["depth"]
    overlaps = 0
    for i in range(len(labels)):
        for a in range(3):
            for b in range(a + 1, 3):
                both = alone[i, a] & alone[i, b]
                if not both.any():
                    continue
                overlaps += 1
                far = a if depth[i, a] > depth[i, b] else b
                assert not (labels[i][both] == 4 + far).any()  # the farther object never shows there
    assert overlaps > 50


def test_windowed_render_equals_testing_every_ray():
    p = _sample_params(rooms.NAME, 4, "ood_more_objects", 120, lambda rng: rooms._sample_block(rng, 6, 6))
    for size in (64, 23):
        for fast, slow in zip(rooms.render_rooms(p, size, return_depth=True),
                              rooms.render_rooms(p, size, return_depth=True, windowed=False), strict=True):
            np.testing.assert_array_equal(fast, slow)


def test_factors_match_the_rendered_objects(scenes):
    p, alone = scenes["p"], scenes["alone"]
    present = p["shape"] > 0
    assert set(np.unique(p["shape"][present]).tolist()) == {1, 2, 3}
    assert np.isin(p["size"][present], rooms.SIZES.astype(np.float32)).all()
    assert np.isin(p["hue"][present], rooms.HUES.astype(np.float32)).all()
    assert np.isin(p["orientation"][present], rooms.ORIENTATIONS.astype(np.float32)).all()
    assert (p["hue"] != p["floor_hue"][:, None])[present].all() and (p["wall_hue"] != p["floor_hue"]).all()
    rows, cols = np.mgrid[0:64, 0:64] + 0.5
    errors, areas, ratios, codes = [], [], [], []
    for i, j in zip(*np.nonzero(present), strict=True):
        m = alone[i, j]
        assert m.any()
        areas.append(m.sum())
        ratios.append(p["size"][i, j] / p["depth"][i, j])
        codes.append(p["shape"][i, j])
        if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
            continue  # clipped by the image border
        error = np.hypot(cols[m].mean() - 64 * p["x"][i, j], rows[m].mean() - 64 * p["y"][i, j])
        errors.append((error, p["shape"][i, j]))
    errors_px = np.array([e for e, _ in errors])
    assert len(errors_px) > 500 and errors_px.max() < 3.0 and errors_px.mean() < 0.8
    sphere = np.array([e for e, code in errors if code == rooms.SPHERE])
    assert sphere.max() < 1.0
    # perspective: a silhouette's area goes as (size / depth)^2
    areas, ratios, codes = map(np.array, (areas, ratios, codes))
    for code in (1, 2, 3):
        sel = codes == code
        slope = np.polyfit(np.log(ratios[sel]), np.log(areas[sel]), 1)[0]
        assert 1.85 < slope < 2.15, (code, slope)


def test_colours_follow_the_hues(r64):
    image, masks = r64["image"].astype(np.float64) / 255, r64["mask"]
    assert 0.35 < image.mean() < 0.7 and image.std() > 0.12

    def mean_hsv(i, label):
        return colorsys.rgb_to_hsv(*image[i][masks[i] == label].mean(axis=0))

    def hue_gap(a, b):
        return min(abs(a - b), 1 - abs(a - b))

    for i in range(100):
        floor, left, right = (mean_hsv(i, label) for label in (rooms.FLOOR, rooms.LEFT_WALL, rooms.RIGHT_WALL))
        assert hue_gap(floor[0], r64["floor_hue"][i]) < 0.02
        assert hue_gap(left[0], r64["wall_hue"][i]) < 0.02 and hue_gap(right[0], r64["wall_hue"][i]) < 0.02
        assert abs(left[2] - right[2]) > 0.03  # the two halves of the wall are lit differently
        for label in (rooms.FLOOR, rooms.LEFT_WALL, rooms.RIGHT_WALL):  # gently shaded: nearly flat
            assert image[i][masks[i] == label].std(axis=0).max() < 0.03
        sky = image[i][masks[i] == rooms.SKY]
        assert (sky[:, 2] > sky[:, 0]).all() and sky.std(axis=0).max() < 0.12  # a pale-blue gradient
        for j in range(3):
            if (masks[i] == 4 + j).sum() >= 10:
                assert hue_gap(mean_hsv(i, 4 + j)[0], r64["factors.hue"][i, j]) < 0.03


# --- the real Objects Room's schema ---------------------------------------------------------------------
def test_batches_match_a_converted_objects_room_file(tmp_path):
    """Scenes written as Objects Room TFRecords (K=7 masks, slot k = label k) and converted give the same
    label maps, counts and background labels as the dataset."""
    ds = open_dataset("objects_room_like", split="val", num_images=6, cache_dir=tmp_path / "cache")
    records = []
    for i in range(len(ds)):
        image, labels = ds.arrays["image"][i], ds.arrays["mask"][i]
        masks = np.stack([np.where(labels == k, 255, 0) for k in range(7)]).astype(np.uint8)[..., None]
        records.append(example({"image": one_byte_strings(image), "mask": one_byte_strings(masks)}))
    src = write_tfrecord(tmp_path / "objects_room_train.tfrecords", records)
    real = open_dataset(conv.convert("objects_room", src, tmp_path / "out", splits=(1, 0, 0), progress=False),
                        split="train")
    assert real.background_labels == ds.background_labels and real.num_slots == ds.num_slots
    assert real.max_objects == ds.max_objects
    for i in range(len(ds)):
        ours, theirs = ds[i], real[i]
        assert torch.equal(ours["image"], theirs["image"])
        assert ours["mask"].dtype == theirs["mask"].dtype and torch.equal(ours["mask"], theirs["mask"])
        assert int(ours["num_objects"]) == int(theirs["num_objects"])
        # the converted file indexes visibility by label (K entries), the dataset by object slot
        assert torch.equal(theirs["visibility"][4:], ours["visibility"])


def test_fg_ari_ignores_all_four_background_regions(r64):
    true = torch.from_numpy(r64["mask"][:20].astype(np.int64))
    background_merged = torch.where(true < 4, torch.zeros_like(true), true)  # one segment for sky+floor+walls
    scrambled = torch.where(true < 4, torch.randint(0, 2, true.shape, generator=torch.Generator().manual_seed(0)),
                            true)
    for pred in (background_merged, scrambled):
        assert (ari(true, pred, ignore_background=True, background_labels=BG) == 1).all()
        assert (ari(true, pred, ignore_background=True, background_labels=(0,)) < 1).any()


# --- out-of-distribution splits (the real Objects Room test files) --------------------------------------------
def test_ood_splits(tmp_path):
    def split(name, **kw):
        return open_dataset("objects_room_like", split=name, num_images=20, image_size=24, cache_dir=tmp_path, **kw)

    six = split("ood_more_objects")
    assert six.max_objects == 6 and six.num_slots == 10 and six.background_labels == BG
    assert (six.arrays["factors.shape"] > 0).all() and six.arrays["mask"].max() <= 9
    assert six[0]["factors"]["x"].shape == (6,) and six[0]["visibility"].shape == (6,)
    assert (six.arrays["num_objects"] >= 4).all() and (six.arrays["num_objects"] == 6).mean() > 0.5
    same = split("ood_identical_color")
    placed = same.arrays["factors.shape"] > 0
    assert set(placed.sum(axis=1).tolist()) == {4, 5, 6} and same.num_slots == 10
    hue = same.arrays["factors.hue"]
    assert all(len(set(hue[i][placed[i]].tolist())) == 1 for i in range(20))
    assert len(set(hue[placed].tolist())) > 1  # one hue per scene, not one for all
    assert split("ood_more_objects", max_objects=2).max_objects == 5  # relative to the training setting
    test = split("test")
    assert not np.array_equal(test.arrays["image"], six.arrays["image"])
    assert split("ood_more_objects").options == six.options  # defaults do not depend on the call order


# --- training through the CLI --------------------------------------------------------------------------
TINY = ["data.name=objects_room_like", "data.num_workers=0", "trainer.val_batches=1",
        *tiny_run(8, 2, 4, batch_size=2, max_steps=1, val_every_n_steps=1, checkpoint_every_n_steps=1,
                  image_log_every_n_steps=1, log_every_n_steps=1)]


def test_one_monet_step_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCENEDECOMP_CACHE", str(tmp_path / "cache"))
    assert main(["train", "--config", "monet-objects-room", "--quiet", f"out_dir={tmp_path / 'runs'}",
                 "name=rooms", *TINY]) == 0
    run = tmp_path / "runs" / "rooms"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and 0 <= metrics["fg_ari"] <= 1 and metrics["mse"] > 0
    hparams = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["hyper_parameters"]
    assert tuple(hparams["background_labels"]) == BG
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "ood_identical_color", "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["split"] == "ood_identical_color" and printed["num_images"] == 4


def test_speed_and_figure_command(tmp_path, capsys):
    """benchmarks/rooms_generation.py: the generation speed and a figure of 16 scenes."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parent.parent / "benchmarks" / "rooms_generation.py"
    spec = importlib.util.spec_from_file_location("rooms_generation", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--speed", "20", "--figure", str(tmp_path / "rooms.png")]) == 0
    out = capsys.readouterr().out
    assert "20 scenes at 64x64 in " in out and "images/s (one thread)" in out
    assert (tmp_path / "rooms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
