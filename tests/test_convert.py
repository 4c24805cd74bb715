"""TFRecord -> HDF5 conversion, the ``hdf5`` dataset and the ``scenedecomp data`` commands."""

from __future__ import annotations

import argparse
import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from contract import check_item
from tfrecord_writer import example, make_cater_record, make_scene, write_tfrecord
from torch.utils.data import DataLoader

from scenedecomp.cli.data import add_parsers as add_data_commands
from scenedecomp.data import DatasetError, open_dataset
from scenedecomp.data.deepmind import convert as conv
from scenedecomp.data.hdf5 import HDF5Dataset


def _source(tmp_path, name, n, seed=0, compression="gzip", **kw):
    rng = np.random.default_rng(seed)
    scenes = [make_scene(name, rng, **kw) for _ in range(n)]
    records = [example(s["features"]) for s in scenes]
    path = write_tfrecord(tmp_path / f"{name}.tfrecords", records, compression)
    return path, scenes


def _all_items(path, split):
    ds = open_dataset(path, split=split, image_size=None)
    return [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize("name", ["objects_room", "multi_dsprites_binarized",
                                  "multi_dsprites_colored_on_grayscale", "multi_dsprites_colored_on_colored",
                                  "tetrominoes", "objects_room_six_objects"])
def test_round_trip_exact(tmp_path, name):
    src, scenes = _source(tmp_path, name, 5)
    out = conv.convert(name, src, tmp_path / "out", splits=(0.6, 0.2, 0.2), progress=False)
    assert out == tmp_path / "out" / f"{name}.h5" and not (tmp_path / "out" / f"{name}.h5.partial").exists()
    items = _all_items(out, "train") + _all_items(out, "val") + _all_items(out, "test")
    assert len(items) == len(scenes)
    for item, scene in zip(items, scenes, strict=True):
        check_item(item)
        image = (item["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(image, scene["image"])
        assert item["mask"].dtype == torch.int64 and np.array_equal(item["mask"].numpy(), scene["labels"])
        assert np.array_equal(item["visibility"].numpy(), scene["visibility"])
        assert int(item["num_objects"]) == scene["num_objects"]
        assert set(item.get("factors", {})) == set(scene["factors"])
        for key, value in scene["factors"].items():
            assert np.array_equal(item["factors"][key].numpy(), value), key
    ds = open_dataset(out, split="train")
    expected_bg = (0, 1, 2, 3) if name.startswith("objects_room") else (0,)
    assert ds.background_labels == expected_bg
    assert ds.max_objects == ds.num_slots - len(expected_bg)


def test_clevr_crop_resize_and_factors(tmp_path):
    src, scenes = _source(tmp_path, "clevr_with_masks", 3, seed=3)
    out = conv.convert("clevr", src, tmp_path / "out", splits=(1, 0, 0), progress=False)
    ds = open_dataset(out, split="train", image_size=128)
    assert len(ds) == 3 and ds.image_shape == (3, 128, 128)
    for i, scene in enumerate(scenes):
        item = ds[i]
        crop = torch.from_numpy(scene["image"][29:221, 64:256]).permute(2, 0, 1)[None].float()
        direct = F.interpolate(crop, size=(128, 128), mode="bilinear", align_corners=False, antialias=False)
        direct = direct[0].round().clamp(0, 255) / 255
        assert torch.equal(item["image"], direct)
        labels = torch.from_numpy(scene["labels"][29:221, 64:256].astype(np.float32))[None, None]
        direct_labels = F.interpolate(labels, size=(128, 128), mode="nearest-exact")[0, 0].long()
        assert torch.equal(item["mask"], direct_labels)
        for key in ("size", "material", "shape", "color"):
            assert item["factors"][key].dtype == torch.int64
            assert np.array_equal(item["factors"][key].numpy(), scene["factors"][key])
        assert np.array_equal(item["factors"]["pixel_coords"].numpy(), scene["factors"]["pixel_coords"])
    with h5py.File(out) as f:
        prep = json.loads(f.attrs["preprocessing"])
        assert prep["crop"] == [29, 64, 192, 192] and prep["image_size"] == 128
    with pytest.raises(DatasetError, match="holds 128x128 images but image_size=64"):
        open_dataset(out, split="train", image_size=64)


def test_clevr_64_and_clevr6_filter(tmp_path):
    src, scenes = _source(tmp_path, "clevr_with_masks", 8, seed=5)
    out = conv.convert("clevr_with_masks", src, tmp_path / "out", image_size=64, clevr6=True,
                       splits=(1, 0, 0), progress=False)
    keep = [i for i, s in enumerate(scenes) if s["num_objects"] <= 6]
    assert 0 < len(keep) < len(scenes)
    ds = open_dataset(out, split="train", image_size=64)
    assert len(ds) == len(keep)
    with h5py.File(out) as f:
        assert f["source_index"][:].tolist() == keep
    for item, i in zip((ds[j] for j in range(len(ds))), keep, strict=True):
        assert int(item["num_objects"]) == scenes[i]["num_objects"] <= 6
        assert item["mask"].shape == (64, 64)
        assert np.array_equal(item["visibility"].numpy(), scenes[i]["visibility"])
    with pytest.raises(DatasetError, match="CLEVR6 filter applies to clevr_with_masks"):
        conv.convert("tetrominoes", src, tmp_path / "o2", clevr6=True, progress=False)


def test_tetrominoes_center_crop(tmp_path):
    src, scenes = _source(tmp_path, "tetrominoes", 2)
    out = conv.convert("tetrominoes", src, tmp_path / "out", center_crop=32, splits=(1, 0, 0), progress=False)
    ds = open_dataset(out, split="train", image_size=32)
    assert np.array_equal(ds[1]["mask"].numpy(), scenes[1]["labels"][1:33, 1:33])
    image = (ds[0]["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(image, scenes[0]["image"][1:33, 1:33])


def test_splits_limit_and_batches(tmp_path):
    src, scenes = _source(tmp_path, "objects_room", 20, seed=1)
    out = conv.convert("objects_room", src, tmp_path / "out", progress=False)
    sizes = {s: len(open_dataset(out, split=s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 18, "val": 1, "test": 1}  # contiguous 90/5/5
    with h5py.File(out) as f:
        assert f["splits/train"][:].tolist() == list(range(18)) and f["splits/test"][:].tolist() == [19]
    ds = open_dataset(out, split="train", num_images=8)
    assert len(ds) == 8
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    check_item(batches[1])
    assert torch.equal(batches[1]["mask"][3], torch.from_numpy(scenes[7]["labels"].astype(np.int64)))
    limited = conv.convert("objects_room", src, tmp_path / "lim", limit=7, splits=(1, 0, 0), progress=False)
    assert len(open_dataset(limited)) == 7
    with pytest.raises(DatasetError, match="split 'val' is empty"):
        open_dataset(limited, split="val")
    with pytest.raises(DatasetError, match="already exists"):
        conv.convert("objects_room", src, tmp_path / "lim", limit=7, progress=False)
    conv.convert("objects_room", src, tmp_path / "lim", limit=5, overwrite=True, splits=(1, 0, 0),
                 progress=False)
    assert len(open_dataset(limited)) == 5


def test_cater_frames(tmp_path):
    rng = np.random.default_rng(0)
    recs = [make_cater_record(rng, frames=33) for _ in range(2)]
    src = write_tfrecord(tmp_path / "cater.tfrecords", [example(r["features"]) for r in recs], "zlib")
    out = conv.convert("cater_with_masks", src, tmp_path / "out", splits=(0.5, 0, 0.5), progress=False)
    train, test = open_dataset(out, "train"), open_dataset(out, "test")
    assert len(train) == len(test) == 33  # splits keep whole videos together
    item = test[5]
    assert np.array_equal(item["mask"].numpy(), recs[1]["labels"][5])
    assert np.array_equal(item["factors"]["object_positions"].numpy(), recs[1]["positions"][:, 5])
    assert np.array_equal(item["scene_factors"]["camera_matrix"].numpy(), recs[1]["camera"][5])


class _Interrupt(Exception):
    pass


def test_interrupted_conversion_resumes(tmp_path, monkeypatch):
    src, scenes = _source(tmp_path, "objects_room", 30, seed=2)
    monkeypatch.setattr(conv, "_COMMIT_BYTES", 5 * (64 * 64 * 4))  # commit every 5 scenes
    calls = {"n": 0}
    real_append = conv._Writer.append

    def flaky(self, rows, records_read):
        calls["n"] += 1
        if calls["n"] == 3:
            # half-written batch then a crash: rows land on disk but are never committed
            n = self.num_written
            self.f["images"].resize(n + 2, axis=0)
            raise _Interrupt
        return real_append(self, rows, records_read)

    monkeypatch.setattr(conv._Writer, "append", flaky)
    with pytest.raises(_Interrupt):
        conv.convert("objects_room", src, tmp_path / "out", splits=(1, 0, 0), progress=False)
    partial = tmp_path / "out" / "objects_room.h5.partial"
    assert partial.exists() and not (tmp_path / "out" / "objects_room.h5").exists()
    with pytest.raises(DatasetError, match="no such file.*unfinished conversion"):
        open_dataset(tmp_path / "out" / "objects_room.h5")
    with h5py.File(partial) as f:
        assert f.attrs["num_written"] == 10 and not f.attrs["complete"]
    monkeypatch.setattr(conv._Writer, "append", real_append)
    resumed_from = {}
    real_skip = conv.TFRecordReader.skip

    def spy(self, count):
        resumed_from["count"] = count
        return real_skip(self, count)

    monkeypatch.setattr(conv.TFRecordReader, "skip", spy)
    out = conv.convert("objects_room", src, tmp_path / "out", splits=(1, 0, 0), progress=False)
    assert resumed_from == {"count": 10}
    ds = open_dataset(out)
    assert len(ds) == 30
    for i in (0, 9, 10, 11, 29):
        assert np.array_equal(ds[i]["mask"].numpy(), scenes[i]["labels"])


def test_partial_with_other_options_or_damaged_starts_clean(tmp_path, monkeypatch, capsys):
    src, scenes = _source(tmp_path, "tetrominoes", 6)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    partial = out_dir / "tetrominoes.h5.partial"
    partial.write_bytes(b"garbage left by a crash")
    out = conv.convert("tetrominoes", src, out_dir, splits=(1, 0, 0), progress=False)
    assert "starting the conversion again" in capsys.readouterr().err
    assert len(open_dataset(out)) == 6
    # a partial file made with other options is not resumed
    monkeypatch.setattr(conv, "_COMMIT_BYTES", 1)

    def crash(self, rows, records_read, real=conv._Writer.append):
        real(self, rows, records_read)
        if self.num_written >= 2:
            raise _Interrupt

    monkeypatch.setattr(conv._Writer, "append", crash)
    with pytest.raises(_Interrupt):
        conv.convert("tetrominoes", src, tmp_path / "o2", center_crop=32, progress=False)
    monkeypatch.undo()
    out2 = conv.convert("tetrominoes", src, tmp_path / "o2", splits=(1, 0, 0), progress=False)
    assert "made with other options" in capsys.readouterr().err
    ds = open_dataset(out2)
    assert len(ds) == 6 and ds.image_shape == (3, 35, 35)


def test_incomplete_file_refused(tmp_path):
    src, _ = _source(tmp_path, "tetrominoes", 2)
    out = conv.convert("tetrominoes", src, tmp_path / "out", splits=(1, 0, 0), progress=False)
    with h5py.File(out, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(DatasetError, match="incomplete conversion"):
        HDF5Dataset(out)
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5 file"):
        open_dataset(bogus)
    with pytest.raises(DatasetError, match="unknown hdf5 dataset option"):
        open_dataset(out, colour=True)


def test_corrupt_source_leaves_no_finished_file(tmp_path):
    src, _ = _source(tmp_path, "tetrominoes", 4, compression="none")
    raw = bytearray(src.read_bytes())
    raw[-40] ^= 0xFF  # inside the last record
    src.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"tetrominoes\.tfrecords: record 3: data CRC mismatch"):
        conv.convert("tetrominoes", src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "tetrominoes.h5").exists()
    src2, _ = _source(tmp_path, "tetrominoes", 2)
    with pytest.raises(DatasetError, match=r"record 0: feature 'image' has .* \(is this a objects_room file"):
        conv.convert("objects_room", src2, tmp_path / "out", progress=False)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="scenedecomp")
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_convert_and_info(tmp_path, capsys):
    src, _ = _source(tmp_path, "objects_room", 4)
    out = tmp_path / "data"
    assert _cli(["data", "convert", "objects_room", "--src", str(src), "--out", str(out), "--limit", "3",
                 "--splits", "1,0,0", "--no-progress"]) == 0
    assert _cli(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "scenes:         3" in text and "train 3, val 0, test 0" in text
    assert "background labels [0, 1, 2, 3]" in text
    with pytest.raises(DatasetError, match="does not fit"):
        _cli(["data", "convert", "objects_room", "--src", str(src), "--out", str(out), "--crop", "0,0,65,10"])
    with pytest.raises(DatasetError, match="no such file"):
        _cli(["data", "info", str(tmp_path / "nothing.h5")])
    assert _cli(["data", "list"]) == 0
    assert "clevr_with_masks" in capsys.readouterr().out


def test_split_indices_groups():
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    s = conv.split_indices(groups, (0.6, 0.2, 0.2))
    assert s["train"].tolist() == [0, 1, 2, 3, 4, 5]
    assert s["val"].tolist() == [6, 7] and s["test"].tolist() == [8, 9]
    s = conv.split_indices(np.arange(100), (0.9, 0.05, 0.05))
    assert [len(s[k]) for k in ("train", "val", "test")] == [90, 5, 5]
