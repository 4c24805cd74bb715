"""The divergence guard: a NaN/inf loss term or gradient stops training in one line (last good checkpoint
kept, the batch's dataset indices written), or with trainer.skip_nonfinite_steps skips the step."""

from __future__ import annotations

import json

import pytest
import torch
from overrides import tiny_run

from scenedecomp.cli import main
from scenedecomp.data.samplers import ResumableSampler
from scenedecomp.training.module import SceneDecompModule

TINY = [*tiny_run(24, max_steps=6, val_every_n_steps=1000, checkpoint_every_n_steps=2, image_log_every_n_steps=0,
                  log_every_n_steps=1), "seed=7"]
BAD_STEP = 3


@pytest.fixture
def poisoned(monkeypatch, tmp_path):
    """Make the training forward at global step BAD_STEP non-finite: ``loss`` (a NaN loss term) or
    ``grad`` (a finite loss whose gradient is NaN: d sqrt(|x|)/dx at 0)."""
    monkeypatch.setenv("SCENEDECOMP_CACHE", str(tmp_path / "cache"))
    original = SceneDecompModule.forward

    def install(kind: str):
        def forward(self, image, num_slots=None):
            out = original(self, image, num_slots)
            if self.training and self.global_step == BAD_STEP:
                if kind == "loss":
                    name = sorted(out.loss_terms)[-1]
                    out.loss_terms[name] = out.loss_terms[name] * float("nan")
                    out.loss = out.loss + out.loss_terms[name]
                else:
                    p = next(self.model.parameters())
                    out.loss = out.loss + torch.sqrt((p - p.detach()).abs().sum())
            return out

        monkeypatch.setattr(SceneDecompModule, "forward", forward)

    return install


def _train(tmp_path, *extra):
    return main(["train", "--config", "monet-demo", "--quiet", f"out_dir={tmp_path / 'runs'}", "name=d", *TINY,
                 *extra])


def _last(tmp_path) -> dict:
    return torch.load(tmp_path / "runs" / "d" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("kind, what", [("loss", "loss term"), ("grad", "gradient of model.")])
def test_nonfinite_step_stops_in_one_line(poisoned, tmp_path, capsys, kind, what):
    poisoned(kind)
    assert _train(tmp_path) == 2
    err = "\n".join(line for line in capsys.readouterr().err.splitlines() if not line.startswith("generating "))
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"step {BAD_STEP}: non-finite {what}" in err and "last good checkpoint is kept" in err
    run = tmp_path / "runs" / "d"
    report = json.loads((run / "nonfinite_batch.json").read_text())
    # 3 batches per epoch: step 3 is epoch 1, batch 0; the indices are those the sampler served there
    assert (report["step"], report["epoch"], report["batch_idx"]) == (BAD_STEP, 1, 0)
    assert report["dataset_indices"] == ResumableSampler(24, 7, 8).batch_indices(1, 0)
    assert len(report["dataset_indices"]) == 8
    state = _last(tmp_path)
    assert state["global_step"] == 2, "last.ckpt is the last checkpoint before the bad step"
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert not (run / "metrics.json").exists()


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_skip_nonfinite_steps(poisoned, tmp_path, capsys, kind):
    poisoned(kind)
    assert _train(tmp_path, "trainer.skip_nonfinite_steps=true") == 0
    err = capsys.readouterr().err
    assert f"step {BAD_STEP}: non-finite" in err and "step skipped" in err
    rows = [json.loads(line) for line in (tmp_path / "runs" / "d" / "skipped_steps.jsonl").open()]
    assert [row["step"] for row in rows] == [BAD_STEP]
    state = _last(tmp_path)
    assert state["global_step"] == 6, "a skipped step still counts, so the run ends at max_steps"
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
