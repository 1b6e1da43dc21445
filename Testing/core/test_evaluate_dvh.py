"""DVH metric definitions (evaluate/dvh.py) on hand-made dose arrays."""

import numpy as np
import pytest

from radagent.evaluate.dvh import StructureDoses, dose_on_ct_grid, hottest_minimum_gy, hottest_voxel_count
from radagent.geometry import Grid


def one_to_hundred(voxel_volume_cc: float = 0.01) -> StructureDoses:
    """100 voxels with doses 1, 2, …, 100 Gy in shuffled order."""
    doses = np.random.default_rng(3).permutation(np.arange(1.0, 101.0))
    return StructureDoses("S", doses, voxel_volume_cc)


def test_hottest_voxel_count_rounds_up_but_not_on_float_noise():
    assert hottest_voxel_count(0.95, 100) == 95
    assert hottest_voxel_count(0.951, 100) == 96
    assert hottest_voxel_count(0.0, 100) == 1
    assert hottest_voxel_count(1.5, 100) == 100
    assert hottest_voxel_count(0.02, 7) == 1


def test_dx_is_the_minimum_dose_of_the_hottest_x_percent():
    s = one_to_hundred()
    assert s.dose_at_percent_gy(95) == 6.0
    assert s.dose_at_percent_gy(98) == 3.0
    assert s.dose_at_percent_gy(50) == 51.0
    assert s.dose_at_percent_gy(2) == 99.0
    assert s.dose_at_percent_gy(100) == 1.0
    assert s.dose_at_percent_gy(0) == 100.0
    np.testing.assert_array_equal(s.doses_at_percent_gy([2, 5, 10, 95]), [99.0, 96.0, 91.0, 6.0])
    assert hottest_minimum_gy(s.doses_gy, 0.95) == 6.0  # the optimizer's D(V), same definition


def test_vx_mean_extremes_and_volume():
    s = one_to_hundred()
    assert s.volume_fraction_at_gy(95.0) == pytest.approx(0.06)  # 95…100 Gy: six voxels, ≥ is inclusive
    assert s.volume_fraction_at_gy(95.5) == pytest.approx(0.05)
    assert s.volume_cc_at_gy(91.0) == pytest.approx(0.10)
    assert s.mean_gy == pytest.approx(50.5)
    assert (s.max_gy, s.min_gy) == (100.0, 1.0)
    assert s.volume_cc == pytest.approx(1.0)
    assert s.voxel_count == 100


def test_d_003cc_uses_whole_voxels_covering_the_volume():
    assert one_to_hundred(0.01).dose_at_cc_gy(0.03) == 98.0  # exactly 3 voxels
    assert one_to_hundred(0.02).dose_at_cc_gy(0.03) == 99.0  # 1.5 voxels -> the 2 hottest
    assert one_to_hundred(0.05).dose_at_cc_gy(0.03) == 100.0  # less than one voxel -> the hottest
    small = StructureDoses("tiny", np.array([3.0, 7.0, 5.0]), 0.001)  # 0.003 cm³ < 0.03 cm³
    assert small.dose_at_cc_gy(0.03) == 7.0


def test_cumulative_dvh_matches_brute_force_counts():
    rng = np.random.default_rng(0)
    doses = rng.uniform(0, 80, 5000)
    doses[:10] = 20.0  # exact bin edges are counted as ≥
    s = StructureDoses("S", doses, 0.1)
    axis = np.linspace(0.0, 70.0, 141)
    expected = [(doses >= level).mean() for level in axis]
    np.testing.assert_allclose(s.cumulative_dvh(axis), expected)
    assert s.cumulative_dvh(axis)[0] == 1.0


def test_cumulative_dvh_rejects_uneven_axes_and_empty_structures():
    s = one_to_hundred()
    with pytest.raises(ValueError, match="equally spaced"):
        s.cumulative_dvh(np.array([0.0, 1.0, 3.0]))
    with pytest.raises(ValueError, match="no voxels"):
        StructureDoses("empty", np.array([]), 0.1)


def test_from_mask_selects_the_structure_voxels():
    dose = np.arange(24.0).reshape(2, 3, 4)
    mask = dose >= 20
    s = StructureDoses.from_mask("S", dose, mask, 0.027)
    assert sorted(s.doses_gy.tolist()) == [20.0, 21.0, 22.0, 23.0]
    assert s.volume_cc == pytest.approx(4 * 0.027)


def test_dose_on_ct_grid_interpolates_trilinearly():
    ct = Grid.from_spacing((6, 8, 10), (2.0, 2.0, 2.0))
    dose_grid = ct.with_spacing(4.0)
    centres = dose_grid.voxel_centers_ras()
    linear = (1.0 + 0.5 * centres[:, 0] + 0.25 * centres[:, 1]).astype(np.float32)  # flat [k, j, i] order
    on_ct = dose_on_ct_grid(linear, dose_grid, ct)
    assert on_ct.shape == ct.shape
    ct_centres = ct.voxel_centers_ras().reshape(*ct.shape, 3)
    inner = (slice(1, -1), slice(1, -1), slice(1, -1))
    expected = 1.0 + 0.5 * ct_centres[..., 0] + 0.25 * ct_centres[..., 1]
    np.testing.assert_allclose(on_ct[inner], expected[inner], rtol=1e-5)
    np.testing.assert_array_equal(dose_on_ct_grid(on_ct, ct, ct), on_ct)


def doses_of_kind(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """float32 doses with the features a selection could trip on."""
    if kind == "uniform":
        values = rng.uniform(0, 80, size)
    elif kind == "ties":
        values = np.round(rng.uniform(0, 5, size), 1)
    elif kind == "zeros":
        values = np.zeros(size)
    elif kind == "signed":
        values = np.concatenate([rng.normal(0, 30, size - 200), np.zeros(100), -np.zeros(100)])
    elif kind == "sparse-with-infinities":
        body = np.where(rng.uniform(size=size - 4) < 0.9, 0.0, rng.exponential(20, size - 4))
        values = np.concatenate([body, [np.inf, np.inf, -np.inf, -np.inf]])
    else:  # constant but for a few hot voxels
        values = np.where(np.arange(size) % 1000 == 0, 80.0, 42.5)
    return rng.permutation(values).astype(np.float32)


@pytest.mark.parametrize("kind", ["uniform", "ties", "zeros", "signed", "sparse-with-infinities", "constant"])
def test_large_structures_select_the_same_order_statistics_as_a_partial_sort(kind):
    """CT-grid structures of 20 000 voxels or more take a radix selection; it must give exactly the
    values np.partition gives, ties, ±0, infinities and constant doses included (NaN: partial sort)."""
    from radagent.evaluate.dvh import _order_statistics

    rng = np.random.default_rng(len(kind))
    for size in (20_000, 20_001, 123_457):
        values = doses_of_kind(kind, size, rng)
        for _ in range(5):
            positions = rng.integers(0, size, rng.integers(1, 9))
            expected = np.partition(values, np.unique(positions))[positions].astype(np.float64)
            found = _order_statistics(values, positions)
            np.testing.assert_array_equal(found.view(np.uint64), expected.view(np.uint64))  # ±0 too
        assert StructureDoses("S", values, 0.01).dose_at_percent_gy(95) == float(
            np.partition(values, size - hottest_voxel_count(0.95, size))[
                size - hottest_voxel_count(0.95, size)
            ]
        )
    values[3] = np.nan
    positions = np.array([0, 7, values.size - 1])
    expected = np.partition(values, positions)[positions].astype(np.float64)
    np.testing.assert_array_equal(_order_statistics(values, positions), expected)
