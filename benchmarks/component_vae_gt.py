"""MONet's component VAE alone, with the ground-truth masks of multi_sprites (32x32, K=5) as its attention
masks: does it learn to decode the masks (a layout) from its latents, and at which loss balance?

The loss is MONet's, ``lam * nll + beta * kl_z + gamma * kl_mask`` (``lam`` stands for a fixed GECO weight),
with the demo's encoder/decoder widths. Every 250 steps it prints one JSON line, on 256 test images: the loss
terms, the segmentation by the decoded masks (``decoded_msc``, ``decoded_fg_ari``), the generative
reconstruction error and the number of latent dimensions per slot with KL > 0.1. One thread.

    python benchmarks/component_vae_gt.py --steps 500 --gamma 20                     # learns a layout
    python benchmarks/component_vae_gt.py --steps 750 --gamma 0.5                    # the paper's balance
    python benchmarks/component_vae_gt.py --steps 750 --lam 64 --gamma 1280 --bf16   # same ratio, KL(z) / 64
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from scenedecomp import metrics as M
from scenedecomp.data import open_dataset
from scenedecomp.models.component_vae import ComponentConfig, ComponentVAE
from scenedecomp.models.monet import gaussian_kl, mask_kl, mixture_nll

K, SIZE = 5, 32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eps", type=float, default=1e-6, help="ground-truth masks smoothed to eps..1-(K-1)eps")
    p.add_argument("--lam", type=float, default=1.0, help="weight of the NLL (a fixed GECO lambda)")
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--dec", type=int, default=16, help="broadcast decoder channels")
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast, as the demo trains")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    train = open_dataset("multi_sprites", split="train", image_size=SIZE)
    test = open_dataset("multi_sprites", split="test", image_size=SIZE)

    def log_masks(labels: torch.Tensor) -> torch.Tensor:  # [B,H,W] labels -> [B,K,1,H,W]
        onehot = F.one_hot(labels.clamp(max=K - 1), K).permute(0, 3, 1, 2)[:, :, None].float()
        return (onehot * (1 - K * a.eps) + a.eps).log()

    vae = ComponentVAE(ComponentConfig(encoder_channels=[32, 32, 64], encoder_hidden=128, decoder_channels=a.dec),
                       3, SIZE, a.latent)
    opt = torch.optim.Adam(vae.parameters(), 1e-3)
    sigmas = torch.tensor([0.09] + [0.11] * (K - 1))
    items = [test[i] for i in range(256)]
    test_images = torch.stack([t["image"] for t in items])
    test_masks = torch.stack([t["mask"] for t in items])

    def run(images: torch.Tensor, lm: torch.Tensor, sample: bool):
        b = images.shape[0]
        x = images[:, None].expand(b, K, 3, SIZE, SIZE).reshape(b * K, 3, SIZE, SIZE)
        mean, logvar = vae.encode(x, lm.reshape(b * K, 1, SIZE, SIZE))
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        means, logits = vae.decode(z)
        means, logits = means.view(b, K, 3, SIZE, SIZE), logits.view(b, K, 1, SIZE, SIZE)
        kl = gaussian_kl(mean, logvar).view(b, K, -1)
        return mixture_nll(images, lm, means, sigmas), kl.sum((1, 2)), mask_kl(lm, logits), logits, means, kl

    start, generator = time.time(), torch.Generator().manual_seed(a.seed)
    for step in range(1, a.steps + 1):
        batch = [train[int(i)] for i in torch.randint(len(train), (32,), generator=generator)]
        images = torch.stack([t["image"] for t in batch])
        with torch.autocast("cpu", torch.bfloat16, enabled=a.bf16):
            nll, kl_z, kl_m, *_ = run(images, log_masks(torch.stack([t["mask"] for t in batch])), True)
        loss = (a.lam * nll + a.beta * kl_z + a.gamma * kl_m).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 10)
        opt.step()
        if step % 250 and step != a.steps:
            continue
        with torch.no_grad():
            nll, kl_z, kl_m, logits, means, kl = run(test_images, log_masks(test_masks), False)
            seg = M.segmentation_metrics(test_masks, F.log_softmax(logits, 1))
            generative = (F.softmax(logits, 1) * means).sum(1)
        print(json.dumps({
            "step": step, "seconds": round(time.time() - start), "nll": round(float(nll.mean())),
            "kl_z": round(float(kl_z.mean()), 1), "kl_mask": round(float(kl_m.mean()), 1),
            "decoded_msc": round(float(seg["msc"].nanmean()), 3),
            "decoded_fg_ari": round(float(seg["fg_ari"].nanmean()), 3),
            "generative_mse": round(float(M.mse(test_images, generative).mean()), 4),
            "active_dims": (kl.mean(0) > 0.1).sum(1).tolist()}), flush=True)


if __name__ == "__main__":
    main()
