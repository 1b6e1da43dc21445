"""A plan as a DICOM RT set: CT series, RTSTRUCT, RTPLAN and RTDOSE that other systems can import.

Two cases:

* **A case that did not come from DICOM** (built-in phantom, NRRD, Slicer), or any case written with
  ``anonymize``: the whole set in a new study and frame of reference: ``CT_0001.dcm`` … (one file per
  k slice, HU rounded to integers), ``RTSTRUCT.dcm`` (every structure as closed planar contours),
  ``RTPLAN.dcm`` and ``RTDOSE.dcm``. Anonymized, the patient is "Anonymous" with a random ID, and no
  identifier of the case or of its DICOM origin is written.
* **A case read from DICOM** (``case.dicom`` set): only ``RTPLAN.dcm`` and ``RTDOSE.dcm``, in the
  patient's study and frame of reference, the plan referring to the structure set the case came from.

Coordinates are written in DICOM LPS (``diag(-1, -1, 1)`` times the package's RAS); images are the CT
grid's k slices, with ImageOrientationPatient the grid's i and j axes, so oblique grids stay exact.
The RTDOSE is the total plan dose over all fractions in Gy on the CT lattice, cropped to the body's
bounding box (plus one voxel), as uint16 with DoseGridScaling = maximum dose / (2**16 − 1): a step of
1/65535 of the maximum, far finer than the engine's accuracy, in the bit depth every reader (dciodvfy too)
takes. Its frames run along the slice normal (row × column cosine), reordered when the grid's k axis runs
against it.

The RTPLAN is a research record, **not a deliverable plan**: its beams carry beamlet fluence, which has
no MLC sequence here. Its jaws and metersets are placeholders: each beam's ASYMX/ASYMY jaws are the box
around its beamlets of non-zero weight at the isocentre (``jaws_mm`` of ``plan.json``), and its
BeamMeterset is ``100 × (beam's beamlet weight / total beamlet weight) × number of beams``, a relative
fluence (100 per beam for uniform weights), not monitor units of any machine.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RTDoseStorage,
    RTPlanStorage,
    RTStructureSetStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from radagent import RESEARCH_USE_ONLY, __version__
from radagent.beams import SOURCE_AXIS_DISTANCE_MM
from radagent.errors import InputError
from radagent.geometry import Grid, lps_to_ras_matrix
from radagent.io.atomic import atomic_path
from radagent.io.contours import mask_contours
from radagent.io.dicom_read import is_dicom_file
from radagent.patient import Case, Role, Structure

__all__ = ["check_export", "write_dicom_plan"]

MANUFACTURER = "RadAgent"
MODEL_NAME = "RadAgent pencil-beam model"
TREATMENT_MACHINE = "RadAgent PB"  # Treatment Machine Name is SH: 16 characters at most
NOMINAL_ENERGY_MV = 6.0
METERSET_PER_BEAM = 100.0  # a beam of average beamlet weight gets this placeholder meterset
_UINT16_MAX = 2**16 - 1
# Referenced SOP Class of an RTSTRUCT's RT Referenced Study (the retired Detached Study Management class,
# which the standard still names there).
_STUDY_REFERENCE_CLASS = "1.2.840.10008.3.1.2.3.1"
_INTERPRETED_TYPE = {Role.TARGET: "PTV", Role.BODY: "EXTERNAL", Role.OAR: "ORGAN"}
_COLORS = {
    Role.TARGET: ((255, 0, 0), (255, 128, 0), (200, 0, 120)),
    Role.BODY: ((0, 200, 0),),
    Role.OAR: ((255, 255, 0), (0, 128, 255), (255, 0, 255), (0, 255, 255), (160, 80, 0), (128, 128, 255)),
}
_SERIES_NUMBER = {"CT": 1, "RTSTRUCT": 2, "RTPLAN": 3, "RTDOSE": 4}


@dataclass(frozen=True)
class _Header:
    """The patient, study and frame of reference every object of one export shares."""

    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    identity_removed: bool
    study_uid: str
    study_id: str
    study_date: str
    study_time: str
    study_description: str
    frame_of_reference_uid: str
    accession_number: str  # the study's, so a joined RTPLAN/RTDOSE matches its CT in a PACS
    referring_physician_name: str
    date: str  # when the export was made, DICOM DA
    time: str  # and TM


@dataclass(frozen=True)
class _Beam:
    """One beam of the plan description (``plan.json``'s ``beams``)."""

    gantry_deg: float
    jaws_mm: tuple[float, float, float, float]  # X1, X2, Y1, Y2 at the isocentre
    weight_sum: float


def write_dicom_plan(
    folder: str | Path,
    case: Case,
    dose_ct_gy: np.ndarray,
    description: Mapping[str, Any],
    *,
    anonymize: bool = False,
) -> list[Path]:
    """Write the plan's DICOM RT objects into the existing ``folder`` and return their paths.

    ``dose_ct_gy`` is the total plan dose (Gy) on ``case.grid``; ``description`` is the plan description
    (``PlanResult.plan_description()``, i.e. ``plan.json``). Each file is written under a temporary name
    and renamed, so no reader sees half a file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"DICOM export folder '{folder}' does not exist")
    dose_ct_gy = _checked_dose(case, dose_ct_gy)
    beams = _beams(description)
    isocenter_lps = _ras_to_lps(_isocenter_ras(description))
    bixel_mm = description.get("bixel_mm")
    header = _header(case, anonymize)
    plan_uid = generate_uid()

    written: list[Path] = []
    if case.dicom is not None and not anonymize:
        structure_set_uid = case.dicom.structure_set_uid
        roi_numbers = dict(case.dicom.roi_numbers)
    else:
        ct_series_uid = generate_uid()
        ct_uids = [generate_uid() for _ in range(case.grid.shape[0])]
        for k, dataset in enumerate(_ct_slices(header, case, ct_series_uid, ct_uids)):
            written.append(_save(folder / f"CT_{k + 1:04d}.dcm", dataset))
        structure_set_uid = generate_uid()
        roi_numbers = {s.name: number for number, s in enumerate(case.structures, start=1)}
        structure_set = _structure_set(header, case, structure_set_uid, roi_numbers, ct_series_uid, ct_uids)
        written.append(_save(folder / "RTSTRUCT.dcm", structure_set))
    target = case.primary_target
    plan = _rt_plan(
        header,
        case,
        plan_uid,
        beams,
        isocenter_lps,
        structure_set_uid,
        (target.name, roi_numbers.get(target.name)),
        bixel_mm,
    )
    written.append(_save(folder / "RTPLAN.dcm", plan))
    written.append(_save(folder / "RTDOSE.dcm", _rt_dose(header, case, dose_ct_gy, plan_uid)))
    return written


def check_export(
    folder: str | Path,
    case: Case | None = None,
    *,
    anonymize: bool = False,
    source: str | Path | None = None,
    label: str = "--export-dicom",
) -> None:
    """Refuse, before any planning, an export that would overwrite or mix with DICOM already there: a
    folder that is (or lies inside, or holds) the DICOM input ``source``, or that already holds DICOM
    files; and, given the ``case``, a CT that 16-bit pixels cannot hold. Errors name the folder as
    ``label``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{label} {folder} exists and is not a folder")
    target = folder.resolve()
    if source is not None:
        origin = Path(source).resolve()
        if target == origin or origin in target.parents or target in origin.parents:
            raise InputError(
                f"{label} {folder} and the DICOM input folder {source} must not contain one another"
            )
    if folder.is_dir():
        existing = next((p for p in folder.rglob("*") if p.is_file() and is_dicom_file(p)), None)
        if existing is not None:
            raise InputError(
                f"{label} {folder} already holds DICOM files ({existing.name}); "
                "export into a new or empty folder"
            )
    if case is not None and (case.dicom is None or anonymize):
        _stored_hu(case.ct_hu)


# --- inputs ---------------------------------------------------------------------------------------


def _checked_dose(case: Case, dose_ct_gy: np.ndarray) -> np.ndarray:
    dose = np.asarray(dose_ct_gy, dtype=np.float64)
    if dose.shape != case.grid.shape:
        raise InputError(f"dose array shape {dose.shape} does not match the CT grid {case.grid.shape}")
    if not np.all(np.isfinite(dose)):
        raise InputError("the plan dose contains NaN or infinite values")
    if np.any(dose < 0):
        raise InputError(f"the plan dose has negative values (down to {dose.min():.3g} Gy)")
    return dose


def _beams(description: Mapping[str, Any]) -> list[_Beam]:
    try:
        beams = [
            _Beam(
                float(b["gantry_deg"]), tuple(float(v) for v in b["jaws_mm"]), float(b["beamlet_weight_sum"])
            )
            for b in description["beams"]
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(
            f"the plan description lacks beam data for DICOM export ({error}); "
            "each beam needs gantry_deg, jaws_mm and beamlet_weight_sum"
        ) from None
    if not beams:
        raise InputError("the plan description has no beams")
    for beam in beams:
        if len(beam.jaws_mm) != 4:
            raise InputError(f"beam at {beam.gantry_deg:g}°: jaws_mm must be [X1, X2, Y1, Y2]")
    return beams


def _isocenter_ras(description: Mapping[str, Any]) -> np.ndarray:
    isocenter = np.asarray(description.get("isocenter_ras_mm", ()), dtype=np.float64)
    if isocenter.shape != (3,) or not np.all(np.isfinite(isocenter)):
        raise InputError(f"the plan description's isocentre must be three RAS coordinates, got {isocenter}")
    return isocenter


def _header(case: Case, anonymize: bool) -> _Header:
    now = datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    origin = case.dicom
    if origin is not None and not anonymize:
        return _Header(
            patient_name=origin.patient_name,
            patient_id=origin.patient_id,
            patient_birth_date=origin.patient_birth_date,
            patient_sex=origin.patient_sex,
            identity_removed=False,
            study_uid=origin.study_instance_uid,
            study_id=origin.study_id,
            study_date=origin.study_date,
            study_time=origin.study_time,
            study_description=origin.study_description,
            frame_of_reference_uid=origin.frame_of_reference_uid,
            accession_number=origin.accession_number,
            referring_physician_name=origin.referring_physician_name,
            date=date,
            time=time,
        )
    name = "Anonymous" if anonymize else _lo(case.name)
    return _Header(
        patient_name=f"{name}^",  # the family name; a name without "^" is PN's retired form
        patient_id=f"ANON-{secrets.token_hex(6).upper()}" if anonymize else name,
        patient_birth_date="",
        patient_sex="",
        identity_removed=anonymize,
        study_uid=generate_uid(),
        study_id="RADAGENT",
        study_date=date,
        study_time=time,
        study_description="RadAgent research plan",
        frame_of_reference_uid=generate_uid(),
        accession_number="",
        referring_physician_name="",
        date=date,
        time=time,
    )


# --- values -----------------------------------------------------------------------------------------


def _lo(text: str) -> str:
    """``text`` as one value of a 64-character string VR (LO, PN component): no backslash, truncated."""
    return text.replace("\\", "/")[:64]


def _ds(value: float) -> str:
    """A decimal string (DS) for a length or angle: rounded to 1e-6, at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    text = "0" if text in ("-0", "") else text
    return text if len(text) <= 16 else format_number_as_ds(float(value))


def _ds_list(values: Sequence[float] | np.ndarray) -> list[str]:
    return [_ds(float(v)) for v in values]


def _ds_exact(values: Sequence[float] | np.ndarray) -> list[str]:
    """Decimal strings with all 16 characters a DS allows, for the geometry (orientation, positions,
    spacing, frame offsets): an oblique grid read back then lies within 1e-10 mm of the written one, so
    its edge voxels do not fall off a grid they belong to."""
    return [format_number_as_ds(float(v)) for v in values]


def _ras_to_lps(points_ras: np.ndarray) -> np.ndarray:
    """RAS points (…, 3) in LPS; the map is its own inverse."""
    return np.asarray(points_ras, dtype=np.float64) * np.diag(lps_to_ras_matrix())[:3]


def _image_plane(grid: Grid) -> tuple[list[str], list[str], np.ndarray]:
    """ImageOrientationPatient (the i and j axes in LPS), PixelSpacing (row, column spacing in mm) and
    the unit slice normal (row × column cosine) of the grid's k slices."""
    direction_lps = _ras_to_lps(grid.direction.T)  # rows: the i, j, k axes
    row_cosine, column_cosine = direction_lps[0], direction_lps[1]
    spacing_mm = grid.spacing_mm
    orientation = _ds_exact(np.concatenate([row_cosine, column_cosine]))
    return orientation, _ds_exact([spacing_mm[1], spacing_mm[0]]), np.cross(row_cosine, column_cosine)


def _position_lps(grid: Grid, i: float, j: float, k: float) -> np.ndarray:
    """LPS position (mm) of the centre of voxel (i, j, k)."""
    return _ras_to_lps(grid.ijk_to_ras_points(np.array([[i, j, k]], dtype=np.float64))[0])


# --- modules shared by every object -----------------------------------------------------------------


def _base(header: _Header, sop_class: str, sop_uid: str, modality: str, series_uid: str) -> Dataset:
    """SOP Common, Patient, General Study, the series and General Equipment modules."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate, ds.InstanceCreationTime = header.date, header.time
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = header.patient_birth_date
    ds.PatientSex = header.patient_sex
    if header.identity_removed:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "RadAgent export: new UIDs, no patient identifiers"
    ds.StudyInstanceUID = header.study_uid
    ds.StudyID = header.study_id
    ds.StudyDate, ds.StudyTime = header.study_date, header.study_time
    ds.StudyDescription = header.study_description
    ds.AccessionNumber = header.accession_number
    ds.ReferringPhysicianName = header.referring_physician_name
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = _SERIES_NUMBER[modality]
    ds.SeriesDate, ds.SeriesTime = header.date, header.time
    ds.OperatorsName = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.SoftwareVersions = __version__
    return ds


def _frame_of_reference(ds: Dataset, header: _Header) -> None:
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""


def _save(path: Path, ds: Dataset) -> Path:
    """``ds`` as a DICOM Part 10 file (Explicit VR Little Endian), written atomically."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    with atomic_path(path) as temporary:
        ds.save_as(temporary, enforce_file_format=True)
    return path


# --- CT ---------------------------------------------------------------------------------------------


def _stored_hu(ct_hu: np.ndarray) -> tuple[np.ndarray, int]:
    """The HU rounded to integers as int16 pixel values and the RescaleIntercept that gives them back."""
    hu = np.rint(ct_hu).astype(np.int64)
    low, high = int(hu.min()), int(hu.max())
    if high - low > 65535:
        raise InputError(f"the CT spans {low} to {high} HU, more than 16-bit pixels can hold")
    intercept = 0 if low >= -32768 and high <= 32767 else low + 32768
    return (hu - intercept).astype(np.int16), intercept


def _ct_slices(header: _Header, case: Case, series_uid: str, sop_uids: Sequence[str]) -> Iterator[Dataset]:
    """One CT Image object per k slice."""
    grid = case.grid
    orientation, pixel_spacing, normal = _image_plane(grid)
    pixels, intercept = _stored_hu(case.ct_hu)
    for k, sop_uid in enumerate(sop_uids):
        ds = _base(header, CTImageStorage, sop_uid, "CT", series_uid)
        ds.SeriesDescription = "RadAgent CT"
        ds.PatientPosition = case.patient_position
        _frame_of_reference(ds, header)
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImageLaterality = "U"  # unpaired: an axial slice through the body, not one of a paired organ
        ds.ContentDate, ds.ContentTime = header.date, header.time
        ds.AcquisitionNumber = ""
        ds.KVP = ""
        position = _position_lps(grid, 0, 0, k)
        ds.ImagePositionPatient = _ds_exact(position)
        ds.ImageOrientationPatient = orientation
        ds.PixelSpacing = pixel_spacing
        ds.SliceThickness = _ds(grid.spacing_mm[2])
        ds.SliceLocation = _ds(float(position @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(intercept), "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = np.ascontiguousarray(pixels[k]).astype("<i2").tobytes()
        yield ds


# --- RTSTRUCT ---------------------------------------------------------------------------------------


def _image_reference(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
    return item


def _contours(structure: Structure, grid: Grid, ct_uids: Sequence[str]) -> list[Dataset]:
    """The structure's CLOSED_PLANAR contours, slice by slice, each referring to its CT image."""
    items = []
    for k in np.nonzero(np.any(structure.mask, axis=(1, 2)))[0]:
        for polygon in mask_contours(structure.mask[k]):
            ijk = np.column_stack([polygon, np.full(len(polygon), float(k))])
            points_lps = _ras_to_lps(grid.ijk_to_ras_points(ijk))
            item = Dataset()
            item.ContourNumber = len(items) + 1
            item.ContourImageSequence = [_image_reference(CTImageStorage, ct_uids[k])]
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(points_lps)
            item.ContourData = _ds_list(points_lps.ravel())
            items.append(item)
    return items


def _structure_set(
    header: _Header,
    case: Case,
    sop_uid: str,
    roi_numbers: Mapping[str, int],
    ct_series_uid: str,
    ct_uids: Sequence[str],
) -> Dataset:
    """The RTSTRUCT: every structure of the case (ROI numbers by name), referring to the CT series written
    with it."""
    ds = _base(header, RTStructureSetStorage, sop_uid, "RTSTRUCT", generate_uid())
    ds.SeriesDescription = "RadAgent structures"
    _frame_of_reference(ds, header)
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "RadAgent"
    ds.StructureSetName = "RadAgent structures"
    ds.StructureSetDate, ds.StructureSetTime = header.date, header.time

    series = Dataset()
    series.SeriesInstanceUID = ct_series_uid
    series.ContourImageSequence = [_image_reference(CTImageStorage, uid) for uid in ct_uids]
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = _STUDY_REFERENCE_CLASS, header.study_uid
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = header.frame_of_reference_uid
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]

    rois, contours, observations = [], [], []
    seen = dict.fromkeys(Role, 0)
    for structure in case.structures:
        number = roi_numbers[structure.name]
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = header.frame_of_reference_uid
        roi.ROIName = _lo(structure.name)
        roi.ROIGenerationAlgorithm = ""
        rois.append(roi)

        palette = _COLORS[structure.role]
        contour = Dataset()
        contour.ReferencedROINumber = number
        contour.ROIDisplayColor = list(palette[seen[structure.role] % len(palette)])
        seen[structure.role] += 1
        contour.ContourSequence = _contours(structure, case.grid, ct_uids)
        contours.append(contour)

        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = _INTERPRETED_TYPE[structure.role]
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    return ds


# --- RTPLAN -----------------------------------------------------------------------------------------


def _plan_description(bixel_mm: Any) -> str:
    beamlets = f"{float(bixel_mm):g} mm beamlets" if isinstance(bixel_mm, int | float) else "beamlets"
    return (
        f"RadAgent research plan. {RESEARCH_USE_ONLY} "
        f"The beams carry beamlet fluence ({beamlets}), not an MLC sequence, so this plan is NOT "
        "deliverable. Jaw positions and metersets are placeholders: each beam's ASYMX/ASYMY jaws are the "
        "box around its beamlets of non-zero weight at the isocentre, and its BeamMeterset is "
        f"{METERSET_PER_BEAM:g} x (the beam's beamlet weight / the total beamlet weight) x the number of "
        "beams, a relative fluence, not monitor units of any machine."
    )


def _metersets(beams: Sequence[_Beam]) -> list[float]:
    """The placeholder meterset of each beam: its share of the total beamlet weight, 100 on average."""
    weights = np.array([max(b.weight_sum, 0.0) for b in beams])
    total = float(weights.sum())
    shares = weights / total if total > 0 else np.full(len(beams), 1.0 / len(beams))
    return [float(v) for v in METERSET_PER_BEAM * len(beams) * shares]


def _jaw_pair(device_type: str, positions_mm: Sequence[float]) -> Dataset:
    item = Dataset()
    item.RTBeamLimitingDeviceType = device_type
    item.LeafJawPositions = _ds_list(positions_mm)
    return item


def _control_points(beam: _Beam, isocenter_lps: np.ndarray) -> list[Dataset]:
    """A static beam's two control points: everything set at the first, the meterset reaching 1 at the
    second."""
    first = Dataset()
    first.ControlPointIndex = 0
    first.CumulativeMetersetWeight = "0"
    first.NominalBeamEnergy = _ds(NOMINAL_ENERGY_MV)
    first.BeamLimitingDevicePositionSequence = [
        _jaw_pair("ASYMX", beam.jaws_mm[0:2]),
        _jaw_pair("ASYMY", beam.jaws_mm[2:4]),
    ]
    first.GantryAngle = _ds(beam.gantry_deg)
    first.GantryRotationDirection = "NONE"
    first.BeamLimitingDeviceAngle = "0"
    first.BeamLimitingDeviceRotationDirection = "NONE"
    first.PatientSupportAngle = "0"
    first.PatientSupportRotationDirection = "NONE"
    first.TableTopEccentricAngle = "0"
    first.TableTopEccentricRotationDirection = "NONE"
    first.TableTopVerticalPosition = ""
    first.TableTopLongitudinalPosition = ""
    first.TableTopLateralPosition = ""
    first.IsocenterPosition = _ds_list(isocenter_lps)
    last = Dataset()
    last.ControlPointIndex = 1
    last.CumulativeMetersetWeight = "1"
    return [first, last]


def _beam(number: int, beam: _Beam, isocenter_lps: np.ndarray) -> Dataset:
    ds = Dataset()
    ds.BeamNumber = number
    ds.BeamName = f"G{beam.gantry_deg:g}"
    ds.BeamDescription = "beamlet fluence, no MLC sequence: not deliverable"
    ds.BeamType = "STATIC"
    ds.RadiationType = "PHOTON"
    ds.PrimaryDosimeterUnit = "MU"
    ds.TreatmentMachineName = TREATMENT_MACHINE
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.SourceAxisDistance = _ds(SOURCE_AXIS_DISTANCE_MM)
    devices = []
    for device_type in ("ASYMX", "ASYMY"):
        device = Dataset()
        device.RTBeamLimitingDeviceType = device_type
        device.NumberOfLeafJawPairs = 1
        devices.append(device)
    ds.BeamLimitingDeviceSequence = devices
    ds.ReferencedPatientSetupNumber = 1
    ds.NumberOfWedges = 0
    ds.NumberOfCompensators = 0
    ds.NumberOfBoli = 0
    ds.NumberOfBlocks = 0
    ds.FinalCumulativeMetersetWeight = "1"
    ds.NumberOfControlPoints = 2
    ds.ControlPointSequence = _control_points(beam, isocenter_lps)
    return ds


def _dose_reference(target_name: str, roi_number: int | None, prescription_gy: float) -> Dataset:
    """The prescription to the primary target: a VOLUME reference to its ROI, or a SITE when the structure
    set the plan refers to has no ROI of that name."""
    item = Dataset()
    item.DoseReferenceNumber = 1
    item.DoseReferenceUID = generate_uid()
    if roi_number is None:
        item.DoseReferenceStructureType = "SITE"
    else:
        item.DoseReferenceStructureType = "VOLUME"
        item.ReferencedROINumber = int(roi_number)
    item.DoseReferenceDescription = _lo(target_name)
    item.DoseReferenceType = "TARGET"
    item.TargetPrescriptionDose = _ds(prescription_gy)
    return item


def _rt_plan(
    header: _Header,
    case: Case,
    sop_uid: str,
    beams: Sequence[_Beam],
    isocenter_lps: np.ndarray,
    structure_set_uid: str,
    target: tuple[str, int | None],
    bixel_mm: Any,
) -> Dataset:
    """The RTPLAN: prescription, patient setup, one fraction group and one static beam per gantry angle."""
    ds = _base(header, RTPlanStorage, sop_uid, "RTPLAN", generate_uid())
    ds.SeriesDescription = "RadAgent research plan, not for clinical use"
    _frame_of_reference(ds, header)
    ds.InstanceNumber = 1
    ds.RTPlanLabel = "RadAgent"
    ds.RTPlanName = "RadAgent research plan"
    ds.RTPlanDescription = _plan_description(bixel_mm)
    ds.RTPlanDate, ds.RTPlanTime = header.date, header.time
    ds.PlanIntent = "RESEARCH"
    ds.RTPlanGeometry = "PATIENT"
    structure_set = Dataset()
    structure_set.ReferencedSOPClassUID = RTStructureSetStorage
    structure_set.ReferencedSOPInstanceUID = structure_set_uid
    ds.ReferencedStructureSetSequence = [structure_set]

    ds.DoseReferenceSequence = [_dose_reference(*target, case.prescription_gy)]
    setup = Dataset()
    setup.PatientSetupNumber = 1
    setup.PatientPosition = case.patient_position
    ds.PatientSetupSequence = [setup]

    fraction_group = Dataset()
    fraction_group.FractionGroupNumber = 1
    fraction_group.NumberOfFractionsPlanned = int(case.protocol.fractions)
    fraction_group.NumberOfBeams = len(beams)
    fraction_group.NumberOfBrachyApplicationSetups = 0
    references = []
    for number, meterset in enumerate(_metersets(beams), start=1):
        reference = Dataset()
        reference.ReferencedBeamNumber = number
        reference.BeamMeterset = _ds(meterset)
        references.append(reference)
    fraction_group.ReferencedBeamSequence = references
    ds.FractionGroupSequence = [fraction_group]
    ds.BeamSequence = [_beam(number, beam, isocenter_lps) for number, beam in enumerate(beams, start=1)]
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


# --- RTDOSE -----------------------------------------------------------------------------------------


def _body_box(case: Case) -> tuple[slice, slice, slice]:
    """The [k, j, i] slices of the body's bounding box grown by one voxel, within the grid."""
    mask = case.body.mask
    box = []
    for axis in range(3):
        present = np.nonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))[0]
        box.append(slice(max(int(present[0]) - 1, 0), min(int(present[-1]) + 2, mask.shape[axis])))
    return tuple(box)


def _rt_dose(header: _Header, case: Case, dose_gy: np.ndarray, plan_uid: str) -> Dataset:
    """The RTDOSE: the total plan dose on the CT lattice within the body's box, frames along the normal."""
    grid = case.grid
    box_k, box_j, box_i = _body_box(case)
    frames_k = np.arange(box_k.start, box_k.stop)
    orientation, pixel_spacing, normal = _image_plane(grid)
    if float(_ras_to_lps(grid.direction[:, 2]) @ normal) < 0:  # k runs against the normal: reverse
        frames_k = frames_k[::-1]
    positions = np.array([_position_lps(grid, box_i.start, box_j.start, k) for k in frames_k])
    offsets_mm = (positions - positions[0]) @ normal

    dose = dose_gy[frames_k][:, box_j, box_i]
    maximum_gy = float(dose.max())
    scaling = format_number_as_ds(maximum_gy / _UINT16_MAX if maximum_gy > 0 else 1.0)
    pixels = np.rint(np.minimum(dose / float(scaling), _UINT16_MAX)).astype("<u2")

    ds = _base(header, RTDoseStorage, generate_uid(), "RTDOSE", generate_uid())
    ds.SeriesDescription = "RadAgent plan dose"
    _frame_of_reference(ds, header)
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = header.date, header.time
    ds.ImageComments = RESEARCH_USE_ONLY
    ds.ImagePositionPatient = _ds_exact(positions[0])
    ds.ImageOrientationPatient = orientation
    ds.PixelSpacing = pixel_spacing
    ds.SliceThickness = _ds(grid.spacing_mm[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = len(frames_k)
    ds.FrameIncrementPointer = Tag("GridFrameOffsetVector")
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    fractions = int(case.protocol.fractions)
    ds.DoseComment = f"total over {fractions} fractions; RadAgent research, not clinical use"  # LO: 64 chars
    plan = Dataset()
    plan.ReferencedSOPClassUID, plan.ReferencedSOPInstanceUID = RTPlanStorage, plan_uid
    ds.ReferencedRTPlanSequence = [plan]
    ds.GridFrameOffsetVector = _ds_exact(offsets_mm)
    ds.DoseGridScaling = scaling
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds
