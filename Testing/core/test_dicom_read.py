"""DICOM import: CT series in any position and orientation, RTSTRUCT rasterization, roles, prescription,
and one-line refusals of bad folders (through the CLI: exit 2, nothing written)."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_tools import plastimatch_series
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from radagent.cases import load_case
from radagent.cli import main
from radagent.dose import DoseEngineSettings
from radagent.errors import InputError
from radagent.geometry import Grid
from radagent.io.dicom_read import case_from_dicom, read_dicom_folder
from radagent.io.dicom_write import write_dicom_plan
from radagent.io.nrrd import write_volume
from radagent.patient import Case
from radagent.plan import PlanSettings, plan_case

COARSE = PlanSettings(
    angles_deg=(0.0, 120.0, 240.0),
    engine=DoseEngineSettings(bixel_mm=10.0, dose_grid_mm=6.0),
    fluence="uniform",
)
MIN_CC = 5.0  # structures this large are held to Dice ≥ 0.97 and volume within 1 %


def rotation_z(angle_deg: float) -> np.ndarray:
    angle = np.deg2rad(angle_deg)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation


def reoriented(case: Case, flip_ij: bool = False, oblique_deg: float = 0.0, position: str = "HFS") -> Case:
    """The same anatomy on another lattice: i and j reversed (as a prone scan stores it) and/or the frame
    turned about z (an oblique series), with a patient position tag."""
    ct, grid = case.ct_hu, case.grid
    masks = [s.mask for s in case.structures]
    matrix = grid.ijk_to_ras.copy()
    if flip_ij:
        _nk, nj, ni = grid.shape
        ct, masks = ct[:, ::-1, ::-1], [m[:, ::-1, ::-1] for m in masks]
        matrix[:3, 3] = grid.ijk_to_ras_points(np.array([[ni - 1, nj - 1, 0]]))[0]
        matrix[:3, :2] *= -1
    matrix = rotation_z(oblique_deg) @ matrix
    structures = tuple(
        type(s)(s.name, s.role, np.ascontiguousarray(m), s.dose_gy)
        for s, m in zip(case.structures, masks, strict=True)
    )
    return Case(
        case.name, np.ascontiguousarray(ct), Grid(grid.shape, matrix), structures, case.protocol, position
    )


def export(case: Case, folder: Path) -> Path:
    """The case's CT, RTSTRUCT, RTPLAN and RTDOSE as our writer writes them (a coarse uniform plan)."""
    result = plan_case(case, COARSE)
    folder.mkdir(parents=True)
    write_dicom_plan(folder, case, result.dose_ct_gy, result.plan_description())
    return folder


def only_images_and_structures(folder: Path) -> Path:
    """Drop the RTPLAN and RTDOSE from an exported folder (an import then needs a prescription)."""
    for path in folder.iterdir():
        if pydicom.dcmread(path, stop_before_pixels=True).Modality in ("RTPLAN", "RTDOSE"):
            path.unlink()
    return folder


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def assert_same_case(imported: Case, reference: Case) -> None:
    """Geometry within 1e-3 mm, HU exact, masks of ≥ 5 cc with Dice ≥ 0.97 and volume within 1 %."""
    assert imported.grid.shape == reference.grid.shape
    assert np.allclose(imported.grid.ijk_to_ras, reference.grid.ijk_to_ras, atol=1e-3)
    assert np.array_equal(imported.ct_hu, np.round(reference.ct_hu))
    for structure in reference.structures:
        mask = imported.structure(structure.name).mask
        assert imported.structure(structure.name).role == structure.role
        if structure.voxel_count * reference.grid.voxel_volume_cc >= MIN_CC:
            assert dice(mask, structure.mask) >= 0.97, structure.name
            assert abs(np.count_nonzero(mask) / structure.voxel_count - 1) <= 0.01, structure.name


@pytest.fixture(scope="module")
def prostate() -> Case:
    return load_case("prostate")


@pytest.fixture(scope="module")
def exported(prostate, tmp_path_factory) -> Path:
    return export(prostate, tmp_path_factory.mktemp("export") / "dicom")


def copy_of(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def datasets(folder: Path, modality: str) -> list[tuple[Path, Dataset]]:
    found = [(p, pydicom.dcmread(p)) for p in sorted(folder.iterdir()) if p.is_file()]
    return [(p, d) for p, d in found if d.Modality == modality]


def rewrite(folder: Path, modality: str, change) -> None:
    """Apply ``change(index, dataset)`` to every file of ``modality`` and save it in place."""
    for index, (path, dataset) in enumerate(datasets(folder, modality)):
        change(index, dataset)
        dataset.save_as(path, enforce_file_format=True)


# -- the series of our own writer, in every position and orientation -----------------------------------


@pytest.mark.parametrize(
    ("position", "flip_ij", "oblique_deg"),
    [("HFS", False, 0.0), ("HFP", True, 0.0), ("FFS", False, 0.0), ("FFP", True, 0.0), ("HFS", False, 25.0)],
)
def test_a_series_round_trips_in_every_position_and_an_oblique_frame(
    prostate, tmp_path, position, flip_ij, oblique_deg
):
    case = reoriented(prostate, flip_ij, oblique_deg, position)
    folder = export(case, tmp_path / "dicom")
    imported = case_from_dicom(folder)  # prescription and fractions from our RTPLAN
    assert imported.patient_position == position
    assert imported.prescription_gy == case.prescription_gy
    assert imported.protocol.fractions == case.protocol.fractions
    assert_same_case(imported, case)
    slices = [d for _, d in datasets(folder, "CT")]
    assert {d.PatientPosition for d in slices} == {position}
    orientation = np.array(slices[0].ImageOrientationPatient, dtype=float)
    expected_row = np.diag([-1.0, -1.0, 1.0]) @ case.grid.direction[:, 0]
    assert np.allclose(orientation[:3], expected_row, atol=1e-6)  # IOP says what it is, not canonical


def test_shuffled_file_names_and_instance_numbers_change_nothing(exported, prostate, tmp_path):
    folder = tmp_path / "shuffled"
    folder.mkdir()
    rng = np.random.default_rng(7)
    paths = sorted(exported.iterdir())
    numbers = rng.permutation(len(paths)) + 1
    for path, number in zip(paths, numbers, strict=True):
        dataset = pydicom.dcmread(path)
        if dataset.Modality == "CT":
            dataset.InstanceNumber = int(number)
        dataset.save_as(folder / f"{uuid.UUID(int=int(rng.integers(2**62))).hex}", enforce_file_format=True)
    (folder / "nested").mkdir()
    moved = next(p for p in sorted(folder.iterdir()) if p.is_file())
    moved.rename(folder / "nested" / moved.name)  # a sub-folder is searched too
    assert_same_case(case_from_dicom(folder), prostate)


def test_each_slice_rescale_slope_and_intercept_are_applied(exported, prostate, tmp_path):
    folder = copy_of(exported, tmp_path)

    def rescale(index: int, dataset: Dataset) -> None:
        hu = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
        slope, intercept = (0.5, -1024.0) if index % 2 else (2.0, -2048.0)
        stored = np.round((hu - intercept) / slope)
        assert stored.min() >= 0 and stored.max() < 2**16
        dataset.PixelRepresentation = 0
        dataset.PixelData = stored.astype(np.uint16).tobytes()
        dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept

    rewrite(folder, "CT", rescale)
    imported = case_from_dicom(folder)
    assert np.array_equal(imported.ct_hu[1::2], np.round(prostate.ct_hu[1::2]))
    assert np.abs(imported.ct_hu[::2] - np.round(prostate.ct_hu[::2])).max() <= 1.0  # slope 2: ±1 HU


# -- a third-party series: plastimatch ------------------------------------------------------------------


@pytest.mark.parametrize(("position", "flip_ij", "oblique_deg"), [("HFS", False, 0.0), ("FFS", True, 20.0)])
def test_plastimatch_series_import_and_plan_end_to_end(
    prostate, tmp_path, capsys, position, flip_ij, oblique_deg
):
    case = reoriented(prostate, flip_ij, oblique_deg, position)
    source = tmp_path / "nrrd"
    (source / "masks").mkdir(parents=True)
    write_volume(source / "ct.nrrd", np.round(case.ct_hu).astype(np.int16), case.grid)
    for structure in case.structures:
        write_volume(source / "masks" / f"{structure.name}.nrrd", structure.mask.astype(np.uint8), case.grid)
    folder = plastimatch_series(source / "ct.nrrd", source / "masks", tmp_path / "dicom", position)
    imported = case_from_dicom(folder, prescription_gy=case.prescription_gy)
    assert imported.patient_position == position
    assert_same_case(imported, case)
    out, dicom_out = tmp_path / "plan", tmp_path / "rt"
    status = main(
        ["plan", "--dicom", str(folder), "--prescription", "60", "--beams", "3", "--bixel-mm", "10",
         "--dose-grid-mm", "6", "--quiet", "--out", str(out), "--export-dicom", str(dicom_out)]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert (out / "metrics.json").is_file() and (out / "dose.nrrd").is_file()
    assert sorted(p.name for p in dicom_out.iterdir()) == ["RTDOSE.dcm", "RTPLAN.dcm"]  # joins the CT's study
    plan = pydicom.dcmread(dicom_out / "RTPLAN.dcm")
    rtss = pydicom.dcmread(folder / "rtss.dcm")
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rtss.SOPInstanceUID
    assert plan.StudyInstanceUID == rtss.StudyInstanceUID


# -- structure sets: contour placement, holes, points, empty ROIs, roles ----------------------------------


def _add_roi(
    structure_set: Dataset, name: str, contours: list[tuple[str, np.ndarray]], kind: str = ""
) -> None:
    """Append an ROI with (geometric type, (N, 3) LPS points) contours to an RTSTRUCT dataset."""
    number = max(int(r.ROINumber) for r in structure_set.StructureSetROISequence) + 1
    roi = Dataset()
    roi.ROINumber, roi.ROIName = number, name
    roi.ReferencedFrameOfReferenceUID = structure_set.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
    roi.ROIGenerationAlgorithm = "MANUAL"
    structure_set.StructureSetROISequence.append(roi)
    item = Dataset()
    item.ReferencedROINumber = number
    item.ROIDisplayColor = [255, 0, 0]
    if contours:
        item.ContourSequence = Sequence()
        for geometric_type, points in contours:
            contour = Dataset()
            contour.ContourGeometricType = geometric_type
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [round(float(v), 4) for v in np.asarray(points).ravel()]
            item.ContourSequence.append(contour)
    structure_set.ROIContourSequence.append(item)
    observation = Dataset()
    observation.ObservationNumber, observation.ReferencedROINumber = number, number
    observation.RTROIInterpretedType, observation.ROIInterpreter = kind, ""
    structure_set.RTROIObservationsSequence.append(observation)


def _square_lps(grid: Grid, k: float, i0: float, i1: float, j0: float, j1: float) -> np.ndarray:
    """A square contour on the (fractional) slice ``k``, corners at pixel coordinates, in LPS mm."""
    ijk = np.array([[i0, j0, k], [i1, j0, k], [i1, j1, k], [i0, j1, k]])
    return grid.ijk_to_ras_points(ijk) * np.array([-1.0, -1.0, 1.0])


def test_contours_between_slices_holes_points_and_empty_rois(exported, prostate, tmp_path):
    folder = copy_of(exported, tmp_path)
    grid = prostate.grid

    def add(_: int, structure_set: Dataset) -> None:
        # Planes a third of a slice above slices 10..19: each slice takes the plane whose slab holds it.
        offset = [
            ("CLOSED_PLANAR", _square_lps(grid, k + 1 / 3, 40.5, 50.5, 30.5, 40.5)) for k in range(10, 20)
        ]
        _add_roi(structure_set, "Offset", offset, "ORGAN")
        # Planes every second slice (20, 22, …, 28): each stands for its slice and the one below.
        sparse = [("CLOSED_PLANAR", _square_lps(grid, k, 60.5, 70.5, 30.5, 40.5)) for k in range(20, 30, 2)]
        _add_roi(structure_set, "Sparse", sparse, "ORGAN")
        ring = [
            ("CLOSED_PLANAR", _square_lps(grid, k, x0, x1, x0 - 20, x1 - 20))
            for k in range(5, 8)
            for x0, x1 in ((60.5, 80.5), (65.5, 75.5))
        ]
        _add_roi(structure_set, "Ring", ring, "ORGAN")
        _add_roi(structure_set, "Marker", [("POINT", _square_lps(grid, 12, 50, 50, 40, 40)[:1])], "MARKER")
        _add_roi(structure_set, "Empty", [], "ORGAN")
        _add_roi(
            structure_set, "CTV", [("CLOSED_PLANAR", _square_lps(grid, 20, 60.5, 66.5, 30.5, 36.5))], "CTV"
        )
        _add_roi(
            structure_set, "Couch", [("CLOSED_PLANAR", _square_lps(grid, 20, 0.5, 6.5, 0.5, 6.5))], "SUPPORT"
        )

    rewrite(folder, "RTSTRUCT", add)
    imported = case_from_dicom(folder)
    offset = imported.structure("Offset").mask
    assert np.flatnonzero(offset.any(axis=(1, 2))).tolist() == list(range(10, 20))
    assert offset[15].sum() == 100 and offset[15, 31:41, 41:51].all()
    sparse = imported.structure("Sparse").mask
    assert np.flatnonzero(sparse.any(axis=(1, 2))).tolist() == list(range(19, 29))
    ring = imported.structure("Ring").mask
    assert ring[6].sum() == 20 * 20 - 10 * 10 and not ring[6, 26:36, 66:76].any()
    names = {s.name for s in imported.structures}
    assert not {"Marker", "Empty", "CTV", "Couch"} & names
    notes = "\n".join(imported.dicom.notes)
    assert "'Marker' has POINT contours only" in notes and "'Empty' has no contours" in notes
    assert "'CTV' is not optimized" in notes and "'Couch' (SUPPORT) is not anatomy" in notes
    with_ctv = case_from_dicom(folder, targets=["PTV", "CTV"])
    assert [t.name for t in with_ctv.targets] == ["PTV", "CTV"]


def test_roles_given_by_name_override_the_rule(exported):
    case = case_from_dicom(exported, oars=["rectum"], body="Body")
    assert [o.name for o in case.oars] == ["Rectum"]
    assert "ROIs not given a role, left out" in "\n".join(case.dicom.notes)
    other_target = case_from_dicom(exported, targets=["Bladder"])  # a PTV not named is no organ at risk
    assert [t.name for t in other_target.targets] == ["Bladder"]
    assert "PTV" not in [o.name for o in other_target.oars]
    assert "ROI 'PTV' is not optimized" in "\n".join(other_target.dicom.notes)
    with pytest.raises(InputError, match="no ROI named 'Liver'"):
        case_from_dicom(exported, oars=["Liver"])


def test_the_prescription_comes_from_an_unambiguous_rtplan(exported, tmp_path):
    case = case_from_dicom(exported)
    assert any("from RTPLAN" in note for note in case.dicom.notes)
    assert case_from_dicom(exported, prescription_gy=50.0, fractions=5).protocol.fractions == 5
    folder = only_images_and_structures(copy_of(exported, tmp_path))
    with pytest.raises(InputError, match="no RTPLAN with a prescription"):
        case_from_dicom(folder)
    plans = copy_of(exported, tmp_path, "two-plans")
    _path, plan = datasets(plans, "RTPLAN")[0]
    plan.SOPInstanceUID = generate_uid()
    plan.file_meta.MediaStorageSOPInstanceUID = plan.SOPInstanceUID
    plan.DoseReferenceSequence[0].TargetPrescriptionDose = 70.0
    plan.save_as(plans / "other-plan.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="several different prescriptions"):
        case_from_dicom(plans)


def test_several_series_need_the_referenced_one_or_series(exported, prostate, tmp_path):
    folder = copy_of(exported, tmp_path)
    other = generate_uid()
    for path, dataset in datasets(exported, "CT"):
        dataset.SeriesInstanceUID = other
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(folder / f"other-{path.name}", enforce_file_format=True)
    content = read_dicom_folder(folder)  # the RTSTRUCT says which
    assert content.ct_slices[0].SeriesInstanceUID != other
    assert any("1 other CT series ignored" in note for note in content.notes)

    def unreferenced(_: int, structure_set: Dataset) -> None:
        del structure_set.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence

    rewrite(folder, "RTSTRUCT", unreferenced)
    with pytest.raises(InputError, match="several CT series"):
        read_dicom_folder(folder)
    with pytest.raises(InputError, match=r"no CT series 1\.2\.3"):
        read_dicom_folder(folder, series="1.2.3")
    series = datasets(exported, "CT")[0][1].SeriesInstanceUID
    assert_same_case(case_from_dicom(folder, series=series), prostate)


# -- bad folders: one line, exit 2, nothing written --------------------------------------------------------


def _remove_middle_slice(folder: Path) -> None:
    slices = sorted(datasets(folder, "CT"), key=lambda item: float(item[1].ImagePositionPatient[2]))
    slices[len(slices) // 2][0].unlink()


def _shift(step_mm: tuple[float, float, float], only: int | None = None):
    def change(index: int, dataset: Dataset) -> None:
        k = round(float(dataset.ImagePositionPatient[2]) / 3.0)
        if only is None or index == only:
            factor = k if only is None else 1
            dataset.ImagePositionPatient = [
                float(v) + factor * s for v, s in zip(dataset.ImagePositionPatient, step_mm, strict=True)
            ]

    return change


def _truncate(folder: Path) -> None:
    path = datasets(folder, "CT")[3][0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(folder: Path) -> None:
    (folder / "garbled.dcm").write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(1).bytes(3000))


def _no_contours(_: int, structure_set: Dataset) -> None:
    for item in structure_set.ROIContourSequence:
        if "ContourSequence" in item:
            del item.ContourSequence


def _missing_series(_: int, structure_set: Dataset) -> None:
    referenced = structure_set.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    referenced.RTReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"


def _odd_slice(index: int, dataset: Dataset) -> None:
    if index == 4:
        pixels = dataset.pixel_array[:, :-2].copy()
        dataset.Columns = pixels.shape[1]
        dataset.PixelData = pixels.tobytes()


def _other_frame(_: int, structure_set: Dataset) -> None:
    for roi in structure_set.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    structure_set.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"


BAD_FOLDERS = {
    "no CT": (lambda f: [p.unlink() for p, _ in datasets(f, "CT")], "holds no CT image"),
    "no RTSTRUCT": (lambda f: [p.unlink() for p, _ in datasets(f, "RTSTRUCT")], "holds no RTSTRUCT"),
    "text file among slices": (
        lambda f: (f / "notes.txt").write_text("slice notes\n"),
        "is not a DICOM file",
    ),
    "garbled file": (_garble, "garbled.dcm is not a readable DICOM file"),
    "truncated slice": (_truncate, "is not a readable DICOM file|unreadable pixel data"),
    "missing slice": (_remove_middle_slice, r"1 slice\(s\) missing between"),
    "unequal spacing": (lambda f: rewrite(f, "CT", _shift((0.0, 0.0, 0.8), only=7)), "unequal slice spacing"),
    "gantry tilt": (lambda f: rewrite(f, "CT", _shift((0.0, 0.5, 0.0))), "shift by up to"),
    "mixed slice sizes": (lambda f: rewrite(f, "CT", _odd_slice), "mixes slice geometries"),
    "no contour data": (lambda f: rewrite(f, "RTSTRUCT", _no_contours), "has no closed contour data"),
    "missing referenced series": (
        lambda f: rewrite(f, "RTSTRUCT", _missing_series),
        "which is not in the folder",
    ),
    "other frame of reference": (lambda f: rewrite(f, "RTSTRUCT", _other_frame), "frame of reference"),
}


@pytest.mark.parametrize("problem", list(BAD_FOLDERS))
def test_a_bad_folder_is_refused_in_one_line_and_nothing_is_written(exported, tmp_path, capsys, problem):
    damage, message = BAD_FOLDERS[problem]
    folder = copy_of(exported, tmp_path)
    damage(folder)
    out, dicom_out = tmp_path / "out", tmp_path / "rt"
    status = main(
        ["plan", "--dicom", str(folder), "--out", str(out), "--export-dicom", str(dicom_out), "--quiet"]
    )
    error = capsys.readouterr().err
    assert status == 2
    lines = error.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("radagent: error: "), error
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() and not dicom_out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
