"""Reading images for a model: any Pillow format, as ``[C,H,W]`` float in [0,1] at the model's size.

Images of another size are centre-cropped to a square (when not square) and resized (bilinear, antialiased);
grey, palette, 16-bit and CMYK images are converted to RGB (or to grey for a one-channel model); an alpha
channel is composited over white; an image with more than ``MAX_PIXELS`` pixels is refused before decoding.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..safeio import MAX_PIXELS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class ImageInput:
    source: str
    name: str
    image: torch.Tensor  # [C,H,W] at the model's size
    original_size: tuple[int, int]  # (width, height)
    mode: str
    resized: bool


def _to_array(img: Image.Image, channels: int) -> np.ndarray:
    """``[H,W,C]`` float32 in [0,1]: alpha composited over white; 16-bit by its bit depth, float images
    (float TIFF) as [0,1] (:func:`~scenedecomp.data.image_folder.value_scale`); others via Pillow."""
    from ..data.image_folder import value_scale

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    depth = value_scale(img)
    if depth is not None:  # one high-bit or float grey channel
        grey = np.nan_to_num(np.asarray(img, dtype=np.float32) / depth, nan=0.0, posinf=1.0, neginf=0.0)
        grey = np.clip(grey, 0.0, 1.0)[:, :, None]
        return np.repeat(grey, channels, axis=2) if channels == 3 else grey
    arr = np.asarray(img.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return arr.astype(np.float32) / 255.0


def fit_image(image: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, bool]:
    """Centre-crop ``[C,h,w]`` to a square (if needed) and resize to ``size``; returns (image, changed)."""
    c, h, w = image.shape
    if (h, w) == tuple(size):
        return image, False
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[:, top:top + side, left:left + side]
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp(0, 1), True


def read_image(path: Path, channels: int, size: tuple[int, int]) -> ImageInput:
    """Read one file (any Pillow format) as ``[C,H,W]`` float in [0,1] at ``size``; raises ``OSError``/
    ``ValueError`` with a readable message when the file cannot be decoded."""
    return read_image_from(path, str(path), path.stem, channels, size)


def read_image_from(source_file, source: str, name: str, channels: int, size: tuple[int, int]) -> ImageInput:
    """Like :func:`read_image` for a path or file object; ``source``/``name`` label the result. An image
    with more than ``MAX_PIXELS`` pixels (read from its header) is refused before it is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides
        img = Image.open(source_file)
    with img:
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise ValueError(f"{width}x{height} = {width * height / 1e6:.0f} MP exceeds the "
                             f"{MAX_PIXELS / 1e6:g} MP cap, not decoded")
        img.load()  # decode now: a truncated file fails here, not later
        mode, original = img.mode, img.size
        arr = _to_array(img, channels)
    tensor, resized = fit_image(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), size)
    return ImageInput(source, name, tensor, original, mode, resized)
