"""Case validation: bad inputs are rejected at construction with a message naming the problem."""

import numpy as np
import pytest

from radagent.density import DensityCalibration
from radagent.errors import InputError
from radagent.geometry import Grid
from radagent.patient import Case, Protocol, Role, Structure, body_from_ct, structure_on_grid


def small_case_parts():
    grid = Grid.from_spacing((10, 12, 14), (3.0, 3.0, 3.0), (-21.0, -18.0, -15.0))
    ct = np.full(grid.shape, -1000.0, dtype=np.float32)
    body = np.zeros(grid.shape, bool)
    body[1:-1, 1:-1, 1:-1] = True
    ct[body] = 0.0
    target = np.zeros(grid.shape, bool)
    target[4:6, 5:7, 6:8] = True
    oar = np.zeros(grid.shape, bool)
    oar[4:6, 2:4, 6:8] = True
    structures = (
        Structure("Body", Role.BODY, body),
        Structure("PTV", Role.TARGET, target),
        Structure("Cord", Role.OAR, oar),
    )
    return grid, ct, structures


def test_valid_case_exposes_roles_and_isocentre():
    grid, ct, structures = small_case_parts()
    case = Case("test", ct, grid, structures, Protocol(2.0))
    assert [s.name for s in case.targets] == ["PTV"]
    assert [s.name for s in case.oars] == ["Cord"]
    assert case.body.name == "Body"
    expected = grid.ijk_to_ras_points([[6.5, 5.5, 4.5]])[0]
    np.testing.assert_allclose(case.isocenter_ras, expected)
    assert case.structure("ptv").name == "PTV"
    red = case.relative_electron_density()
    assert red[5, 5, 5] == pytest.approx(1.0) and red[0, 0, 0] == 0.0


def test_nan_ct_is_rejected():
    grid, ct, structures = small_case_parts()
    ct[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        Case("test", ct, grid, structures, Protocol(2.0))


def test_empty_structure_is_rejected():
    grid, ct, structures = small_case_parts()
    empty = Structure("Rectum", Role.OAR, np.zeros(grid.shape, bool))
    with pytest.raises(InputError, match="'Rectum' is empty"):
        Case("test", ct, grid, (*structures, empty), Protocol(2.0))


def test_target_outside_body_is_rejected():
    grid, ct, structures = small_case_parts()
    outside = np.zeros(grid.shape, bool)
    outside[0, 0, :] = True
    with pytest.raises(InputError, match="outside the body"):
        Case("test", ct, grid, (structures[0], Structure("PTV", Role.TARGET, outside)), Protocol(2.0))


def test_missing_target_or_body_is_rejected():
    grid, ct, structures = small_case_parts()
    with pytest.raises(InputError, match="no target"):
        Case("test", ct, grid, (structures[0], structures[2]), Protocol(2.0))
    with pytest.raises(InputError, match="exactly one body"):
        Case("test", ct, grid, structures[1:], Protocol(2.0))


def test_mismatched_geometry_is_rejected():
    grid, ct, structures = small_case_parts()
    with pytest.raises(InputError, match="does not match"):
        Case("test", ct[:-1], grid, structures, Protocol(2.0))


@pytest.mark.parametrize("dose", [0.0, -1.0, float("nan")])
def test_bad_prescription_is_rejected(dose):
    with pytest.raises(InputError, match="prescription"):
        Protocol(dose)


def test_structure_on_another_grid_is_resampled_and_outside_one_rejected():
    grid, _, _ = small_case_parts()
    fine = Grid.from_spacing((20, 24, 28), (1.5, 1.5, 1.5), (-21.75, -18.75, -15.75))
    mask = np.zeros(fine.shape, bool)
    mask[8:12, 10:14, 12:16] = True
    structure = structure_on_grid("Lesion", "target", mask, fine, grid)
    assert structure.mask.shape == grid.shape and structure.voxel_count > 0
    far = Grid.from_spacing((4, 4, 4), (1.0, 1.0, 1.0), (500.0, 500.0, 500.0))
    with pytest.raises(InputError, match="does not overlap the CT"):
        structure_on_grid("Far", "oar", np.ones(far.shape, bool), far, grid)


def test_body_from_ct_finds_the_patient_and_fills_holes():
    _, ct, _ = small_case_parts()
    ct[5, 5, 5] = -1000.0  # an air pocket inside stays inside the body
    body = body_from_ct(ct)
    assert body[5, 5, 5] and not body[0, 0, 0]


def test_density_calibration_is_monotone_and_validated():
    calibration = DensityCalibration()
    values = calibration(np.array([-1000.0, 0.0, 1000.0]))
    assert values[0] < 0.01 and values[1] == pytest.approx(1.0) and values[2] > 1.4
    with pytest.raises(ValueError, match="increase"):
        DensityCalibration(((0.0, 1.0), (0.0, 1.1)))
