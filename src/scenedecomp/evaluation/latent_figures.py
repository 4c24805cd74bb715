"""``visualize --traversals``: latent traversal and component-VAE figures for a run (figures in
:mod:`scenedecomp.viz.traversals`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

CANDIDATES = 16  # test images searched for the traversal that moves an object most
RANGE_IMAGES = 64  # test images whose slot latents give each dimension's range (sigma="data")


def latent_range(model, images: torch.Tensor, num_slots: int | None = None) -> torch.Tensor:
    """``[D,2]``: the 2nd and 98th percentile of each latent dimension's posterior mean over every slot
    of ``images``."""
    with torch.no_grad():
        latents = model(images, num_slots).latents
    flat = latents.reshape(-1, latents.shape[-1]).float()
    return torch.stack([flat.quantile(0.02, dim=0), flat.quantile(0.98, dim=0)], dim=1)


def write_traversals(path: str | os.PathLike, out_dir: str | os.PathLike, split: str = "test",
                     image: str | int | None = None, slot: int | None = None, top: int | None = None,
                     num_slots: int | None = None, sigma: str = "data") -> list[Path]:
    """Write ``traversal_<image>_slot<k>.png`` and, for MONet, ``components_<image>.png`` to ``out_dir``.

    ``image``: an index into ``split`` of the run's dataset, an image file (resized/converted as by
    ``decompose``), or None: among the first 16 images of ``split`` and their foreground slots, the one
    whose dimensions move the decoded mask most (MONet; AIR and others: image 0). ``slot``: default the
    chosen slot (or the largest foreground slot). ``top``: only the ``top`` dimensions by how much they
    move the decoded mask (all by default). ``sigma``: the sweep (``data``: each dimension over its 2nd-98th
    percentile on 64 images of ``split``; ``prior``; ``posterior``; see :mod:`scenedecomp.viz.traversals`).
    Bad choices raise :class:`~scenedecomp.errors.RunError` with one line.
    """
    from ..errors import RunError
    from ..inference.loaders import open_split
    from ..inference.run import find_run, load_weights
    from ..viz.figures import save_figure
    from ..viz.traversals import choose_traversal, component_figure, traversal_figure, traverse
    from .evaluate import output_dir

    run_dir, ckpt, cfg = find_run(path)
    loaded = load_weights(ckpt, cfg, run_dir)
    num_slots = loaded.num_slots(num_slots)
    model = loaded.model
    k = num_slots or loaded.config.model.eval_num_slots
    if top is not None and top < 1:
        raise RunError(f"top must be at least 1, got {top}")
    dataset = None
    if image is None or str(image).lstrip("-").isdigit() or sigma == "data":
        dataset = open_split(cfg, split)
    value_range = None
    is_vae = model.latent_decoder == "slot_vae"
    if sigma == "data":
        if not is_vae:
            sigma = "prior"  # AIR reports no posterior scale or decoded masks: its sweep is the prior's
        else:
            pool = torch.stack([dataset[i]["image"] for i in range(min(RANGE_IMAGES, len(dataset)))])
            value_range = latent_range(model, pool, k)
    if image is None:
        pool = torch.stack([dataset[i]["image"] for i in range(min(CANDIDATES, len(dataset)))])
        index, chosen = choose_traversal(model, pool, k, sigma=sigma, value_range=value_range)
        slot = chosen if slot is None else slot
        picture, label = pool[index], f"{split}{index}"
    elif str(image).lstrip("-").isdigit():
        index = int(image)
        if not 0 <= index < len(dataset):
            raise RunError(f"image {index}: {cfg.data.name} {split} has {len(dataset)} images "
                           f"(0..{len(dataset) - 1})")
        picture, label = dataset[index]["image"], f"{split}{index}"
    else:
        from PIL import Image

        from ..inference.images import read_image

        file = Path(image)
        try:
            picture = read_image(file, *loaded.geometry).image
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise RunError(f"image {file}: not a readable image ({str(err).splitlines()[0][:120]})") from None
        from ..safeio import safe_name

        label = safe_name(file.stem, "image")
    try:
        data = traverse(model, picture, slot=slot, top=top, num_slots=k, sigma=sigma, value_range=value_range)
    except ValueError as err:
        raise RunError(f"traversals: {err}") from None
    out_dir = output_dir(out_dir)
    written = [save_figure(traversal_figure(data, f"{cfg.name} {label}"),
                           out_dir / f"traversal_{label}_slot{data['slot']}.png")]
    if data["model"] == "monet":
        with torch.no_grad():
            written.append(save_figure(component_figure(model, picture[None], k), out_dir / f"components_{label}.png"))
    return written


def write_samples(path: str | os.PathLike, out_dir: str | os.PathLike, split: str = "test", num_swaps: int = 4,
                  num_slots: int | None = None) -> list[Path]:
    """Write ``samples.png``: scenes decoded from latents with one slot's latent taken from another image
    (pairs of consecutive images of ``split``; each image's largest foreground slot). Models with a
    component VAE only (MONet and its one-pass variants)."""
    from ..errors import RunError
    from ..inference.loaders import open_split
    from ..inference.run import find_run, load_weights
    from ..viz.figures import save_figure
    from ..viz.traversals import decode_scenes, largest_foreground_slot, swap_figure, swap_slots
    from .evaluate import output_dir

    if num_swaps < 1:
        raise RunError(f"num_swaps must be at least 1, got {num_swaps}")
    run_dir, ckpt, cfg = find_run(path)
    loaded = load_weights(ckpt, cfg, run_dir)
    model = loaded.model
    if model.latent_decoder != "slot_vae":
        raise RunError(f"samples: {cfg.model.name} has no component VAE to decode slot latents with")
    k = loaded.num_slots(num_slots) or loaded.config.model.eval_num_slots
    dataset = open_split(cfg, split)
    n = min(2 * num_swaps, len(dataset) - len(dataset) % 2)
    if n < 2:
        raise RunError(f"samples: {cfg.data.name} {split} needs at least 2 images")
    images = torch.stack([dataset[i]["image"] for i in range(n)])
    with torch.no_grad():
        out = model(images, k)
        swaps = []
        for i in range(0, n, 2):
            target = (i, largest_foreground_slot(out, i))
            source = (i + 1, largest_foreground_slot(out, i + 1))
            swaps.append((target, source, swap_slots(model, out.latents, target, source)))
        generative = decode_scenes(model, out.latents)
    out_dir = output_dir(out_dir)
    return [save_figure(swap_figure(images, generative, swaps, cfg.name), out_dir / "samples.png")]
