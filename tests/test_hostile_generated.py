"""The generated hostile corpus: seeded mutations (random bytes, truncations, bit flips, spliced chunks) of
valid PNG, TFRecord, HDF5, YAML, JSON and checkpoint files, each handed to the real CLI (in process).

For every input the invariant is checked, whatever the command makes of the file: exit 0 or 2, exactly one
stderr line on 2, no traceback, nothing written outside the named output, the run's files unchanged.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tfrecord_writer import example, make_scene, write_tfrecord

from scenedecomp.cli import main
from scenedecomp.data.deepmind.convert import convert

# how many mutated inputs of each kind (the total is what the default suite runs)
COUNTS = {"png": 40, "tfrecord": 45, "hdf5": 30, "yaml": 45, "json": 30, "checkpoint": 24, "report": 20}
STRATEGIES = ("flip", "truncate", "random", "splice")


def _png() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


YAML = """defaults: {preset: monet-demo}
name: mutated
seed: 3
data: {image_size: 16, num_train: 16, num_val: 8, num_test: 8, batch_size: 8}
model: {num_slots: 3, latent_dim: 4, loss: {beta: 0.5, gamma: 0.25}}
trainer: {max_steps: 2, val_every_n_steps: 1000, precision: 32-true}
optim: {lr: 1.0e-4, schedule: cosine, warmup_steps: 1}
"""


def mutate(data: bytes, index: int, kind: str) -> bytes:
    """The ``index``-th mutation of ``data`` (deterministic: seeded by kind and index)."""
    rng = np.random.default_rng([index, sum(kind.encode())])
    strategy = STRATEGIES[index % len(STRATEGIES)]
    n = len(data)
    if strategy == "random":
        return rng.integers(0, 256, int(rng.integers(0, 2 * n + 1)), dtype=np.uint8).tobytes()
    if strategy == "truncate":
        return data[: int(rng.integers(0, n))]
    buffer = bytearray(data)
    if strategy == "flip":
        for _ in range(int(rng.integers(1, 9))):
            position = int(rng.integers(0, n))
            buffer[position] ^= 1 << int(rng.integers(0, 8))
        return bytes(buffer)
    start, length = int(rng.integers(0, n)), int(rng.integers(1, max(2, n // 8)))
    chunk = bytes(buffer[start:start + length])
    if rng.random() < 0.5:  # delete a chunk
        del buffer[start:start + length]
    else:  # repeat it elsewhere
        at = int(rng.integers(0, n))
        buffer[at:at] = chunk
    return bytes(buffer)


def _digest(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Every file (and link) under ``root`` outside ``skip``, with a hash of its bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        if path.is_symlink():
            found[str(path)] = "link:" + os.readlink(path)
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[str(path)] = "dir"
    return found


@pytest.fixture(scope="module")
def bases(tmp_path_factory, monet_run):
    """The valid files that are mutated, and a warm data cache."""
    root = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(0)
    records = [example(make_scene("tetrominoes", rng)["features"]) for _ in range(4)]
    tfrecord = write_tfrecord(root / "tetrominoes.tfrecords", records, "none")
    h5 = convert("tetrominoes", tfrecord, root / "h5", progress=False, splits=(0.5, 0.25, 0.25))
    files = {"png": _png(), "tfrecord": tfrecord.read_bytes(), "hdf5": h5.read_bytes(), "yaml": YAML.encode(),
             "json": (monet_run / "metrics.json").read_bytes(),
             "checkpoint": (monet_run / "checkpoints" / "last.ckpt").read_bytes(),
             "report": (monet_run / "config.yaml").read_bytes() + b"\0" + (monet_run / "metrics.json").read_bytes()}
    return files


CASES = [(kind, i) for kind, count in COUNTS.items() for i in range(count)]


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 200


def test_mutations_are_seeded_and_differ(bases):
    data = bases["png"]
    assert mutate(data, 5, "png") == mutate(data, 5, "png")
    assert len({mutate(data, i, "png") for i in range(40)}) >= 35


@pytest.mark.parametrize("kind, index", CASES, ids=[f"{k}-{i}" for k, i in CASES])
def test_mutated_input_keeps_the_invariant(bases, monet_run, tmp_path, capsys, monkeypatch, kind, index):
    monkeypatch.setenv("SCENEDECOMP_CACHE", str(monet_run.parent / "cache"))
    data = mutate(bases[kind], index, kind)
    case = tmp_path / "case"
    case.mkdir()
    out = case / "out"  # the named output of every command
    run = monet_run
    if kind == "png":
        source = case / "input.png"
        args = ["decompose", source, "--run", run, "--out", out, "--quiet"]
    elif kind == "tfrecord":
        source = case / "input.tfrecords"
        args = ["data", "convert", "tetrominoes", "--src", source, "--out", out, "--no-progress"]
    elif kind == "hdf5":
        source = case / "input.h5"
        args = ["data", "info", source]
    elif kind == "yaml":  # the config is read and checked; --resume of a run that does not exist ends it there
        source = case / "config.yaml"
        args = ["train", "--config", source, f"out_dir={out}", "--resume", "--quiet"]
    elif kind == "json":  # an existing --out that is not a metrics object is refused before evaluating
        source = out / "metrics.json"
        out.mkdir()
        args = ["evaluate", run, "--out", source, "--quiet"]
    elif kind == "report":  # a run directory whose config.yaml (even cases) or metrics.json (odd) is damaged
        config, metrics = bases[kind].split(b"\0")
        run = case / "run"
        run.mkdir()
        (run / "config.yaml").write_bytes(config)
        (run / "metrics.json").write_bytes(metrics)
        source = run / ("metrics.json" if index % 2 else "config.yaml")
        data = mutate(source.read_bytes(), index // 2, kind)
        args = ["report", run, "--out", out / "report.html", "--no-traversals"]
    else:  # a checkpoint file outside any run directory: its own stored config is used
        source = case / "checkpoints" / "last.ckpt"
        source.parent.mkdir()
        args = ["evaluate", source, "--out", out / "metrics.json", "--quiet"]
        out.mkdir()
    source.write_bytes(data)
    outside = _digest(case, skip=(out,))
    run_before = _digest(run)
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("scenedecomp: error: "), err
    assert _digest(case, skip=(out,)) == outside, "written outside the named output"
    assert _digest(run) == run_before, "the run's files changed"
    if kind == "yaml" and out.exists():
        assert not any(out.iterdir()), "train --resume of a missing run wrote into out_dir"
    shutil.rmtree(case)
