"""3D gamma index: the fast search against a slow brute force, and analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from radagent.errors import InputError
from radagent.evaluate.gamma import gamma_pass_rate
from radagent.geometry import Grid


def brute_force_gamma(
    reference: np.ndarray, evaluated: np.ndarray, grid: Grid, dose_criterion: float, distance_mm: float,
    cutoff: float, global_normalization: bool, resolution_fraction: int = 10, max_gamma: float = 2.0,
) -> np.ndarray:
    """Obvious gamma: every lattice offset in reach, interpolated with map_coordinates (slow)."""
    spacing_kji = grid.spacing_mm[::-1]
    radius = max_gamma * distance_mm
    axes = []
    for h, size in zip(spacing_kji, reference.shape, strict=True):
        count = int(np.ceil(h / (distance_mm / resolution_fraction) - 1e-9))
        reach = int(np.floor(radius / h * count + 1e-9))
        axes.append(np.arange(-reach, reach + 1) / count if size > 1 else np.zeros(1))
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    distance2 = np.sum((offsets * spacing_kji) ** 2, axis=1) / distance_mm**2
    within = distance2 <= max_gamma**2 + 1e-9
    offsets, distance2 = offsets[within], distance2[within]
    norm = reference.max()
    gamma = np.full(reference.shape, np.nan)
    for point in np.argwhere(reference >= cutoff * norm):
        dose_ref = reference[tuple(point)]
        tolerance = dose_criterion * (norm if global_normalization else dose_ref)
        coordinates = (point + offsets).T
        last = np.array(reference.shape)[:, None] - 1
        inside = np.all((coordinates >= -1e-9) & (coordinates <= last + 1e-9), axis=0)
        dose = ndimage.map_coordinates(evaluated, np.clip(coordinates[:, inside], 0, None), order=1,
                                       mode="nearest")
        values = distance2[inside] + (dose - dose_ref) ** 2 / tolerance**2
        gamma[tuple(point)] = np.sqrt(min(values.min(), max_gamma**2))
    return gamma


def _smooth_field(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=1.5)
    return 10.0 + 40.0 * (field - field.min()) / np.ptp(field)


@pytest.mark.parametrize("global_normalization", [True, False])
def test_fast_search_equals_brute_force(global_normalization: bool) -> None:
    shape = (6, 8, 10)
    grid = Grid.from_spacing(shape, (2.0, 2.5, 3.0), origin_ras=(5.0, -3.0, 1.0))
    reference = _smooth_field(shape, seed=1)
    evaluated = 0.95 * np.roll(reference, 2, axis=2) + _smooth_field(shape, seed=2) / 20.0
    result = gamma_pass_rate(reference, evaluated, grid, 0.03, 3.0, 0.1, global_normalization)
    expected = brute_force_gamma(reference, evaluated, grid, 0.03, 3.0, 0.1, global_normalization)
    assert np.array_equal(np.isnan(result.gamma), np.isnan(expected))
    np.testing.assert_allclose(result.gamma[result.evaluated], expected[result.evaluated], atol=1e-5)
    assert 0.05 < result.pass_rate < 0.95  # a test that exercises both passing and failing voxels
    assert result.pass_rate == pytest.approx(np.mean(expected[result.evaluated] <= 1.0))


def test_identical_distributions_pass_everywhere() -> None:
    shape = (20, 20, 20)
    grid = Grid.from_spacing(shape, (2.5, 2.5, 2.5))
    dose = _smooth_field(shape, seed=3)
    result = gamma_pass_rate(dose, dose, grid)
    assert result.pass_rate == 1.0 and np.all(result.gamma[result.evaluated] == 0.0)


def _gaussian_dose(
    shape: tuple[int, int, int], spacing_mm: float, shift_mm: float, width_mm: float
) -> np.ndarray:
    k, j, i = np.indices(shape) * spacing_mm
    centre = (np.array(shape) - 1) * spacing_mm / 2
    r2 = (i - centre[2] - shift_mm) ** 2 + (j - centre[1]) ** 2 + (k - centre[0]) ** 2
    return 60.0 * np.exp(-r2 / (2 * width_mm**2))


def test_one_millimetre_shift_passes_three_millimetres() -> None:
    shape = (32, 32, 32)
    grid = Grid.from_spacing(shape, (1.0, 1.0, 1.0))
    reference = _gaussian_dose(shape, 1.0, 0.0, 6.0)
    evaluated = _gaussian_dose(shape, 1.0, 1.0, 6.0)
    result = gamma_pass_rate(reference, evaluated, grid, 0.03, 3.0, 0.10)
    assert result.pass_rate == 1.0
    interior = result.gamma[2:-2, 2:-2, 2:-2]  # at the +x edge the matching point is off the grid
    assert np.nanmax(interior) <= 1.0 / 3.0 + 0.05  # a pure 1 mm shift: γ ≤ 1/3 (+ interpolation error)
    assert gamma_pass_rate(reference, evaluated, grid, 0.03, 0.2, 0.10).pass_rate < 0.9


def test_five_percent_scaling_fails_three_percent() -> None:
    shape = (3, 40, 40)
    grid = Grid.from_spacing(shape, (2.0, 2.0, 2.0))
    j, i = np.indices(shape[1:])
    plateau = ((np.abs(i - 19.5) < 16) & (np.abs(j - 19.5) < 16)).astype(float)
    reference = 50.0 * np.broadcast_to(ndimage.uniform_filter(plateau, 3), shape).copy()
    result = gamma_pass_rate(reference, 1.05 * reference, grid, 0.03, 3.0, 0.10)
    flat = result.gamma[:, 8:32, 8:32]  # ≥ 6 mm (the search radius) inside the plateau's edge
    np.testing.assert_allclose(flat, 0.05 / 0.03, atol=1e-4)  # no distance can help on a plateau
    assert result.pass_rate < 0.6
    assert gamma_pass_rate(reference, 1.05 * reference, grid, 0.06, 3.0, 0.10).pass_rate == 1.0


def test_shifted_linear_ramp_matches_the_closed_form() -> None:
    shape = (1, 1, 40)
    grid = Grid.from_spacing(shape, (1.0, 1.0, 1.0))
    x = np.arange(40, dtype=float)
    slope, shift_mm = 2.0, 1.5  # Gy/mm, mm
    reference = (20.0 + slope * x).reshape(shape)
    evaluated = (20.0 + slope * (x - shift_mm)).reshape(shape)
    result = gamma_pass_rate(reference, evaluated, grid, 0.03, 3.0, 0.0, normalization_gy=100.0,
                             max_gamma=3.0)
    tolerance = 0.03 * 100.0
    expected = slope * shift_mm / np.hypot(tolerance, slope * 3.0)  # distance from a point to a line
    interior = result.gamma[0, 0, 10:30]
    np.testing.assert_allclose(interior, expected, rtol=0.01)


def test_cutoff_excludes_low_dose_and_gamma_is_capped() -> None:
    shape = (6, 6, 6)
    grid = Grid.from_spacing(shape, (3.0, 3.0, 3.0))
    reference = np.full(shape, 1.0)
    reference[2:4, 2:4, 2:4] = 50.0
    result = gamma_pass_rate(reference, np.zeros(shape), grid, cutoff=0.1, max_gamma=2.0)
    assert result.evaluated.sum() == 8 and np.all(np.isnan(result.gamma[~result.evaluated]))
    assert np.all(result.gamma[result.evaluated] == pytest.approx(2.0)) and result.pass_rate == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [({"evaluated_gy": np.zeros((2, 2, 2))}, "shape"), ({"dose_criterion": 0.0}, "criteria"),
     ({"reference_gy": np.full((4, 4, 4), np.nan)}, "NaN"),
     ({"reference_gy": np.zeros((4, 4, 4))}, "positive")],
)
def test_bad_inputs_raise_input_error(change: dict, message: str) -> None:
    grid = Grid.from_spacing((4, 4, 4), (2.0, 2.0, 2.0))
    arguments = {"reference_gy": np.ones((4, 4, 4)), "evaluated_gy": np.ones((4, 4, 4)), "grid": grid}
    arguments.update(change)
    with pytest.raises(InputError, match=message):
        gamma_pass_rate(**arguments)
