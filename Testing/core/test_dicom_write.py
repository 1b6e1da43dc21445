"""DICOM RT export: the CT, RTSTRUCT and RTDOSE give back the case's HU, masks and dose on every grid
orientation; the set shares one study and frame of reference; anonymization leaves no identifier; a case
read from DICOM gets only an RTPLAN and RTDOSE in its own study; dciodvfy finds no error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_tools import dciodvfy
from pydicom.uid import RTPlanStorage, RTStructureSetStorage

from radagent.cases import load_case
from radagent.dose import DoseEngineSettings
from radagent.errors import InputError
from radagent.geometry import Grid
from radagent.io.contours import even_odd_fill
from radagent.io.dicom_write import write_dicom_plan
from radagent.patient import DicomOrigin
from radagent.plan import PlanSettings, plan_case

COARSE = DoseEngineSettings(bixel_mm=10.0, dose_grid_mm=6.0)
LPS = np.array([-1.0, -1.0, 1.0])  # RAS ↔ LPS, each way


@pytest.fixture(scope="module")
def prostate():
    return load_case("prostate")


@pytest.fixture(scope="module")
def plan(prostate):
    return plan_case(prostate, PlanSettings(angles_deg=(0.0, 120.0, 240.0), engine=COARSE, fluence="uniform"))


def _on_grid(case, kind: str):
    """The case with its arrays on another lattice: axial as built, oblique (turned 30° about z, with
    unequal spacings), or oblique with the k axis reversed (against the slice normal)."""
    if kind == "axial":
        return case
    angle = np.deg2rad(30.0)
    turn = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    matrix = np.array(case.grid.ijk_to_ras)
    matrix[:3, :3] = turn @ matrix[:3, :3] @ np.diag([0.9, 1.1, 1.25])  # unequal spacings, too
    matrix[:3, 3] = turn @ matrix[:3, 3] + [5.0, -7.0, 11.0]
    if kind == "oblique-k-reversed":
        matrix[:3, 2] *= -1.0
    return dataclasses.replace(case, grid=Grid(case.grid.shape, matrix))


def _origin(case) -> DicomOrigin:
    """A made-up DICOM origin with identifiers easy to search for."""
    return DicomOrigin(
        patient_name="Doe^Janet",
        patient_id="PID-271828",
        patient_birth_date="19610704",
        patient_sex="F",
        study_instance_uid="1.2.826.0.1.3680043.8.498.1111",
        study_id="STUDY-9753",
        study_date="20240102",
        study_time="101112",
        study_description="Pelvis planning CT of Janet",
        frame_of_reference_uid="1.2.826.0.1.3680043.8.498.2222",
        ct_series_instance_uid="1.2.826.0.1.3680043.8.498.3333",
        structure_set_uid="1.2.826.0.1.3680043.8.498.5555",
        roi_numbers={"Body": 3, "PTV": 7, "Bladder": 11},
    )


def _write(folder: Path, case, plan, **options) -> dict[str, pydicom.Dataset]:
    folder.mkdir()
    paths = write_dicom_plan(folder, case, plan.dose_ct_gy, plan.plan_description(), **options)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)  # no temporary left
    return {p.name: pydicom.dcmread(p) for p in paths}


@pytest.fixture(scope="module", params=["axial", "oblique", "oblique-k-reversed"])
def written(request, prostate, plan, tmp_path_factory):
    case = _on_grid(prostate, request.param)
    folder = tmp_path_factory.mktemp("dicom") / request.param
    return case, folder, _write(folder, case, plan)


def _lattice_ijk(ds: pydicom.Dataset, grid: Grid, frame_offsets_mm: np.ndarray) -> np.ndarray:
    """The (frames, rows, columns, 3) integer (i, j, k) on ``grid`` of each pixel of an image plane whose
    frames lie at ``frame_offsets_mm`` along the normal; fails where a pixel is off the grid's lattice."""
    row_cosine = np.array(ds.ImageOrientationPatient[:3], dtype=np.float64)
    column_cosine = np.array(ds.ImageOrientationPatient[3:], dtype=np.float64)
    normal = np.cross(row_cosine, column_cosine)
    row_spacing_mm, column_spacing_mm = (float(v) for v in ds.PixelSpacing)
    f, r, c = np.meshgrid(
        np.asarray(frame_offsets_mm, dtype=np.float64),
        np.arange(ds.Rows) * row_spacing_mm,
        np.arange(ds.Columns) * column_spacing_mm,
        indexing="ij",
    )
    lps = (
        np.array(ds.ImagePositionPatient, dtype=np.float64)
        + f[..., None] * normal
        + c[..., None] * row_cosine
        + r[..., None] * column_cosine
    )
    ijk = grid.ras_to_ijk_points(lps.reshape(-1, 3) * LPS)
    rounded = np.rint(ijk)
    np.testing.assert_allclose(ijk, rounded, atol=1e-3)
    return rounded.astype(int).reshape((*f.shape, 3))


def test_the_set_shares_one_study_and_frame_of_reference(written, prostate, plan):
    case, _, datasets = written
    nk = case.grid.shape[0]
    expected = [f"CT_{k + 1:04d}.dcm" for k in range(nk)] + ["RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm"]
    assert list(datasets) == expected
    assert len({ds.StudyInstanceUID for ds in datasets.values()}) == 1
    assert len({ds.FrameOfReferenceUID for ds in datasets.values()}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets.values()}) == len(datasets)
    assert {str(ds.PatientName) for ds in datasets.values()} == {"prostate^"}
    assert {ds.PatientID for ds in datasets.values()} == {"prostate"}
    for ds in datasets.values():
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.Manufacturer == "RadAgent"

    structure_set, rt_plan, rt_dose = datasets["RTSTRUCT.dcm"], datasets["RTPLAN.dcm"], datasets["RTDOSE.dcm"]
    assert rt_plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == structure_set.SOPInstanceUID
    assert rt_dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rt_plan.SOPInstanceUID
    frame = structure_set.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == structure_set.FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == datasets["CT_0001.dcm"].SeriesInstanceUID
    assert [item.ReferencedSOPInstanceUID for item in series.ContourImageSequence] == [
        datasets[name].SOPInstanceUID for name in expected[:nk]
    ]


def test_ct_slices_give_back_the_rounded_hu_on_the_grid(written):
    case, _, datasets = written
    nk, nj, ni = case.grid.shape
    for k in range(nk):
        ds = datasets[f"CT_{k + 1:04d}.dcm"]
        assert ds.InstanceNumber == k + 1 and ds.PatientPosition == case.patient_position
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, np.rint(case.ct_hu[k]))
        ijk = _lattice_ijk(ds, case.grid, np.zeros(1))[0]
        np.testing.assert_array_equal(ijk[..., 0], np.broadcast_to(np.arange(ni), (nj, ni)))
        np.testing.assert_array_equal(ijk[..., 1], np.broadcast_to(np.arange(nj)[:, None], (nj, ni)))
        assert np.all(ijk[..., 2] == k)


def test_rtstruct_contours_fill_back_to_the_masks(written):
    case, _, datasets = written
    structure_set = datasets["RTSTRUCT.dcm"]
    ct_uids = [datasets[f"CT_{k + 1:04d}.dcm"].SOPInstanceUID for k in range(case.grid.shape[0])]
    names = {roi.ROINumber: roi.ROIName for roi in structure_set.StructureSetROISequence}
    assert list(names.values()) == [s.name for s in case.structures]
    types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in structure_set.RTROIObservationsSequence}
    expected_types = {"target": "PTV", "body": "EXTERNAL", "oar": "ORGAN"}
    assert {names[n]: t for n, t in types.items()} == {
        s.name: expected_types[s.role.value] for s in case.structures
    }
    nk, nj, ni = case.grid.shape
    for roi in structure_set.ROIContourSequence:
        assert len(roi.ROIDisplayColor) == 3
        polygons: dict[int, list[np.ndarray]] = {}
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            lps = np.array(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            assert len(lps) == contour.NumberOfContourPoints
            ijk = case.grid.ras_to_ijk_points(lps * LPS)
            k = int(np.rint(ijk[0, 2]))
            np.testing.assert_allclose(ijk[:, 2], k, atol=1e-3)
            assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID == ct_uids[k]
            polygons.setdefault(k, []).append(ijk[:, :2])
        mask = np.zeros((nk, nj, ni), dtype=bool)
        for k, slice_polygons in polygons.items():
            mask[k] = even_odd_fill(slice_polygons, (nj, ni))
        np.testing.assert_array_equal(mask, case.structure(names[roi.ReferencedROINumber]).mask)


def test_rtdose_gives_back_the_plan_dose_on_the_body_box(written, plan):
    case, _, datasets = written
    ds = datasets["RTDOSE.dcm"]
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 0)
    assert ds.FrameIncrementPointer == pydicom.tag.Tag("GridFrameOffsetVector")
    assert f"over {case.protocol.fractions} fractions" in ds.DoseComment
    scaling = float(ds.DoseGridScaling)
    assert scaling * (2**16 - 1) == pytest.approx(float(plan.dose_ct_gy.max()), rel=1e-6)
    offsets = np.array(ds.GridFrameOffsetVector, dtype=np.float64)
    assert offsets[0] == 0.0 and len(offsets) == ds.NumberOfFrames
    assert np.all(np.diff(offsets) > 0)  # the frames run along the normal, whichever way k runs
    ijk = _lattice_ijk(ds, case.grid, offsets).reshape(-1, 3)
    decoded_gy = ds.pixel_array.reshape(-1).astype(np.float64) * scaling
    expected_gy = plan.dose_ct_gy[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    assert np.max(np.abs(decoded_gy - expected_gy)) <= scaling
    covered = np.zeros(case.grid.shape, dtype=bool)
    covered[ijk[:, 2], ijk[:, 1], ijk[:, 0]] = True
    assert np.all(covered[case.body.mask]) and covered.sum() < covered.size


def test_rtplan_records_the_beams_prescription_and_placeholders(written, plan):
    case, _, datasets = written
    ds, description = datasets["RTPLAN.dcm"], plan.plan_description()
    assert (ds.PlanIntent, ds.RTPlanGeometry, ds.ApprovalStatus) == ("RESEARCH", "PATIENT", "UNAPPROVED")
    assert "not for clinical use" in ds.RTPlanDescription and "NOT deliverable" in ds.RTPlanDescription
    reference = ds.DoseReferenceSequence[0]
    ptv_number = next(
        roi.ROINumber for roi in datasets["RTSTRUCT.dcm"].StructureSetROISequence if roi.ROIName == "PTV"
    )
    assert (reference.DoseReferenceStructureType, reference.ReferencedROINumber) == ("VOLUME", ptv_number)
    assert float(reference.TargetPrescriptionDose) == pytest.approx(case.prescription_gy)
    assert ds.PatientSetupSequence[0].PatientPosition == case.patient_position
    group = ds.FractionGroupSequence[0]
    assert group.NumberOfFractionsPlanned == case.protocol.fractions and group.NumberOfBeams == 3
    metersets = [float(b.BeamMeterset) for b in group.ReferencedBeamSequence]
    assert sum(metersets) == pytest.approx(300.0, abs=1e-4)
    weights = np.array([b["beamlet_weight_sum"] for b in description["beams"]])
    np.testing.assert_allclose(metersets, 300.0 * weights / weights.sum(), atol=1e-5)
    isocenter_lps = np.array(description["isocenter_ras_mm"]) * LPS
    for beam, planned in zip(ds.BeamSequence, description["beams"], strict=True):
        assert (beam.BeamType, beam.RadiationType, beam.NumberOfControlPoints) == ("STATIC", "PHOTON", 2)
        first, last = beam.ControlPointSequence
        assert float(first.GantryAngle) == planned["gantry_deg"]
        assert (float(first.CumulativeMetersetWeight), float(last.CumulativeMetersetWeight)) == (0.0, 1.0)
        np.testing.assert_allclose(np.array(first.IsocenterPosition, dtype=float), isocenter_lps, atol=1e-6)
        jaws = [float(v) for item in first.BeamLimitingDevicePositionSequence for v in item.LeafJawPositions]
        assert jaws == pytest.approx(planned["jaws_mm"])


def test_anonymized_set_has_no_trace_of_the_case_or_its_origin(prostate, plan, tmp_path):
    origin = _origin(prostate)
    case = dataclasses.replace(prostate, dicom=origin)
    datasets = _write(tmp_path / "export", case, plan, anonymize=True)
    assert len(datasets) == prostate.grid.shape[0] + 3
    identifiers = [case.name, origin.patient_id, origin.study_id, "Janet", "19610704", "20240102"]
    identifiers += [origin.study_instance_uid, origin.frame_of_reference_uid, origin.structure_set_uid]
    for path in (tmp_path / "export").iterdir():
        data = path.read_bytes().lower()
        for identifier in identifiers:
            assert identifier.lower().encode() not in data, f"{identifier!r} in {path.name}"
            assert identifier.lower() not in path.name.lower()
    for ds in datasets.values():
        assert str(ds.PatientName).startswith("Anonymous") and ds.PatientIdentityRemoved == "YES"
        assert ds.PatientBirthDate == "" and ds.PatientSex == ""
    assert len({ds.PatientID for ds in datasets.values()}) == 1
    assert len({ds.StudyInstanceUID for ds in datasets.values()}) == 1


def test_case_from_dicom_gets_a_plan_and_dose_in_its_own_study(prostate, plan, tmp_path):
    origin = _origin(prostate)
    datasets = _write(tmp_path / "export", dataclasses.replace(prostate, dicom=origin), plan)
    assert list(datasets) == ["RTPLAN.dcm", "RTDOSE.dcm"]
    for ds in datasets.values():
        assert (ds.StudyInstanceUID, ds.FrameOfReferenceUID) == (
            origin.study_instance_uid,
            origin.frame_of_reference_uid,
        )
        assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate) == (
            "PID-271828",
            "Doe^Janet",
            "19610704",
        )
        assert (ds.StudyID, ds.StudyDate) == (origin.study_id, origin.study_date)
    rt_plan = datasets["RTPLAN.dcm"]
    structure_set = rt_plan.ReferencedStructureSetSequence[0]
    assert structure_set.ReferencedSOPClassUID == RTStructureSetStorage
    assert structure_set.ReferencedSOPInstanceUID == origin.structure_set_uid
    assert rt_plan.DoseReferenceSequence[0].ReferencedROINumber == 7
    rt_dose = datasets["RTDOSE.dcm"].ReferencedRTPlanSequence[0]
    assert (rt_dose.ReferencedSOPClassUID, rt_dose.ReferencedSOPInstanceUID) == (
        RTPlanStorage,
        rt_plan.SOPInstanceUID,
    )

    # A target the origin's structure set lacks (drawn after import) is prescribed to as a site.
    unnumbered = dataclasses.replace(origin, roi_numbers={"Body": 3})
    again = _write(tmp_path / "again", dataclasses.replace(prostate, dicom=unnumbered), plan)
    reference = again["RTPLAN.dcm"].DoseReferenceSequence[0]
    assert reference.DoseReferenceStructureType == "SITE" and "ReferencedROINumber" not in reference


def test_zero_dose_and_bad_inputs(prostate, plan, tmp_path):
    description = plan.plan_description()
    folder = tmp_path / "zero"
    folder.mkdir()
    paths = write_dicom_plan(folder, prostate, np.zeros(prostate.grid.shape), description)
    dose = pydicom.dcmread(paths[-1])
    assert float(dose.DoseGridScaling) > 0 and not np.any(dose.pixel_array)
    with pytest.raises(InputError, match="does not exist"):
        write_dicom_plan(tmp_path / "missing", prostate, plan.dose_ct_gy, description)
    with pytest.raises(InputError, match="does not match the CT grid"):
        write_dicom_plan(folder, prostate, plan.dose_ct_gy[1:], description)
    with pytest.raises(InputError, match="beam"):
        write_dicom_plan(folder, prostate, plan.dose_ct_gy, {**description, "beams": [{"gantry_deg": 0.0}]})


def test_dciodvfy_finds_no_error_and_no_warning(written, prostate, plan, tmp_path):
    _, folder, _ = written
    checked = [folder / name for name in ("CT_0001.dcm", "RTSTRUCT.dcm", "RTPLAN.dcm", "RTDOSE.dcm")]
    from_dicom = _write(tmp_path / "from-dicom", dataclasses.replace(prostate, dicom=_origin(prostate)), plan)
    checked += [tmp_path / "from-dicom" / name for name in from_dicom]
    for path in checked:
        errors, warnings = dciodvfy(path)
        assert not errors, f"{path.name}: {errors}"
        assert not warnings, f"{path.name}: {warnings}"
