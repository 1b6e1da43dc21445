"""The 6 MV beam model: its fit to the reference water data, calibration and numba/numpy agreement."""

from __future__ import annotations

import numpy as np
import pytest

from radagent.dose.beam_model import (
    DEFAULT_6MV,
    REFERENCE_OUTPUT_FACTOR,
    REFERENCE_PDD_PERCENT,
    REFERENCE_PENUMBRA_MM,
    calibration_gy,
    central_axis_dose,
    fit_beam_model,
    fit_residuals,
    lateral_taper,
    penumbra_80_20_mm,
    percent_depth_dose,
)
from radagent.dose.kernels import _components


@pytest.mark.parametrize("field_mm", [30.0, 50.0, 100.0])
def test_pdd_reproduces_the_reference_tables(field_mm):
    table = {d: p for d, p in REFERENCE_PDD_PERCENT[field_mm].items() if d >= 15.0}
    model = percent_depth_dose(DEFAULT_6MV, np.array(list(table)), field_mm)
    assert np.max(np.abs(model - np.array(list(table.values())))) < 1.0


def test_buildup_surface_dose_and_depth_of_maximum():
    depths = np.arange(0.0, 40.0, 0.5)
    pdd = percent_depth_dose(DEFAULT_6MV, depths, 100.0)
    assert 13.0 <= depths[np.argmax(pdd)] <= 17.0
    assert pdd[0] == pytest.approx(REFERENCE_PDD_PERCENT[100.0][0.0], abs=3.0)
    assert 40.0 <= np.interp(1.5, depths, pdd) <= 60.0  # the first 3 mm dose voxel's centre


def test_output_factors_and_penumbra_reproduce_the_reference():
    maximum = {f: central_axis_dose(DEFAULT_6MV, np.arange(10.0, 20.0, 0.5), f).max() for f in (30, 50, 100)}
    for field_mm in (30.0, 50.0):
        relative = maximum[field_mm] / maximum[100.0]
        assert relative == pytest.approx(REFERENCE_OUTPUT_FACTOR[field_mm], abs=0.01)
    for depth_mm, width_mm in REFERENCE_PENUMBRA_MM.items():
        assert penumbra_80_20_mm(DEFAULT_6MV, depth_mm) == pytest.approx(width_mm, abs=0.5)


def test_shipped_parameters_are_the_converged_fit():
    cost = np.sum(fit_residuals(DEFAULT_6MV) ** 2)
    refit = fit_beam_model(DEFAULT_6MV, max_evaluations=2)
    assert np.sum(fit_residuals(refit) ** 2) > 0.99 * cost
    assert np.sqrt(cost / len(fit_residuals(DEFAULT_6MV))) < 0.6


def test_calibration_gives_one_gray_at_dmax_of_the_reference_field():
    dose = central_axis_dose(DEFAULT_6MV, np.arange(5.0, 30.0, 0.25), 100.0)
    assert dose.max() * calibration_gy(DEFAULT_6MV) == pytest.approx(1.0, abs=1e-4)


def test_uniform_field_dose_does_not_depend_on_the_beamlet_size():
    depths = np.array([15.0, 100.0])
    fine = central_axis_dose(DEFAULT_6MV, depths, 100.0, bixel_mm=5.0)
    coarse = central_axis_dose(DEFAULT_6MV, depths, 100.0, bixel_mm=10.0)
    assert np.allclose(coarse, fine, rtol=0.01)


def test_lateral_taper_goes_smoothly_from_one_to_zero():
    r = np.linspace(0.0, 60.0, 601)
    taper = lateral_taper(r**2, 50.0, 10.0)
    assert np.all(taper[r <= 40.0] == 1.0) and np.all(taper[r >= 50.0] == 0.0)
    assert np.all(np.diff(taper) <= 0.0)


def test_numba_components_match_the_numpy_model():
    depths = np.linspace(0.0, 400.0, 37)
    amplitude, sigma = DEFAULT_6MV.components(depths)
    params = DEFAULT_6MV.packed()
    got_a, got_s = np.empty(3), np.empty(3)
    for n, depth in enumerate(depths):
        _components(params, depth, got_a, got_s)
        assert np.allclose(got_a, amplitude[n], rtol=1e-12) and np.allclose(got_s, sigma[n], rtol=1e-12)
