"""Physics of the 6 MV pencil-beam engine in water phantoms: PDD, inverse square, profiles, heterogeneity,
linearity, beam direction and CT-orientation independence."""

from __future__ import annotations

import numpy as np
import pytest
from dose_phantoms import box_case, dose_at, line

from radagent.dose import DoseEngineSettings, compute_dose_influence, open_field_beamlets

HALF_DEPTH_MM = 125.0  # the box spans y ∈ [−125, 125]; gantry 0 enters at y = +125 (anterior)
DOWN = (0.0, -1.0, 0.0)  # direction of a gantry-0 beam in RAS (head-first supine)
EXACT = DoseEngineSettings(exact_radius_mm=50.0, tail_sampling_stride=1)


def field_dose(case, gantry_deg, isocenter_ras, field_mm=100.0, settings=EXACT):
    """(influence, dose) of one open square field with weight 1 on every beamlet."""
    influence = compute_dose_influence(
        case, [gantry_deg], settings, isocenter_ras=isocenter_ras,
        beamlets_uv_mm=[open_field_beamlets(field_mm, bixel_mm=settings.bixel_mm)],
    )
    return influence, influence.dose(np.ones(influence.n_beamlets))


@pytest.fixture(scope="module")
def water_field():
    """10 × 10 cm² field at SSD 1000 mm (isocentre on the water surface)."""
    case = box_case()
    return field_dose(case, 0.0, (0.0, HALF_DEPTH_MM, 0.0))


def depth_dose(influence, dose, depths_mm):
    return dose_at(influence, dose, line((0.0, HALF_DEPTH_MM, 0.0), DOWN, depths_mm))


def test_pdd_of_10x10_field_builds_up_and_matches_published_6mv(water_field):
    influence, dose = water_field
    depths = np.arange(0.0, 240.0, 0.5)
    pdd = 100.0 * depth_dose(influence, dose, depths) / depth_dose(influence, dose, depths).max()
    depth_of_maximum = depths[np.argmax(pdd)]
    assert 10.0 <= depth_of_maximum <= 20.0
    assert pdd[0] < 60.0  # build-up
    assert pdd[depths == 100.0][0] == pytest.approx(67.0, abs=2.0)
    assert pdd[depths == 50.0][0] == pytest.approx(86.0, abs=2.5)
    assert pdd[depths == 200.0][0] == pytest.approx(38.5, abs=2.5)


def test_calibration_gives_one_gray_at_dmax_for_10x10_at_ssd_1000(water_field):
    influence, dose = water_field
    assert depth_dose(influence, dose, np.arange(5.0, 30.0, 0.5)).max() == pytest.approx(1.0, abs=0.02)


def test_profile_is_symmetric_with_a_realistic_penumbra(water_field):
    influence, dose = water_field
    offsets = np.arange(-90.0, 90.25, 0.25)
    centre = (0.0, HALF_DEPTH_MM - 100.0, 0.0)
    for axis in ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)):
        profile = dose_at(influence, dose, line(centre, axis, offsets))
        relative = profile / profile[offsets == 0.0][0]
        assert np.max(np.abs(relative - relative[::-1])) < 0.01
        right = offsets >= 0
        x, r = offsets[right], relative[right]
        x80 = np.interp(0.8, r[::-1], x[::-1])
        x20 = np.interp(0.2, r[::-1], x[::-1])
        x50 = np.interp(0.5, r[::-1], x[::-1])
        assert 4.0 <= x20 - x80 <= 8.0
        assert x50 == pytest.approx(55.0, abs=1.5)  # field edge projected to 1100 mm from the source


def test_dose_falls_with_inverse_square_in_air_behind_a_buildup_slab():
    half = (120.0, 125.0, 120.0)
    air_gap = ((0.0, -20.0, 0.0), (120.0, 105.0, 120.0), -1000.0)  # body below a 20 mm water slab
    case = box_case(half, inserts=[air_gap])
    influence, dose = field_dose(case, 0.0, (0.0, 0.0, 0.0))
    distance = np.array([940.0, 1000.0, 1060.0, 1115.0])  # mm from the source, air between 915 and 1125
    points = line((0.0, 1000.0, 0.0), DOWN, distance)
    values = dose_at(influence, dose, points)
    assert values[-1] < 0.75 * values[0]
    scaled = values * distance**2
    assert np.ptp(scaled) / scaled.mean() < 0.03


def test_lung_slab_raises_the_dose_behind_it():
    lung = ((0.0, 60.0, 0.0), (120.0, 30.0, 120.0), -740.0)  # RED ≈ 0.25 between 35 and 95 mm deep
    water = box_case()
    with_lung = box_case(inserts=[lung])
    iso = (0.0, HALF_DEPTH_MM, 0.0)
    water_influence, water_dose = field_dose(water, 0.0, iso)
    lung_influence, lung_dose = field_dose(with_lung, 0.0, iso)
    behind = line(iso, DOWN, np.array([120.0, 150.0]))
    ratio = dose_at(lung_influence, lung_dose, behind) / dose_at(water_influence, water_dose, behind)
    assert np.all(ratio > 1.1)
    before = line(iso, DOWN, np.array([20.0]))
    ratio_before = dose_at(lung_influence, lung_dose, before) / dose_at(water_influence, water_dose, before)
    assert ratio_before == pytest.approx(1.0, abs=0.01)


def test_dose_is_linear_in_the_weights():
    case = box_case((80.0, 80.0, 80.0))
    influence = compute_dose_influence(case, [0.0, 120.0], DoseEngineSettings())
    rng = np.random.default_rng(3)
    x, y = rng.random(influence.n_beamlets), rng.random(influence.n_beamlets)
    combined = influence.dose(2.0 * x + 0.5 * y)
    assert np.allclose(combined, 2.0 * influence.dose(x) + 0.5 * influence.dose(y), rtol=1e-9, atol=1e-12)
    assert np.allclose(influence.dose(x), influence.matrix @ x, rtol=1e-5, atol=1e-9)


def test_lateral_beam_at_90_degrees_enters_from_the_patients_left():
    case = box_case((120.0, 80.0, 80.0))
    influence, dose = field_dose(case, 90.0, (0.0, 0.0, 0.0), field_mm=60.0)
    x = np.arange(-115.0, 116.0, 1.0)
    profile = dose_at(influence, dose, line((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), x))
    assert x[np.argmax(profile)] < -90.0  # d_max ≈ 15 mm inside the left (−x) surface at x = −120
    assert profile[x == -100.0][0] > 1.5 * profile[x == 100.0][0]


def test_oblique_ct_gives_the_same_dose_in_ras_as_an_axis_aligned_ct():
    angle_z, angle_x = np.deg2rad(25.0), np.deg2rad(10.0)
    rot_z = np.array(
        [[np.cos(angle_z), -np.sin(angle_z), 0], [np.sin(angle_z), np.cos(angle_z), 0], [0, 0, 1]]
    )
    rot_x = np.array(
        [[1, 0, 0], [0, np.cos(angle_x), -np.sin(angle_x)], [0, np.sin(angle_x), np.cos(angle_x)]]
    )
    half = (90.0, 90.0, 90.0)
    lung = ((20.0, 10.0, 0.0), (25.0, 20.0, 30.0), -740.0)
    bone = ((-30.0, -30.0, 0.0), (10.0, 10.0, 40.0), 900.0)
    inserts = [lung, bone]
    settings = DoseEngineSettings(dose_grid_mm=3.0, exact_radius_mm=50.0, tail_sampling_stride=1)
    results = []
    for direction in (None, rot_z @ rot_x):
        case = box_case(half, spacing_mm=3.0, inserts=inserts, direction=direction)
        influence, dose = field_dose(case, 40.0, (0.0, 0.0, 0.0), field_mm=60.0, settings=settings)
        results.append((influence, dose))
    rng = np.random.default_rng(0)
    points = rng.uniform(-75.0, 75.0, size=(3000, 3))  # well inside the box (voxelized surfaces differ)
    aligned, oblique = (dose_at(influence, dose, points) for influence, dose in results)
    scale = aligned.max()
    difference = np.abs(oblique - aligned) / scale
    assert np.mean(difference) < 0.01
    assert np.percentile(difference, 95) < 0.03
