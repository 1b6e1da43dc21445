"""matRad .mat reader: a synthetic file with known voxels, the TG-119 phantom, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import io as scipy_io
from tg119_data import find_tg119_mat

from radagent.density import DensityCalibration
from radagent.errors import InputError
from radagent.io.matrad import read_matrad, read_matrad_structures
from radagent.patient import Role

NY, NX, NZ = 4, 5, 3  # matRad cube (rows = y, columns = x, slices = z)
RES = {"x": 2.0, "y": 3.0, "z": 4.0}
FIRST_LPS = (-10.0, 20.0, -5.0)


def _linear_index(row: int, column: int, slice_: int) -> int:
    """MATLAB 1-based column-major linear index of 0-based (row, column, slice) in the cube."""
    return 1 + row + column * NY + slice_ * NY * NX


def _cell(*items: object) -> np.ndarray:
    cell = np.empty((len(items), 1), dtype=object)
    for n, item in enumerate(items):
        cell[n, 0] = item
    return cell


def _objective(class_name: str, dose_gy: float, penalty: float = 1.0) -> dict:
    return {"className": class_name, "parameters": _cell(dose_gy), "penalty": penalty}


def _cst_row(number: int, name: str, kind: str, indices: list[int], objectives: list[dict]) -> list:
    return [number, name, kind, _cell(np.array(indices, dtype=float).reshape(-1, 1)),
            {"Priority": 1}, _cell(*objectives) if objectives else np.empty((0, 0), dtype=object)]


def _write_phantom(path: Path, cst_rows: list[list], **ct_changes: object) -> np.ndarray:
    """Write a matRad-layout .mat; returns the HU cube (y, x, z) with a distinct value per voxel."""
    cube = np.arange(NY * NX * NZ, dtype=float).reshape(NY, NX, NZ) - 50.0
    ct = {
        "cubeHU": _cell(cube),
        "resolution": RES,
        "x": FIRST_LPS[0] + RES["x"] * np.arange(NX),
        "y": FIRST_LPS[1] + RES["y"] * np.arange(NY),
        "z": FIRST_LPS[2] + RES["z"] * np.arange(NZ),
        "cubeDim": np.array([NY, NX, NZ], dtype=float),
        "numOfCtScen": 1,
    }
    ct.update(ct_changes)
    ct = {key: value for key, value in ct.items() if value is not None}
    cst = np.empty((len(cst_rows), 6), dtype=object)
    for n, row in enumerate(cst_rows):
        for m, value in enumerate(row):
            cst[n, m] = value
    scipy_io.savemat(path, {"ct": ct, "cst": cst})
    return cube


ALL_VOXELS = list(range(1, NY * NX * NZ + 1))
TARGET_VOXEL = (1, 3, 2)  # row, column, slice (0-based)
OAR_VOXELS = [(0, 0, 0), (3, 4, 1)]


def _standard_rows() -> list[list]:
    return [
        _cst_row(0, "PTV", "TARGET", [_linear_index(*TARGET_VOXEL)],
                 [_objective("DoseObjectives.matRad_SquaredDeviation", 60.0)]),
        _cst_row(1, "Cord", "OAR", [_linear_index(*v) for v in OAR_VOXELS],
                 [_objective("DoseObjectives.matRad_SquaredOverdosing", 20.0)]),
        _cst_row(2, "External", "OAR", ALL_VOXELS, []),
        _cst_row(3, "Couch", "IGNORED", [1, 2], []),
    ]


def test_synthetic_voxels_land_at_their_ras_positions(tmp_path: Path) -> None:
    path = tmp_path / "tiny.mat"
    cube = _write_phantom(path, _standard_rows())
    case = read_matrad(path, fractions=30)
    assert case.grid.shape == (NZ, NY, NX)
    assert np.array_equal(case.ct_hu, np.transpose(cube, (2, 0, 1)))
    assert [(s.name, s.role) for s in case.structures] == [
        ("External", Role.BODY), ("PTV", Role.TARGET), ("Cord", Role.OAR)]
    assert case.prescription_gy == 60.0 and case.protocol.fractions == 30
    assert case.patient_position == "HFS"
    row, column, slice_ = TARGET_VOXEL
    target = case.structure("PTV").mask
    assert target.sum() == 1 and target[slice_, row, column]
    lps = np.array([FIRST_LPS[0] + column * RES["x"], FIRST_LPS[1] + row * RES["y"],
                    FIRST_LPS[2] + slice_ * RES["z"]])
    ras = case.grid.voxel_centers_ras(np.flatnonzero(target))[0]
    np.testing.assert_allclose(ras, lps * [-1.0, -1.0, 1.0])
    cord = case.structure("Cord").mask
    assert cord.sum() == 2 and all(cord[s, r, c] for r, c, s in OAR_VOXELS)
    np.testing.assert_allclose(case.grid.spacing_mm, [RES["x"], RES["y"], RES["z"]])


def test_world_axes_fall_back_to_a_centred_cube(tmp_path: Path) -> None:
    path = tmp_path / "centred.mat"
    _write_phantom(path, _standard_rows(), x=None, y=None, z=None)
    grid = read_matrad(path).grid
    first_lps = -np.array([NX, NY, NZ]) / 2.0 * [RES["x"], RES["y"], RES["z"]]  # matRad_getWorldAxes
    np.testing.assert_allclose(grid.origin_ras, first_lps * [-1.0, -1.0, 1.0])


def test_density_cube_is_turned_into_hu_that_map_back(tmp_path: Path) -> None:
    path = tmp_path / "density.mat"
    density = np.linspace(0.2, 1.5, NY * NX * NZ).reshape(NY, NX, NZ)
    _write_phantom(path, _standard_rows(), cubeHU=None, cube=_cell(density))
    case = read_matrad(path)
    np.testing.assert_allclose(DensityCalibration()(case.ct_hu), np.transpose(density, (2, 0, 1)),
                               atol=1e-4)


def test_roles_and_prescription_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "roles.mat"
    rows = _standard_rows()
    rows[0][5] = np.empty((0, 0), dtype=object)  # target without objectives
    _write_phantom(path, rows)
    with pytest.raises(InputError, match="prescription_gy"):
        read_matrad(path)
    case = read_matrad(path, targets=["Cord"], oars=["PTV"], body="External", prescription_gy=54.0)
    assert case.structure("Cord").role is Role.TARGET and case.structure("PTV").role is Role.OAR
    assert case.prescription_gy == 54.0
    with pytest.raises(InputError, match="no structure named 'Lung'"):
        read_matrad(path, targets=["Lung"], prescription_gy=50.0)
    with pytest.raises(InputError, match="more than one role"):
        read_matrad(path, targets=["PTV"], oars=["PTV"], prescription_gy=50.0)
    rows[0][2] = "OAR"
    _write_phantom(path, rows)
    with pytest.raises(InputError, match="no structure of cst type TARGET"):
        read_matrad(path, prescription_gy=50.0)


def test_old_matrad_objective_layout_gives_the_prescription(tmp_path: Path) -> None:
    path = tmp_path / "old.mat"
    rows = _standard_rows()
    rows[0][5] = _cell({"type": "square deviation", "dose": 66.0, "penalty": 800.0})
    _write_phantom(path, rows)
    assert read_matrad(path).prescription_gy == 66.0


def test_missing_body_is_found_from_the_ct(tmp_path: Path) -> None:
    path = tmp_path / "nobody.mat"
    cube_hu = np.full((NY, NX, NZ), -1000.0)
    cube_hu[1:3, 1:4, :] = 0.0
    rows = _standard_rows()[:2]
    _write_phantom(path, rows, cubeHU=_cell(cube_hu))
    case = read_matrad(path)
    assert case.body.name == "Body (from CT)" and case.body.voxel_count == 2 * 3 * NZ


@pytest.mark.parametrize("problem", ["missing", "text", "no_cst", "index_high", "index_zero", "v73"])
def test_bad_inputs_raise_input_error(tmp_path: Path, problem: str) -> None:
    path = tmp_path / f"{problem}.mat"
    rows = _standard_rows()
    if problem == "text":
        path.write_text("this is not a MATLAB file\n")
    elif problem == "no_cst":
        scipy_io.savemat(path, {"ct": {"resolution": RES}})
    elif problem in ("index_high", "index_zero"):
        rows[1][3] = _cell(np.array([[NY * NX * NZ + 1.0 if problem == "index_high" else 0.0]]))
        _write_phantom(path, rows)
    elif problem == "v73":
        header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + b"\x00" * 8 + b"\x00\x02IM"
        path.write_bytes(header + b"\x00" * 512)
    match = {"missing": "not found", "text": "not a readable", "no_cst": "no cst", "v73": "v7.3",
             "index_high": "'Cord' has voxel indices outside", "index_zero": "outside"}[problem]
    with pytest.raises(InputError, match=match):
        read_matrad(path)


@pytest.fixture(scope="module")
def tg119_path() -> Path:
    path, reason = find_tg119_mat()
    if path is None:
        pytest.skip(f"TG119.mat unavailable: {reason}")
    return path


def test_tg119_structures_match_the_cst(tg119_path: Path) -> None:
    raw = scipy_io.loadmat(tg119_path, squeeze_me=True, struct_as_record=False)["cst"]
    index_counts = {str(row[1]): np.size(row[3]) for row in raw}
    case = read_matrad(tg119_path)
    counts = {s.name: s.voxel_count for s in case.structures}
    assert counts == index_counts == {"Core": 1320, "OuterTarget": 7458, "BODY": 601736}
    assert [(s.name, s.role) for s in case.structures] == [
        ("BODY", Role.BODY), ("OuterTarget", Role.TARGET), ("Core", Role.OAR)]
    assert case.prescription_gy == 50.0 and case.patient_position == "HFS"
    assert case.grid.shape == (129, 167, 167)
    np.testing.assert_allclose(case.grid.spacing_mm, [3.0, 3.0, 2.5])
    np.testing.assert_allclose(case.grid.origin_ras, [250.0, 250.0, -160.0])  # LPS (-250, -250, -160)
    volume_cc = {s.name: s.voxel_count * case.grid.voxel_volume_cc for s in case.structures}
    assert 25 < volume_cc["Core"] < 35 and 150 < volume_cc["OuterTarget"] < 190
    assert -100 < float(np.median(case.ct_hu[case.body.mask])) < 100  # water-like phantom


def test_tg119_core_sits_in_the_opening_of_the_c(tg119_path: Path) -> None:
    case = read_matrad(tg119_path)
    core, target = case.structure("Core").mask, case.structure("OuterTarget").mask
    assert not np.any(core & target)
    core_ras = case.grid.voxel_centers_ras(np.flatnonzero(core)).mean(axis=0)
    np.testing.assert_allclose(core_ras[:2], [0.0, 0.0], atol=3.0)  # the phantom's central axis
    k = int(np.round(np.nonzero(core)[0].mean()))
    target_ras = case.grid.voxel_centers_ras(np.flatnonzero(target[k]) + k * target[k].size)
    lateral = target_ras[np.abs(target_ras[:, 1] - core_ras[1]) < 3.0, 0] - core_ras[0]
    assert lateral.min() < -10 and lateral.max() > 10  # target on the patient's right and left
    above = target_ras[np.abs(target_ras[:, 0] - core_ras[0]) < 3.0, 1] - core_ras[1]
    assert above.min() > 0  # straight ahead of the core only anteriorly: the C opens posteriorly
    body_extent = np.ptp(case.grid.voxel_centers_ras(np.flatnonzero(case.body.mask)), axis=0)
    assert body_extent[0] > body_extent[1]  # the phantom is wider (left-right) than deep (AP)


def test_tg119_agrees_with_pyradplan(tg119_path: Path) -> None:
    pytest.importorskip("pyRadPlan")
    sitk = pytest.importorskip("SimpleITK")
    from pyRadPlan.io import load_patient

    ct, cst = load_patient(tg119_path)[:2]
    case = read_matrad(tg119_path)
    np.testing.assert_allclose(sitk.GetArrayFromImage(ct.cube_hu), case.ct_hu, atol=1e-3)
    np.testing.assert_allclose(np.array(ct.cube_hu.GetOrigin()) * [-1, -1, 1], case.grid.origin_ras)
    for voi in cst.vois:
        mask = sitk.GetArrayFromImage(voi.mask) != 0
        assert np.array_equal(mask, case.structure(voi.name).mask), voi.name


def test_read_matrad_structures_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "all.mat"
    _write_phantom(path, _standard_rows())
    grid, structures = read_matrad_structures(path)
    assert grid.shape == (NZ, NY, NX)
    assert [(s.name, s.matrad_type, s.reference_dose_gy) for s in structures] == [
        ("PTV", "TARGET", 60.0), ("Cord", "OAR", None), ("External", "OAR", None), ("Couch", "IGNORED", None)]
