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
from overrides import tiny_run
from PIL import Image
from tfrecord_writer import example, make_scene, write_tfrecord

from scenedecomp.cli import main
from scenedecomp.config import load_config
from scenedecomp.data import open_dataset
from scenedecomp.data.deepmind.convert import convert

TINY = tiny_run(16, max_steps=2, val_every_n_steps=1000, checkpoint_every_n_steps=1000, image_log_every_n_steps=0,
                log_every_n_steps=1)


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


def _strict_json(text: str):
    """``json.loads`` that refuses NaN, Infinity and -Infinity (which Python's json writes and reads by default)."""
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_metrics_json_is_strict(world):
    metrics = _strict_json((world["run"] / "metrics.json").read_text())
    assert isinstance(metrics["mse"], float) and metrics["num_images"] > 0
    with pytest.raises(ValueError, match="NaN"):  # the parser does refuse what Python's json.dumps would write
        _strict_json(json.dumps({**metrics, "ari": float("nan")}))


# ======================================================================================= round two
# Outputs stay where they are told, nothing is read without bounds, runs are transactions, images decode as
# documented, and every failure is one line (exit 2) or, for a bug, one line and a log file (exit 1).
def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (symlinks not followed) with its bytes."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"<link>")
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def _png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (grey ``[H,W]`` or RGB ``[H,W,3]``), written by hand (Pillow cannot write 16-bit RGB)."""
    h, w = array.shape[:2]
    kind = 0 if array.ndim == 2 else 2
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, kind, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _header_only_png(side: int) -> bytes:
    """A PNG whose header claims side x side pixels (the pixel data is never reached)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def _decompose(run, out, *inputs, extra=()):
    return ["decompose", *inputs, "--run", run, "--out", out, "--quiet", *extra]


# ----------------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("stem", ["..", "...", ". ", "a\\b"])
def test_decompose_output_names_stay_inside_out(env, tmp_path, capsys, stem):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / f"{stem}.png").write_bytes(GOOD_PNG)
    out = tmp_path / "box" / "out"
    out.parent.mkdir()
    assert main(_decompose(env["run"], out, inputs)) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"], "nothing beside --out"
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0].name not in ("", ".", "..") and (folders[0] / "input.png").is_file()
    assert not (tmp_path / "box" / "input.png").exists() and not (tmp_path / "input.png").exists()


def test_decompose_rerun_replaces_stale_outputs(env, tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(GOOD_PNG)
    out = tmp_path / "out"
    assert main(_decompose(env["run"], out, image, extra=["--num-slots", "5"])) == 0
    assert (out / "a" / "slot_4.png").is_file()
    (out / "stale.txt").write_text("from before")
    assert main(_decompose(env["run"], out, image, extra=["--num-slots", "3"])) == 0
    assert sorted(p.name for p in (out / "a").glob("slot_*.png")) == ["slot_0.png", "slot_1.png", "slot_2.png"]
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no staging folder left"


def test_decompose_out_is_the_input_folder(env, tmp_path, capsys):
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "a.png").write_bytes(GOOD_PNG)
    before = _tree(folder)
    refused(capsys, _decompose(env["run"], folder, folder), "holds the input")
    assert _tree(folder) == before


def test_decompose_out_inside_the_input_folder_is_not_read(env, tmp_path, capsys):
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "a.png").write_bytes(GOOD_PNG)
    out = folder / "out"
    assert main(_decompose(env["run"], out, folder)) == 0
    assert main(_decompose(env["run"], out, folder)) == 0  # the second run must not take the first's PNGs
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a"]


def test_decompose_refuses_a_folder_of_other_files(env, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    image = tmp_path / "a.png"
    image.write_bytes(GOOD_PNG)
    refused(capsys, _decompose(env["run"], out, image), "holds other files")
    assert (out / "notes.txt").read_text() == "keep me"


def test_interrupted_decompose_leaves_nothing(env, tmp_path, capsys, monkeypatch):
    import scenedecomp.inference.decompose as D

    for name in ("a", "b"):
        (tmp_path / f"{name}.png").write_bytes(_png_bytes(np.full((16, 16, 3), 99, np.uint8)))
    calls = []
    real = D._run_batch

    def stop_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(D, "_run_batch", stop_on_second)
    out = tmp_path / "out"
    refused(capsys, _decompose(env["run"], out, tmp_path / "a.png", tmp_path / "b.png", extra=["--batch-size", "1"]),
            "nothing was written", code=130, absent=[out])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".scenedecomp")]


def test_report_out_cannot_replace_a_checkpoint(run_copy, capsys):
    before = _ckpt(run_copy).read_bytes()
    refused(capsys, ["report", run_copy, "--out", _ckpt(run_copy), "--no-traversals"], "report must be")
    assert _ckpt(run_copy).read_bytes() == before


@pytest.mark.parametrize("target", ["config.yaml", "env.json"])
def test_report_out_cannot_replace_run_files(run_copy, capsys, target):
    before = (run_copy / target).read_bytes()
    refused(capsys, ["report", run_copy, "--out", run_copy / target, "--no-traversals"], "report")
    assert (run_copy / target).read_bytes() == before


def test_evaluate_step_checkpoint_keeps_the_runs_metrics(run_copy, capsys):
    step = run_copy / "checkpoints" / "step0000001.ckpt"
    step.write_bytes(_ckpt(run_copy).read_bytes())
    before = (run_copy / "metrics.json").read_bytes()
    assert main(["evaluate", step, "--quiet"]) == 0
    assert (run_copy / "metrics.json").read_bytes() == before
    own = json.loads((run_copy / "metrics_test_step0000001.json").read_text())
    assert own["checkpoint"] == str(step) and "train_steps" not in own


def test_evaluate_out_onto_a_non_json_file(run_copy, tmp_path, capsys):
    target = tmp_path / "notes.json"
    target.write_bytes(b"\x89PNG not json")
    refused(capsys, ["evaluate", run_copy, "--out", target, "--quiet"], "not a metrics JSON file")
    assert target.read_bytes() == b"\x89PNG not json"


def test_evaluate_out_cannot_replace_the_checkpoint(run_copy, capsys):
    before = _ckpt(run_copy).read_bytes()
    refused(capsys, ["evaluate", run_copy, "--out", _ckpt(run_copy), "--quiet"], "must be a .json file")
    assert _ckpt(run_copy).read_bytes() == before


def test_evaluate_disentanglement_refusal_writes_nothing(run_copy, tmp_path, capsys, monkeypatch):
    import scenedecomp.evaluation.latents as D

    def refuse(*args, **kwargs):
        raise D.DisentanglementError("no per-object factors")

    monkeypatch.setattr(D, "score_split", refuse)
    out = tmp_path / "m.json"
    refused(capsys, ["evaluate", run_copy, "--out", out, "--disentanglement", "--quiet"], "no per-object factors",
            absent=[out])


def test_truncated_metrics_json_is_replaced_by_evaluate(run_copy, capsys):
    (run_copy / "metrics.json").write_text('{"fg_ari": 0.8')
    assert main(["evaluate", run_copy, "--quiet"]) == 0
    assert "fg_ari" in json.loads((run_copy / "metrics.json").read_text())


# ----------------------------------------------------------------------------------------------- bounds
def test_report_does_not_follow_symlinks(run_copy, tmp_path, capsys):
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png_bytes(np.full((8, 8, 3), 7, np.uint8)) + b"PRIVATE-KEY-MATERIAL")
    (run_copy / "figures" / "decomposition_9.png").symlink_to(secret)
    (run_copy / "figures" / "traversal_0_slot1.png").symlink_to("/dev/zero")
    out = tmp_path / "r.html"
    assert main(["report", run_copy, "--out", out, "--no-traversals"]) == 0
    import base64

    page = out.read_text()
    assert base64.b64encode(secret.read_bytes()).decode()[:40] not in page
    assert "left out" in capsys.readouterr().err


def test_report_figures_folder_that_is_a_symlink(run_copy, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "decomposition_0.png").write_bytes(_png_bytes(np.full((8, 8, 3), 9, np.uint8)))
    import shutil

    shutil.rmtree(run_copy / "figures")
    (run_copy / "figures").symlink_to(elsewhere)
    out = tmp_path / "r.html"
    assert main(["report", run_copy, "--out", out, "--no-traversals"]) == 0
    assert "data:image/png" not in out.read_text().split("Decompositions")[-1][:200]


BILLION_LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("command", ["report", "evaluate"])
def test_yaml_alias_bomb_refused(run_copy, tmp_path, capsys, command):
    assert len(BILLION_LAUGHS) < 600
    (run_copy / "config.yaml").write_text(BILLION_LAUGHS)
    args = ["report", run_copy, "--out", tmp_path / "r.html", "--no-traversals"] if command == "report" else \
        ["evaluate", run_copy, "--out", tmp_path / "m.json", "--quiet"]
    refused(capsys, args, "YAML", absent=[tmp_path / "r.html", tmp_path / "m.json"])


def test_yaml_alias_bomb_as_train_config(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    refused(capsys, ["train", "--config", path, f"out_dir={tmp_path / 'runs'}"], "YAML", absent=[tmp_path / "runs"])


def test_report_refuses_python_tags(run_copy, tmp_path, capsys):
    (run_copy / "config.yaml").write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    refused(capsys, ["report", run_copy, "--out", tmp_path / "r.html", "--no-traversals"], "cannot parse YAML",
            absent=[tmp_path / "r.html"])


def test_report_history_rows_that_are_not_objects(run_copy, tmp_path, capsys):
    (run_copy / "history.jsonl").write_text('[1, 2]\n"text"\n{"step": "x", "fg_ari": 1}\n{"step": 1, "fg_ari": 0.5}\n')
    (run_copy / "metrics.json").write_text('{"train_steps": "many", "train_seconds": [1], "fg_ari": "high"}')
    assert main(["report", run_copy, "--out", tmp_path / "r.html", "--no-traversals"]) == 0


def test_huge_png_header_capped_in_decompose(env, tmp_path, capsys):
    (tmp_path / "huge.png").write_bytes(_header_only_png(13000))
    (tmp_path / "ok.png").write_bytes(GOOD_PNG)
    assert main(_decompose(env["run"], tmp_path / "out", tmp_path / "huge.png", tmp_path / "ok.png")) == 0
    err = capsys.readouterr().err
    assert "MP cap" in err and "huge.png" in err
    assert not (tmp_path / "out" / "huge").exists()


def test_huge_png_as_traversal_image(env, tmp_path, capsys):
    (tmp_path / "huge.png").write_bytes(_header_only_png(13000))
    refused(capsys, ["visualize", env["run"], "--out", tmp_path / "f", "--traversals", "--image",
                     tmp_path / "huge.png"], "MP cap")


@pytest.mark.parametrize("override, message", [
    ("model.num_slots=1000000", "above the limit"), ("data.image_size=100000", "above the limit"),
    ("data.batch_size=10000000", "above the limit"), ("optim.lr=nan", "optim.lr"), ("seed=-5", "seed"),
    ("model.loss.beta=nan", "must be"),
])
def test_settings_out_of_bounds(env, tmp_path, capsys, override, message):
    refused(capsys, train_args(tmp_path, override), message, absent=[tmp_path / "runs"])


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "-5"], "batch size"), (["--batch-size", "100000"], "above the limit"),
    (["--num-slots", "1000000"], "above the limit"), (["--num-slots", "0"], "at least 2"),
])
def test_evaluate_arguments_out_of_bounds(run_copy, tmp_path, capsys, args, message):
    refused(capsys, ["evaluate", run_copy, "--out", tmp_path / "m.json", "--quiet", *args], message,
            absent=[tmp_path / "m.json"])


def test_visualize_num_slots_zero_is_refused_like_evaluate(run_copy, tmp_path, capsys):
    refused(capsys, ["visualize", run_copy, "--out", tmp_path / "f", "--num-slots", "0"], "at least 2",
            absent=[tmp_path / "f"])


def test_benchmark_batch_size_zero(capsys):
    refused(capsys, ["benchmark", "step", "--batch-size", "0"], "at least 1")


def test_benchmark_efficiency_error_on_stderr(tmp_path, capsys):
    refused(capsys, ["benchmark", "efficiency", "--slots", "3", "--image-size", "48", "--out-dir", tmp_path / "e"],
            "multiple of 32", absent=[tmp_path / "e"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_decompose_cuda_without_gpu(env, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(GOOD_PNG)
    refused(capsys, _decompose(env["run"], tmp_path / "out", tmp_path / "a.png", extra=["--device", "cuda"]),
            "not available", absent=[tmp_path / "out"])


def test_decompose_bad_device_name(env, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(GOOD_PNG)
    refused(capsys, _decompose(env["run"], tmp_path / "out", tmp_path / "a.png", extra=["--device", "toaster"]),
            "not a device name", absent=[tmp_path / "out"])


# ----------------------------------------------------------------------------------------------- clear words
def test_png_given_as_a_run(tmp_path, capsys):
    (tmp_path / "pic.png").write_bytes(GOOD_PNG)
    refused(capsys, ["evaluate", tmp_path / "pic.png"], "not a PyTorch checkpoint")


def test_dev_null_as_a_run(capsys):
    refused(capsys, ["evaluate", "/dev/null"], "not a regular file")


@pytest.mark.parametrize("config, message", [("dir", "is a directory"), ("/dev/null", "not a regular file"),
                                             ("missing/conf.yaml", "no such config file")])
def test_config_that_is_not_a_file(tmp_path, capsys, config, message):
    path = tmp_path if config == "dir" else (tmp_path / config if config.startswith("missing") else config)
    refused(capsys, ["train", "--config", path, f"out_dir={tmp_path / 'runs'}"], message, absent=[tmp_path / "runs"])


def test_cache_variable_naming_a_file(env, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "cachefile"
    blocker.write_text("x")
    monkeypatch.setenv("SCENEDECOMP_CACHE", str(blocker))
    refused(capsys, train_args(tmp_path, "data.num_train=24"), "is not a directory")
    assert blocker.read_text() == "x"


def test_air_evaluate_with_two_slots(air_run, tmp_path, capsys):
    """AIR keeps its trained K at inference (the one rule, as for a one-pass attention): another K is refused
    with one line by evaluate and decompose; its own K is accepted."""
    refused(capsys, ["evaluate", air_run, "--num-slots", "2", "--out", tmp_path / "m.json"],
            "K at inference (num_slots) 2: this model was trained with a fixed K=4", absent=[tmp_path / "m.json"])
    Image.new("RGB", (24, 24), (10, 200, 30)).save(tmp_path / "g.png")
    refused(capsys, ["decompose", tmp_path / "g.png", "--run", air_run, "--out", tmp_path / "d", "--num-slots", "3"],
            "fixed K=4", absent=[tmp_path / "d"])
    assert main(["evaluate", air_run, "--num-slots", "4", "--out", tmp_path / "m.json", "--quiet"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["num_slots"] == 4
    refused(capsys, ["evaluate", air_run, "--num-slots", "1000", "--out", tmp_path / "n.json"], "above the limit",
            absent=[tmp_path / "n.json"])


@pytest.mark.parametrize("args, message", [
    (["visualize", "RUN", "--out", "OUT", "--num-images", "0"], "--num-images must be at least 1, got 0"),
    (["visualize", "RUN", "--out", "OUT", "--samples", "--num-images", "-3"], "--num-images must be at least 1"),
    (["visualize", "RUN", "--out", "OUT", "--traversals", "--top", "0"], "--top must be at least 1, got 0"),
    (["export", "RUN", "--out", "OUT", "--check-images", "0"], "--check-images must be at least 1, got 0"),
])
def test_flag_values_are_refused_by_the_command_that_names_them(tmp_path, capsys, args, message):
    """The CLI checks its flags' values and names the flag; the library functions behind it name parameters."""
    args = [str(tmp_path / "run") if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    refused(capsys, args, message, absent=[tmp_path / "out"])


def test_fixed_k_model_refuses_another_k_in_one_line(tmp_path, capsys, monkeypatch):
    """The one rule for K at inference (``LoadedRun.num_slots``, from ``SceneModel.adjustable_num_slots``): a
    one-pass ResNet attention predicts a fixed number of masks, so evaluate, visualize and decompose refuse
    another K with one line, before any output is written; its own K is accepted."""
    from scenedecomp.config import to_yaml
    from scenedecomp.training.module import SceneDecompModule

    monkeypatch.setenv("SCENEDECOMP_CACHE", str(tmp_path / "cache"))
    cfg = load_config("monet-demo", [*TINY, "data.image_size=32", "model.attention.type=resnet",
                                     "model.attention.backbone=resnet18", "model.num_slots=3"])
    module = SceneDecompModule.from_config(cfg, 3, 32)
    run = tmp_path / "rn"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
               run / "checkpoints" / "last.ckpt")
    (run / "config.yaml").write_text(to_yaml(cfg))
    Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "g.png")
    for args in (["evaluate", run, "--out", tmp_path / "m.json"], ["visualize", run, "--out", tmp_path / "fig"],
                 ["decompose", tmp_path / "g.png", "--run", run, "--out", tmp_path / "dec"]):
        refused(capsys, [*args, "--num-slots", "4"], "K at inference (num_slots) 4: this model was trained with a "
                "fixed K=3", absent=[tmp_path / "m.json", tmp_path / "fig", tmp_path / "dec"])
    assert main(["decompose", tmp_path / "g.png", "--run", run, "--out", tmp_path / "dec", "--num-slots", "3",
                 "--quiet"]) == 0


def test_unexpected_error_is_one_line_and_a_log(tmp_path, capsys, monkeypatch):
    import scenedecomp.config.presets as P

    def broken():
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(P, "list_presets", broken)
    capsys.readouterr()
    assert main(["presets"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "internal error" in lines[0] and "ZeroDivisionError" in lines[0]
    log = Path(lines[0].rsplit(" ", 1)[-1].rstrip(")"))
    assert "Traceback" in log.read_text() and "a bug" in log.read_text()
    log.unlink()


def test_quiet_silences_python_warnings(run_copy, capsys):
    import warnings

    import scenedecomp.evaluation.evaluate as E

    real = E.evaluate_module

    def noisy(*args, **kwargs):
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E, "evaluate_module", noisy)
        capsys.readouterr()
        assert main(["evaluate", run_copy, "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- images
def test_float_tiff_in_unit_range(tmp_path):
    from scenedecomp.inference.images import read_image

    path = tmp_path / "f.tif"
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    image = read_image(path, 3, (8, 8)).image
    assert torch.allclose(image, torch.full_like(image, 0.5))


def test_float_tiff_in_the_image_folder_dataset(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(np.full((8, 8), 0.25, np.float32)).save(folder / f"{i}.tif")
    image = open_dataset(folder, "train", image_size=8, extensions=[".tif"])[0]["image"]
    assert torch.allclose(image, torch.full_like(image, 0.25), atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 3)])
def test_sixteen_bit_png_by_bit_depth(tmp_path, shape):
    from scenedecomp.inference.images import read_image

    path = tmp_path / "x.png"
    path.write_bytes(_png16(np.full(shape, 32768, np.uint16)))
    image = read_image(path, 3, (8, 8)).image
    assert torch.allclose(image, torch.full_like(image, 32768 / 65535), atol=1 / 255), image.flatten()[:3]


# ----------------------------------------------------------------------------------------------- runs
def test_resume_with_an_edited_config_rewrites_nothing(env, tmp_path, capsys):
    import shutil

    shutil.copytree(env["run"], tmp_path / "runs" / "r")
    run = tmp_path / "runs" / "r"
    before = _tree(run)
    refused(capsys, train_args(tmp_path, "model.num_slots=4", "trainer.max_steps=4", "--resume"), "cannot resume")
    assert _tree(run) == before


def test_resume_with_another_image_size_rewrites_nothing(env, tmp_path, capsys):
    import shutil

    shutil.copytree(env["run"], tmp_path / "runs" / "r")
    run = tmp_path / "runs" / "r"
    before = _tree(run)
    refused(capsys, train_args(tmp_path, "data.image_size=24", "trainer.max_steps=4", "--resume"), "cannot resume")
    assert _tree(run) == before


def test_a_second_process_is_kept_out_of_the_run(env, tmp_path, capsys):
    import shutil

    from scenedecomp.training.train import RunLock

    shutil.copytree(env["run"], tmp_path / "runs" / "r")
    run = tmp_path / "runs" / "r"
    before = _tree(run)
    lock = RunLock(tmp_path / "runs" / ".r.lock")
    lock.acquire(run)  # another process holds the run (flock is per open file, so this stands in for it)
    try:
        refused(capsys, train_args(tmp_path, "--overwrite"), "another scenedecomp process")
    finally:
        lock.release()
    assert _tree(run) == before
    assert not (tmp_path / "runs" / ".r.lock").exists()


def test_a_start_without_checkpoint_does_not_block_a_rerun(env, tmp_path, capsys):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / ".scenedecomp-run").write_text("x")
    (run / "config.yaml").write_text("name: r\n")
    (run / "nonfinite_batch.json").write_text("{}")
    assert main(train_args(tmp_path)) == 0, capsys.readouterr().err
    assert _ckpt(run).is_file() and not (run / "nonfinite_batch.json").exists()


@pytest.mark.parametrize("signame", ["SIGINT", pytest.param("SIGTERM", marks=pytest.mark.slow)])
def test_interrupted_train_saves_a_checkpoint_and_resumes(env, tmp_path, signame):
    """A real process: Ctrl-C (or SIGTERM) mid-training exits 130 with one line saying how to resume, and
    --resume continues from the saved step."""
    import signal
    import time

    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "scenedecomp.cli", *train_args(tmp_path)[:-2], *[a for a in TINY if "max_steps" not in
            a], "trainer.max_steps=1000000", "trainer.num_threads=1"]
    args = [str(a) for a in args]
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "SCENEDECOMP_CACHE": str(env["root"] / "cache"), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not (runs / "r" / "tensorboard").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.5)
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("generating ")]
    assert proc.returncode == 130, err
    assert len(lines) == 1 and "--resume" in lines[0] and "Traceback" not in err, err
    assert _ckpt(runs / "r").is_file()
    assert main([*train_args(tmp_path)[:-2], *[a for a in TINY if "max_steps" not in a], "--resume",
                 f"trainer.max_steps={torch.load(_ckpt(runs / 'r'), weights_only=True)['global_step'] + 2}"]) == 0
    assert json.loads((runs / "r" / "metrics.json").read_text())["train_steps"] >= 2


def test_version_answers_without_torch():
    code = ("import sys; from scenedecomp.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n"
            "    pass\nmain(['presets'])\nprint('torch' in sys.modules, 'lightning' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"
    assert result.stdout.startswith("scenedecomp ")


@pytest.mark.parametrize("splits", ["nan,0,1", "2,-1,0", "inf,0,0"])
def test_convert_bad_splits_leave_no_partial(tmp_path, capsys, splits):
    src = _tfrecord(tmp_path)
    out = tmp_path / "out"
    refused(capsys, [*_convert_args(src, out), "--splits", splits], "splits", absent=[out])
