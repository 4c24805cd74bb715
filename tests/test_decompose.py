"""`scenedecomp decompose` and `scenedecomp.decompose`: files written, values, conversions, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import scenedecomp
from scenedecomp.cli import main
from scenedecomp.inference.decompose import slot_statistics
from scenedecomp.inference.run import find_run, load_weights


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    """16x16 RGB, a grey 40x30, an RGBA, a corrupt file and a text file."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)).save(folder / "rgba.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (folder / "notes.txt").write_text("not an image, not a candidate")
    return folder


def test_decompose_folder_cli(monet_run, images_dir, tmp_path, capsys):
    out = tmp_path / "dec"
    assert main(["decompose", str(images_dir), "--run", str(monet_run), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    summary = captured.out.strip().splitlines()
    assert len(summary) == 1 and "decomposed 3 images" in summary[0] and "images/s" in summary[0]
    assert "1 unreadable file skipped" in summary[0] and "1 resized" in summary[0]
    assert "corrupt.png" in captured.err and captured.err.count("centre-cropped") == 1  # said once
    assert sorted(p.name for p in out.iterdir()) == ["decompositions.npz", "grey", "rgb", "rgba"]
    k = 3
    for name in ("rgb", "grey", "rgba"):
        files = {p.name for p in (out / name).iterdir()}
        assert files == {"input.png", "segmentation.png", "overlay.png", "reconstruction.png",
                         "decomposition.json", *(f"slot_{s}.png" for s in range(k))}, files
    assert not list(out.rglob(".*")), "no temporary files left"

    npz = np.load(out / "decompositions.npz")
    assert list(npz["names"]) == ["grey", "rgb", "rgba"]
    assert npz["masks"].shape == (3, k, 16, 16) and npz["latent_mean"].shape[:2] == (3, k)
    assert npz["latent_logvar"].shape == npz["latent_mean"].shape
    np.testing.assert_allclose(npz["masks"].sum(1), 1, atol=1e-5)
    assert np.array_equal(npz["labels"], npz["masks"].argmax(1))
    assert np.array_equal(npz["area"].sum(1), np.full(3, 256))

    # indexed segmentation = the labels; slot alpha = the mask; JSON = the npz row
    seg = Image.open(out / "rgb" / "segmentation.png")
    assert seg.mode == "P" and np.array_equal(np.asarray(seg), npz["labels"][1])
    slot = np.asarray(Image.open(out / "rgb" / "slot_1.png"))
    assert slot.shape == (16, 16, 4)
    np.testing.assert_allclose(slot[..., 3] / 255, npz["masks"][1, 1], atol=1 / 255)
    info = json.loads((out / "rgb" / "decomposition.json").read_text())
    assert info["num_slots"] == k and len(info["slots"]) == k
    np.testing.assert_allclose(info["slots"][2]["latent_mean"], npz["latent_mean"][1, 2], rtol=1e-5)
    assert sum(s["mask_area"] for s in info["slots"]) == 256
    grey = json.loads((out / "grey" / "decomposition.json").read_text())
    assert grey["resized"] and grey["original_size"] == [30, 40] and grey["original_mode"] == "L"
    assert json.loads((out / "rgba" / "decomposition.json").read_text())["original_mode"] == "RGBA"

    # the Python API gives the same numbers as tensors, and equals the model applied directly
    result = scenedecomp.decompose(sorted(images_dir.glob("*.png")), monet_run)
    assert result.names == ["corrupt", "grey", "rgb", "rgba"][1:] and len(result.skipped) == 1
    torch.testing.assert_close(result.latent_mean, torch.from_numpy(npz["latent_mean"]))
    _, ckpt, cfg = find_run(monet_run)
    module = load_weights(ckpt, cfg)
    with torch.no_grad():
        direct = module.model(result.images)
    torch.testing.assert_close(result.latent_mean, direct.latents)
    torch.testing.assert_close(result.latent_logvar, direct.extras["latent_logvar"])
    torch.testing.assert_close(result.recon, direct.recon.clamp(0, 1))


def test_decompose_tensor_api_resizes_and_converts(monet_run):
    rgb = torch.rand(2, 3, 16, 16)
    result = scenedecomp.decompose(rgb, monet_run)
    assert result.images.shape == (2, 3, 16, 16) and torch.equal(result.images, rgb)
    assert result.notes["resized"] == 0
    big = scenedecomp.decompose(torch.rand(3, 32, 32), monet_run)  # [C,H,W], another size
    assert big.images.shape == (1, 3, 16, 16) and big.notes["resized"] == 1
    uint8 = scenedecomp.decompose((np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8), monet_run)
    assert uint8.images.shape == (1, 3, 16, 16)


def test_slot_statistics_on_a_known_label_map():
    labels = torch.zeros(1, 6, 8, dtype=torch.long)
    labels[0, 1:3, 2:5] = 1  # rows 1-2, cols 2-4
    masks = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2)[:, :, None].float()
    stats = slot_statistics(labels, masks)
    assert stats["area"].tolist() == [[42, 6, 0]]
    assert stats["bbox"][0, 1].tolist() == [2, 1, 5, 3] and stats["bbox"][0, 0].tolist() == [0, 0, 8, 6]
    assert stats["centroid"][0, 1].tolist() == [3.0, 1.5]
    assert torch.isnan(stats["bbox"][0, 2]).all() and torch.isnan(stats["centroid"][0, 2]).all()
    assert stats["soft_area"].tolist() == [[42.0, 6.0, 0.0]]


def test_decompose_air_reports_z_pres_and_z_where(air_run, images_dir, tmp_path, capsys):
    out = tmp_path / "air"
    assert main(["decompose", str(images_dir / "rgb.png"), "--run", str(air_run), "--out", str(out), "--quiet"]) == 0
    info = json.loads((out / "rgb" / "decomposition.json").read_text())
    steps = info["slots"][1:]
    assert steps and all("z_pres" in s and len(s["z_where"]) == 3 for s in steps)
    assert info["slots"][0]["latent_logvar"] is None
    npz = np.load(out / "decompositions.npz")
    assert npz["z_where"].shape == (1, len(steps), 3) and "latent_logvar" not in npz


@pytest.mark.parametrize("case", ["all_unreadable", "out_is_file", "no_run", "bad_slots"])
def test_decompose_bad_input_one_line_nothing_written(monet_run, tmp_path, capsys, case):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(good)
    out = tmp_path / "out"
    args = {"all_unreadable": [str(bad), "--run", str(monet_run), "--out", str(out)],
            "out_is_file": [str(good), "--run", str(monet_run), "--out", str(good)],
            "no_run": [str(good), "--run", str(tmp_path / "nope"), "--out", str(out)],
            "bad_slots": [str(good), "--run", str(monet_run), "--out", str(out), "--num-slots", "1"]}[case]
    capsys.readouterr()
    assert main(["decompose", *args, "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("scenedecomp: error")]
    assert len(err) == 1, err
    assert {"all_unreadable": "no readable image", "out_is_file": "not a directory", "no_run": "no such run",
            "bad_slots": "at least 2"}[case] in err[0]
    assert not out.exists()
