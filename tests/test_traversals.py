"""`visualize --traversals`: latent traversals and the component-VAE figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from overrides import TINY_MONET
from PIL import Image

from scenedecomp.cli import main
from scenedecomp.config import load_config
from scenedecomp.inference.loaders import open_split
from scenedecomp.inference.run import find_run, load_weights
from scenedecomp.models import build_model
from scenedecomp.models.monet import gaussian_kl, mask_kl, mixture_nll
from scenedecomp.viz.traversals import (
    choose_traversal,
    decode_scenes,
    largest_foreground_slot,
    mask_movement,
    swap_slots,
    traverse,
)


@pytest.fixture(scope="module")
def monet(monet_run):
    _, ckpt, cfg = find_run(monet_run)
    return load_weights(ckpt, cfg).model, open_split(cfg, "test")[3]["image"]


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
    movement = data["movement"].tolist()
    assert movement == sorted(movement, reverse=True) and sorted(data["dims"].tolist()) == list(range(5))
    # moving a latent changes the decoding (the decoder is not constant in z)
    assert (data["component"][0, 0] - data["component"][0, 6]).abs().max() > 0


def test_posterior_mean_scene_is_the_generative_reconstruction(monet):
    """At the posterior mean the recomposed scene is the model's own generative reconstruction: every slot
    decoded from its latent, under its decoded mask."""
    model, image = monet
    data = traverse(model, image, steps=5, span=2.0)
    with torch.no_grad():
        out = model(image[None])
    generative = (out.extras["recon_log_masks"].exp() * out.slot_recons).sum(1)[0]
    torch.testing.assert_close(data["scene"][0, 2], generative.clamp(0, 1))


def test_data_sweep_spans_the_given_range_and_ranks_by_mask_change(monet):
    model, image = monet
    value_range = torch.tensor([[-1.0, 2.0], [0.0, 0.5], [-3.0, -1.0], [0.2, 0.3], [-0.5, 0.5]])
    data = traverse(model, image, slot=1, steps=4, sigma="data", value_range=value_range)
    dims = data["dims"]
    torch.testing.assert_close(data["values"], torch.stack(
        [torch.linspace(float(lo), float(hi), 4) for lo, hi in value_range[dims]]))
    with torch.no_grad():  # the movement of the first row, computed independently
        out = model(image[None])
        z = out.latents[0].clone()
        ends = []
        for value in value_range[dims[0]]:
            z[1, dims[0]] = value
            _, logits = model.component.decode(z)
            ends.append(F.softmax(logits, dim=0)[1])
    assert abs(float(data["movement"][0]) - float((ends[0] - ends[1]).abs().mean())) < 1e-5
    with pytest.raises(ValueError, match="value_range"):
        traverse(model, image, sigma="data")


def test_choose_traversal_picks_the_slot_that_moves_most(monet):
    model, image = monet
    images = torch.stack([image, image.flip(-1), image.flip(-2)])
    index, slot = choose_traversal(model, images, sigma="prior")
    with torch.no_grad():
        out = model(images)
    scores = {}
    for i in range(3):
        for k in range(1, out.num_slots):
            values = out.latents[i, k][:, None] + torch.linspace(-3, 3, 7)[None]
            scores[i, k] = float(mask_movement(model, out.latents[i], k, values).topk(3).values.sum())
    assert (index, slot) == max(scores, key=scores.get)


def test_swap_slots_moves_an_object_between_scenes(monet):
    model, image = monet
    images = torch.stack([image, image.flip(-1)])
    with torch.no_grad():
        out = model(images)
        swapped = swap_slots(model, out.latents, (0, 1), (1, 2))
        z = out.latents[0].clone()
        z[1] = out.latents[1, 2]
        means, logits = model.component.decode(z)
        generative = decode_scenes(model, out.latents)
    expected = (F.softmax(logits, dim=0) * means).sum(0).clamp(0, 1)
    torch.testing.assert_close(swapped[0], expected)
    own = (out.extras["recon_log_masks"].exp() * out.slot_recons).sum(1).clamp(0, 1)
    torch.testing.assert_close(generative, own)  # decoding the latents is the model's generative reconstruction


def test_top_n_slot_and_sigma_options(monet):
    model, image = monet
    top = traverse(model, image, slot=2, top=2, sigma="posterior")
    full = traverse(model, image, slot=2, sigma="posterior")
    assert top["slot"] == 2 and top["dims"].tolist() == full["dims"][:2].tolist()
    prior = traverse(model, image, slot=2, sigma="prior")
    by_dim = {int(d): i for i, d in enumerate(prior["dims"])}
    first = int(top["dims"][0])
    assert not torch.equal(top["component"][0, 0], prior["component"][by_dim[first], 0])  # posterior std != 1
    with pytest.raises(ValueError, match="slot 7"):
        traverse(model, image, slot=7)


def test_visualize_traversals_cli(monet_run, air_run, tmp_path, capsys):
    assert main(["visualize", str(monet_run), "--traversals", "--out", str(tmp_path / "m"), "--top", "3"]) == 0
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert len(names) == 2 and names[0].startswith("components_test") and names[1].startswith("traversal_test")
    assert main(["visualize", str(monet_run), "--samples", "--out", str(tmp_path / "s"), "--num-images", "4"]) == 0
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["samples.png"]
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


def _squares(n: int, generator: torch.Generator, size: int = 16, side: int = 5):
    """``n`` scenes of one light square on a dark background at a random place: images ``[n,3,S,S]``, log masks
    ``[n,2,1,S,S]`` (slot 0 the background, slot 1 the square) and the squares' top-left corners ``[n,2]``."""
    corners = torch.randint(0, size - side + 1, (n, 2), generator=generator)
    square = torch.zeros(n, size, size)
    for i, (y, x) in enumerate(corners.tolist()):
        square[i, y:y + side, x:x + side] = 1
    masks = torch.stack([1 - square, square], 1)[:, :, None]
    images = (0.25 + 0.5 * square[:, None]).expand(n, 3, size, size).clone()
    return images, (masks * (1 - 2e-3) + 1e-3).log(), corners


def _centroid(mask: torch.Tensor) -> torch.Tensor:
    """``[H,W]`` -> ``(y, x)`` centre of mass."""
    ys, xs = torch.meshgrid(torch.arange(mask.shape[0]), torch.arange(mask.shape[1]), indexing="ij")
    return torch.stack([(mask * ys).sum(), (mask * xs).sum()]) / mask.sum()


def test_a_trained_component_vae_moves_the_decoded_mask_with_its_latent():
    """The component VAE of a tiny MONet, trained here on ground-truth masks at the demo's mask weight
    (gamma_decoder 20), learns where the square is: the decoded mask of a scene's slot latent sits on its
    square, and moving the latent from one scene's value to another's (``swap_slots``' edit) moves the
    decoded mask's centroid from the first square to the second. Untrained, the decoded mask is nowhere.
    (A 4-dimensional latent trained for 700 steps codes position across its dimensions, so the test moves
    the whole latent rather than one dimension.)"""
    torch.manual_seed(0)
    cfg = load_config("monet-demo", ["data.image_size=16", "model.num_slots=2", *TINY_MONET])
    model = build_model(cfg.model, 3, 16)
    vae, generator = model.component, torch.Generator().manual_seed(0)
    sigmas = torch.tensor([0.09, 0.11])

    def latents_of(images, log_masks):
        b = images.shape[0]
        x = images[:, None].expand(b, 2, *images.shape[1:]).reshape(b * 2, *images.shape[1:])
        mean, logvar = vae.encode(x, log_masks.reshape(b * 2, 1, 16, 16))
        return mean.view(b, 2, -1), logvar.view(b, 2, -1)

    def centroids(images, log_masks):
        """Decoded-mask centroids of slot 1 for the latents along the path from scene 0's to scene 1's."""
        with torch.no_grad():
            mean, _ = latents_of(images, log_masks)
            path = [torch.lerp(mean[0], mean[1], t) for t in (0.0, 0.5, 1.0)]
            _, logits = vae.decode(torch.stack(path).reshape(6, -1))
        masks = F.softmax(logits.view(3, 2, 16, 16), dim=1)
        return torch.stack([_centroid(m[1]) for m in masks])

    side = 5
    images, log_masks, corners = _squares(2, torch.Generator().manual_seed(3), side=side)
    while (corners[0] - corners[1]).abs().max() < 6:  # two squares far apart
        images, log_masks, corners = _squares(2, generator, side=side)
    truth = corners.float() + (side - 1) / 2
    before = centroids(images, log_masks)
    opt = torch.optim.Adam(vae.parameters(), 3e-3)
    for _ in range(700):
        batch, batch_masks, _ = _squares(32, generator, side=side)
        mean, logvar = latents_of(batch, batch_masks)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        means, logits = vae.decode(z.reshape(64, -1))
        means, logits = means.view(32, 2, 3, 16, 16), logits.view(32, 2, 1, 16, 16)
        loss = (mixture_nll(batch, batch_masks, means, sigmas) + 0.5 * gaussian_kl(mean, logvar).sum((1, 2))
                + 20 * mask_kl(batch_masks, logits)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = centroids(images, log_masks)
    assert (before[[0, 2]] - truth).norm(dim=1).min() > 2.0, before  # untrained: not on the squares
    assert (after[[0, 2]] - truth).norm(dim=1).max() < 1.5, (after, truth)  # on each scene's square
    assert (after[2] - after[0]).norm() > 5.0  # the latent carries the square across the image
