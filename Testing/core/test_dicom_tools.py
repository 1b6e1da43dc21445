"""The third-party DICOM tool wrappers of dicom_tools.py: plastimatch, dciodvfy and dicompyler-core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_tools import (
    dciodvfy,
    dicompyler_dvhs,
    dose_at_volume,
    plastimatch_series,
    volume_at_dose,
)
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from radagent.evaluate.dvh import StructureDoses
from radagent.geometry import Grid, lps_to_ras_matrix
from radagent.io.nrrd import write_volume

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"


def _phantom(folder: Path, grid: Grid) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Path]]:
    """A small CT (int16 HU ramp) with a box and an L-shaped structure, written as NRRD in ``folder``."""
    hu = (np.arange(grid.size) % 2000 - 1000).astype(np.int16).reshape(grid.shape)
    masks = {"Box": np.zeros(grid.shape, bool), "L shape": np.zeros(grid.shape, bool)}
    masks["Box"][2:7, 4:12, 5:15] = True
    masks["L shape"][3:6, 10:16, 2:6] = True
    masks["L shape"][3:6, 14:16, 2:12] = True
    write_volume(folder / "ct.nrrd", hu, grid)
    paths = {}
    for name, mask in masks.items():
        paths[name] = folder / f"mask-{len(paths)}.nrrd"
        write_volume(paths[name], mask.astype(np.uint8), grid)
    return hu, masks, paths


def _slices(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in sorted(folder.glob("image*.dcm"))]


@pytest.mark.parametrize(("position", "angle_deg"), [("HFS", 0.0), ("FFP", 20.0)])
def test_plastimatch_series_keeps_the_geometry(tmp_path: Path, position: str, angle_deg: float) -> None:
    """Slices in k order at the grid's LPS positions, with the (oblique) axes and the patient position."""
    angle = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    grid = Grid.from_spacing(
        (9, 18, 20), (2.0, 2.5, 3.0), (12.0, -30.0, 4.5), rotation @ np.diag([-1, -1, 1])
    )
    hu, masks, paths = _phantom(tmp_path, grid)
    out = plastimatch_series(tmp_path / "ct.nrrd", paths, tmp_path / "dicom", position)

    lps = lps_to_ras_matrix() @ grid.ijk_to_ras
    slices = _slices(out)
    assert len(slices) == grid.shape[0]
    for k, ds in enumerate(slices):
        assert ds.Modality == "CT" and ds.PatientPosition == position
        np.testing.assert_allclose(ds.ImagePositionPatient, lps[:3, :3] @ [0, 0, k] + lps[:3, 3], atol=1e-3)
        np.testing.assert_allclose(ds.ImageOrientationPatient[:3], lps[:3, 0] / 2.0, atol=1e-5)
        np.testing.assert_allclose(ds.ImageOrientationPatient[3:], lps[:3, 1] / 2.5, atol=1e-5)
        np.testing.assert_allclose(ds.PixelSpacing, [2.5, 2.0])  # between rows (j), between columns (i)
        np.testing.assert_array_equal(ds.pixel_array * ds.RescaleSlope + ds.RescaleIntercept, hu[k])

    rtstruct = pydicom.dcmread(out / "rtss.dcm")
    assert rtstruct.Modality == "RTSTRUCT"
    names = {roi.ROINumber: roi.ROIName for roi in rtstruct.StructureSetROISequence}
    assert sorted(names.values()) == sorted(masks)
    to_ijk = np.linalg.inv(lps)
    for contours in rtstruct.ROIContourSequence:
        points = np.concatenate([np.reshape(c.ContourData, (-1, 3)) for c in contours.ContourSequence])
        ijk = (to_ijk[:3, :3] @ points.T).T + to_ijk[:3, 3]
        k, j, i = np.nonzero(masks[names[contours.ReferencedROINumber]])
        # Contours run along the voxel edges of the mask, one per slice, on the slice planes.
        np.testing.assert_allclose(ijk.min(axis=0), [i.min() - 0.5, j.min() - 0.5, k.min()], atol=1e-3)
        np.testing.assert_allclose(ijk.max(axis=0), [i.max() + 0.5, j.max() + 0.5, k.max()], atol=1e-3)


def test_dciodvfy_reports_errors_and_warnings(tmp_path: Path) -> None:
    """dciodvfy's 'Error -' and 'Warning -' lines come back apart; 32-bit pixels do not crash it."""
    grid = Grid.from_spacing((8, 16, 16), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), np.diag([-1.0, -1.0, 1.0]))
    _, _, paths = _phantom(tmp_path, grid)
    out = plastimatch_series(tmp_path / "ct.nrrd", paths, tmp_path / "dicom")
    # plastimatch 1.9.4's RTSTRUCT lacks FrameOfReferenceUID (Type 1) and OperatorsName (Type 2).
    errors, warnings = dciodvfy(out / "rtss.dcm")
    assert errors and all(line.startswith("Error - ") for line in errors)
    assert all("Warning - " in line for line in warnings)
    assert any("FrameOfReferenceUID" in line for line in errors)
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("not a DICOM file\n")
    errors, _ = dciodvfy(not_dicom)
    assert errors
    k = np.indices(grid.shape)[0]
    _rtdose(tmp_path / "dose.dcm", _slices(out)[0], 1.0 + k.astype(float), grid)
    errors, warnings = dciodvfy(tmp_path / "dose.dcm")  # a minimal RTDOSE lacks Type 2 attributes
    assert "Warning - (dicom_tools) 32-bit pixel data: validated a copy with 16-bit pixels" in warnings
    assert any("Element=<PatientName>" in line for line in errors)
    assert not any("DoseGridScaling" in line or "Dose Grid Scaling" in line for line in errors)


def _rtdose(path: Path, ct_slice: pydicom.Dataset, dose_gy: np.ndarray, grid: Grid) -> np.ndarray:
    """Write a minimal RTDOSE of ``dose_gy`` on an axis-aligned LPS grid; the dose as stored (Gy)."""
    lps = lps_to_ras_matrix() @ grid.ijk_to_ras
    assert np.allclose(lps[:3, :3], np.diag(np.diag(lps[:3, :3]))) and np.all(np.diag(lps[:3, :3]) > 0)
    scaling = DSfloat(float(dose_gy.max()) / 2**31, auto_format=True)  # written in ≤ 16 characters
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RT_DOSE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = RT_DOSE_STORAGE, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientPosition = "RTDOSE", ct_slice.PatientPosition
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ct_slice.StudyInstanceUID, generate_uid()
    ds.FrameOfReferenceUID = ct_slice.FrameOfReferenceUID
    ds.ImagePositionPatient = [float(v) for v in lps[:3, 3]]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [float(lps[1, 1]), float(lps[0, 0])]
    ds.GridFrameOffsetVector = [float(k * lps[2, 2]) for k in range(grid.shape[0])]
    ds.FrameIncrementPointer = pydicom.tag.Tag("GridFrameOffsetVector")
    ds.NumberOfFrames, ds.Rows, ds.Columns = grid.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType, ds.DoseGridScaling = "GY", "PHYSICAL", "PLAN", scaling
    stored = np.round(dose_gy / float(scaling)).astype("<u4")
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return stored * float(scaling)


@pytest.mark.slow
def test_dicompyler_dvhs_count_dose_voxels_inside_plastimatch_contours(tmp_path: Path) -> None:
    """On the CT grid, dicompyler-core's volumes and DVH points match counting the mask voxels."""
    grid = Grid.from_spacing((10, 20, 22), (2.0, 2.5, 3.0), (20.0, 25.0, -10.0), np.diag([-1.0, -1.0, 1.0]))
    _, masks, paths = _phantom(tmp_path, grid)
    out = plastimatch_series(tmp_path / "ct.nrrd", paths, tmp_path / "dicom")
    k, j, i = np.indices(grid.shape)
    dose_gy = 60.0 * np.exp(-((i - 9.0) ** 2 + (j - 8.0) ** 2 + (k - 4.0) ** 2) / 40.0)
    dose_gy = _rtdose(tmp_path / "dose.dcm", _slices(out)[0], dose_gy, grid)

    dvhs = dicompyler_dvhs(out / "rtss.dcm", tmp_path / "dose.dcm")
    assert sorted(dvhs) == sorted(masks)
    for name, mask in masks.items():
        ours = StructureDoses.from_mask(name, dose_gy, mask, grid.voxel_volume_cc)
        dvh = dvhs[name]
        assert dvh["volume_cc"] == pytest.approx(ours.volume_cc, rel=1e-6)
        assert dvh["cumulative_cc"][0] == pytest.approx(ours.volume_cc, rel=1e-6)
        for percent in (2.0, 50.0, 95.0):  # 0.01 Gy bins: the bin below ours
            assert 0.0 <= ours.dose_at_percent_gy(percent) - dose_at_volume(dvh, percent) < 0.0101
        for level in (10.0, 30.0, 45.0):  # bin edges: exact
            assert volume_at_dose(dvh, level) == pytest.approx(
                100 * ours.volume_fraction_at_gy(level), abs=1e-6
            )
    assert dicompyler_dvhs(out / "rtss.dcm", tmp_path / "dose.dcm", ["Box"]).keys() == {"Box"}
