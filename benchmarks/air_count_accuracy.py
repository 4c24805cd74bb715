"""Sanity benchmark: train AIR on ``multi_mnist`` for a wall-clock budget and track held-out count accuracy.

    python benchmarks/air_count_accuracy.py --minutes 10 --seed 0 --out air_seed0.json \
        [--config air-multi-mnist] [--set model.air.z_pres_prob=0.01 ...] [--threads 2]

A plain loop (no Lightning): Adam (fused kernel unless ``--no-fused``) on ``model.parameter_groups(lr)``
(model group at ``optim.lr``, baseline group at ``model.air.baseline_lr``), random batches drawn from the
cached training arrays, and every ``--eval-every`` seconds of training a deterministic (``eval()``) pass
over ``--num-eval`` test scenes (digit instances never seen in training). Evaluation time is not counted
in the training budget. Any AIR preset whose dataset is a generated one works (``--config
air-multi-sprites`` trains on ``multi_sprites`` the same way).

Writes JSON (and, with ``--out``, a PNG of accuracy vs wall-clock beside it): the configuration,
``curve`` (list of ``{step, train_seconds, count_accuracy, accuracy_by_count, elbo, mean_count}``),
``steps_per_second``, the final accuracy on the whole ``--num-final`` test scenes, and the time to the
first evaluation at >= 95% / >= 98%.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scenedecomp.config import load_config
from scenedecomp.data import open_dataset
from scenedecomp.models.air import AIR


def _batch(images: np.ndarray, index: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images[np.sort(index)]).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def evaluate(model: AIR, images: np.ndarray, counts: np.ndarray, batch_size: int = 500) -> dict:
    model.eval()
    preds, elbos, p_pres = [], [], []
    for start in range(0, len(images), batch_size):
        out = model(_batch(images, np.arange(start, min(start + batch_size, len(images)))))
        preds.append(out.extras["num_objects"].round().long())
        p_pres.append(out.extras["p_pres"])
        elbos.append(float(out.loss_terms["elbo"]) * out.recon.shape[0])
    model.train()
    pred = torch.cat(preds).numpy()
    probs = torch.cat(p_pres).numpy()
    correct = pred == counts
    mean_p = {int(k): [round(float(v), 3) for v in probs[counts == k].mean(0)] for k in np.unique(counts)}
    by_count = {int(k): round(float(correct[counts == k].mean()), 4) for k in np.unique(counts)}
    confusion = {}
    for t in np.unique(counts):
        for p in np.unique(pred):
            wrong = int(((counts == t) & (pred == p)).sum())
            if t != p and wrong:
                confusion[f"{int(t)}->{int(p)}"] = wrong
    return {"count_accuracy": round(float(correct.mean()), 4), "accuracy_by_count": by_count,
            "errors": confusion, "p_pres_by_count": mean_p, "elbo": round(sum(elbos) / len(images), 2),
            "mean_count": round(float(pred.mean()), 3)}


def lr_factor(cfg, step: int) -> float:
    """The learning-rate multiplier of ``optim.schedule`` (same formula as the training module)."""
    opt = cfg.optim
    warm = min(1.0, (step + 1) / opt.warmup_steps) if opt.warmup_steps else 1.0
    if opt.schedule == "cosine":
        progress = min(1.0, step / max(cfg.trainer.max_steps, 1))
        return warm * (opt.min_lr_ratio + (1 - opt.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    if opt.schedule == "exponential":
        return warm * opt.decay_rate ** (step / opt.decay_steps)
    return warm


def plot_curve(curve: list[dict], path: Path, title: str) -> None:
    """Held-out count accuracy (overall and per true count) against training wall-clock minutes."""
    import matplotlib.pyplot as plt

    from scenedecomp.viz.figures import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.2))
    minutes = [p["train_seconds"] / 60 for p in curve]
    ax.plot(minutes, [p["count_accuracy"] for p in curve], marker="o", ms=3, label="all", color="k")
    for count in sorted({k for p in curve for k in p["accuracy_by_count"]}):
        ax.plot(minutes, [p["accuracy_by_count"].get(count, float("nan")) for p in curve], lw=1,
                label=f"{count} digit{'' if str(count) == '1' else 's'}")
    for level in (0.95, 0.98):
        ax.axhline(level, color="grey", lw=0.6, ls="--")
    ax.set(xlabel="training wall-clock (min)", ylabel="held-out count accuracy", ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON output path (default: print only)")
    parser.add_argument("--config", default="air-multi-mnist", help="preset name or YAML path")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--eval-every", type=float, default=30.0, help="seconds of training between evals")
    parser.add_argument("--num-eval", type=int, default=1000, help="test scenes per periodic evaluation")
    parser.add_argument("--num-final", type=int, default=10000, help="test scenes for the final evaluation")
    parser.add_argument("--num-train", type=int, default=None, help="training scenes (default: the config's)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--save", type=Path, default=None, help="save the final model state_dict here")
    parser.add_argument("--no-fused", dest="fused", action="store_false", help="plain (unfused) Adam")
    args = parser.parse_args(argv)

    cfg = load_config(args.config, [*args.set, f"seed={args.seed}"])
    if cfg.model.name != "air":
        print(f"error: {args.config} is not an AIR config", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    options = dict(cfg.data.options)
    num_train = args.num_train or cfg.data.num_train
    train = open_dataset(cfg.data.name, "train", num_images=num_train, image_size=cfg.data.image_size,
                         cache_dir=args.cache_dir, **options)
    test = open_dataset(cfg.data.name, "test", num_images=max(args.num_eval, args.num_final),
                        image_size=cfg.data.image_size, cache_dir=args.cache_dir, **options)
    train_images = np.asarray(train.arrays["image"])
    test_images = np.asarray(test.arrays["image"])
    test_counts = np.asarray(test.arrays["num_objects"])

    model = AIR(cfg.model.air, in_channels=train_images.shape[-1], image_size=cfg.data.image_size)
    try:  # the fused kernel is several times faster on CPU for AIR's 4-6M parameters
        optimiser = torch.optim.Adam(model.parameter_groups(cfg.optim.lr), fused=args.fused)
    except (RuntimeError, TypeError):
        optimiser = torch.optim.Adam(model.parameter_groups(cfg.optim.lr))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: lr_factor(cfg, step))
    batch_size = cfg.data.batch_size
    budget = args.minutes * 60.0
    curve = []
    step, train_seconds, next_eval = 0, 0.0, 0.0
    wall_start = time.perf_counter()
    nan_steps = 0
    term_sums: dict[str, float] = {}
    term_steps = 0
    while True:
        done = train_seconds >= budget or bool(args.max_steps and step >= args.max_steps)
        if train_seconds >= next_eval or done:
            point = {"step": step, "train_seconds": round(train_seconds, 1),
                     **evaluate(model, test_images[: args.num_eval], test_counts[: args.num_eval]),
                     "train_terms": {k: round(v / max(term_steps, 1), 3) for k, v in term_sums.items()}}
            term_sums, term_steps = {}, 0
            curve.append(point)
            print(json.dumps(point), flush=True)
            next_eval = train_seconds + args.eval_every
            if done:
                break
        start = time.perf_counter()
        model.set_step(step)
        out = model(_batch(train_images, rng.integers(0, len(train_images), size=batch_size)))
        optimiser.zero_grad(set_to_none=True)
        if not torch.isfinite(out.loss):
            nan_steps += 1
            if nan_steps > 10:
                print("error: loss is not finite", file=sys.stderr)
                break
        else:
            out.loss.backward()
            if cfg.optim.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
            optimiser.step()
            scheduler.step()
            for key, value in out.loss_terms.items():
                term_sums[key] = term_sums.get(key, 0.0) + float(value.detach())
            term_steps += 1
        step += 1
        train_seconds += time.perf_counter() - start

    final = evaluate(model, test_images[: args.num_final], test_counts[: args.num_final])

    def first_time(threshold: float) -> float | None:
        hits = [p["train_seconds"] for p in curve if p["count_accuracy"] >= threshold]
        return hits[0] if hits else None

    result = {
        "config": args.config, "overrides": args.set, "seed": args.seed, "minutes": args.minutes,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "batch_size": batch_size, "lr": cfg.optim.lr, "fused_adam": args.fused,
        "baseline_lr": cfg.model.air.baseline_lr, "num_train": len(train_images),
        "steps": step, "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - wall_start, 1),
        "steps_per_second": round(step / max(train_seconds, 1e-9), 2),
        "final": {"num_test": int(min(args.num_final, len(test_images))), **final},
        "seconds_to_95": first_time(0.95), "seconds_to_98": first_time(0.98),
        "curve": curve,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.save)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        plot_curve(curve, args.out.with_suffix(".png"), f"AIR {args.config}, seed {args.seed}")
    return 0 if math.isfinite(final["elbo"]) else 1


if __name__ == "__main__":
    sys.exit(main())
