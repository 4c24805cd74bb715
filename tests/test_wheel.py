"""A wheel install carries the presets and the pretrained models: build the wheel, install it into a temp
target, run it from there (train one step; decompose with a pretrained model, no training)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from overrides import tiny_run

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny_run(16, max_steps=1)


def test_wheel_ships_presets_and_trains_one_step(tmp_path, monet_run):
    # build from a copy, so the shared source tree gets no build/ or egg-info litter
    src = tmp_path / "src-copy"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # a model folder shipped as package data, beside any real ones: `pretrained:tiny-wheel` in the install
    from scenedecomp.evaluation.export import export_run

    export_run(monet_run, src / "src" / "scenedecomp" / "pretrained" / "tiny-wheel", check_images=8)
    shipped_names = sorted(p.name for p in (src / "src" / "scenedecomp" / "pretrained").iterdir() if p.is_dir())
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("scenedecomp-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        files = [Path(n) for n in zf.namelist() if n.startswith("scenedecomp/configs/")]
    packaged = {p.stem for p in files if p.parent.name == "configs"}  # presets; fragments live in subfolders
    assert {"monet-demo", "air-multi-mnist", "monet-multi-sprites"} <= packaged
    fragments = {f"{p.parent.name}/{p.stem}" for p in files if p.parent.name != "configs"}
    assert {"model/monet-paper", "dataset/multi_sprites-32", "override/monet-paper+clevr"} <= fragments
    with zipfile.ZipFile(wheel) as zf:
        models = {n for n in zf.namelist() if n.startswith("scenedecomp/pretrained/")}
    for name in shipped_names:
        assert {f"scenedecomp/pretrained/{name}/{f}" for f in ("model.safetensors", "config.yaml", "metrics.json",
                                                               "provenance.json", "check.json")} <= models

    target = tmp_path / "target"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1",
           "SCENEDECOMP_CACHE": str(tmp_path / "cache")}
    work = tmp_path / "elsewhere"  # not the repository: nothing may come from the source tree
    work.mkdir()

    def run(*args):
        code = "import sys; from scenedecomp.cli import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.run([sys.executable, "-c", code, *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import scenedecomp; print(scenedecomp.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(target), where

    listed = run("presets")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    assert sorted(names) == sorted(packaged)

    trained = run("train", "--config", "monet-demo", "--quiet", f"out_dir={work / 'runs'}", "name=wheel", *TINY)
    assert trained.returncode == 0, trained.stderr[-2000:]
    run_dir = work / "runs" / "wheel"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "metrics.json").is_file()

    listed = run("pretrained")
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()) == [f"pretrained:{n}" for n in shipped_names]
    from PIL import Image

    Image.new("RGB", (40, 30), (30, 60, 220)).save(work / "my.png")
    for name in shipped_names:  # every shipped model decomposes a user's image from the install
        out = work / f"dec-{name}"
        decomposed = run("decompose", "my.png", "--run", f"pretrained:{name}", "--out", str(out), "--quiet")
        assert decomposed.returncode == 0, decomposed.stderr[-2000:]
        assert (out / "my" / "segmentation.png").is_file() and (out / "decompositions.npz").is_file()
