"""The hostile-input corpus: every file or setting a careless user or an attacker may hand the CLI.

Each refusal case checks the exit code, exactly one line on stderr naming the problem, no traceback and no
partial output. The inputs are generated here, small. Cases that must be *accepted* (odd but valid
images) check the decoded values instead.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import subprocess
import sys
import zlib
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tfrecord_writer import example, make_scene, write_tfrecord

from scenedecomp.cli import main
from scenedecomp.data import open_dataset
from scenedecomp.data.convert import convert
from scenedecomp.training.config import load_config

TINY = ["data.image_size=16", "data.num_train=16", "data.num_val=8", "data.num_test=8", "data.batch_size=8",
        "model.num_slots=3", "model.latent_dim=4", "model.attention.channels=[8,8,8]",
        "model.attention.mlp_hidden=[16]", "model.component.encoder_channels=[8,8]",
        "model.component.encoder_hidden=16", "model.component.decoder_channels=8", "trainer.max_steps=2",
        "trainer.val_every_n_steps=1000", "trainer.checkpoint_every_n_steps=1000",
        "trainer.image_log_every_n_steps=0", "trainer.log_every_n_steps=1"]


class _Payload:
    """Unpickling this would create ``marker`` (the checkpoint attack)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A shared data cache and one tiny trained run (2 steps, no validation: the short-run case)."""
    root = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCENEDECOMP_CACHE", str(root / "cache"))
        old_mask = os.umask(0o022)
        try:
            torch.set_num_threads(1)
            err = io.StringIO()
            mp.setattr(sys, "stderr", err)
            code = main(["train", "--config", "monet-demo", "--quiet", f"out_dir={root / 'runs'}", "name=tiny",
                         *TINY])
        finally:
            os.umask(old_mask)
        yield {"root": root, "run": root / "runs" / "tiny", "code": code, "stderr": err.getvalue()}


@pytest.fixture
def env(world, monkeypatch, tmp_path):
    monkeypatch.setenv("SCENEDECOMP_CACHE", str(world["root"] / "cache"))
    return world


def refused(capsys, args, message, code=2, absent=()):
    """Run the CLI; exactly one stderr line containing ``message``, ``code``, nothing written."""
    capsys.readouterr()
    got = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert got == code, (got, err)
    assert len(lines) == 1 and message in lines[0], err
    for path in absent:
        assert not Path(path).exists(), f"partial output {path}"
    return lines[0]


def train_args(tmp_path, *extra, name="r"):
    return ["train", "--config", "monet-demo", "--quiet", f"out_dir={tmp_path / 'runs'}", f"name={name}", *TINY,
            *extra]


# ----------------------------------------------------------------------------------------------- images
def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _bomb_png(side: int = 10000) -> bytes:
    """A valid greyscale PNG of side x side zeros; a few KB compressed (zlib of zero rows)."""
    raw = zlib.compress(b"\0" * (side + 1) * side, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


GOOD_PNG = _png_bytes(np.full((32, 32, 3), 128, np.uint8))
BAD_IMAGES = {
    "corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "truncated.png": _png_bytes(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))[:300],
    "empty.png": b"",
    "corrupt.jpg": b"\xff\xd8\xff\xe0" + b"\x13\x37" * 200,
    "truncated.jpg": _jpeg_bytes()[:200],
    "empty.jpg": b"",
    "text.png": b"this is not an image, just text with a .png name\n",
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_refused_naming_the_file(env, tmp_path, capsys, name):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / name).write_bytes(BAD_IMAGES[name])
    line = refused(capsys, train_args(tmp_path, f"data.name={folder}", "data.options.on_error=raise",
                                      "data.options.verify=full", "data.options.split_mode=all"),
                   name, absent=[tmp_path / "runs"])
    assert "unreadable image" in line


def test_decompression_bomb_capped_without_decoding(env, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(_bomb_png())
    assert (folder / "bomb.png").stat().st_size < 200_000
    line = refused(capsys, train_args(tmp_path, f"data.name={folder}", "data.options.on_error=raise",
                                      "data.options.verify=full", "data.options.split_mode=all"),
                   "bomb.png", absent=[tmp_path / "runs"])
    assert "10000x10000" in line and "max_pixels" in line


def test_bomb_is_skipped_with_a_clear_message(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(_bomb_png())
    (folder / "ok.png").write_bytes(GOOD_PNG)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\): bomb.png \(10000x10000 = 100 MP"):
        ds = open_dataset(folder, split_mode="all", image_size=16)
    assert len(ds) == 1 and ds.skipped == ["bomb.png"]


@pytest.mark.parametrize("setup", ["empty", "only_text"])
def test_folder_without_images(env, tmp_path, capsys, setup):
    folder = tmp_path / "images"
    folder.mkdir()
    if setup == "only_text":
        (folder / "notes.txt").write_text("no images here")
    refused(capsys, train_args(tmp_path, f"data.name={folder}"), "no readable images", absent=[tmp_path / "runs"])


def _decode_one(tmp_path, array_or_bytes, name="x.png", **options) -> torch.Tensor:
    folder = tmp_path / "odd"
    folder.mkdir(exist_ok=True)
    data = array_or_bytes if isinstance(array_or_bytes, bytes) else _png_bytes(array_or_bytes)
    (folder / name).write_bytes(data)
    return open_dataset(folder, split_mode="all", image_size=8, **options)[0]["image"]


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    image = _decode_one(tmp_path, np.full((20, 20), 51, np.uint8))
    assert image.shape == (3, 8, 8) and torch.allclose(image, torch.full_like(image, 0.2))


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    image = _decode_one(tmp_path, rgba)
    assert image.shape == (3, 8, 8) and torch.allclose(image[0], torch.ones(8, 8)) and image[1:].max() == 0


def test_one_pixel_image_is_upsampled(tmp_path):
    image = _decode_one(tmp_path, np.array([[[10, 20, 30]]], np.uint8))
    assert image.shape == (3, 8, 8) and torch.allclose(image[:, 4, 4], torch.tensor([10, 20, 30]) / 255.0)


def test_sixteen_bit_png_scaled_by_true_bit_depth(tmp_path):
    image = _decode_one(tmp_path, np.full((20, 20), 32768, np.uint16))
    assert torch.allclose(image, torch.full_like(image, 32768 / 65535)), "not white: 32768/65535 is mid-grey"
    assert _decode_one(tmp_path, np.full((20, 20), 65535, np.uint16), name="y.png", channels=1).shape == (1, 8, 8)


def test_palette_image(tmp_path):
    img = Image.new("P", (10, 10))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((5, 5), 1)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    image = _decode_one(tmp_path, buf.getvalue())
    assert image.shape == (3, 8, 8) and image[0].max() > 0 and image[1:].max() == 0


def test_worker_failure_is_one_line(env, tmp_path, capsys):
    """A file that passes the header check but fails to decode, read in a DataLoader worker."""
    folder = tmp_path / "images"
    for split in ("train", "val", "test"):
        (folder / split).mkdir(parents=True)
        for i in range(4):
            (folder / split / f"ok{i}.png").write_bytes(GOOD_PNG)
    good = _png_bytes(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (folder / "train" / "zz_broken.png").write_bytes(good[: len(good) // 2])  # not item 0 (read up front)
    line = refused(capsys, train_args(tmp_path, f"data.name={folder}", "data.options.on_error=raise",
                                      "data.options.split_mode=subdirs", "data.num_workers=1", "data.num_train=null",
                                      "data.num_val=null", "data.num_test=null", "data.batch_size=5"),
                   "data loader worker failed")
    assert "zz_broken.png" in line and "cannot decode image" in line


# ----------------------------------------------------------------------------------------------- TFRecords
def _tfrecord(tmp_path, n=3, compression="none") -> Path:
    rng = np.random.default_rng(0)
    records = [example(make_scene("tetrominoes", rng)["features"]) for _ in range(n)]
    return write_tfrecord(tmp_path / "tetrominoes.tfrecords", records, compression)


def _convert_args(src, out):
    return ["data", "convert", "tetrominoes", "--src", src, "--out", out, "--no-progress"]


def test_tfrecords_given_as_dataset(env, tmp_path, capsys):
    src = _tfrecord(tmp_path)
    refused(capsys, train_args(tmp_path, f"data.name={src}"), "run `scenedecomp data convert",
            absent=[tmp_path / "runs"])


@pytest.mark.parametrize("damage", ["truncated", "truncated_gzip", "crc", "random", "empty", "text"])
def test_damaged_tfrecords_refused_without_leftovers(tmp_path, capsys, damage):
    src = _tfrecord(tmp_path, compression="gzip" if damage == "truncated_gzip" else "none")
    data = src.read_bytes()
    if damage.startswith("truncated"):  # inside the last record, not on a record boundary
        data = data[: len(data) * 2 // 3 + 17]
    elif damage == "crc":
        data = data[:20] + bytes([data[20] ^ 0xFF]) + data[21:]
    elif damage == "random":
        data = np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    elif damage == "empty":
        data = b""
    else:
        data = b"hello, I am a text file\n" * 10
    src.write_bytes(data)
    out = tmp_path / "out"
    refused(capsys, _convert_args(src, out), str(src.name), absent=[out / "tetrominoes.h5"])
    assert not list(out.glob("*.partial")), "no .partial kept for a file that is not the dataset"


def test_convert_out_onto_a_file(tmp_path, capsys):
    src = _tfrecord(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    refused(capsys, _convert_args(src, blocker), "is not a directory")
    assert blocker.read_text() == "x"


def test_convert_out_unwritable(tmp_path, capsys):
    src = _tfrecord(tmp_path)
    refused(capsys, _convert_args(src, "/proc/scenedecomp-out"), "cannot write the output directory")


# ----------------------------------------------------------------------------------------------- HDF5
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("h5")
    rng = np.random.default_rng(0)
    records = [example(make_scene("tetrominoes", rng)["features"]) for _ in range(12)]
    src = write_tfrecord(root / "tetrominoes.tfrecords", records, "none")
    return convert("tetrominoes", src, root / "out", progress=False, splits=(0.5, 0.25, 0.25))


def _h5_case(converted, tmp_path, case) -> Path:
    target = tmp_path / "data.h5"
    data = converted.read_bytes()
    if case == "truncated":
        target.write_bytes(data[: len(data) // 3])
    elif case == "random":
        target.write_bytes(np.random.default_rng(4).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:
        target.write_bytes(data)
        with h5py.File(target, "r+") as f:
            if case == "no_images":
                del f["images"]
            elif case == "no_splits":
                del f["splits"]
            elif case == "no_attrs":
                del f.attrs["num_slots"]
            elif case == "bad_indices":
                del f["splits/train"]
                f["splits/train"] = np.array([0, 1, 999], dtype=np.int64)
            elif case == "incomplete":
                f.attrs["complete"] = False
            elif case == "foreign":
                f.attrs["format"] = "something.else"
    return target


@pytest.mark.parametrize("case, message", [
    ("truncated", "not a readable HDF5 file"), ("random", "not a readable HDF5 file"),
    ("no_images", "damaged or incomplete file"), ("no_splits", "damaged or incomplete file"),
    ("no_attrs", "damaged or incomplete file"), ("bad_indices", "scene indices outside"),
    ("incomplete", "incomplete conversion"), ("foreign", "not a file written by"),
])
def test_damaged_hdf5_refused(env, converted, tmp_path, capsys, case, message):
    path = _h5_case(converted, tmp_path, case)
    refused(capsys, train_args(tmp_path, f"data.name={path}", "data.image_size=32", "data.num_train=null",
                               "data.num_val=null", "data.num_test=null"), message, absent=[tmp_path / "runs"])


# ----------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("override, message", [
    ("trainer.precision=17-bits", "trainer.precision"),
    ("trainer.accelerator=quantum", "trainer.accelerator"),
    ("data.num_workers=-1", "data.num_workers"),
    ("model.loss.sigma_fg=-0.1", "model.loss.sigma_fg"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("trainer.strategy=no_such_strategy", "trainer:"),
    ("data.eval_batch_size=0", "data.eval_batch_size"),
    ("optim.grad_clip_norm=-1", "optim.grad_clip_norm"),
])
def test_bad_setting_refused_before_anything_is_written(env, tmp_path, capsys, override, message):
    refused(capsys, train_args(tmp_path, override), message, absent=[tmp_path / "runs"])
    # and the same name still trains afterwards: nothing blocks a rerun
    assert not (tmp_path / "runs" / "r" / "config.yaml").exists()


def test_gpu_without_gpu(env, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    refused(capsys, train_args(tmp_path, "trainer.accelerator=gpu"), "trainer:", absent=[tmp_path / "runs"])


def test_air_negative_slots(tmp_path, capsys):
    refused(capsys, ["train", "--config", "air-multi-mnist", f"out_dir={tmp_path / 'runs'}", "model.num_slots=-1"],
            "model.num_slots", absent=[tmp_path / "runs"])


@pytest.mark.parametrize("text, message", [("- a\n- b\n", "top level must be a mapping"),
                                           ("model: [unclosed\n", "cannot parse YAML"),
                                           ("trainer:\n  max_steps: many\n", "trainer.max_steps")])
def test_bad_yaml_file(tmp_path, capsys, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    refused(capsys, ["train", "--config", path, f"out_dir={tmp_path / 'runs'}"], message,
            absent=[tmp_path / "runs"])


def test_overwrite_cannot_escape_out_dir(env, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.yaml").write_text("precious: true\n")
    (tmp_path / "runs").mkdir()
    refused(capsys, train_args(tmp_path, "name=../victim", "--overwrite"), "must stay inside out_dir")
    assert (victim / "config.yaml").read_text() == "precious: true\n"


def test_overwrite_needs_our_marker(env, tmp_path, capsys):
    lookalike = tmp_path / "runs" / "r"
    lookalike.mkdir(parents=True)
    (lookalike / "config.yaml").write_text("not ours\n")
    refused(capsys, train_args(tmp_path, "--overwrite"), "no .scenedecomp-run marker")
    assert (lookalike / "config.yaml").read_text() == "not ours\n"


# ----------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture
def run_copy(env, tmp_path):
    """A copy of the trained tiny run that a test may damage."""
    import shutil

    target = tmp_path / "run"
    shutil.copytree(env["run"], target)
    return target


def _ckpt(run: Path) -> Path:
    return run / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("command", ["evaluate", "visualize", "resume"])
def test_crafted_pickle_never_runs(run_copy, tmp_path, capsys, command):
    marker = tmp_path / "pwned"
    state = torch.load(_ckpt(run_copy), map_location="cpu", weights_only=True)
    state["hyper_parameters"]["payload"] = _Payload(marker)
    torch.save(state, _ckpt(run_copy))
    args = {"evaluate": ["evaluate", run_copy],
            "visualize": ["visualize", run_copy, "--out", tmp_path / "figs"],
            "resume": ["train", "--config", "monet-demo", f"out_dir={tmp_path}", "name=run", "--resume", *TINY]}
    refused(capsys, args[command], "refused without running them", absent=[tmp_path / "figs"])
    assert not marker.exists(), "code ran from the checkpoint"


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable checkpoint"),
    (np.random.default_rng(5).integers(0, 256, 3000, dtype=np.uint8).tobytes(), "not a readable checkpoint"),
    ("no_state_dict", "no state_dict"),
    ("no_config", "no stored config"),
])
def test_not_a_checkpoint(run_copy, tmp_path, capsys, content, message):
    before = (run_copy / "metrics.json").read_bytes()
    if content == "no_state_dict":
        torch.save({"weights": torch.zeros(3)}, _ckpt(run_copy))
    elif content == "no_config":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, _ckpt(run_copy))
    else:
        _ckpt(run_copy).write_bytes(content)
    refused(capsys, ["evaluate", run_copy], message)
    assert (run_copy / "metrics.json").read_bytes() == before


def test_checkpoint_from_another_model(run_copy, capsys):
    from scenedecomp.training.module import SceneDecompModule

    cfg = load_config("air-multi-mnist", ["model.air.lstm_hidden=8", "model.air.what_dim=2",
                                          "model.air.what_hidden=8", "model.air.baseline_hidden=8"])
    module = SceneDecompModule(asdict(cfg), 1, 50)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, _ckpt(run_copy))
    refused(capsys, ["evaluate", run_copy], "model settings differ")


def test_checkpoint_same_keys_other_shapes(run_copy, tmp_path, capsys):
    state = torch.load(_ckpt(run_copy), map_location="cpu", weights_only=True)
    key = next(k for k, v in state["state_dict"].items() if v.dim() == 4)
    state["state_dict"][key] = torch.zeros(*state["state_dict"][key].shape[:-1], 5)
    torch.save(state, _ckpt(run_copy))
    refused(capsys, ["evaluate", run_copy, "--out", tmp_path / "m.json"], "size mismatch",
            absent=[tmp_path / "m.json"])


def test_config_image_size_disagrees_with_checkpoint(run_copy, capsys):
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    cfg["data"]["image_size"] = 24
    (run_copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    refused(capsys, ["evaluate", run_copy], "trained on 16x16 images")


# ----------------------------------------------------------------------------------------------- outputs
def test_evaluate_out_is_a_directory(run_copy, tmp_path, capsys):
    target = tmp_path / "outdir"
    target.mkdir()
    refused(capsys, ["evaluate", run_copy, "--out", target, "--quiet"], "is a directory")
    assert not list(target.iterdir()) and not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("tmp*"))


def test_evaluate_out_unwritable(run_copy, capsys):
    refused(capsys, ["evaluate", run_copy, "--out", "/proc/scenedecomp.json", "--quiet"], "cannot write")


@pytest.mark.parametrize("where", ["unwritable", "a_file"])
def test_visualize_bad_out(run_copy, tmp_path, capsys, where):
    out = Path("/proc/scenedecomp-figs") if where == "unwritable" else tmp_path / "file"
    if where == "a_file":
        out.write_text("x")
    refused(capsys, ["visualize", run_copy, "--out", out], "not" if where == "a_file" else "not writable")


@pytest.mark.parametrize("n", ["0", "-3"])
def test_visualize_num_images(run_copy, tmp_path, capsys, n):
    refused(capsys, ["visualize", run_copy, "--out", tmp_path / "figs", "--num-images", n], "--num-images",
            absent=[tmp_path / "figs"])


# ----------------------------------------------------------------------------------------------- good runs
def test_short_run_without_validation_succeeds_quietly(world):
    run = world["run"]
    assert world["code"] == 0
    assert not (run / "history.jsonl").exists() and (run / "metrics.json").is_file()
    noise = [line for line in world["stderr"].splitlines() if line.strip() and not line.startswith("generating ")]
    assert noise == [], "--quiet must silence Lightning's tips and warnings"
    assert (run / ".scenedecomp-run").is_file()


def test_outputs_respect_the_umask(world):
    run = world["run"]
    for name in ("metrics.json", "env.json", "config.yaml", "checkpoints/last.ckpt", "figures/decomposition_0.png"):
        mode = stat.S_IMODE((run / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_console_script_error_is_one_line(tmp_path):
    """A real process: no traceback reaches the terminal either."""
    result = subprocess.run([sys.executable, "-m", "scenedecomp.cli", "evaluate", str(tmp_path / "nothing")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_metrics_json_is_strict(world):
    json.loads((world["run"] / "metrics.json").read_text())
