"""Grid conventions ([k, j, i] arrays, IJK→RAS) and resampling between grids."""

import numpy as np
import pytest

from radagent.geometry import Grid, lps_to_ras_matrix, resample, resample_mask


def oblique_direction(angle_deg: float = 20.0) -> np.ndarray:
    """A rotation about the superior axis followed by a tilt: a realistically oblique CT."""
    a, b = np.deg2rad(angle_deg), np.deg2rad(angle_deg / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def test_from_spacing_builds_direction_times_spacing():
    direction = oblique_direction()
    grid = Grid.from_spacing((4, 5, 6), (1.0, 2.0, 3.0), (10.0, -5.0, 2.0), direction)
    np.testing.assert_allclose(grid.spacing_mm, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(grid.direction, direction, atol=1e-12)
    np.testing.assert_allclose(grid.origin_ras, [10.0, -5.0, 2.0])
    assert grid.voxel_volume_cc == pytest.approx(6.0 / 1000.0)


def test_ijk_ras_round_trip_and_axis_order():
    grid = Grid.from_spacing((4, 5, 6), (1.0, 2.0, 3.0), (10.0, -5.0, 2.0), oblique_direction())
    ijk = np.array([[0, 0, 0], [5, 4, 3], [1.5, 2.25, 0.5]])
    np.testing.assert_allclose(grid.ras_to_ijk_points(grid.ijk_to_ras_points(ijk)), ijk, atol=1e-9)
    # Flat index of array element [k, j, i] = [3, 4, 5] is the voxel (i, j, k) = (5, 4, 3).
    flat = np.ravel_multi_index((3, 4, 5), grid.shape)
    np.testing.assert_allclose(grid.voxel_centers_ras([flat])[0], grid.ijk_to_ras_points([[5, 4, 3]])[0])


@pytest.mark.parametrize(
    ("shape", "spacing", "message"),
    [
        ((0, 2, 2), (1, 1, 1), "positive sizes"),
        ((2, 2, 2), (1, 0, 1), "spacing"),
        ((2, 2, 2), (1, np.nan, 1), "spacing"),
    ],
)
def test_invalid_grids_are_rejected(shape, spacing, message):
    with pytest.raises(ValueError, match=message):
        Grid.from_spacing(shape, spacing)


def test_non_finite_matrix_is_rejected():
    matrix = np.eye(4)
    matrix[0, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        Grid((2, 2, 2), matrix)


def test_with_spacing_keeps_lattice_axes_and_box():
    grid = Grid.from_spacing((30, 40, 50), (2.0, 2.0, 2.5), (0.0, 0.0, 0.0), oblique_direction())
    coarse = grid.with_spacing(5.0)
    np.testing.assert_allclose(coarse.direction, grid.direction, atol=1e-12)
    np.testing.assert_allclose(coarse.spacing_mm, [5.0, 5.0, 5.0])
    # Same box centre, covering at least the original extent.
    centre = lambda g: g.ijk_to_ras_points([(np.array(g.shape[::-1]) - 1) / 2.0])[0]  # noqa: E731
    np.testing.assert_allclose(centre(coarse), centre(grid), atol=1e-9)
    assert np.all(np.array(coarse.shape[::-1]) * 5.0 >= np.array(grid.shape[::-1]) * grid.spacing_mm - 1e-9)


def test_resample_identity_and_shift():
    rng = np.random.default_rng(0)
    grid = Grid.from_spacing((6, 7, 8), (1.0, 1.0, 1.0))
    values = rng.random(grid.shape)
    np.testing.assert_array_equal(resample(values, grid, grid), values)
    shifted = Grid.from_spacing((6, 7, 8), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0))  # one voxel along i
    moved = resample(values, grid, shifted, order=1)
    np.testing.assert_allclose(moved[:, :, :-1], values[:, :, 1:], atol=1e-6)
    assert np.all(moved[:, :, -1] == 0.0)


def test_resample_between_oblique_grids_preserves_a_linear_field():
    fine = Grid.from_spacing((20, 20, 20), (2.0, 2.0, 2.0), (-20.0, -20.0, -20.0), oblique_direction(30))
    coarse = fine.with_spacing(3.0)
    ras = fine.voxel_centers_ras()
    field = (ras @ np.array([0.3, -0.2, 0.1]) + 5.0).reshape(fine.shape)
    result = resample(field, fine, coarse, order=1)
    coarse_ras = coarse.voxel_centers_ras()
    expected = (coarse_ras @ np.array([0.3, -0.2, 0.1]) + 5.0).reshape(coarse.shape)
    inside = resample(np.ones(fine.shape), fine, coarse, order=1) > 0.999
    assert inside.sum() > 100
    np.testing.assert_allclose(result[inside], expected[inside], atol=1e-3)


def test_resample_mask_keeps_a_sphere():
    fine = Grid.from_spacing((40, 40, 40), (1.0, 1.0, 1.0), (-20.0, -20.0, -20.0))
    ras = fine.voxel_centers_ras()
    sphere = (np.linalg.norm(ras, axis=1) <= 10.0).reshape(fine.shape)
    coarse = fine.with_spacing(2.0)
    mask = resample_mask(sphere, fine, coarse)
    volume_fine = sphere.sum() * fine.voxel_volume_cc
    volume_coarse = mask.sum() * coarse.voxel_volume_cc
    assert volume_coarse == pytest.approx(volume_fine, rel=0.1)


def test_lps_to_ras_flips_x_and_y():
    np.testing.assert_array_equal(lps_to_ras_matrix() @ [1, 2, 3, 1], [-1, -2, 3, 1])


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0])], ids=["ras", "lps"])
@pytest.mark.parametrize("spacing", [5.0, 2.5, (4.0, 3.0, 2.0)])
def test_axis_aligned_resampling_matches_ndimage_to_the_last_float(direction, spacing):
    """The separable fast path of resample: the same values as ndimage's affine transform (within one
    float32 ulp), the same voxels outside (fill value), both ways between a CT and a dose grid."""
    from scipy import ndimage

    from radagent.geometry import _affine_kji

    ct = Grid.from_spacing((23, 31, 40), (3.0, 3.0, 3.0), (5.0, -7.0, 11.0), direction)
    coarse = ct.with_spacing(spacing)
    rng = np.random.default_rng(1)
    for source, target, fill in ((coarse, ct, 0.0), (ct, coarse, -1000.0)):
        values = (80.0 * rng.random(source.shape)).astype(np.float32)
        matrix, offset = _affine_kji(source, target)
        expected = ndimage.affine_transform(
            values, matrix, offset=offset, output_shape=target.shape, order=1, mode="constant",
            cval=fill, prefilter=False,
        )
        result = resample(values, source, target, fill_value=fill)
        assert result.dtype == expected.dtype and np.array_equal(result == fill, expected == fill)
        np.testing.assert_allclose(result, expected, rtol=0, atol=2 * np.spacing(np.float32(80.0)))


def test_a_sub_box_of_the_same_lattice_is_copied_edge_voxels_included():
    """A cropped volume whose written geometry was rounded (1e-7 mm) lands on its lattice by copying, so
    no edge voxel falls outside and none is interpolated."""
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]]
    full = Grid(
        (6, 7, 8), rotation @ Grid.from_spacing((6, 7, 8), (1.5, 2.0, 2.5), (3.0, -4.0, 5.0)).ijk_to_ras
    )
    values = np.arange(full.size, dtype=np.float32).reshape(full.shape) + 1.0
    corner = full.ijk_to_ras_points(np.array([[2, 1, 1]]))[0] + 1e-7  # voxel (i, j, k) = (2, 1, 1), rounded
    box_matrix = full.ijk_to_ras.copy()
    box_matrix[:3, 3] = corner
    box = Grid((5, 6, 6), box_matrix)  # k 1..5, j 1..6, i 2..7: touches the far edges of ``full``
    cropped = values[1:6, 1:7, 2:8]
    for order in (0, 1):
        back = resample(cropped, box, full, order=order, fill_value=-1.0)
        assert np.array_equal(back[1:6, 1:7, 2:8], cropped)
        assert np.all(back[0] == -1.0) and np.all(back[:, 0] == -1.0) and np.all(back[:, :, :2] == -1.0)
