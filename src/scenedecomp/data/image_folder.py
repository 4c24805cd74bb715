"""The ``image_folder`` dataset: any directory of PNG/JPEG images, without ground truth.

``open_dataset("data/CLEVR_v1.0/images/train", image_size=64, crop=192)`` returns an
:class:`ImageFolderDataset` whose items hold only ``image`` (float32 ``[C, H, W]`` in [0, 1]); there
are no masks, counts or factors, so only reconstruction metrics apply. Suitable for CLEVR v1.0 frames,
SceneNet RGB-D ``photo/*.jpg`` frames, or a user's own photos.

Options (all also accepted from a config's ``data.options``):

- ``image_size`` (int): output side; images are square after cropping and resizing.
- ``crop``: ``"center"`` (default: the largest centred square), an int ``S`` (centred ``S x S``
  square; smaller images are used whole), ``[top, left, height, width]`` (a fixed box; images too small
  for it count as unreadable), or ``null`` (no crop: the image is squashed to a square).
- ``resample``: ``bilinear`` (default; Pillow's resampling filters antialias when shrinking),
  ``bicubic``, ``nearest`` or ``lanczos``.
- ``channels``: 3 (RGB, default) or 1 (grayscale).
- ``include``: glob pattern(s) relative to the folder (default ``**/*`` with the extensions below);
  e.g. ``**/photo/*.jpg`` picks SceneNet's RGB frames and leaves its depth/instance PNGs out.
- ``extensions``: file suffixes to take (default ``.png .jpg .jpeg``, any case).
- ``split_mode``: ``hash`` (default) puts every file in exactly one split by a stable hash of its
  relative path (fractions ``split_fractions``, default 0.9/0.05/0.05; the same file always lands in
  the same split, whatever else is in the folder); ``all`` serves every file in every split; ``subdirs``
  uses the ``train/``, ``val/``, ``test/`` subfolders (CLEVR v1.0's layout).
- ``on_error``: ``skip`` (default) or ``raise``. At open time every file's header is checked (Pillow
  opens it without decoding pixels): with ``skip`` unreadable files are left out and named in one
  warning line; with ``raise`` the first one raises :class:`DatasetError` before any training starts.
  ``verify: full`` decodes every image at open time instead (slower; catches truncated pixel data).
  A file that still fails to decode later (e.g. truncated after a valid header, or changed on disk) is
  reported in a warning and replaced by the next readable image under ``skip``, so a run never
  stops midway; under ``raise`` it raises :class:`DatasetError` naming the file.
- ``num_images``: keep the first ``num_images`` files of the split (sorted by path).
- ``max_pixels`` (default 40,000,000): images with more pixels are skipped (or refused under
  ``on_error: raise``) from their header alone, before any decoding: a few-KB PNG can decode to 10000²
  pixels (a decompression bomb) and gigabytes of memory.

16-bit greyscale PNGs are scaled by their true bit depth (value / 65535), not clipped to 8 bits.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .registry import SPLITS, DatasetError, register_dataset

__all__ = ["ImageFolderDataset", "open_image_folder"]

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg")
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}
_IGNORED_OPTIONS = {"seed", "cache_dir", "download", "num_workers"}


def _hash_unit(name: str) -> float:
    """Stable value in [0, 1) from a relative path (independent of Python's hash seed)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64



def value_scale(img: Image.Image) -> float | None:
    """The divisor that maps a high-bit or float greyscale image to [0, 1], or None for 8-bit modes.

    16-bit (``I;16*``, and PNG's ``I``) is scaled by its bit depth 65535, other 32-bit integers by 2**31 - 1,
    and float images (``F``, e.g. float TIFF) are taken as [0, 1] when they lie in it, else as 0..255
    when they lie in that, else by their maximum."""
    if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):
        return 65535.0
    if img.mode == "I":
        return 2.0**31 - 1
    if img.mode == "F":
        peak = float(np.nanmax(np.asarray(img, dtype=np.float32))) if img.size[0] * img.size[1] else 0.0
        return 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else peak
    return None


class ImageFolderDataset(Dataset):
    """Images from a directory (options in the module docstring). Items: ``{"image": [C, H, W]}``."""

    background_labels = (0,)
    max_objects = 0  # no ground truth

    def __init__(self, path: str | os.PathLike, split: str = "train", image_size: int = 64,
                 crop: str | int | Sequence[int] | None = "center", resample: str = "bilinear",
                 channels: int = 3, include: str | Sequence[str] | None = None,
                 extensions: Sequence[str] = DEFAULT_EXTENSIONS, split_mode: str = "hash",
                 split_fractions: Sequence[float] = (0.9, 0.05, 0.05), on_error: str = "skip",
                 verify: str = "header", num_images: int | None = None, max_pixels: int = 40_000_000):
        self.root = Path(path).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such directory")
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if on_error not in ("skip", "raise"):
            raise DatasetError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if verify not in ("header", "full"):
            raise DatasetError(f"verify must be 'header' or 'full', got {verify!r}")
        if resample not in _RESAMPLE:
            raise DatasetError(f"resample must be one of {', '.join(_RESAMPLE)}, got {resample!r}")
        if channels not in (1, 3):
            raise DatasetError(f"channels must be 1 or 3, got {channels}")
        if image_size is None or int(image_size) < 1:
            raise DatasetError(f"image_size must be a positive int, got {image_size}")
        if split_mode not in ("hash", "all", "subdirs"):
            raise DatasetError(f"split_mode must be hash, all or subdirs, got {split_mode!r}")
        fractions = tuple(float(v) for v in split_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
            raise DatasetError(f"split_fractions must be three non-negative numbers summing to 1, got "
                               f"{list(split_fractions)}")
        self.split = split
        self.image_size = int(image_size)
        self.channels = channels
        self.crop = self._check_crop(crop)
        self.resample = resample
        self.on_error = on_error
        if int(max_pixels) < 1:
            raise DatasetError(f"max_pixels must be positive, got {max_pixels}")
        self.max_pixels = int(max_pixels)

        files = self._list(include, extensions, split_mode, split)
        if split_mode == "hash":
            lo = sum(fractions[: SPLITS.index(split)])
            hi = lo + fractions[SPLITS.index(split)]
            files = [p for p in files if lo <= _hash_unit(p.relative_to(self.root).as_posix()) < hi]
        bad: list[str] = []
        reasons: list[str] = []
        good: list[Path] = []
        for p in files:
            problem = self._check(p, full=verify == "full")
            if problem is None:
                good.append(p)
            elif on_error == "raise":
                raise DatasetError(f"{p}: unreadable image ({problem}); fix or remove it, or set "
                                   f"data.options.on_error: skip")
            else:
                bad.append(p.relative_to(self.root).as_posix())
                reasons.append(problem if len(problem) <= 80 else problem[:77] + "...")
        if bad:
            shown = ", ".join(f"{name} ({why})" for name, why in zip(bad[:10], reasons[:10], strict=False))
            shown += f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            warnings.warn(f"{self.root}: skipped {len(bad)} unreadable image(s): {shown}", stacklevel=2)
        self.skipped = bad
        if num_images is not None:
            if num_images < 1:
                raise DatasetError(f"num_images must be positive, got {num_images}")
            good = good[:num_images]
        if not good:
            raise DatasetError(f"{self.root}: no readable images for split {split!r} "
                               f"(split_mode={split_mode}, extensions {' '.join(extensions)})")
        self.files = good
        self._warned: set[int] = set()

    def _check_crop(self, crop):
        if crop is None or crop == "center":
            return crop
        if isinstance(crop, (int, np.integer)) and not isinstance(crop, bool):
            if crop < 1:
                raise DatasetError(f"crop size must be positive, got {crop}")
            return int(crop)
        if isinstance(crop, Sequence) and not isinstance(crop, str) and len(crop) == 4:
            box = tuple(int(v) for v in crop)
            if box[0] < 0 or box[1] < 0 or box[2] < 1 or box[3] < 1:
                raise DatasetError(f"crop box [top, left, height, width] must be non-negative with a "
                                   f"positive size, got {list(crop)}")
            return box
        raise DatasetError(f"crop must be 'center', a size, [top, left, height, width] or null; got {crop!r}")

    def _list(self, include, extensions, split_mode: str, split: str) -> list[Path]:
        root = self.root
        if split_mode == "subdirs":
            root = self.root / split
            if not root.is_dir():
                raise DatasetError(f"{self.root}: split_mode subdirs needs a {split}/ subfolder")
        suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
        patterns = [include] if isinstance(include, str) else list(include or ["**/*"])
        found: set[Path] = set()
        for pattern in patterns:
            found.update(p for p in root.glob(pattern) if p.suffix.lower() in suffixes and p.is_file())
        return sorted(found)

    def _check(self, path: Path, full: bool) -> str | None:
        """None if the file looks readable, else a short reason."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides
                img = Image.open(path)
            with img:
                size = img.size
                if size[0] * size[1] > self.max_pixels:
                    return self._too_big(size)
                if full:
                    img.load()
        except Exception as err:  # noqa: BLE001 - Pillow raises many types
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            return text.replace(str(path), "").strip(" '\":") or type(err).__name__
        if isinstance(self.crop, tuple):
            top, left, h, w = self.crop
            if top + h > size[1] or left + w > size[0]:
                return f"{size[0]}x{size[1]} is too small for the crop box {list(self.crop)}"
        return None

    def _too_big(self, size: tuple[int, int]) -> str:
        return (f"{size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f} MP exceeds the {self.max_pixels / 1e6:g} MP "
                f"cap (data.options.max_pixels), not decoded")

    def _load(self, path: Path) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            if img.size[0] * img.size[1] > self.max_pixels:
                raise ValueError(self._too_big(img.size))
            depth = value_scale(img)
            high = depth is not None
            if high:  # 16/32-bit or float greyscale: convert("RGB") would clip to white or black
                img = Image.fromarray(np.asarray(img, dtype=np.float32) / depth)  # mode "F"
            else:
                img = img.convert("RGB" if self.channels == 3 else "L")
            w, h = img.size
            if self.crop == "center" or isinstance(self.crop, int):
                side = min(w, h) if self.crop == "center" else min(self.crop, w, h)
                left, top = (w - side) // 2, (h - side) // 2
                img = img.crop((left, top, left + side, top + side))
            elif isinstance(self.crop, tuple):
                top, left, ch, cw = self.crop
                img = img.crop((left, top, left + cw, top + ch))
            if img.size != (self.image_size, self.image_size):
                img = img.resize((self.image_size, self.image_size), _RESAMPLE[self.resample])
            if high:
                arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None]
                arr = np.repeat(arr, self.channels, axis=2)
                return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
            arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[..., None]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0).contiguous()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        n = len(self.files)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        i %= n
        for attempt in range(n):
            j = (i + attempt) % n
            try:
                return {"image": self._load(self.files[j])}
            except Exception as err:  # noqa: BLE001
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                if self.on_error == "raise":
                    raise DatasetError(f"{self.files[j]}: cannot decode image ({reason})") from None
                if j not in self._warned:
                    self._warned.add(j)
                    warnings.warn(f"{self.files[j]}: cannot decode image ({reason}); using the next image "
                                  f"instead", stacklevel=2)
        raise DatasetError(f"{self.root}: no image of split {self.split!r} can be decoded")

    def __repr__(self) -> str:
        return (f"ImageFolderDataset({str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"image_size={self.image_size})")


@register_dataset("image_folder")
def open_image_folder(path: str | os.PathLike, split: str = "train", image_size: int = 64,
                      num_images: int | None = None, **options) -> ImageFolderDataset:
    """Factory registered as ``image_folder`` (options in the module docstring).

    ``seed``/``cache_dir`` are accepted and ignored; other unknown options raise :class:`DatasetError`.
    """
    known = set(ImageFolderDataset.__init__.__code__.co_varnames[:ImageFolderDataset.__init__.__code__
                                                                  .co_argcount])
    unknown = sorted(set(options) - known - _IGNORED_OPTIONS)
    if unknown:
        raise DatasetError(f"{path}: unknown image_folder option(s) {', '.join(unknown)}; known: "
                           f"{', '.join(sorted(known - {'self', 'path', 'split'}))}")
    options = {k: v for k, v in options.items() if k not in _IGNORED_OPTIONS}
    return ImageFolderDataset(path, split=split, image_size=image_size, num_images=num_images, **options)
