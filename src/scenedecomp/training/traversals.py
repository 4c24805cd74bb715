"""``visualize --traversals``: latent traversal and component-VAE figures for a run (figures in
:mod:`scenedecomp.viz.traversals`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def write_traversals(path: str | os.PathLike, out_dir: str | os.PathLike, split: str = "test",
                     image: str | int = 0, slot: int | None = None, top: int | None = None,
                     num_slots: int | None = None, sigma: str = "prior") -> list[Path]:
    """Write ``traversal_<image>_slot<k>.png`` and, for MONet, ``components_<image>.png`` to ``out_dir``.

    ``image``: an index into ``split`` of the run's dataset, or an image file (resized/converted as by
    ``decompose``). ``slot``: default the largest foreground slot. ``top``: only the ``top`` dimensions
    by KL (all by default). Bad choices raise :class:`~.run.RunError` with one line.
    """
    from ..viz.figures import save_figure
    from ..viz.traversals import component_figure, traversal_figure, traverse
    from .checkpoint import find_run, inference_slots, load_module
    from .loaders import open_split
    from .run_dir import RunError

    run_dir, ckpt, cfg = find_run(path)
    module = load_module(ckpt, cfg)
    num_slots = inference_slots(module, num_slots)
    model = module.model
    if str(image).lstrip("-").isdigit():
        dataset = open_split(cfg, split)
        index = int(image)
        if not 0 <= index < len(dataset):
            raise RunError(f"--image {index}: {cfg.data.name} {split} has {len(dataset)} images "
                           f"(0..{len(dataset) - 1})")
        picture, label = dataset[index]["image"], f"{split}{index}"
    else:
        from PIL import Image

        from ..decomposition import _model_geometry, read_image

        file = Path(image)
        try:
            picture = read_image(file, *_model_geometry(module)).image
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise RunError(f"--image {file}: not a readable image ({str(err).splitlines()[0][:120]})") from None
        from ..safeio import safe_name

        label = safe_name(file.stem, "image")
    if top is not None and top < 1:
        raise RunError(f"--top must be at least 1, got {top}")
    k = num_slots or module.eval_num_slots
    try:
        data = traverse(model, picture, slot=slot, top=top, num_slots=k, sigma=sigma)
    except ValueError as err:
        raise RunError(f"--traversals: {err}") from None
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"{out_dir}: cannot create output directory ({err.strerror})") from None
    written = [save_figure(traversal_figure(data, f"{cfg.name} {label}"),
                           out_dir / f"traversal_{label}_slot{data['slot']}.png")]
    if data["model"] == "monet":
        with torch.no_grad():
            written.append(save_figure(component_figure(model, picture[None], k), out_dir / f"components_{label}.png"))
    return written
