"""Training data: the images of some folders, kept in memory, as random crops with padding and flips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..imageio import find_images, load_image
from .synthetic import synthetic_picture

JPEG_SUFFIXES = {".jpg", ".jpeg"}


def load_training_image(path: Path, downscale_jpeg: bool) -> np.ndarray:
    """HxWx3 uint8, read as ``bgcodec encode`` reads it (alpha dropped). JPEG sources are
    optionally halved (Lanczos) to remove coding artefacts."""
    image = load_image(path, drop_alpha=True)[0]
    if not (downscale_jpeg and path.suffix.lower() in JPEG_SUFFIXES):
        return image
    height, width = image.shape[:2]
    halved = Image.fromarray(image).resize((max(1, width // 2), max(1, height // 2)), Image.LANCZOS)
    return np.asarray(halved, dtype=np.uint8)


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size×size crop; images smaller than that are reflect-padded (edge-padded if tiny)."""
    h, w = image.shape[:2]
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "edge"
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
        h, w = image.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    crop = image[top:top + size, left:left + size]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


class CropSampler:
    """Keeps the decoded training images in memory and draws batches of random crops.

    Each DDP rank gets its own stream of crops from (seed, rank). A ``synthetic_share`` of
    the crops, drawn at random, are generated pictures instead (bgcodec.train.synthetic).
    """

    def __init__(self, folders: list[str | os.PathLike], crop: int, downscale_jpeg: bool = False,
                 seed: int = 0, rank: int = 0, synthetic_share: float = 0.0):
        self.files = find_images(folders)
        self.images = [load_training_image(p, downscale_jpeg) for p in self.files]
        self.crop = crop
        self.synthetic_share = synthetic_share
        self.rng = np.random.default_rng([seed, rank])

    def batch(self, size: int) -> torch.Tensor:
        """(size, 3, crop, crop) float32 in [0, 1]."""
        crops = np.stack([self._crop() for _ in range(size)])
        return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255)

    def _crop(self) -> np.ndarray:
        if self.synthetic_share and self.rng.random() < self.synthetic_share:
            return synthetic_picture(self.crop, self.rng)
        return random_crop(self.images[int(self.rng.integers(len(self.images)))], self.crop, self.rng)
