"""Model folders (``scenedecomp export``), ``pretrained:NAME`` and the shipped models: weights as safetensors,
loaded without pickle, accepted wherever a run is, and reproducing their recorded metrics."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch

import scenedecomp
from scenedecomp.cli import main
from scenedecomp.errors import RunError
from scenedecomp.evaluation import export
from scenedecomp.inference import pretrained
from scenedecomp.inference.run import find_run, load_weights


def cfg2_equal(exported_yaml: Path, run_yaml: Path) -> bool:
    """The exported config is the run's, less its local cache path and output folder."""
    from scenedecomp.config import load_config

    a, b = load_config(exported_yaml), load_config(run_yaml)
    b.data.options = {k: v for k, v in b.data.options.items() if k != "cache_dir"}
    assert a.out_dir == "runs"
    b.out_dir = a.out_dir
    return a == b


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def exported(monet_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny-monet"
    assert main(["export", str(monet_run), "--out", str(out), "--check-images", "16"]) == 0
    return out


@pytest.fixture
def shipped_here(exported, tmp_path, monkeypatch) -> str:
    """The exported folder as if shipped in the package, under the name ``tiny``."""
    root = tmp_path / "package-pretrained"
    root.mkdir()
    (root / "tiny").symlink_to(exported, target_is_directory=True)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", root)
    return "tiny"


def test_export_writes_the_format_with_tensors_only(exported, monet_run):
    assert sorted(p.name for p in exported.iterdir()) == sorted(pretrained.FILES)
    raw = (exported / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header length, JSON header, raw tensor bytes
    header = json.loads(raw[8:8 + header_len])
    assert header["__metadata__"]["format"] == pretrained.FORMAT and header["__metadata__"]["image_size"] == "16"
    _, ckpt, cfg = find_run(monet_run)
    assert set(header) - {"__metadata__"} == set(load_weights(ckpt, cfg).model.state_dict())
    prov = json.loads((exported / "provenance.json").read_text())
    assert prov["weights_sha256"] == hashlib.sha256(raw).hexdigest()
    assert prov["seed"] == 0 and prov["model"] == "monet" and prov["checkpoint_step"] == 4
    assert prov["command"].startswith("scenedecomp train") or prov["command"].startswith("scenedecomp ")
    assert "cache_dir" not in (exported / "config.yaml").read_text()  # a local path of the training machine
    assert cfg2_equal(exported / "config.yaml", monet_run / "config.yaml")
    recorded = json.loads((monet_run / "metrics.json").read_text())
    metrics = json.loads((exported / "metrics.json").read_text())
    assert metrics["fg_ari"] == pytest.approx(recorded["fg_ari"]) and "checkpoint" not in metrics
    check = json.loads((exported / "check.json").read_text())
    assert check["num_images"] == 16 and {"ari", "fg_ari", "msc", "mse", "decoded_msc"} <= set(check["metrics"])


def test_exported_weights_give_the_checkpoints_outputs(exported, monet_run):
    _, ckpt, cfg = find_run(monet_run)
    reference = load_weights(ckpt, cfg)
    folder, weights, cfg2 = find_run(exported)
    assert folder == exported and weights.name == "model.safetensors"
    module = load_weights(weights, cfg2)
    assert not module.model.training
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = reference(images), module(images)
    torch.testing.assert_close(b.log_masks, a.log_masks, rtol=0, atol=0)
    torch.testing.assert_close(b.latents, a.latents, rtol=0, atol=0)


def test_export_reproduces_its_check_and_air_exports_too(exported, air_run, tmp_path):
    result = export.verify(exported)
    assert result["ok"] and result["max_abs_diff"] <= 1e-4 and result["sha256_ok"], result
    air = export.export_run(air_run, tmp_path / "air", check_images=16)
    assert "count_accuracy" in json.loads((air / "check.json").read_text())["metrics"]
    assert export.verify(air)["ok"]
    from safetensors.torch import load_file

    keys = set(load_file(str(air / "model.safetensors")))  # the REINFORCE baseline is for training only
    assert keys and not any(k.startswith("baseline.") for k in keys)


def test_a_changed_weight_fails_the_check(exported, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "changed"
    copy.mkdir()
    for p in exported.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    weights = load_file(copy / "model.safetensors")
    key = next(k for k in weights if k.endswith("weight"))
    weights[key] = weights[key] + 0.5
    from safetensors import safe_open

    with safe_open(str(exported / "model.safetensors"), "pt") as fh:
        metadata = fh.metadata()
    save_file(weights, str(copy / "model.safetensors"), metadata=metadata)
    result = export.verify(copy)
    assert not result["ok"] and not result["sha256_ok"]


def test_export_refuses_unsafe_outputs_in_one_line(exported, monet_run, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere-empty")
    (tmp_path / "elsewhere-empty").mkdir()
    for out in (busy, a_file, exported, link):
        before = _digests(out) if out.is_dir() else out.read_bytes()
        assert main(["export", str(monet_run), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("scenedecomp: error: ") and "\n" not in err and str(out) in err
        assert (_digests(out) if out.is_dir() else out.read_bytes()) == before
    assert main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(exported), "--out", str(empty)]) == 0  # an empty folder; re-export of a folder
    from safetensors.torch import load_file

    a, b = load_file(empty / "model.safetensors"), load_file(exported / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((empty / "provenance.json").read_text())["checkpoint_step"] == 4


def test_damaged_or_foreign_weights_are_refused_in_one_line(exported, tmp_path, capsys):
    from safetensors.torch import save_file

    for name, write in (("truncated", lambda p: p.write_bytes((exported / "model.safetensors").read_bytes()[:300])),
                        ("foreign", lambda p: save_file({"w": torch.zeros(2)}, str(p))),
                        ("pickle", lambda p: torch.save({"state_dict": {}}, p))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text((exported / "config.yaml").read_text())
        write(folder / "model.safetensors")
        assert main(["evaluate", str(folder), "--out", str(tmp_path / "m.json"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"scenedecomp: error: {folder / 'model.safetensors'}: ") and "\n" not in err, err


def test_commands_take_a_model_folder_and_never_write_into_it(exported, tmp_path, monkeypatch, capsys):
    before = _digests(exported)
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(exported), "--quiet"]) == 0
    written = json.loads((tmp_path / "metrics_tiny-monet.json").read_text())
    recorded = json.loads((exported / "metrics.json").read_text())
    assert written["num_images"] == recorded["num_images"] and written["fg_ari"] == pytest.approx(recorded["fg_ari"])
    assert main(["evaluate", str(exported), "--split", "val", "--quiet"]) == 0
    assert (tmp_path / "metrics_tiny-monet_val.json").is_file()
    assert main(["visualize", str(exported), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "decomposition_0.png").is_file()
    assert main(["report", str(exported), "--no-traversals"]) == 0
    page = (tmp_path / "report_tiny-monet.html").read_text()
    assert "weights_sha256" in page and "Metrics" in page
    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (20, 20), (200, 30, 30)).save(image)
    assert main(["decompose", str(image), "--run", str(exported), "--out", str(tmp_path / "dec"), "--quiet"]) == 0
    assert (tmp_path / "dec" / "img" / "segmentation.png").is_file()
    assert _digests(exported) == before


def test_pretrained_names_list_load_and_decompose(shipped_here, exported, tmp_path, monkeypatch, capsys):
    assert main(["pretrained"]) == 0
    line = capsys.readouterr().out.strip()
    recorded = json.loads((exported / "metrics.json").read_text())
    assert line.startswith("pretrained:tiny") and f"fg_ari {recorded['fg_ari']:.4f}" in line
    assert main(["pretrained", "--check"]) == 0
    assert "check ok" in capsys.readouterr().out

    module, cfg = scenedecomp.load_pretrained("tiny")
    assert not module.model.training and cfg.model.name == "monet" and cfg.data.image_size == 16
    same, _ = scenedecomp.load_pretrained("pretrained:tiny")
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(module(images).log_masks, same(images).log_masks, rtol=0, atol=0)
    result = scenedecomp.decompose(images, module)
    assert result.labels.shape == (2, 16, 16)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "no-images").mkdir()
    assert main(["decompose", str(tmp_path / "no-images"), "--run", "pretrained:tiny", "--out",
                 str(tmp_path / "d"), "--quiet"]) == 2
    assert "no readable image" in capsys.readouterr().err
    from PIL import Image

    Image.new("RGB", (16, 16), (10, 200, 30)).save(tmp_path / "g.png")
    assert main(["decompose", str(tmp_path / "g.png"), "--run", "pretrained:tiny", "--out", str(tmp_path / "d"),
                 "--quiet"]) == 0
    assert main(["evaluate", "pretrained:tiny", "--quiet"]) == 0
    assert (tmp_path / "metrics_tiny.json").is_file()

    for bad in ("pretrained:nope", "pretrained:../tiny", "pretrained:"):
        assert main(["evaluate", bad, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"scenedecomp: error: {bad}: no such pretrained model (available: tiny; " \
                      "`scenedecomp pretrained`)", err
    with pytest.raises(RunError, match="no such pretrained model"):
        scenedecomp.load_pretrained("nope")


def test_no_pretrained_models_is_said_plainly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "none")
    assert main(["pretrained"]) == 0
    assert capsys.readouterr().out.strip() == "no pretrained models are shipped with this installation"


SHIPPED = sorted(pretrained.shipped())


@pytest.mark.parametrize("name", SHIPPED or [pytest.param(None, marks=pytest.mark.skip(
    reason="no model folder is shipped in src/scenedecomp/pretrained yet"))])
def test_each_shipped_model_reproduces_its_recorded_metrics(name):
    folder = pretrained.shipped()[name]
    assert sorted(p.name for p in folder.iterdir()) == sorted(pretrained.FILES)
    result = export.verify(f"pretrained:{name}")
    assert result["sha256_ok"], f"{name}: model.safetensors does not match provenance.json's weights_sha256"
    assert result["max_abs_diff"] <= 1e-4, (name, result["recorded"], result["measured"])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics.get("num_images", 0) > 0


def test_shipped_models_stay_small():
    total = sum(p.stat().st_size for p in Path(pretrained.PRETRAINED_DIR).rglob("*") if p.is_file())
    assert total < 15e6, f"shipped pretrained models take {total / 1e6:.1f} MB (budget 15 MB)"
