"""Built-in phantom cases: deterministic, anatomically plausible, quick, and consistent with list_cases."""

import time

import numpy as np
import pytest
from scipy import ndimage

from radagent.cases import list_cases, load_case
from radagent.errors import InputError
from radagent.patient import Role

CASE_NAMES = ("prostate", "prostate-4oar", "liver", "cshape", "water")


@pytest.fixture(scope="module")
def typical():
    """Variant 0 of every built-in case, built once."""
    return {name: load_case(name) for name in CASE_NAMES}


def volume_cc(case, name):
    return case.structure(name).voxel_count * case.grid.voxel_volume_cc


def test_list_cases_describes_what_load_case_builds(typical):
    infos = {info.name: info for info in list_cases()}
    assert tuple(infos) == CASE_NAMES
    for name, case in typical.items():
        info = infos[name]
        assert info.structures == tuple((s.name, s.role) for s in case.structures)
        assert info.prescription_gy == case.prescription_gy
        assert info.fractions == case.protocol.fractions
        assert info.scorecard == case.protocol.scorecard.name
        assert info.max_score == case.protocol.scorecard.max_score
        assert all(s.voxel_count > 0 for s in case.structures)
        assert not np.any(case.target_mask() & ~case.body.mask)
    assert (infos["prostate"].prescription_gy, infos["prostate"].fractions) == (79.2, 44)
    assert infos["prostate"].max_score == 9 and infos["prostate-4oar"].max_score == 15
    assert infos["liver"].max_score == 4 and (infos["liver"].prescription_gy, infos["liver"].fractions) == (
        50.0,
        25,
    )
    assert (infos["water"].prescription_gy, infos["water"].fractions) == (2.0, 1)


def test_same_variant_gives_identical_arrays():
    for name in ("prostate-4oar", "liver", "cshape", "water"):
        first, second = load_case(name, variant=3), load_case(name, variant=3)
        np.testing.assert_array_equal(first.ct_hu, second.ct_hu)
        assert first.grid.same_as(second.grid, tol_mm=0.0)
        for a, b in zip(first.structures, second.structures, strict=True):
            assert a.name == b.name
            np.testing.assert_array_equal(a.mask, b.mask)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_variants_differ(typical, name):
    other = load_case(name, variant=1)
    assert other.name == f"{name}-v1"
    assert not np.array_equal(typical[name].target_mask(), other.target_mask())
    assert [s.name for s in other.structures] == [s.name for s in typical[name].structures]


def test_prostate_variants_vary_the_anatomy():
    volumes = {n: [] for n in ("PTV", "Bladder", "Rectum")}
    for variant in range(1, 7):
        case = load_case("prostate", variant)
        for name, values in volumes.items():
            values.append(volume_cc(case, name))
    for name, values in volumes.items():
        assert max(values) > 1.2 * min(values), (name, values)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_every_case_builds_in_under_a_second(name):
    start = time.perf_counter()
    load_case(name, variant=2)
    assert time.perf_counter() - start < 1.0


def test_grids_are_ct_like(typical):
    for name, case in typical.items():
        spacing = case.grid.spacing_mm
        assert np.allclose(spacing, spacing[0]) and 2.0 <= spacing[0] <= 3.0, name
        np.testing.assert_allclose(case.grid.direction, np.diag([-1.0, -1.0, 1.0]))
        assert case.grid.size <= 1.2e6, name
        assert np.all(case.ct_hu[~case.body.mask] == -1000.0), name
    assert typical["prostate"].grid.size < 6e5


def test_pelvis_hounsfield_units_and_volumes_are_plausible(typical):
    case = typical["prostate-4oar"]
    hu = case.ct_hu
    body = case.body.mask
    assert 0.15 < np.mean(np.abs(hu[body] + 100.0) < 20.0) < 0.6  # fat: subcutaneous and pelvic
    assert 0.2 < np.mean(np.abs(hu[body] - 50.0) < 20.0) < 0.7  # muscle and soft tissue
    for side in ("FemoralHead_L", "FemoralHead_R"):
        head = case.structure(side).mask
        assert 350.0 < hu[head].mean() < 800.0 and hu[head].max() > 850.0
        assert 60.0 < volume_cc(case, side) < 150.0
    assert np.median(hu[case.structure("Bladder").mask]) < 30.0  # urine
    assert np.any(hu[case.structure("Rectum").mask] < -900.0)  # rectal gas
    assert np.any(hu[case.structure("Bowel").mask] < -900.0)  # bowel gas
    assert 50.0 < volume_cc(case, "PTV") < 120.0
    assert 120.0 < volume_cc(case, "Bladder") < 400.0
    assert 40.0 < volume_cc(case, "Rectum") < 120.0
    assert 50.0 < volume_cc(case, "Bowel") < 400.0
    assert 8000.0 < volume_cc(case, "Body") < 14000.0
    rows, cols = np.nonzero(body[body.shape[0] // 2])
    width_mm, depth_mm = 3.0 * (np.ptp(cols) + 1), 3.0 * (np.ptp(rows) + 1)
    assert 355.0 <= width_mm <= 385.0 and 215.0 <= depth_mm <= 245.0


@pytest.mark.parametrize("variant", range(6))
def test_bladder_and_rectum_crowd_the_ptv_but_leave_full_marks_reachable(variant):
    case = load_case("prostate", variant)
    ptv = case.structure("PTV").mask
    distance_mm = ndimage.distance_transform_edt(~ptv, sampling=case.grid.spacing_mm[::-1])
    for organ in ("Bladder", "Rectum"):
        mask = case.structure(organ).mask
        inside = np.mean(ptv[mask])
        assert 0.01 < inside <= 0.12, (organ, inside)  # overlap, but under the card's 15 % limits
        assert np.mean(distance_mm[mask] <= 10.0) > 0.10, organ
    rectum = case.structure("Rectum").mask
    assert np.any(rectum & ptv)


def test_liver_anatomy(typical):
    case = typical["liver"]
    hu = case.ct_hu
    assert 45.0 < np.median(hu[case.structure("Liver").mask]) < 75.0
    assert 1200.0 < volume_cc(case, "Liver") < 2000.0
    assert 40.0 < volume_cc(case, "PTV") < 200.0
    assert np.any(hu[case.structure("Stomach").mask] < -900.0)  # gas cap
    assert np.any(hu[case.body.mask] < -700.0)  # lung bases
    assert np.any(hu[case.body.mask] > 850.0)  # vertebrae and ribs
    ptv = case.structure("PTV").mask
    distance_mm = ndimage.distance_transform_edt(~ptv, sampling=case.grid.spacing_mm[::-1])
    assert 0.0 < distance_mm[case.structure("Stomach").mask].min() <= 6.0  # abutting, not overlapping
    assert distance_mm[case.structure("SpinalCord").mask].min() > 30.0


@pytest.mark.parametrize("variant", range(1, 4))
def test_liver_variants_move_the_ptv_but_never_into_the_stomach(variant):
    case = load_case("liver", variant)
    ptv, stomach = case.structure("PTV").mask, case.structure("Stomach").mask
    distance_mm = ndimage.distance_transform_edt(~ptv, sampling=case.grid.spacing_mm[::-1])
    assert 0.0 < distance_mm[stomach].min() <= 18.0
    assert 45.0 < np.median(case.ct_hu[ptv]) < 75.0  # the PTV lies in liver tissue
    assert np.count_nonzero(ptv & ~case.body.mask) == 0


def test_cshape_follows_tg119(typical):
    case = typical["cshape"]
    core = case.structure("Core").mask
    ptv = case.structure("PTV").mask
    assert np.all(case.ct_hu[case.body.mask] == 0.0)
    assert volume_cc(case, "Core") == pytest.approx(np.pi * 1.0**2 * 10.0, rel=0.1)
    distance_mm = ndimage.distance_transform_edt(~core, sampling=case.grid.spacing_mm[::-1])
    assert 4.0 <= distance_mm[ptv].min() <= 6.0  # the 5 mm core–PTV gap
    points = case.grid.voxel_centers_ras(np.flatnonzero(ptv))
    assert np.hypot(points[:, 0], points[:, 1]).max() <= 37.0 + 1e-6
    assert np.ptp(points[:, 2]) == pytest.approx(80.0, abs=2.6)
    assert [s.role for s in case.structures] == [Role.BODY, Role.TARGET, Role.OAR]


def test_water_box(typical):
    case = typical["water"]
    assert np.all(case.ct_hu[case.body.mask] == 0.0)
    assert volume_cc(case, "Body") == pytest.approx(27000.0, rel=0.01)
    points = case.grid.voxel_centers_ras(np.flatnonzero(case.structure("PTV").mask))
    np.testing.assert_allclose(np.ptp(points, axis=0) + 3.0, 42.0)  # 14 voxels of 3 mm: the nearest to 40
    np.testing.assert_allclose(case.isocenter_ras, 0.0, atol=1e-9)


def test_bad_names_and_variants_raise_input_error():
    with pytest.raises(InputError, match="prostrate"):
        load_case("prostrate")
    for variant in (-1, 1.5):
        with pytest.raises(InputError, match="variant"):
            load_case("water", variant)
    assert load_case(" Water ").name == "water"
