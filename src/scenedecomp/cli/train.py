"""``scenedecomp train``: train a model from a preset (then its test metrics and figures)."""

from __future__ import annotations


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model from a preset", description=(
        "Train a model. The run directory <out_dir>/<name> receives the resolved config, versions, "
        "checkpoints, TensorBoard logs, the validation history, test metrics and figures."))
    p.add_argument("--config", required=True, help="preset name (see `scenedecomp presets`) or YAML path")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. trainer.max_steps=100 model.num_slots=5")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoints/last.ckpt")
    p.add_argument("--quiet", action="store_true", help="no progress bar, model summary or warnings")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import load_config
    from ..training.train import train

    cfg = load_config(args.config, args.overrides)
    metrics = train(cfg, overwrite=args.overwrite, resume=args.resume, quiet=args.quiet)
    print_summary(metrics, f"{cfg.out_dir}/{cfg.name}")
    return 0


def print_summary(metrics: dict, where: str) -> None:
    keys = ["fg_ari", "ari", "msc", "sc", "mse", "count_accuracy"]
    parts = []
    for key in keys:
        value = metrics.get(key)
        if value is not None and value == value:
            parts.append(f"{key.upper() if key != 'count_accuracy' else 'count acc'} {value:.4f}"
                         if key != "mse" else f"MSE {value:.2e}")
    decoded = [f"{label} {metrics[key]:.4f}" if key != "generative_mse" else f"{label} {metrics[key]:.2e}"
               for key, label in (("decoded_fg_ari", "FG_ARI"), ("decoded_msc", "MSC"),
                                  ("generative_mse", "generative MSE"))
               if isinstance(metrics.get(key), float) and metrics[key] == metrics[key]]
    if decoded:
        parts.append("decoded masks: " + ", ".join(decoded))
    if "train_seconds" in metrics:
        parts.append(f"train {metrics['train_seconds'] / 60:.1f} min ({metrics.get('train_steps', '?')} steps")
        if "train_images_per_s" in metrics:
            parts[-1] += f", {metrics['train_images_per_s']:.0f} images/s, {metrics.get('precision', '?')}"
        parts[-1] += ")"
    print(f"[{metrics.get('split', 'test')}, {metrics.get('num_images', '?')} images] " + ", ".join(parts))
    if "_path" in metrics:
        print(f"metrics written to {metrics['_path']}; run directory: {where}")
