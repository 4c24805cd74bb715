"""Training-health warnings (metrics/health.py): they fire on deliberately broken decompositions, name the
measured value and what to try, stay silent on the ground truth's own decomposition, and reach the logger and
history.jsonl during validation."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch

from scenedecomp.data import open_dataset
from scenedecomp.metrics import health

K = 6


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    ds = open_dataset("multi_sprites", split="val", image_size=32, num_images=64,
                      cache_dir=str(tmp_path_factory.mktemp("cache")))
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x["image"] for x in items]), torch.stack([x["mask"] for x in items]).long()


def _log_masks(labels: torch.Tensor, k: int = K) -> torch.Tensor:
    """``[B,K,1,H,W]`` near-one-hot log masks putting each pixel in slot ``labels``."""
    onehot = torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2)[:, :, None].float()
    return torch.log(onehot * (1 - 1e-4 * k) + 1e-4)


def _report(labels, image, mask, decoded=None, truth=True, metrics=None, k=K):
    log_masks = _log_masks(labels, k)
    decoded_masks = _log_masks(decoded, k) if decoded is not None else log_masks
    stats = health.image_statistics(log_masks, image, decoded_masks, mask if truth else None)
    return health.health_report(stats, metrics)


def _codes(report) -> set[str]:
    return {w["code"] for w in report["warnings"]}


@pytest.mark.parametrize("truth", [True, False])
def test_silent_on_the_ground_truths_own_decomposition(scenes, truth):
    image, mask = scenes
    assert mask.max() == 4  # background and up to 4 sprites: five slots, as many as the scenes need
    report = _report(mask, image, mask, truth=truth, k=5)
    assert report["warnings"] == [], report
    # label-free, the scenes with one small sprite count as "one slot >= 95 %" (about 40 % of them)
    assert report["num_images"] == 64
    assert report["values"]["collapsed_images"] == 0.0 if truth else \
        report["values"]["collapsed_images"] < health.COLLAPSE_IMAGES
    assert report["values"]["decoded_agreement"] == 1.0


@pytest.mark.parametrize("truth", [True, False])
def test_one_slot_everywhere_is_a_collapse_and_leaves_slots_unused(scenes, truth):
    image, mask = scenes
    report = _report(torch.zeros_like(mask), image, mask, truth=truth)
    assert {"collapse", "unused_slots"} <= _codes(report)
    collapse = next(w for w in report["warnings"] if w["code"] == "collapse")
    assert collapse["value"] == 1.0 and "100% of" in collapse["message"]
    unused = next(w for w in report["warnings"] if w["code"] == "unused_slots")
    assert unused["value"] == K - 1 and "slots 1, 2, 3, 4, 5 of 6" in unused["message"]
    if truth:  # every multi-object scene has its objects in the one slot
        assert "merged_objects" in _codes(report)


@pytest.mark.parametrize("truth", [True, False])
def test_a_background_split_across_two_slots(scenes, truth):
    image, mask = scenes
    split = mask.clone()
    left = torch.zeros_like(mask, dtype=torch.bool)
    left[:, :, :16] = True
    split[(mask == 0) & left] = K - 1  # the left half of the background goes to a sixth slot
    report = _report(split, image, mask, decoded=split, truth=truth)
    assert _codes(report) == {"background_split"}, report
    warning = report["warnings"][0]
    assert 0.3 < warning["value"] < 0.8 and f"{warning['value']:.0%}" in warning["message"]


def test_objects_merged_into_one_slot_are_reported_with_their_colours(scenes):
    image, mask = scenes
    merged = mask.clone()
    merged[mask == 2] = 1  # objects 1 and 2 share slot 1 wherever both are present
    report = _report(merged, image, mask, decoded=merged)
    assert _codes(report) == {"merged_objects", "unused_slots"}, report  # slot 2 is empty now
    value = report["values"]["merged_images"]
    merge = next(w for w in report["warnings"] if w["code"] == "merged_objects")
    both = ((mask == 1).flatten(1).sum(1) >= 11) & ((mask == 2).flatten(1).sum(1) >= 11)  # 1 % of 32x32
    multi = torch.stack([(torch.bincount(m.flatten(), minlength=5)[1:] >= 11).sum() >= 2 for m in mask])
    assert value == pytest.approx(both.sum().item() / multi.sum().item(), abs=1e-4) and value > 0.5
    assert "similar colour" in merge["message"]
    assert 0.0 <= report["values"]["merged_similar_colour"] <= 1.0
    label_free = health.health_report(health.image_statistics(_log_masks(merged), image, None, None))
    assert "merged_objects" not in _codes(label_free) and "merged_images" not in label_free["values"]


def test_a_sliver_given_to_its_neighbours_slot_is_not_a_merge(scenes):
    image, mask = scenes
    sliver = mask.clone()
    sliver[:, 0, 0] = 7  # a one-pixel object in every scene, in the slot of whatever covers the corner
    report = _report(mask, image, sliver, k=5)
    assert "merged_objects" not in _codes(report) and report["values"]["merged_images"] == 0.0, report


@pytest.mark.parametrize("truth", [True, False])
def test_decoded_masks_without_layout(scenes, truth):
    image, mask = scenes
    constant = torch.zeros_like(mask)  # every decoded mask says "slot 0 everywhere"
    report = _report(mask, image, mask, decoded=constant, truth=truth, k=5)
    assert _codes(report) == {"decoded_masks_no_layout"}, report
    assert report["values"]["decoded_agreement"] == 0.0
    # with ground truth the validation's decoded MSC far below MSC fires too, even at fair agreement
    fine = _report(mask, image, mask, metrics={"msc": 0.8, "decoded_msc": 0.1}, k=5)
    assert _codes(fine) == {"decoded_masks_no_layout"} and "decoded MSC 0.10 vs the attention's 0.80" in \
        fine["warnings"][0]["message"]


def test_every_warning_is_one_line_with_advice_and_the_docs():
    image = torch.rand(16, 3, 8, 8)
    mask = torch.randint(0, 3, (16, 8, 8))
    report = health.health_report(health.image_statistics(_log_masks(torch.zeros_like(mask)), image,
                                                          _log_masks(torch.zeros_like(mask)), mask))
    assert report["warnings"]
    for warning in report["warnings"]:
        message = warning["message"]
        assert "\n" not in message and message.startswith(f"health: {warning['code']}: ")
        assert health.ADVICE[warning["code"]] in message and health.DOCS in message
    with open("docs/troubleshooting.md") as fh:
        docs = fh.read()
    for code in health.ADVICE:
        assert f"`{code}`" in docs, code


def test_too_few_images_give_no_verdict():
    mask = torch.zeros(3, 8, 8, dtype=torch.long)
    report = health.health_report(health.image_statistics(_log_masks(mask), None, None, None))
    assert report == {"num_images": 3, "values": {}, "warnings": []}


def test_validation_logs_each_warning_once(caplog):
    from test_precision import TINY

    from scenedecomp.config import load_config
    from scenedecomp.training.module import SceneDecompModule

    module = SceneDecompModule.from_config(load_config("monet-demo", TINY), 3, 16)
    module._trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, global_step=7)
    mask = torch.randint(0, 3, (16, 16, 16))
    stats = health.image_statistics(_log_masks(torch.zeros_like(mask), 3), torch.rand(16, 3, 16, 16), None, mask)
    module._val_health = {k: [v] for k, v in stats.items()}
    with caplog.at_level(logging.WARNING, logger="scenedecomp.health"):
        module._check_health({})
    lines = [r.getMessage() for r in caplog.records if r.name == "scenedecomp.health"]
    assert len(lines) == len(module.health["warnings"]) >= 2
    assert all(line.startswith("step 7: health: ") for line in lines)


def test_training_records_health_in_history(monet_run):
    rows = [json.loads(line) for line in (monet_run / "history.jsonl").read_text().splitlines()]
    assert rows and all("health" in row for row in rows)
    report = rows[-1]["health"]
    assert report["num_images"] == 16 and "median_top_share" in report["values"]
    assert all({"code", "value", "message"} <= set(w) for w in report["warnings"])


def test_report_has_a_health_section(monet_run, tmp_path):
    from scenedecomp.evaluation.report import build_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((monet_run / "config.yaml").read_text())
    collapse = {"code": "collapse", "value": 1.0, "message": "health: collapse: one slot <b>everywhere</b>"}
    rows = [{"step": 100, "health": {"num_images": 16, "values": {"median_top_share": 1.0}, "warnings": [collapse]}},
            {"step": 200, "health": {"num_images": 16, "values": {"median_top_share": 0.93}, "warnings": []}}]
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = build_report(run, traversals=False).read_text()
    section = page[page.index("<h2>Training health</h2>"):]
    section = section[:section.index("<h2>", 5)]
    assert "<td>collapse</td><td>100</td><td>100</td><td>1</td><td>False</td>" in section
    assert "&lt;b&gt;everywhere&lt;/b&gt;" in section and "<b>everywhere" not in section  # escaped
    assert "step 200" in section and "<td>median_top_share</td><td>0.9300</td>" in section
    (run / "history.jsonl").write_text(json.dumps({"step": 5, "loss": 1.0}) + "\n")  # older runs: no section
    assert "Training health" not in build_report(run, traversals=False).read_text()
