"""Tests for bgcodec.seams (the filter at tile borders)."""

import numpy as np

from bgcodec.container import tile_boxes
from bgcodec.seams import MAX_STEP, smooth_tile_borders as filter_in_place


def smooth_tile_borders(image, boxes, learned):
    out = image.copy()
    filter_in_place(out, boxes, learned)
    return out


def _stepped(height, width, step, seed=0):
    """Noise around a level that jumps by ``step`` at every border of 64×64 tiles."""
    rng = np.random.default_rng(seed)
    image = 100 + rng.integers(-2, 3, (height, width, 3))
    yy, xx = np.mgrid[0:height, 0:width]
    image += step * ((yy // 64 + xx // 64) % 2)[..., None]
    return image.astype(np.uint8)


def test_a_small_step_at_a_border_is_spread_out_and_the_rest_is_untouched():
    image = _stepped(128, 128, 6)
    boxes = tile_boxes(128, 128, 64)
    out = smooth_tile_borders(image, boxes, [True] * 4)
    changed = (out != image).any(axis=2)
    assert not changed[:, :62][:62].any() and not changed[66:, 66:].any()
    before = np.abs(image[:, 64].astype(int) - image[:, 63]).mean()
    after = np.abs(out[:, 64].astype(int) - out[:, 63]).mean()
    assert after < before / 2


def test_a_real_edge_is_moved_by_at_most_half_the_largest_step():
    image = _stepped(64, 128, 120)
    out = smooth_tile_borders(image, tile_boxes(64, 128, 64), [True, True])
    assert np.abs(out.astype(int) - image).max() <= MAX_STEP // 2 + 1
    assert (out[:, 64].astype(int) - out[:, 63]).min() > 100


def test_a_lossless_tile_keeps_its_pixels():
    image = _stepped(128, 64, 6)
    boxes = tile_boxes(128, 64, 64)
    assert np.array_equal(smooth_tile_borders(image, boxes, [True, False]), image)
    assert not np.array_equal(smooth_tile_borders(image, boxes, [True, True]), image)


def test_a_strip_too_thin_to_filter_is_left_alone():
    image = _stepped(65, 64, 6)
    assert np.array_equal(smooth_tile_borders(image, tile_boxes(65, 64, 64), [True, True]), image)
