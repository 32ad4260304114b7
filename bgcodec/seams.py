"""The seam filter: what the decoder does at the borders between the tiles of a tiled file.

Independent tiles each see the image end at their border, so their reconstructions meet
with a small step there. The filter estimates that step on each border, averaged over a
few pixels along it, and spreads its removal over the two pixels on either side. It works
on integers only (numpy's int32), so every machine computes the same pixels; its rules are
part of the format (docs/FORMAT.md §8).
"""

from __future__ import annotations

import numpy as np

ALONG = 4
"""Pixels along the border over which the step is averaged (noise is not a step)."""
MAX_STEP = 8
"""Largest step removed, in levels: a real edge on the border stays an edge."""


def smooth_tile_borders(image: np.ndarray, boxes: list[tuple[int, int, int, int]], learned: list[bool]) -> None:
    """Filter, in place, the seams between the learned tiles of an HxWx3 uint8 image of
    ``boxes`` (container.tile_boxes, in row order): first every border between two tiles
    side by side, then every border between two tiles one above the other. Lossless tiles
    keep their pixels.

    >>> image = np.full((4, 8, 3), 100, np.uint8); image[:, 4:] = 104
    >>> smooth_tile_borders(image, [(0, 0, 4, 4), (0, 4, 4, 4)], [True, True])
    >>> image[0, :, 0].tolist()
    [100, 100, 101, 102, 102, 103, 104, 104]
    """
    per_row = sum(1 for top, _, _, _ in boxes if top == 0)
    for number, (top, left, height, width) in enumerate(boxes):
        if left and width >= 2 and learned[number] and learned[number - 1]:
            _filter_border(image[top:top + height], left)
    for number, (top, left, height, width) in enumerate(boxes):
        if top and height >= 2 and learned[number] and learned[number - per_row]:
            _filter_border(image[:, left:left + width].transpose(1, 0, 2), top)


def _filter_border(image: np.ndarray, border: int) -> None:
    """Filter, in place, the seam between columns border-1 and border of a uint8 HxWxC array."""
    p1, p0, q0, q1 = (image[:, border + offset].astype(np.int32) for offset in (-2, -1, 0, 1))
    # 2 × the step beyond the local slope, summed over ALONG pixels along the border
    twice_step = 3 * (q0 - p0) + p1 - q1
    summed = np.cumsum(np.pad(twice_step, ((ALONG // 2, ALONG - ALONG // 2), (0, 0)), mode="edge"), axis=0)
    limit = 2 * ALONG * MAX_STEP
    summed = np.clip(summed[ALONG:] - summed[:-ALONG], -limit, limit)
    # the step is summed / (2·ALONG): half of it comes off the nearest pixels, a quarter off the next
    near, next_ = _divide(summed, 4 * ALONG), _divide(summed, 8 * ALONG)
    for offset, value in ((-2, p1 + next_), (-1, p0 + near), (0, q0 - near), (1, q1 - next_)):
        image[:, border + offset] = np.clip(value, 0, 255)


def _divide(value: np.ndarray, divisor: int) -> np.ndarray:
    """value / divisor rounded to the nearest integer, halves away from zero."""
    return np.sign(value) * ((np.abs(value) + divisor // 2) // divisor)
