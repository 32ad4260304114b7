"""Packing training images into one archive small enough to travel to a machine lent for a
short time (a GPU), where ``bgcodec.train.remote`` trains on it.

Every image is stored losslessly (WebP), as the trainer reads it: alpha dropped, JPEG
sources halved when ``downscale_jpeg`` is set (stored halved, so the remote run must not
halve them again). An image larger than ``max_side`` on a side is cut
to a random window of that size: the trainer draws images uniformly and crops them, so many
images with room for crops serve it better than a few whole large ones. Each folder's images
are taken in random order, the folders interleaved in proportion to their sizes, until the
next one would exceed the byte budget; so each folder keeps about the same share.

    python -m bgcodec.train.pack photos/ more/ -o data.tar --budget-mib 45 --downscale-jpeg
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..imageio import find_images
from .data import load_training_image

MANIFEST = "manifest.json"
MANIFEST_RESERVE = 256 * 1024
"""Bytes of the budget kept for the manifest and the end of the tar file."""


@dataclass
class PackSummary:
    """What an archive holds: images and pixels kept and offered, per folder, and its bytes."""

    kept: dict[str, int] = field(default_factory=dict)
    offered: dict[str, int] = field(default_factory=dict)
    pixels: int = 0
    bytes: int = 0


def window(image: np.ndarray, max_side: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of at most max_side×max_side pixels of an HxWx3 image."""
    height, width = image.shape[:2]
    top = int(rng.integers(0, max(0, height - max_side) + 1))
    left = int(rng.integers(0, max(0, width - max_side) + 1))
    return image[top:top + max_side, left:left + max_side]


def webp_lossless(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="WEBP", lossless=True, quality=100, method=4)
    return buffer.getvalue()


def _interleaved(files: dict[str, list[Path]], rng: np.random.Generator) -> list[tuple[str, Path]]:
    """(folder, image) pairs, each folder's images in random order, the folders merged so that
    every prefix holds about the same share of each folder."""
    keyed = [((rank + 0.5) / len(paths), folder, paths[i])
             for folder, paths in files.items() for rank, i in enumerate(rng.permutation(len(paths)))]
    return [(folder, path) for _, folder, path in sorted(keyed, key=lambda item: item[0])]


def pack(folders: Sequence[str], archive: str | Path, budget_bytes: int, *, max_side: int = 512,
         downscale_jpeg: bool = False, seed: int = 0, val_dir: str | None = None, log=print) -> PackSummary:
    """Write the images of ``folders`` (see the module's doc) into the tar file ``archive``,
    at most ``budget_bytes`` in all, with a manifest of where each image came from. The
    images of ``val_dir``, whole, go first, into ``val/`` (for ``bgcodec train --val-dir``)."""
    rng = np.random.default_rng(seed)
    files = {folder: find_images([folder]) for folder in folders}
    summary = PackSummary(offered={folder: len(paths) for folder, paths in files.items()})
    manifest = {"downscale_jpeg_applied": downscale_jpeg, "max_side": max_side, "seed": seed,
                "validation": [], "images": []}
    started = time.time()
    with tarfile.open(archive, "w") as tar:
        for index, path in enumerate(find_images([val_dir]) if val_dir else []):
            name = f"val/{index:03d}.webp"
            summary.bytes += _add(tar, name, webp_lossless(load_training_image(path, downscale_jpeg=False)))
            manifest["validation"].append({"file": name, "source": str(path)})
        for index, (folder, path) in enumerate(_interleaved(files, rng)):
            image = window(load_training_image(path, downscale_jpeg), max_side, rng)
            data = webp_lossless(image)
            if summary.bytes + _tar_bytes(len(data)) > budget_bytes - MANIFEST_RESERVE:
                break
            name = f"images/{index:05d}.webp"
            summary.bytes += _add(tar, name, data)
            summary.kept[folder] = summary.kept.get(folder, 0) + 1
            summary.pixels += image.shape[0] * image.shape[1]
            manifest["images"].append({"file": name, "source": str(path)})
            if len(manifest["images"]) % 50 == 0:
                log(f"{len(manifest['images'])} images, {summary.bytes / 2**20:.1f} MiB, {time.time() - started:.0f} s")
        _add(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
    summary.bytes = Path(archive).stat().st_size
    return summary


def _tar_bytes(size: int) -> int:
    """What a member of ``size`` bytes takes in a tar file: a header block and whole data blocks."""
    return tarfile.BLOCKSIZE * (1 + -(-size // tarfile.BLOCKSIZE))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return _tar_bytes(len(data))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bgcodec.train.pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="image folders (recursive), as given to bgcodec train")
    parser.add_argument("-o", "--out", required=True, help="the tar file to write")
    parser.add_argument("--budget-mib", type=float, default=45.0,
                        help="largest archive (default 45: with the repository it stays under the 64 MiB "
                             "that travel to a lent machine)")
    parser.add_argument("--max-side", type=int, default=512, help="larger images are cut to a random window")
    parser.add_argument("--downscale-jpeg", action="store_true", help="halve JPEG sources, as bgcodec train does")
    parser.add_argument("--val-dir", help="validation images, stored whole (the remote run validates on them)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = pack(args.folders, args.out, int(args.budget_mib * 2**20), max_side=args.max_side,
                   downscale_jpeg=args.downscale_jpeg, seed=args.seed, val_dir=args.val_dir)
    for folder, offered in summary.offered.items():
        print(f"{folder}: {summary.kept.get(folder, 0)} of {offered} images")
    print(f"{args.out}: {sum(summary.kept.values())} images, {summary.pixels / 1e6:.1f} Mpixels, "
          f"{summary.bytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
