"""The even-odd fill of planar contours (numba) against its numpy reference, and masks → contours → masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from radagent.io.contours import even_odd_fill, even_odd_fill_reference, mask_contours


def _square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


@pytest.mark.parametrize("seed", range(5))
def test_the_kernel_agrees_with_the_reference_on_random_polygons(seed):
    rng = np.random.default_rng(seed)
    polygons = [rng.uniform(-3, 25, size=(rng.integers(3, 12), 2)) for _ in range(3)]  # self-intersecting too
    polygons.append(rng.integers(0, 20, size=(6, 2)).astype(float))  # vertices on pixel centres
    assert np.array_equal(even_odd_fill(polygons, (20, 23)), even_odd_fill_reference(polygons, (20, 23)))


def test_a_contour_inside_another_is_a_hole_and_a_keyhole_contour_is_the_same_ring():
    outer, inner = _square(2.5, 2.5, 15.5, 15.5), _square(6.5, 6.5, 11.5, 11.5)
    ring = even_odd_fill([outer, inner], (20, 20))
    expected = np.zeros((20, 20), dtype=bool)
    expected[3:16, 3:16] = True
    expected[7:12, 7:12] = False
    assert np.array_equal(ring, expected)
    # One polygon: round the outer square, in along a cut of zero width, round the hole the other way, out.
    keyhole = np.array(
        [[2.5, 2.5], [15.5, 2.5], [15.5, 15.5], [2.5, 15.5], [2.5, 9.2], [6.5, 9.2], [6.5, 11.5],
         [11.5, 11.5], [11.5, 6.5], [6.5, 6.5], [6.5, 9.2], [2.5, 9.2]]
    )  # fmt: skip
    assert np.array_equal(even_odd_fill([keyhole], (20, 20)), expected)
    islands = even_odd_fill([_square(0.5, 0.5, 3.5, 3.5), _square(10.5, 10.5, 12.5, 19.5)], (20, 20))
    assert islands.sum() == 9 + 2 * 9  # two separate contours on one plane: both filled


def test_contours_outside_the_slice_are_clipped():
    mask = even_odd_fill([_square(-10.5, -10.5, 2.5, 40.0)], (8, 6))
    assert mask[:, :3].all() and not mask[:, 3:].any()


@pytest.mark.parametrize("seed", range(4))
def test_mask_contours_give_the_mask_back(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((31, 37)) > 0.55  # diagonal touching pixels, holes, islands, the border
    if seed % 2:
        mask = ndimage.binary_opening(
            mask | ndimage.binary_dilation(rng.random((31, 37)) > 0.97, iterations=4)
        )
    contours = mask_contours(mask)
    assert np.array_equal(even_odd_fill(contours, mask.shape), mask)
    assert all(len(c) >= 3 for c in contours)
    assert mask_contours(np.zeros((4, 4), dtype=bool)) == []
