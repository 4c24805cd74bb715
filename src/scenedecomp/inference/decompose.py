"""Apply a trained model to your own images: ``scenedecomp decompose`` and :func:`decompose`.

For every input image the command writes, under ``OUT/<name>/`` (``<name>`` = the file's stem, made
unique with ``-2``, ``-3``, ... when two inputs share a stem):

- ``input.png``: the image as the model saw it (RGB/grey, at the model's size);
- ``segmentation.png``: an indexed (palette) PNG, pixel value = the argmax slot;
- ``overlay.png``: the input blended with the slot colours of the segmentation;
- ``slot_<k>.png``: slot ``k``'s component as RGBA, colour = the slot's reconstruction (unmasked mean),
  alpha = the slot's mask ``m_k``;
- ``reconstruction.png``: the reconstruction mixture ``sum_k m_k x_k``;
- ``decomposition.json``: the source path and size, what was converted, and per slot the latent mean
  and log-variance (``ModelOutput.latents`` and ``extras["latent_logvar"]``; ``null`` for models that do
  not report a log-variance, e.g. AIR), the mask area (pixels of the argmax segmentation and the soft
  sum of ``m_k``), bounding box ``[x0, y0, x1, y1]`` (pixels, ``x1``/``y1`` exclusive; ``null`` for an
  empty slot) and centroid ``[x, y]`` (mean column and row index of the slot's pixels), plus AIR's
  ``z_pres``, ``p_pres`` and ``z_where`` ``(s, x, y)`` per step (slot ``k`` = step ``k - 1``).

and one ``OUT/decompositions.npz`` with all images (arrays listed in :class:`Decomposition`).

Conversion: images of another size are centre-cropped to a square (when not square) and resized
(bilinear, antialiased) to the model's size; grey, palette, 16-bit and CMYK images are converted to RGB
(or to grey for a one-channel model); an alpha channel is composited over white. Unreadable files are
reported (one line each), skipped and counted. Every output file is written atomically (temporary file
in the same folder, then rename).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import BadInput, Interrupted
from ..safeio import (
    MAX_BATCH_SIZE,
    atomic_write_bytes,
    check_bound,
    check_inside,
    is_inside,
    make_temp_folder,
    replace_folder,
    safe_name,
)
from .images import IMAGE_EXTENSIONS, ImageInput, fit_image, read_image, read_image_from
from .run import LoadedRun, load_run

AIR_KEYS = ("z_pres", "p_pres", "z_where")
STAGING = ".scenedecomp-staging-"  # outputs are written into such a folder beside --out, then swapped in


class DecomposeError(BadInput, ValueError):
    """Bad input to :func:`decompose` (one-line message naming the file and the problem)."""


@dataclass
class Decomposition:
    """What :func:`decompose` returns (all tensors on the CPU).

    Shapes: ``N`` images, ``K`` slots, ``C`` channels, ``H``/``W`` the model's image size, ``D`` latent size.

    Attributes:
        images: ``[N,C,H,W]`` the inputs as the model saw them, in [0, 1].
        log_masks: ``[N,K,1,H,W]`` log masks (``exp`` sums to 1 over ``K``).
        labels: ``[N,H,W]`` int64 argmax segmentation.
        slot_recons: ``[N,K,C,H,W]`` per-slot reconstructions (unmasked means).
        recon: ``[N,C,H,W]`` the reconstruction mixture.
        latent_mean: ``[N,K,D]`` per-slot latent means (``ModelOutput.latents``).
        latent_logvar: ``[N,K,D]`` per-slot latent log-variances, or ``None`` when the model has none.
        area: ``[N,K]`` int64 pixels of each slot in ``labels``; ``soft_area`` ``[N,K]`` float sum of ``m_k``.
        bbox: ``[N,K,4]`` float ``(x0, y0, x1, y1)`` of each slot's pixels (NaN for an empty slot).
        centroid: ``[N,K,2]`` float ``(x, y)`` mean column/row of each slot's pixels (NaN when empty).
        extras: AIR's ``z_pres [N,S]``, ``p_pres [N,S]``, ``z_where [N,S,3]`` (``S = K - 1`` steps).
        names: one output name per image; ``sources``: the file paths (or ``"<tensor i>"``).
        skipped: ``(source, reason)`` for every input that could not be read.
        notes: conversions applied, e.g. ``{"resized": 3, "converted": {"L": 1}}``.
    """

    images: torch.Tensor
    log_masks: torch.Tensor
    labels: torch.Tensor
    slot_recons: torch.Tensor
    recon: torch.Tensor
    latent_mean: torch.Tensor
    latent_logvar: torch.Tensor | None
    area: torch.Tensor
    soft_area: torch.Tensor
    bbox: torch.Tensor
    centroid: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]


# ----------------------------------------------------------------------------------------------- inputs


def expand_inputs(paths: Iterable[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[Path]:
    """Files named directly, plus the image files (by extension, recursively, sorted) inside directories;
    nothing inside ``exclude`` (the output folder) or a folder being written (``.scenedecomp-staging-*``)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(STAGING) for part in p.parts)
                            and not (exclude is not None and is_inside(p, exclude)))
        else:
            files.append(path)  # missing or unreadable files are reported when read
    return files


def _unique(name: str, seen: set[str]) -> str:
    candidate, i = name or "image", 2
    while candidate in seen:
        candidate = f"{name}-{i}"
        i += 1
    seen.add(candidate)
    return candidate


# ----------------------------------------------------------------------------------------------- model
def _load(run) -> LoadedRun:
    """``run`` (directory, checkpoint path, model folder, ``pretrained:NAME`` or a :class:`LoadedRun`) -> the
    loaded run."""
    return run if isinstance(run, LoadedRun) else load_run(run)


def slot_statistics(labels: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-slot area, soft area, bounding box and centroid.

    Args:
        labels: ``[N,H,W]`` argmax segmentation.
        masks: ``[N,K,1,H,W]`` soft masks.

    Returns:
        ``area [N,K]`` int64, ``soft_area [N,K]``, ``bbox [N,K,4]`` ``(x0, y0, x1, y1)`` with exclusive
        ``x1``/``y1`` and ``centroid [N,K,2]`` ``(x, y)``; NaN where a slot has no pixel.
    """
    n, k = masks.shape[:2]
    h, w = labels.shape[-2:]
    onehot = F.one_hot(labels, k).permute(0, 3, 1, 2).float()  # [N,K,H,W]
    area = onehot.sum((2, 3))
    cols = torch.arange(w, dtype=torch.float32)
    rows = torch.arange(h, dtype=torch.float32)
    col_any, row_any = onehot.amax(2) > 0, onehot.amax(3) > 0  # [N,K,W], [N,K,H]
    big = torch.tensor(1e9)

    def first_last(present: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.where(present, index, big).amin(-1)
        hi = torch.where(present, index, -big).amax(-1) + 1
        return lo, hi

    x0, x1 = first_last(col_any, cols)
    y0, y1 = first_last(row_any, rows)
    empty = area == 0
    bbox = torch.stack([x0, y0, x1, y1], -1).masked_fill(empty[..., None], float("nan"))
    safe = area.clamp_min(1)
    cx = (onehot * cols).sum((2, 3)) / safe
    cy = (onehot * rows[:, None]).sum((2, 3)) / safe
    centroid = torch.stack([cx, cy], -1).masked_fill(empty[..., None], float("nan"))
    return {"area": area.long(), "soft_area": masks.sum((2, 3, 4)), "bbox": bbox, "centroid": centroid}


def _run_batch(loaded, images: torch.Tensor, num_slots: int | None) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        out = loaded(images.to(loaded.device), num_slots)
    log_masks = out.log_masks.float().cpu()
    labels = log_masks.argmax(1).squeeze(1)
    result = {"images": images, "log_masks": log_masks, "labels": labels,
              "slot_recons": out.slot_recons.float().cpu(), "recon": out.recon.float().clamp(0, 1).cpu(),
              "latent_mean": out.latents.float().cpu()}
    if "latent_logvar" in out.extras:
        result["latent_logvar"] = out.extras["latent_logvar"].float().cpu()
    for key in AIR_KEYS:
        if key in out.extras:
            result[key] = out.extras[key].float().cpu()
    result.update(slot_statistics(labels, log_masks.exp()))
    return result


def _tensor_inputs(images: torch.Tensor, channels: int, size: tuple[int, int]) -> list[ImageInput]:
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] not in (1, 3, 4):
        raise DecomposeError(f"images: expected [N,C,H,W] or [C,H,W] with C in 1, 3, 4; got {tuple(images.shape)}")
    images = images.detach().float().cpu()
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise DecomposeError("images: values must lie in [0, 1]")
    if images.shape[1] == 4:  # RGBA over white
        images = images[:, :3] * images[:, 3:] + (1 - images[:, 3:])
    if images.shape[1] != channels:
        images = images.mean(1, keepdim=True) if channels == 1 else images.expand(-1, 3, -1, -1)
    inputs = []
    for i, image in enumerate(images):
        fitted, resized = fit_image(image, size)
        inputs.append(ImageInput(f"<tensor {i}>", f"image_{i:04d}", fitted, (image.shape[2], image.shape[1]),
                             "tensor", resized))
    return inputs


def _iter_inputs(images, channels: int, size: tuple[int, int], skipped: list[tuple[str, str]],
                 report=None, exclude: Path | None = None) -> Iterable[ImageInput]:
    """Yield readable inputs; record (and report) unreadable ones."""
    if torch.is_tensor(images):
        yield from _tensor_inputs(images, channels, size)
        return
    if isinstance(images, np.ndarray):
        array = torch.from_numpy(np.asarray(images))
        if array.dtype == torch.uint8:
            array = array.float() / 255.0
        if array.dim() >= 3 and array.shape[-1] in (1, 3, 4) and array.shape[-3] not in (1, 3, 4):
            array = array.movedim(-1, -3)  # [..,H,W,C] -> [..,C,H,W]
        yield from _tensor_inputs(array, channels, size)
        return
    if isinstance(images, str | os.PathLike):
        images = [images]
    seen: set[str] = set()
    for i, item in enumerate(images):
        if isinstance(item, Image.Image):
            buffer = io.BytesIO()
            item.save(buffer, format="PNG")
            buffer.seek(0)
            name = _unique(f"image_{i:04d}", seen)
            yield read_image_from(buffer, f"<PIL image {i}>", name, channels, size)
            continue
        for path in expand_inputs([item], exclude):
            try:
                if not path.exists():
                    raise OSError("no such file")
                if not path.is_file():
                    raise OSError("not a regular file")
                item_input = read_image(path, channels, size)
            except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                reason = reason.replace(f" {str(path)!r}", "").replace(str(path), "").strip(" :") or reason
                skipped.append((str(path), reason))
                if report is not None:
                    report(f"skipping {path}: not a readable image ({reason})")
                continue
            item_input.name = _unique(safe_name(item_input.name, "image"), seen)
            yield item_input


def _batches(iterable: Iterable[ImageInput], size: int) -> Iterable[list[ImageInput]]:
    batch: list[ImageInput] = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ----------------------------------------------------------------------------------------------- API
def decompose(images, run, *, num_slots: int | None = None, batch_size: int = 64, progress: bool = False,
              out_dir: str | os.PathLike | None = None, device: str | None = None, log=None) -> Decomposition:
    """Decompose ``images`` with the trained model ``run``.

    Args:
        images: a tensor ``[N,C,H,W]``/``[C,H,W]`` in [0,1], a numpy array (uint8 or float, channels first
            or last), a file or directory path, or a list of paths / PIL images.
        run: a run directory, a ``.ckpt`` file, a model folder, ``pretrained:NAME`` or a
            :class:`~scenedecomp.inference.run.LoadedRun` (:func:`scenedecomp.load_run`).
        num_slots: ``K`` at inference (recurrent attention and Slot Attention; default: the run's).
        batch_size: images per forward pass.
        progress: show a progress bar (stderr).
        out_dir: if given, also write the per-image files and ``decompositions.npz`` there.
        device: ``"cpu"``, ``"cuda"``... (default: CUDA when available).
        log: callable for one-line messages (default: print to stderr).

    Returns:
        A :class:`Decomposition` (tensors on the CPU). Raises :class:`DecomposeError` when no input is
        readable.
    """
    if log is None:
        def log(message: str) -> None:  # through tqdm while a bar is drawn, so the two do not interleave
            if progress:
                from tqdm.auto import tqdm

                tqdm.write(message, file=sys.stderr)
            else:
                print(message, file=sys.stderr, flush=True)
    check_bound("batch size", batch_size, 1, MAX_BATCH_SIZE)
    device = _check_device(device)
    if out_dir is not None:
        _check_out_against_inputs(Path(out_dir).expanduser(), images)
    out = prepare_out_dir(out_dir) if out_dir is not None else None
    loaded = _load(run)
    num_slots = loaded.num_slots(num_slots)
    loaded = loaded.to(device)
    channels, size = loaded.geometry
    staging = _Staging(out) if out is not None else None
    try:
        result = _decompose(images, loaded, staging, num_slots, batch_size, progress, log, channels, size, out)
        if staging is not None:
            staging.commit()
    except BaseException as err:
        if staging is not None:
            staging.abort()
        if isinstance(err, KeyboardInterrupt) and out is not None:
            raise Interrupted(f"decompose interrupted; nothing was written to {out}") from None
        raise
    return result


def _decompose(images, loaded, staging, num_slots, batch_size, progress, log, channels, size, out):
    writer = _Writer(staging) if staging is not None else None

    skipped: list[tuple[str, str]] = []
    parts: list[dict[str, torch.Tensor]] = []
    names: list[str] = []
    sources: list[str] = []
    notes: dict = {"resized": 0, "converted": {}, "model_seconds": 0.0}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="decompose", unit="img", leave=False, file=sys.stderr)
    announced = False
    pending: list[str] = []  # skip notices before the first readable image: dropped if none is readable

    def report(message: str) -> None:  # (the one error line then names the first unreadable file)
        if parts:
            log(message)
        else:
            pending.append(message)

    for batch in _batches(_iter_inputs(images, channels, size, skipped, report, out), batch_size):
        for message in pending:
            log(message)
        pending.clear()
        for item in batch:
            if item.resized:
                notes["resized"] += 1
                if not announced:
                    announced = True
                    log(f"note: inputs not of size {size[1]}x{size[0]} are centre-cropped to a square and resized "
                        f"(bilinear) to the model's {size[1]}x{size[0]}, first {item.source} ({item.original_size[0]}x"
                        f"{item.original_size[1]})")
            if item.mode not in ("RGB" if channels == 3 else "L", "tensor"):
                notes["converted"][item.mode] = notes["converted"].get(item.mode, 0) + 1
        start = time.perf_counter()
        result = _run_batch(loaded, torch.stack([item.image for item in batch]), num_slots)
        notes["model_seconds"] += time.perf_counter() - start
        if writer is not None:
            writer.write_batch(batch, result)
        parts.append(result)
        names += [item.name for item in batch]
        sources += [item.source for item in batch]
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    if not parts:
        what = f"{len(skipped)} input(s)" if skipped else "the inputs"
        raise DecomposeError(f"no readable image among {what}" + (f" (first: {skipped[0][0]}: {skipped[0][1]})"
                                                                   if skipped else ""))
    merged = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    result = Decomposition(
        images=merged.pop("images"), log_masks=merged.pop("log_masks"), labels=merged.pop("labels"),
        slot_recons=merged.pop("slot_recons"), recon=merged.pop("recon"), latent_mean=merged.pop("latent_mean"),
        latent_logvar=merged.pop("latent_logvar", None), area=merged.pop("area"), soft_area=merged.pop("soft_area"),
        bbox=merged.pop("bbox"), centroid=merged.pop("centroid"), extras=merged, names=names, sources=sources,
        skipped=skipped, notes=notes)
    if writer is not None:
        writer.write_npz(result)
    return result


# ----------------------------------------------------------------------------------------------- writing
def _palette() -> np.ndarray:
    from ..viz.figures import PALETTE

    return (np.asarray(PALETTE) * 255).round().astype(np.uint8)


def _u8(image: torch.Tensor) -> np.ndarray:
    """``[C,H,W]`` in [0,1] -> ``[H,W,C]`` uint8 (``C`` 1 squeezed)."""
    arr = (image.clamp(0, 1).numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def _finite(values, kind=float) -> list | None:
    values = [float(v) for v in values]
    return None if any(v != v for v in values) else [kind(v) for v in values]


class _Staging:
    """A folder beside ``out`` (made on the first write) that replaces ``out`` as a whole on :meth:`commit`,
    so a rerun leaves no stale file of an earlier one and an interrupted run leaves ``out`` as it was."""

    def __init__(self, out: Path):
        self.out = out
        self.path: Path | None = None

    def folder(self) -> Path:
        if self.path is None:
            self.path = make_temp_folder(self.out.parent, f"{STAGING}{safe_name(self.out.name)}-")
        return self.path

    def commit(self) -> None:
        replace_folder(self.folder(), self.out)
        self.path = None

    def abort(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


class _Writer:
    def __init__(self, staging: _Staging):
        self.staging = staging
        self.palette = _palette()

    @property
    def out(self) -> Path:
        return self.staging.folder()

    def _png(self, path: Path, image: Image.Image) -> None:
        check_inside(path, self.out)
        atomic_write_bytes(path, writer=lambda fh: image.save(fh, format="PNG"), sync=False)

    def write_batch(self, batch: Sequence[ImageInput], r: dict[str, torch.Tensor]) -> None:
        from ..safeio import write_json

        k = r["log_masks"].shape[1]
        masks = r["log_masks"].exp()
        for i, item in enumerate(batch):
            folder = check_inside(self.out / safe_name(item.name, "image"), self.out)
            folder.mkdir(parents=True, exist_ok=True)
            rgb = _u8(r["images"][i])
            self._png(folder / "input.png", Image.fromarray(rgb))
            labels = r["labels"][i].numpy().astype(np.uint8)
            seg = Image.fromarray(labels, "P")
            seg.putpalette(self.palette[: max(k, 1)].reshape(-1).tolist())
            self._png(folder / "segmentation.png", seg)
            base = rgb if rgb.ndim == 3 else np.repeat(rgb[:, :, None], 3, 2)
            overlay = (0.45 * base + 0.55 * self.palette[labels % len(self.palette)]).round().astype(np.uint8)
            self._png(folder / "overlay.png", Image.fromarray(overlay))
            self._png(folder / "reconstruction.png", Image.fromarray(_u8(r["recon"][i])))
            for s in range(k):
                colour = _u8(r["slot_recons"][i, s])
                if colour.ndim == 2:
                    colour = np.repeat(colour[:, :, None], 3, 2)
                alpha = (masks[i, s, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
                self._png(folder / f"slot_{s}.png", Image.fromarray(np.dstack([colour, alpha]), "RGBA"))
            slots = []
            for s in range(k):
                entry = {"slot": s, "latent_mean": r["latent_mean"][i, s].tolist(),
                         "latent_logvar": r["latent_logvar"][i, s].tolist() if "latent_logvar" in r else None,
                         "mask_area": int(r["area"][i, s]), "mask_soft_area": round(float(r["soft_area"][i, s]), 4),
                         "bbox": _finite(r["bbox"][i, s], int), "centroid": _finite(r["centroid"][i, s])}
                if s >= 1:
                    for key in AIR_KEYS:
                        if key in r:
                            value = r[key][i, s - 1]
                            entry[key] = value.tolist() if value.dim() else float(value)
                slots.append(entry)
            write_json(folder / "decomposition.json", {
                "source": item.source, "original_size": list(item.original_size), "original_mode": item.mode,
                "resized": item.resized, "image_size": list(r["images"].shape[-2:]), "num_slots": k,
                "bbox_format": "x0, y0, x1, y1 in pixels (x1, y1 exclusive)",
                "files": {"input": "input.png", "segmentation": "segmentation.png", "overlay": "overlay.png",
                          "reconstruction": "reconstruction.png", "slots": [f"slot_{s}.png" for s in range(k)]},
                "slots": slots})

    def write_npz(self, d: Decomposition) -> Path:
        arrays = {"names": np.array(d.names), "sources": np.array(d.sources),
                  "images": d.images.numpy(), "masks": d.log_masks.exp()[:, :, 0].numpy(),
                  "labels": d.labels.numpy().astype(np.uint8), "slot_recons": d.slot_recons.numpy(),
                  "recon": d.recon.numpy(), "latent_mean": d.latent_mean.numpy(), "area": d.area.numpy(),
                  "soft_area": d.soft_area.numpy(), "bbox": d.bbox.numpy(), "centroid": d.centroid.numpy()}
        if d.latent_logvar is not None:
            arrays["latent_logvar"] = d.latent_logvar.numpy()
        for key, value in d.extras.items():
            arrays[key] = value.numpy()
        path = self.out / "decompositions.npz"
        atomic_write_bytes(path, writer=lambda fh: np.savez(fh, **arrays), sync=False)
        return path


def prepare_out_dir(out: str | os.PathLike) -> Path:
    """Check that ``out`` can be written (a real write probe) without creating it yet: outputs are written
    beside it and swapped in at the end, so a run that fails leaves nothing behind. ``out`` must be new,
    empty or the output of an earlier ``decompose`` (which is replaced as a whole); :class:`DecomposeError`
    otherwise."""
    from ..safeio import unwritable_reason

    out = Path(out).expanduser()
    problem = unwritable_reason(out)
    if problem:
        raise DecomposeError(f"{out}: output directory {problem}")
    if out.is_symlink():
        raise DecomposeError(f"{out}: output directory is a symbolic link; give a real folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "decompositions.npz").is_file():
        raise DecomposeError(f"{out}: output directory holds other files (it is not the output of an earlier "
                             f"decompose, which would be replaced); give a new or empty folder")
    return out


def _check_out_against_inputs(out: Path, images) -> None:
    """The output folder may not be, or hold, an input (it is replaced as a whole); inputs inside it are
    never read (a command does not read its own outputs)."""
    if not isinstance(images, str | os.PathLike | list | tuple) or (out.exists() and not out.is_dir()):
        return  # (an --out that is a file is refused by prepare_out_dir)
    for item in [images] if isinstance(images, str | os.PathLike) else images:
        if not isinstance(item, str | os.PathLike):
            continue
        path = Path(item).expanduser()
        if path.exists() and is_inside(path, out):
            raise DecomposeError(f"{out}: the output directory is or holds the input {path}; give another --out")


def _check_device(device: str | None) -> str:
    """``device`` (default: CUDA when available) if torch can use it; :class:`DecomposeError` otherwise."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DecomposeError(f"device {device!r}: not a device name (cpu, cuda, cuda:1, mps, ...)") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(parsed.type, False):
        raise DecomposeError(f"device {device!r}: not available on this machine")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise DecomposeError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(parsed)


__all__ = ["DecomposeError", "Decomposition", "decompose", "expand_inputs", "prepare_out_dir", "read_image",
           "slot_statistics"]


# ----------------------------------------------------------------------------------------------- command


