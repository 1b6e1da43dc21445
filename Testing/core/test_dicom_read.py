"""DICOM import: CT series in any position and orientation, RTSTRUCT rasterization, roles, prescription,
and one-line refusals of bad folders (through the CLI: exit 2, nothing written)."""

from __future__ import annotations

import json
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
from radagent.evaluate.scorecard import card_by_name
from radagent.geometry import Grid, resample
from radagent.io.dicom_read import case_from_dicom, read_dicom_folder, read_rtdose
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
    for structure in case.structures:  # our own contours: the masks come back voxel for voxel
        assert np.array_equal(imported.structure(structure.name).mask, structure.mask), structure.name
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


@pytest.mark.parametrize(
    ("position", "flip_ij", "oblique_deg"), [("HFS", False, 0.0), ("HFP", True, 0.0), ("FFS", True, 20.0)]
)
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
        # Planes every second slice (20, 22, …, 28): each stands for its slice and the one below, the
        # first for half a slice below it only.
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
    assert np.flatnonzero(sparse.any(axis=(1, 2))).tolist() == list(range(20, 29))
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


def _duplicate_slice(folder: Path) -> None:
    _path, dataset = datasets(folder, "CT")[5]
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(folder / "again.dcm", enforce_file_format=True)


def _second_structure_set(folder: Path) -> None:
    _path, dataset = datasets(folder, "RTSTRUCT")[0]
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(folder / "second-rtstruct.dcm", enforce_file_format=True)


def _tilted_contour(_: int, structure_set: Dataset) -> None:
    contour = structure_set.ROIContourSequence[1].ContourSequence[0]
    data = [float(v) for v in contour.ContourData]
    data[2] += 2.0  # the first point 2 mm off the plane of the others
    contour.ContourData = data


def _rename(old: str, new: str):
    def change(_: int, structure_set: Dataset) -> None:
        for roi in structure_set.StructureSetROISequence:
            if roi.ROIName == old:
                roi.ROIName = new

    return change


def _second_body(_: int, structure_set: Dataset) -> None:
    body = next(r for r in structure_set.StructureSetROISequence if r.ROIName == "Body")
    number = int(body.ROINumber)
    contours = next(c for c in structure_set.ROIContourSequence if int(c.ReferencedROINumber) == number)
    _add_roi(
        structure_set,
        "Skin",
        [("CLOSED_PLANAR", np.reshape(contours.ContourSequence[0].ContourData, (-1, 3)))],
    )


def _malformed_roi(_: int, structure_set: Dataset) -> None:
    del structure_set.StructureSetROISequence[0].ROINumber


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
    "gantry tilt tag": (
        lambda f: rewrite(f, "CT", lambda _, d: setattr(d, "GantryDetectorTilt", 5.0)),
        "gantry tilt of 5°",
    ),
    "two slices at one position": (_duplicate_slice, "two slices at one position"),
    "several structure sets": (_second_structure_set, "several RTSTRUCTs .* choose one with --structure-set"),
    "contour off its plane": (lambda f: rewrite(f, "RTSTRUCT", _tilted_contour), "not in a CT slice plane"),
    "no PTV": (lambda f: rewrite(f, "RTSTRUCT", _rename("PTV", "Prostate")), "no ROI is named PTV"),
    "two bodies": (lambda f: rewrite(f, "RTSTRUCT", _second_body), "several body-like ROIs"),
    "malformed structure set": (lambda f: rewrite(f, "RTSTRUCT", _malformed_roi), "RTSTRUCT .* is malformed"),
}


@pytest.mark.parametrize("problem", list(BAD_FOLDERS))
def test_a_bad_folder_is_refused_in_one_line_and_nothing_is_written(exported, tmp_path, capsys, problem):
    damage, message = BAD_FOLDERS[problem]
    folder = copy_of(exported, tmp_path)
    damage(folder)
    out, dicom_out = tmp_path / "out", tmp_path / "rt"
    status = main(["plan", "--dicom", str(folder), "--out", str(out), "--export-dicom", str(dicom_out)])
    error = capsys.readouterr().err
    assert status == 2
    lines = error.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("radagent: error: "), error
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() and not dicom_out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


# -- the export's guards, and what an import keeps for it ---------------------------------------------------


def test_the_export_never_writes_into_its_input_or_over_other_dicom(exported, tmp_path, capsys):
    folder = copy_of(exported, tmp_path)
    plan_uid = datasets(folder, "RTPLAN")[0][1].SOPInstanceUID
    for target in (folder, folder / "rt"):
        status = main(
            ["plan", "--dicom", str(folder), "--out", str(tmp_path / "o"), "--export-dicom", str(target)]
        )
        assert status == 2 and "must not contain one another" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    shutil.copy(datasets(folder, "RTPLAN")[0][0], used / "plan.dcm")
    status = main(["plan", "--dicom", str(folder), "--out", str(tmp_path / "o"), "--export-dicom", str(used)])
    assert status == 2 and "already holds DICOM files (plan.dcm)" in capsys.readouterr().err
    assert datasets(folder, "RTPLAN")[0][1].SOPInstanceUID == plan_uid and not (tmp_path / "o").exists()


def test_anonymized_plans_name_no_patient_in_their_outputs(exported, tmp_path, capsys):
    arguments = ["plan", "--dicom", str(exported), "--beams", "3", "--bixel-mm", "10", "--dose-grid-mm", "6"]
    arguments += [
        "--quiet",
        "--out",
        str(tmp_path / "o"),
        "--export-dicom",
        str(tmp_path / "rt"),
        "--anonymize",
    ]
    assert main([*arguments, "--save-request", str(tmp_path / "r.json")]) == 2
    assert "cannot go with --anonymize" in capsys.readouterr().err
    assert main(arguments) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "plan.json").read_text())["case"] == "anonymized"
    source = datasets(exported, "CT")[0][1]
    written = b"".join(p.read_bytes() for p in (tmp_path / "rt").iterdir())
    for value in (
        source.PatientID,
        source.StudyInstanceUID,
        source.SeriesInstanceUID,
        source.FrameOfReferenceUID,
    ):
        assert str(value).encode() not in written


def test_a_card_spelling_keeps_the_roi_number_of_the_target(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    rewrite(folder, "RTSTRUCT", _rename("PTV", "ptv"))
    number = next(
        int(r.ROINumber)
        for r in datasets(folder, "RTSTRUCT")[0][1].StructureSetROISequence
        if r.ROIName == "ptv"
    )
    case = case_from_dicom(folder, scorecard=card_by_name("prostate"))
    assert case.primary_target.name == "PTV" and case.dicom.roi_numbers["PTV"] == number
    out = tmp_path / "rt"
    out.mkdir()
    write_dicom_plan(out, case, np.zeros(case.grid.shape), plan_case(case, COARSE).plan_description())
    reference = pydicom.dcmread(out / "RTPLAN.dcm").DoseReferenceSequence[0]
    assert reference.DoseReferenceStructureType == "VOLUME" and reference.ReferencedROINumber == number


def test_an_oblique_series_with_rounded_contour_data_keeps_every_hole(prostate, tmp_path):
    case = reoriented(prostate, oblique_deg=20.0)
    folder = only_images_and_structures(export(case, tmp_path / "dicom"))
    grid = case.grid

    def ring(_: int, structure_set: Dataset) -> None:
        contours = [
            (
                "CLOSED_PLANAR",
                np.round(_square_lps(grid, k, *corners), 2),
            )  # 0.01 mm, as planning systems write
            for k in range(5, 31)
            for corners in ((60.5, 80.5, 40.5, 60.5), (65.5, 75.5, 45.5, 55.5))
        ]
        _add_roi(structure_set, "Ring", contours, "ORGAN")

    rewrite(folder, "RTSTRUCT", ring)
    imported = case_from_dicom(folder, prescription_gy=60.0)
    mask = imported.structure("Ring").mask
    assert all(mask[k].sum() == 20 * 20 - 10 * 10 for k in range(5, 31)), [
        int(mask[k].sum()) for k in range(5, 31)
    ]
    assert not mask[:5].any() and not mask[31:].any()
    assert not any("outside the CT" in note for note in imported.dicom.notes)


def test_a_file_without_the_part_10_header_is_read(exported, prostate, tmp_path):
    folder = copy_of(exported, tmp_path)
    path, dataset = datasets(folder, "CT")[3]
    dataset.preamble = None
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    pydicom.dcmwrite(path, dataset, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"
    assert_same_case(case_from_dicom(folder), prostate)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: setattr(d, "DoseSummationType", "FRACTION"), "holds a FRACTION dose"),
        (lambda d: setattr(d, "DoseUnits", "RELATIVE"), "in RELATIVE, not Gy"),
        (
            lambda d: setattr(d, "GridFrameOffsetVector", list(d.GridFrameOffsetVector)[:-1]),
            "grid frame offsets for",
        ),
        (lambda d: setattr(d, "FrameOfReferenceUID", "1.2.826.0.1.3680043.8.498.3"), "frame of reference"),
        (lambda d: delattr(d, "ImageOrientationPatient"), "RTDOSE RTDOSE.dcm is malformed"),
    ],
)
def test_an_rtdose_that_is_not_this_plans_dose_is_refused(exported, tmp_path, change, message):
    _path, dataset = datasets(exported, "RTDOSE")[0]
    frame = dataset.FrameOfReferenceUID
    change(dataset)
    dataset.save_as(tmp_path / "RTDOSE.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match=message):
        read_rtdose(tmp_path / "RTDOSE.dcm", frame)


@pytest.mark.parametrize("flip_ij", [False, True])
def test_an_exported_rtdose_lands_on_an_oblique_ct_edge_voxels_included(prostate, tmp_path, flip_ij):
    case = reoriented(prostate, flip_ij, oblique_deg=30.0)
    matrix = case.grid.ijk_to_ras.copy()  # k against the normal too
    matrix[:3, 3] = case.grid.ijk_to_ras_points(np.array([[0, 0, case.grid.shape[0] - 1]]))[0]
    matrix[:3, 2] *= -1
    structures = tuple(type(s)(s.name, s.role, s.mask[::-1].copy(), s.dose_gy) for s in case.structures)
    case = Case(case.name, case.ct_hu[::-1].copy(), Grid(case.grid.shape, matrix), structures, case.protocol)
    k, j, i = np.indices(case.grid.shape)
    dose_gy = 50.0 + 0.01 * (k * 7 + j * 3 + i) * case.body.mask  # no two voxels alike, none zero inside
    folder = tmp_path / "rt"
    folder.mkdir()
    write_dicom_plan(folder, case, dose_gy, plan_case(case, COARSE).plan_description())
    dose, grid = read_rtdose(folder / "RTDOSE.dcm")
    step_gy = float(pydicom.dcmread(folder / "RTDOSE.dcm", stop_before_pixels=True).DoseGridScaling)
    on_ct = resample(dose, grid, case.grid, order=1)
    body = case.body.mask
    assert np.abs(on_ct[body] - dose_gy[body]).max() <= step_gy


def test_structure_set_chooses_between_rtstructs_drawn_on_one_series(exported, prostate, tmp_path, capsys):
    folder = copy_of(exported, tmp_path)
    _second_structure_set(folder)
    second = pydicom.dcmread(folder / "second-rtstruct.dcm", stop_before_pixels=True).SOPInstanceUID
    case = case_from_dicom(folder, structure_set=second)
    assert case.dicom.structure_set_uid == second
    assert_same_case(case, prostate)
    status = main(["plan", "--dicom", str(folder), "--structure-set", "1.2.3", "--out", str(tmp_path / "o")])
    assert status == 2 and "no RTSTRUCT 1.2.3 in the folder (RTSTRUCTs: " in capsys.readouterr().err
    status = main(["plan", "--case", "water", "--structure-set", "1.2.3", "--out", str(tmp_path / "o")])
    assert status == 2 and "--structure-set UID applies to --dicom DIR" in capsys.readouterr().err


def test_a_skin_rind_around_the_targets_is_filled_into_a_body(exported, prostate, tmp_path):
    folder = copy_of(exported, tmp_path)
    k, j, i = np.nonzero(prostate.structure("PTV").mask)
    box = (i.min() - 3.5, i.max() + 3.5, j.min() - 3.5, j.max() + 3.5)  # around the PTV, inside the body

    def rind(_: int, structure_set: Dataset) -> None:
        body = next(r for r in structure_set.StructureSetROISequence if r.ROIName == "Body")
        item = next(
            c for c in structure_set.ROIContourSequence if int(c.ReferencedROINumber) == int(body.ROINumber)
        )
        outer = [np.reshape(c.ContourData, (-1, 3)).astype(float) for c in item.ContourSequence]
        inner = [_square_lps(prostate.grid, kk, *box) for kk in range(k.min() - 1, k.max() + 2)]
        contours = [("CLOSED_PLANAR", c) for c in [*outer, *inner]]
        _add_roi(structure_set, "Skin", contours, "ORGAN")

    rewrite(folder, "RTSTRUCT", rind)
    case = case_from_dicom(folder, body="Skin", oars=["Rectum"])
    assert np.array_equal(case.body.mask, prostate.body.mask)
    assert any("'Skin' is a hollow rind" in note for note in case.dicom.notes)
