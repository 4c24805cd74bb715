"""`visualize --traversals`: latent traversals and the component-VAE figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scenedecomp.cli import main
from scenedecomp.training.checkpoint import find_run, load_module
from scenedecomp.training.loaders import open_split
from scenedecomp.viz.traversals import largest_foreground_slot, traverse


@pytest.fixture(scope="module")
def monet(monet_run):
    _, ckpt, cfg = find_run(monet_run)
    return load_module(ckpt, cfg).model, open_split(cfg, "test")[3]["image"]


def test_traversal_centre_column_is_the_unchanged_decoding(monet):
    model, image = monet
    data = traverse(model, image, top=None, steps=7)
    with torch.no_grad():
        out = model(image[None])
        means, logits = model.component.decode(out.latents[0])
    masks = F.softmax(logits, dim=0)
    scene = (masks * means).sum(0)
    k = data["slot"]
    assert k == largest_foreground_slot(out) and k >= 1
    assert data["component"].shape == (5, 7, 3, 16, 16) and data["scene"].shape == (5, 7, 3, 16, 16)
    for row in range(5):  # t = 0 keeps every latent at its posterior mean
        torch.testing.assert_close(data["scene"][row, 3], scene.clamp(0, 1))
        torch.testing.assert_close(data["component"][row, 3], (masks[k] * means[k] + 1 - masks[k]).clamp(0, 1))
    kl = data["kl"].tolist()
    assert kl == sorted(kl, reverse=True) and sorted(data["dims"].tolist()) == list(range(5))
    # moving a latent changes the decoding (the decoder is not constant in z)
    assert (data["component"][0, 0] - data["component"][0, 6]).abs().max() > 0


def test_top_n_slot_and_sigma_options(monet):
    model, image = monet
    top = traverse(model, image, slot=2, top=2, sigma="posterior")
    full = traverse(model, image, slot=2)
    assert top["slot"] == 2 and top["dims"].tolist() == full["dims"][:2].tolist()
    assert not torch.equal(top["component"][:, 0], full["component"][:2, 0])  # posterior std != 1
    with pytest.raises(ValueError, match="slot 7"):
        traverse(model, image, slot=7)


def test_visualize_traversals_cli(monet_run, air_run, tmp_path, capsys):
    assert main(["visualize", str(monet_run), "--traversals", "--out", str(tmp_path / "m"), "--top", "3"]) == 0
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert len(names) == 2 and names[0] == "components_test0.png" and names[1].startswith("traversal_test0_slot")
    picture = tmp_path / "mine.png"
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(picture)
    assert main(["visualize", str(monet_run), "--traversals", "--out", str(tmp_path / "f"), "--image", str(picture),
                 "--slot", "1"]) == 0
    assert (tmp_path / "f" / "traversal_mine_slot1.png").is_file()
    assert main(["visualize", str(air_run), "--traversals", "--out", str(tmp_path / "a"), "--slot", "1",
                 "--top", "4"]) == 0
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["traversal_test0_slot1.png"]
    capsys.readouterr()
    for args in (["--slot", "9"], ["--image", "100000"], ["--image", str(tmp_path / "nope.png")]):
        assert main(["visualize", str(monet_run), "--traversals", "--out", str(tmp_path / "bad"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("scenedecomp: error"), err
    assert not (tmp_path / "bad").exists()


def test_largest_foreground_slot_skips_background_slots():
    from scenedecomp.models.output import ModelOutput

    labels = torch.zeros(10, 10, dtype=torch.long)
    labels[:6] = 1  # a second background slot: 60 % of the image
    labels[6:8, :5] = 3  # the largest object: 10 pixels
    labels[8, :3] = 2
    log_masks = torch.log(F.one_hot(labels, 4).permute(2, 0, 1).float().clamp_min(1e-9))[None, :, None]
    out = ModelOutput(torch.zeros(()), {}, log_masks, torch.zeros(1, 4, 3, 10, 10), torch.zeros(1, 3, 10, 10),
                      torch.zeros(1, 4, 2))
    assert largest_foreground_slot(out) == 3
    labels[6:] = 1  # only one non-background slot left, and it is large: fall back to it
    log_masks = torch.log(F.one_hot(labels, 4).permute(2, 0, 1).float().clamp_min(1e-9))[None, :, None]
    assert largest_foreground_slot(ModelOutput(out.loss, {}, log_masks, out.slot_recons, out.recon, out.latents)) == 1
