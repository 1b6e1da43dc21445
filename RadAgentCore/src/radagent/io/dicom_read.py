"""A patient from DICOM: a CT series and its RTSTRUCT (and the prescription of an RTPLAN) → :class:`Case`.

Read with pydicom, at the file boundary converted from DICOM's LPS to the package's RAS (see
:mod:`radagent.geometry`). What is accepted, and what is refused with one line naming the problem:

* **CT**: any patient position (HFS, HFP, FFS, FFP) and direction cosines (oblique too). Slices are
  ordered by their position along the slice normal (row × column cosine), never by file name or instance
  number; each slice's Rescale Slope/Intercept is applied. Refused: gantry tilt (slices shifted within
  their plane), a missing slice, unequal slice spacing, two slices at one position, a series whose
  slices differ in size, orientation or pixel spacing. Several CT series: the one the RTSTRUCT
  references, or the one named with ``series``; several RTSTRUCTs on it: the one named with
  ``structure_set``. Files without the Part 10 header are read; pixel data only when used.
* **RTSTRUCT**: closed planar contours are filled on the CT grid by the even-odd rule
  (:mod:`radagent.io.contours`: holes, keyhole contours and several contours per plane). A contour plane
  stands for the slab half-way to its neighbouring planes (at most half the ROI's typical plane spacing,
  and half a CT slice beyond its first and last plane), and a CT slice takes the plane whose slab holds
  its centre, so contours between CT slices are placed where they lie. Point, open and empty ROIs are
  reported and left out; the ROIs' frame of reference must be the CT's and the referenced series must
  be in the folder.
* **Roles** (:func:`dicom_roles`): the names given (``targets``, ``oars``, ``body``) win; otherwise
  ROIs named ``PTV…`` are targets; ``External``/``Body``/``Skin``/``Outline`` (or RT ROI interpreted type
  EXTERNAL) the body (one drawn as a hollow rind around the targets is filled); ``CTV…``/``GTV…``/
  ``ITV…`` and PTVs not named as targets are reported, not optimized; non-anatomical types (SUPPORT,
  MARKER, BOLUS, …) are left out; every other ROI is an organ at risk.
* **Prescription**: the one given, else the target prescription dose of an RTPLAN in the folder that
  belongs to the structure set, when there is exactly one such value (its fractions too).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from scipy import ndimage

from radagent.beams import PATIENT_POSITIONS
from radagent.errors import InputError
from radagent.evaluate.scorecard import ScoreCard
from radagent.geometry import Grid, lps_to_ras_matrix
from radagent.io.contours import even_odd_fill
from radagent.io.inputs import case_with_roles, is_body_name
from radagent.patient import Case, DicomOrigin, Protocol

__all__ = [
    "DicomFolder",
    "RoiContours",
    "case_from_dicom",
    "ct_grid",
    "ct_volume",
    "dicom_roles",
    "is_dicom_file",
    "rasterize_roi",
    "read_dicom_folder",
    "read_rtdose",
    "sort_slices",
]

# Geometry tolerances (mm): two slices closer than this along the normal share a position; a slice further
# than the larger of the next two from the straight, evenly spaced line through the series is refused (an
# in-plane shift is a gantry tilt, a shift along the normal an unequal spacing). Rounding of written
# positions stays far below them.
POSITION_TOLERANCE_MM = 0.01
SLICE_TOLERANCE_MM = 0.05
SLICE_TOLERANCE_FRACTION = 0.02  # of the slice spacing
ORIENTATION_TOLERANCE = 1e-4
# A contour whose points lie further apart than this (in CT slices) along the slice normal is not in a
# slice plane; contours whose planes lie closer than this are on one plane.
CONTOUR_PLANE_TOLERANCE = 0.05
# Large elements (pixel data) are read from the file only when used: a folder's other series and dose
# files cost their headers alone.
_DEFER_BYTES = 16384
TARGET_PREFIXES = ("ptv",)
REPORTED_PREFIXES = ("ctv", "gtv", "itv")
NON_ANATOMICAL_TYPES = frozenset(
    {"SUPPORT", "MARKER", "BOLUS", "FIXATION", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "CONTROL"}
)
_MODALITIES_READ = ("CT", "RTSTRUCT", "RTPLAN")
_CONTOUR_DATA = 0x30060050


@dataclass
class RoiContours:
    """One ROI of a structure set: its number, name, interpreted type and contours (LPS mm) by type."""

    number: int
    name: str
    interpreted_type: str
    frame_of_reference_uid: str
    closed: list[np.ndarray] = field(default_factory=list)  # (N, 3) LPS points of each closed contour
    other_types: set[str] = field(default_factory=set)  # POINT, OPEN_PLANAR, … (left out)


@dataclass
class DicomFolder:
    """What a folder holds, read and checked: the chosen CT series (slices sorted), its structure set and
    the RTPLANs beside it, and notes on what was ignored."""

    ct_slices: list[Dataset]
    structure_set: Dataset
    rois: list[RoiContours]
    plans: list[Dataset]
    notes: list[str]


def read_dicom_folder(
    folder: str | Path, series: str | None = None, structure_set: str | None = None
) -> DicomFolder:
    """Scan ``folder`` (recursively) and pick the CT series and RTSTRUCT to plan (``series``,
    ``structure_set``: their UIDs, where the folder holds several); InputError on bad input."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"DICOM folder {folder} does not exist or is not a folder")
    by_modality: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    notes: list[str] = []
    for path in _files(folder):
        dataset = _read(path)
        if dataset is None:  # a DICOMDIR
            continue
        by_modality[str(dataset.get("Modality", ""))].append((path, dataset))
    ignored = sorted(
        f"{len(items)} {m or 'unknown'}" for m, items in by_modality.items() if m not in _MODALITIES_READ
    )
    if ignored:
        notes.append(f"ignored in {folder.name}: {', '.join(ignored)} file(s)")
    if not by_modality["CT"]:
        raise InputError(f"DICOM folder {folder} holds no CT image")
    structure_sets = by_modality["RTSTRUCT"]
    if not structure_sets:
        raise InputError(f"DICOM folder {folder} holds no RTSTRUCT (structure set) for the CT")
    series_slices: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path, dataset in by_modality["CT"]:
        series_slices[str(dataset.get("SeriesInstanceUID", ""))].append((path, dataset))
    with _well_formed(structure_sets[0][0], "RTSTRUCT"):
        chosen, drawn = _choose_series(series_slices, structure_sets, series, structure_set)
    others = len(series_slices) - 1
    if others:
        notes.append(f"{others} other CT series ignored (planning series {chosen})")
    slices = sort_slices([d for _, d in series_slices[chosen]], chosen)
    _decode_all(series_slices[chosen])
    frame = str(slices[0].get("FrameOfReferenceUID", ""))
    with _well_formed(drawn[0], "RTSTRUCT"):
        rois = _rois(drawn[1], frame, drawn[0])
    with _well_formed("RTPLAN", "an RTPLAN of"):
        plans = _plans_of(by_modality["RTPLAN"], drawn[1], frame)
    return DicomFolder(slices, drawn[1], rois, plans, notes)


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part 10 file (the "DICM" marker after the 128-byte preamble)."""
    try:
        with Path(path).open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


@contextlib.contextmanager
def _well_formed(path: Path | str, what: str) -> Iterator[None]:
    """Turn a missing or malformed attribute met while reading ``what`` into a one-line InputError."""
    try:
        yield
    except InputError:
        raise
    except (AttributeError, KeyError, ValueError, TypeError, IndexError) as error:
        raise InputError(f"{what} {Path(path).name} is malformed: {error}") from None


def _files(folder: Path) -> Iterable[Path]:
    """Every regular file under ``folder``, hidden ones left out, in a stable order."""
    for root, directories, names in os.walk(folder):
        directories[:] = sorted(d for d in directories if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(root) / name


def _read(path: Path) -> Dataset | None:
    """The dataset of one file, its large elements (pixel data) read from the file only when used; None
    for a DICOMDIR; InputError for anything that is not a readable DICOM object. A file without the
    Part 10 header (no "DICM" preamble) is accepted when it parses as a dataset with a SOP class."""
    try:
        dataset = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except InvalidDicomError:
        dataset = _read_headerless(path)
    except Exception as error:  # pydicom raises many kinds on a garbled or truncated file
        raise InputError(f"{path} is not a readable DICOM file: {error}") from None
    if str(dataset.file_meta.get("MediaStorageSOPClassUID", "")) == pydicom.uid.MediaStorageDirectoryStorage:
        return None
    if "SOPClassUID" not in dataset and "Modality" not in dataset:
        raise InputError(f"{path} is not a readable DICOM file: it has no SOP class and no modality")
    dataset.filename = str(path)
    return dataset


def _read_headerless(path: Path) -> Dataset:
    """A DICOM dataset written without the Part 10 header, or an InputError saying the file is not DICOM."""
    try:
        dataset = pydicom.dcmread(path, force=True, defer_size=_DEFER_BYTES)
        recognized = "SOPClassUID" in dataset and "Modality" in dataset
    except Exception:
        recognized = False
    if not recognized:
        raise InputError(f"{path} is not a DICOM file")
    if "TransferSyntaxUID" not in dataset.file_meta:  # the default of a headerless file
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    return dataset


def _referenced_series(structure_set: Dataset) -> list[str]:
    """The CT series UIDs an RTSTRUCT's Referenced Frame of Reference Sequence names."""
    uids = []
    for frame in structure_set.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                uids.append(str(series.SeriesInstanceUID))
    return uids


def _choose_series(
    series_slices: dict[str, list[tuple[Path, Dataset]]],
    structure_sets: list[tuple[Path, Dataset]],
    series: str | None,
    structure_set: str | None = None,
) -> tuple[str, tuple[Path, Dataset]]:
    """The CT series to plan and the RTSTRUCT drawn on it (the one named by its SOP Instance UID)."""
    available = sorted(series_slices)
    if series is not None and series not in series_slices:
        raise InputError(f"no CT series {series} in the folder (CT series: {', '.join(available)})")
    if structure_set is not None:
        named = [(path, s) for path, s in structure_sets if str(s.SOPInstanceUID) == structure_set]
        if not named:
            raise InputError(
                f"no RTSTRUCT {structure_set} in the folder (RTSTRUCTs: {_described(structure_sets)})"
            )
        structure_sets = named
    for path, structure_set in structure_sets:
        for uid in _referenced_series(structure_set):
            if uid not in series_slices:
                raise InputError(
                    f"RTSTRUCT {path.name} references CT series {uid}, which is not in the folder "
                    f"(CT series: {', '.join(available)})"
                )
    if series is None:
        referenced = {uid for _, s in structure_sets for uid in _referenced_series(s)}
        candidates = sorted(referenced) if referenced else available
        if len(candidates) != 1:
            raise InputError(
                f"the folder holds several CT series ({', '.join(candidates)}); choose one with --series"
            )
        series = candidates[0]
    frame = str(series_slices[series][0][1].get("FrameOfReferenceUID", ""))
    drawn = [
        (path, s)
        for path, s in structure_sets
        if series in _referenced_series(s) or (not _referenced_series(s) and _frame_uids(s) == {frame})
    ]
    if not drawn:
        raise InputError(f"no RTSTRUCT in the folder references CT series {series}")
    if len(drawn) > 1:
        raise InputError(
            f"several RTSTRUCTs ({_described(drawn)}) reference CT series {series}; choose one with "
            "--structure-set UID"
        )
    return series, drawn[0]


def _described(structure_sets: Sequence[tuple[Path, Dataset]]) -> str:
    """RTSTRUCTs as "file 'label' UID", for a message that lets the user choose one."""
    return ", ".join(
        f"{path.name} '{s.get('StructureSetLabel', '')}' {s.get('SOPInstanceUID', '')}"
        for path, s in structure_sets
    )


def _frame_uids(structure_set: Dataset) -> set[str]:
    return {str(f.FrameOfReferenceUID) for f in structure_set.get("ReferencedFrameOfReferenceSequence", [])}


def sort_slices(slices: Sequence[Dataset], series: str = "") -> list[Dataset]:
    """The series' slices ordered along the slice normal, after checking they form one regular volume."""
    first = slices[0]
    for name in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
        missing = [s for s in slices if name not in s]
        if missing:
            raise InputError(f"CT slice {Path(missing[0].filename).name} has no {name}")
    with _well_formed(first.filename, "CT slice"):
        orientation = _orientation(first)
        spacing = np.array(first.PixelSpacing, dtype=np.float64)
        if spacing.shape != (2,) or np.any(spacing <= 0):
            raise InputError(
                f"CT slice {Path(first.filename).name}: Pixel Spacing must be two positive values"
            )
    for dataset in slices[1:]:
        with _well_formed(dataset.filename, "CT slice"):
            same = _same_geometry(dataset, first, orientation, spacing)
        if not same:
            raise InputError(
                f"CT series {series} mixes slice geometries: {Path(dataset.filename).name} differs from "
                f"{Path(first.filename).name} in size, orientation or pixel spacing"
            )
        if str(dataset.get("FrameOfReferenceUID", "")) != str(first.get("FrameOfReferenceUID", "")):
            raise InputError(f"CT series {series} mixes frames of reference")
    try:
        tilt = float(first.get("GantryDetectorTilt", 0) or 0)
    except (TypeError, ValueError):
        tilt = 0.0
    if abs(tilt) > 1e-3:
        raise InputError(
            f"CT series {series} was scanned with a gantry tilt of {tilt:g}°; it is not supported"
        )
    normal = np.cross(orientation[:3], orientation[3:])
    with _well_formed(first.filename, "CT slice"):
        positions = np.array([_position(s) for s in slices], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    ordered = [slices[i] for i in order]
    steps = np.diff(along)
    if np.any(steps < POSITION_TOLERANCE_MM):
        k = int(np.argmax(steps < POSITION_TOLERANCE_MM))
        raise InputError(
            f"CT series {series}: two slices at one position ({along[k]:.2f} mm along the normal)"
        )
    if len(steps):
        typical = float(np.median(steps))
        ratios = steps / typical
        gaps = np.flatnonzero((np.abs(ratios - np.round(ratios)) < 0.05) & (np.round(ratios) >= 2))
        if len(gaps):
            k = int(gaps[0])
            raise InputError(
                f"CT series {series}: {round(ratios[k]) - 1} slice(s) missing between {along[k]:.2f} and "
                f"{along[k + 1]:.2f} mm along the normal"
            )
        # Every slice against the straight, evenly spaced line from the first slice to the last.
        step = (positions[-1] - positions[0]) / (len(slices) - 1)
        offset = positions - (positions[0] + np.outer(np.arange(len(slices)), step))
        along_error = np.abs(offset @ normal)
        in_plane = np.linalg.norm(offset - np.outer(offset @ normal, normal), axis=1)
        tolerance = max(SLICE_TOLERANCE_MM, SLICE_TOLERANCE_FRACTION * typical)
        drift_mm = float(np.linalg.norm(step - (step @ normal) * normal)) * (len(slices) - 1)
        if drift_mm > tolerance or in_plane.max() > tolerance:
            raise InputError(
                f"CT series {series}: slices shift by up to {max(drift_mm, float(in_plane.max())):.2f} mm "
                "within their plane (a gantry-tilted or sheared series); it is not supported"
            )
        if along_error.max() > tolerance:
            raise InputError(
                f"CT series {series}: unequal slice spacing ({steps.min():.3f} to {steps.max():.3f} mm); "
                "resample it to equal spacing first"
            )
    return ordered


def _same_geometry(dataset: Dataset, first: Dataset, orientation: np.ndarray, spacing: np.ndarray) -> bool:
    """True when a slice has the first slice's size, orientation and pixel spacing."""
    other_orientation = np.array(dataset.ImageOrientationPatient, dtype=np.float64)
    other_spacing = np.array(dataset.PixelSpacing, dtype=np.float64)
    return (
        (dataset.Rows, dataset.Columns) == (first.Rows, first.Columns)
        and other_orientation.shape == orientation.shape
        and other_spacing.shape == spacing.shape
        and np.allclose(other_orientation, orientation, atol=ORIENTATION_TOLERANCE)
        and np.allclose(other_spacing, spacing, atol=1e-4)
    )


def _orientation(dataset: Dataset) -> np.ndarray:
    """Image Orientation (Patient): row and column unit vectors (6 values) made exactly orthonormal, as
    the written cosines are rounded and the grid must be orthogonal."""
    values = np.array(dataset.ImageOrientationPatient, dtype=np.float64)
    if values.shape != (6,):
        raise InputError(f"Image Orientation (Patient) needs 6 values, has {values.size}")
    row, column = values[:3], values[3:]
    if max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(column) - 1), abs(row @ column)) > 1e-3:
        raise InputError(
            f"Image Orientation (Patient) {values.tolist()} is not two perpendicular unit vectors"
        )
    row = row / np.linalg.norm(row)
    column = column - (column @ row) * row
    return np.concatenate([row, column / np.linalg.norm(column)])


def _position(dataset: Dataset) -> np.ndarray:
    """Image Position (Patient), LPS mm."""
    values = np.array(dataset.ImagePositionPatient, dtype=np.float64)
    if values.shape != (3,):
        raise InputError(f"Image Position (Patient) needs 3 values, has {values.size}")
    return values


def _slice_spacing_mm(slices: Sequence[Dataset]) -> float:
    """Distance between slice centres (mm); one slice: its thickness."""
    if len(slices) > 1:
        orientation = _orientation(slices[0])
        normal = np.cross(orientation[:3], orientation[3:])
        along = np.array([_position(s) for s in slices], dtype=np.float64) @ normal
        return float((along[-1] - along[0]) / (len(slices) - 1))
    thickness = slices[0].get("SliceThickness")
    if not thickness:
        raise InputError("a single-slice CT without a slice thickness has no volume")
    return float(thickness)


def ct_grid(slices: Sequence[Dataset]) -> Grid:
    """The IJK→RAS grid of sorted CT slices: i along the row cosine, j along the column cosine."""
    first = slices[0]
    orientation = _orientation(first)
    row, column = orientation[:3], orientation[3:]
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)  # between rows, between columns
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, 0] = row * column_spacing
    ijk_to_lps[:3, 1] = column * row_spacing
    ijk_to_lps[:3, 2] = np.cross(row, column) * _slice_spacing_mm(slices)
    ijk_to_lps[:3, 3] = _position(first)
    return Grid((len(slices), int(first.Rows), int(first.Columns)), lps_to_ras_matrix() @ ijk_to_lps)


def _decode_all(files: Sequence[tuple[Path, Dataset]]) -> None:
    """Decode every slice's pixels now, so a truncated or garbled file is named before anything else."""
    for path, dataset in files:
        try:
            dataset.pixel_array  # noqa: B018 - decodes and caches
        except Exception as error:
            raise InputError(f"CT slice {path} has unreadable pixel data: {error}") from None


def ct_volume(slices: Sequence[Dataset]) -> tuple[np.ndarray, Grid]:
    """HU (float32, ``[k, j, i]``) of sorted slices, each slice's Rescale Slope/Intercept applied."""
    grid = ct_grid(slices)
    hu = np.empty(grid.shape, dtype=np.float32)
    for k, dataset in enumerate(slices):
        slope = float(dataset.get("RescaleSlope", 1) or 1)
        intercept = float(dataset.get("RescaleIntercept", 0) or 0)
        hu[k] = dataset.pixel_array.astype(np.float32) * slope + intercept
    return hu, grid


def _rois(structure_set: Dataset, ct_frame: str, path: Path) -> list[RoiContours]:
    """The structure set's ROIs with their contours, checked against the CT's frame of reference."""
    if ct_frame and _frame_uids(structure_set) and ct_frame not in _frame_uids(structure_set):
        raise InputError(
            f"RTSTRUCT {path.name} is in frame of reference {', '.join(sorted(_frame_uids(structure_set)))}, "
            f"the CT in {ct_frame}"
        )
    types = {
        int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", "") or "")
        for o in structure_set.get("RTROIObservationsSequence", [])
    }
    rois: dict[int, RoiContours] = {}
    for item in structure_set.get("StructureSetROISequence", []):
        number = int(item.ROINumber)
        frame = str(item.get("ReferencedFrameOfReferenceUID", "") or ct_frame)
        name = str(item.get("ROIName", "") or f"ROI {number}").strip()
        if ct_frame and frame != ct_frame:
            raise InputError(f"ROI '{name}' is in frame of reference {frame}, the CT in {ct_frame}")
        rois[number] = RoiContours(number, name, types.get(number, ""), frame)
    names = [r.name for r in rois.values()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"RTSTRUCT {path.name} has several ROIs named {', '.join(repeated)}")
    for item in structure_set.get("ROIContourSequence", []):
        roi = rois.get(int(item.ReferencedROINumber))
        if roi is None:
            continue
        for contour in item.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", ""))
            points = _contour_points(contour)
            if points is None:
                continue
            if kind == "CLOSED_PLANAR" and len(points) >= 3:
                roi.closed.append(points)
            else:
                roi.other_types.add(kind or "untyped")
    if not any(roi.closed for roi in rois.values()):
        raise InputError(f"RTSTRUCT {path.name} has no closed contour data")
    return list(rois.values())


def _contour_points(contour: Dataset) -> np.ndarray | None:
    """A contour's (N, 3) LPS points; parsed straight from the raw decimal strings, which is ~50 times
    faster than pydicom's per-value DS objects on a structure set of 10⁵ points."""
    if _CONTOUR_DATA not in contour:
        return None
    element = contour.get_item(_CONTOUR_DATA)
    try:
        if isinstance(element, RawDataElement) and element.VR in (None, "DS") and element.value is not None:
            text = element.value.decode("ascii").strip(" \x00")
            values = np.array(text.split("\\"), dtype=np.float64) if text else np.zeros(0)
        else:
            values = np.asarray(contour.ContourData, dtype=np.float64)
    except ValueError as error:
        raise InputError(f"a contour's ContourData is not a list of numbers: {error}") from None
    if values.size == 0:
        return None
    if values.size % 3:
        raise InputError(f"a contour's ContourData has {values.size} values, not a multiple of 3")
    return values.reshape(-1, 3)


def _plans_of(plans: list[tuple[Path, Dataset]], structure_set: Dataset, frame: str) -> list[Dataset]:
    """The RTPLANs that reference the structure set (else, when there is one, the one in its frame)."""
    uid = str(structure_set.SOPInstanceUID)
    referencing = [
        plan
        for _, plan in plans
        if uid in {str(r.ReferencedSOPInstanceUID) for r in plan.get("ReferencedStructureSetSequence", [])}
    ]
    if referencing:
        return referencing
    same_frame = [plan for _, plan in plans if str(plan.get("FrameOfReferenceUID", "")) == frame]
    return same_frame if len(same_frame) == 1 else []


def rasterize_roi(roi: RoiContours, grid: Grid) -> tuple[np.ndarray, int]:
    """The ROI's closed contours filled on ``grid``; also how many contour planes lie outside the CT.

    Contours within :data:`CONTOUR_PLANE_TOLERANCE` slices of each other along the normal are one plane,
    filled together by the even-odd rule. A plane stands for the slab half-way to its neighbours (at most
    half the ROI's typical plane spacing, and half a CT slice beyond its first and last plane), and fills
    the CT slices whose centres lie in its slab, [k − below, k + above).
    """
    contours = []
    for points in roi.closed:
        ijk = grid.ras_to_ijk_points(points @ lps_to_ras_matrix()[:3, :3].T)
        spread = float(np.ptp(ijk[:, 2]))
        if spread > CONTOUR_PLANE_TOLERANCE:
            raise InputError(
                f"a contour of ROI '{roi.name}' is not in a CT slice plane (it spans {spread:.2f} slices "
                "along the slice normal)"
            )
        contours.append((float(np.mean(ijk[:, 2])), ijk[:, :2]))
    contours.sort(key=lambda item: item[0])
    planes: list[tuple[float, list[np.ndarray]]] = []  # (k, polygons) in increasing k
    members: list[float] = []
    for k, polygon in contours:
        if planes and k - members[0] <= CONTOUR_PLANE_TOLERANCE:
            planes[-1][1].append(polygon)
            members.append(k)
            planes[-1] = (float(np.mean(members)), planes[-1][1])
        else:
            planes.append((k, [polygon]))
            members = [k]
    ks = np.array([k for k, _ in planes])
    typical = float(np.median(np.diff(ks))) if len(ks) > 1 else 1.0
    end = 0.5 * min(typical, 1.0)
    mask = np.zeros(grid.shape, dtype=bool)
    outside = 0
    for index, (k, polygons) in enumerate(planes):
        if not -0.5 <= k <= grid.shape[0] - 0.5:
            outside += 1
            continue
        below = 0.5 * min(typical, k - ks[index - 1]) if index > 0 else end
        above = 0.5 * min(typical, ks[index + 1] - k) if index + 1 < len(ks) else end
        first, last = int(np.ceil(k - below - 1e-6)), int(np.ceil(k + above - 1e-6)) - 1
        first, last = max(first, 0), min(last, grid.shape[0] - 1)
        if first <= last:  # a plane finer than the CT may hold no slice centre: its neighbours do
            mask[first : last + 1] |= even_odd_fill(polygons, grid.shape[1:])
    return mask, outside


def dicom_roles(
    rois: Sequence[RoiContours],
    targets: Sequence[str] = (),
    oars: Sequence[str] = (),
    body: str | None = None,
) -> tuple[list[str], list[str], str | None, list[str]]:
    """Target, OAR and body ROI names by the module's rule (names given win) and notes on the rest."""
    notes = []
    usable = [r for r in rois if r.closed]
    for roi in rois:
        if not roi.closed:
            what = f"{'/'.join(sorted(roi.other_types))} contours only" if roi.other_types else "no contours"
            notes.append(f"ROI '{roi.name}' has {what}; left out")
    names = [r.name for r in usable]
    folded = {n.casefold() for n in [*targets, *oars, *([body] if body else [])]}
    if not targets:
        targets = [n for n in names if n.casefold().startswith(TARGET_PREFIXES)]
        if not targets:
            raise InputError(
                f"no ROI is named PTV…; name the target with --target (ROIs: {', '.join(names)})"
            )
    taken = {n.casefold() for n in targets}
    if body is None:
        bodies = [r.name for r in usable if r.name.casefold() not in taken and _is_body(r)]
        if len(bodies) > 1:
            raise InputError(f"several body-like ROIs ({', '.join(bodies)}); name the body with --body")
        body = bodies[0] if bodies else None
    if body is not None:
        taken.add(body.casefold())
    if not oars:
        oars = []
        for roi in usable:
            if roi.name.casefold() in taken:
                continue
            if roi.name.casefold().startswith(REPORTED_PREFIXES + TARGET_PREFIXES):
                notes.append(f"ROI '{roi.name}' is not optimized (name it with --target to plan it)")
            elif roi.interpreted_type.upper() in NON_ANATOMICAL_TYPES:
                notes.append(f"ROI '{roi.name}' ({roi.interpreted_type}) is not anatomy; left out")
            else:
                oars.append(roi.name)
    else:
        left = [n for n in names if n.casefold() not in taken | {o.casefold() for o in oars} | folded]
        if left:
            notes.append(f"ROIs not given a role, left out: {', '.join(left)}")
    return list(targets), list(oars), body, notes


def _solid_body(
    masks: list[tuple[str, np.ndarray]], body: str, targets: Sequence[str]
) -> tuple[list[tuple[str, np.ndarray]], bool]:
    """The masks with a body ROI drawn as a rind (a skin contour with its inner surface, so that the even-odd
    fill leaves it hollow) filled slice by slice, when that is what puts the targets inside it."""
    by_name = {name.casefold(): mask for name, mask in masks}
    body_mask = by_name[body.casefold()]
    target_mask = np.logical_or.reduce([by_name[t.casefold()] for t in targets])
    outside = np.count_nonzero(target_mask & ~body_mask)
    if not outside:
        return masks, False
    solid = np.stack([ndimage.binary_fill_holes(plane) for plane in body_mask])
    if np.count_nonzero(target_mask & ~solid) >= outside:
        return masks, False
    return [(n, solid if n.casefold() == body.casefold() else m) for n, m in masks], True


def _is_body(roi: RoiContours) -> bool:
    return roi.interpreted_type.upper() == "EXTERNAL" or is_body_name(roi.name)


def _prescription(plans: Sequence[Dataset]) -> tuple[float, int | None, str]:
    """(dose Gy, fractions or None, which plan) of the RTPLANs' one target prescription dose; InputError
    when there is none or several differ."""
    doses = set()
    fractions = set()
    for plan in plans:
        for reference in plan.get("DoseReferenceSequence", []):
            value = reference.get("TargetPrescriptionDose")
            if value is not None and str(reference.get("DoseReferenceType", "TARGET")) == "TARGET":
                doses.add(round(float(value), 4))
        for group in plan.get("FractionGroupSequence", []):
            if group.get("NumberOfFractionsPlanned"):
                fractions.add(int(group.NumberOfFractionsPlanned))
    if len(doses) != 1:
        what = (
            f"several different prescriptions ({', '.join(f'{d:g}' for d in sorted(doses))} Gy)"
            if doses
            else "no RTPLAN with a prescription"
        )
        raise InputError(f"the folder has {what}; give the prescription (--prescription GY)")
    label = ", ".join(str(p.get("RTPlanLabel", "") or "unlabelled") for p in plans)
    return doses.pop(), (fractions.pop() if len(fractions) == 1 else None), label


def _text(dataset: Dataset, name: str) -> str:
    value = dataset.get(name, "")
    return "" if value is None else str(value)


def case_from_dicom(
    folder: str | Path,
    *,
    series: str | None = None,
    structure_set: str | None = None,
    targets: Sequence[str] = (),
    oars: Sequence[str] = (),
    body: str | None = None,
    prescription_gy: float | None = None,
    fractions: int | None = None,
    scorecard: ScoreCard | None = None,
    default_fractions: int = 1,
) -> Case:
    """A case from a DICOM folder (see the module docstring); ``case.dicom`` keeps the UIDs an export
    reuses and the notes on what the import left out or assumed."""
    content = read_dicom_folder(folder, series, structure_set)
    slices = content.ct_slices
    ct_hu, grid = ct_volume(slices)
    notes = list(content.notes)
    position = str(slices[0].get("PatientPosition", "") or "").upper()
    if not position:
        notes.append("the CT gives no patient position; head first supine (HFS) assumed")
        position = "HFS"
    elif position not in PATIENT_POSITIONS:
        raise InputError(
            f"patient position {position} is not supported (only {', '.join(PATIENT_POSITIONS)})"
        )
    chosen_targets, chosen_oars, chosen_body, role_notes = dicom_roles(content.rois, targets, oars, body)
    notes += role_notes
    by_name = {r.name.casefold(): r for r in content.rois if r.closed}
    masks = []
    for name in [*chosen_targets, *chosen_oars, *([chosen_body] if chosen_body else [])]:
        roi = by_name.get(name.casefold())
        if roi is None:
            known = ", ".join(r.name for r in content.rois)
            raise InputError(f"no ROI named '{name}' with contours in the RTSTRUCT (ROIs: {known})")
        mask, outside = rasterize_roi(roi, grid)
        if outside:
            notes.append(f"ROI '{roi.name}': {outside} contour plane(s) outside the CT, left out")
        masks.append((roi.name, mask))
    if chosen_body is not None:
        masks, filled = _solid_body(masks, chosen_body, chosen_targets)
        if filled:
            notes.append(
                f"body ROI '{chosen_body}' is a hollow rind around the targets; its inside is the body"
            )
    if prescription_gy is None:
        with _well_formed("RTPLAN", "an RTPLAN of"):
            prescription_gy, plan_fractions, label = _prescription(content.plans)
        notes.append(f"prescription {prescription_gy:g} Gy from RTPLAN {label}")
        if fractions is None and plan_fractions is None:
            notes.append(f"the RTPLAN gives no single fraction count; {default_fractions} assumed")
        fractions = fractions if fractions is not None else plan_fractions
    protocol = Protocol(prescription_gy, fractions or default_fractions, scorecard)
    series_uid = str(slices[0].SeriesInstanceUID)
    case = case_with_roles(
        ct_hu,
        grid,
        masks,
        targets=[by_name[n.casefold()].name for n in chosen_targets],
        oars=[by_name[n.casefold()].name for n in chosen_oars],
        body=by_name[chosen_body.casefold()].name if chosen_body else None,
        protocol=protocol,
        name="dicom-" + hashlib.sha1(series_uid.encode()).hexdigest()[:8],
        patient_position=position,
        description=f"DICOM CT series {slices[0].get('SeriesNumber', '')} ({len(slices)} slices), RTSTRUCT",
    )
    if chosen_body is None:
        notes.append(f"no body ROI; the body is '{case.body.name}'")
    return _with_origin(case, slices, content.structure_set, content.rois, notes)


def _with_origin(
    case: Case,
    slices: Sequence[Dataset],
    structure_set: Dataset,
    rois: Sequence[RoiContours],
    notes: list[str],
) -> Case:
    first = slices[0]
    case.dicom = DicomOrigin(
        patient_name=_text(first, "PatientName"),
        patient_id=_text(first, "PatientID"),
        patient_birth_date=_text(first, "PatientBirthDate"),
        patient_sex=_text(first, "PatientSex"),
        study_instance_uid=_text(first, "StudyInstanceUID"),
        study_id=_text(first, "StudyID"),
        study_date=_text(first, "StudyDate"),
        study_time=_text(first, "StudyTime"),
        study_description=_text(first, "StudyDescription"),
        frame_of_reference_uid=_text(first, "FrameOfReferenceUID"),
        ct_series_instance_uid=_text(first, "SeriesInstanceUID"),
        structure_set_uid=_text(structure_set, "SOPInstanceUID"),
        roi_numbers=_roi_numbers(case, rois),
        accession_number=_text(first, "AccessionNumber"),
        referring_physician_name=_text(first, "ReferringPhysicianName"),
        notes=tuple(notes),
    )
    return case


def _roi_numbers(case: Case, rois: Sequence[RoiContours]) -> dict[str, int]:
    """ROI numbers by the case's structure names (which a score card may have respelled) and by the
    RTSTRUCT's own names."""
    numbers = {r.name: r.number for r in rois}
    by_folded = {r.name.casefold(): r.number for r in rois}
    for structure in case.structures:
        if structure.name.casefold() in by_folded:
            numbers[structure.name] = by_folded[structure.name.casefold()]
    return numbers


def read_rtdose(path: str | Path, frame_of_reference_uid: str | None = None) -> tuple[np.ndarray, Grid]:
    """An RTDOSE file's dose (Gy, float32, ``[k, j, i]``) and grid. Refused: another frame of reference than
    ``frame_of_reference_uid`` (when given), a dose that is not the whole plan's (a fraction's or a beam's),
    units other than Gy, frames not evenly spaced."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"RTDOSE {path} does not exist")
    dataset = _read(path)
    if dataset is None or str(dataset.get("Modality", "")) != "RTDOSE":
        raise InputError(f"{path} is not an RTDOSE file")
    with _well_formed(path, "RTDOSE"):
        return _rtdose_volume(dataset, path, frame_of_reference_uid)


def _rtdose_volume(
    dataset: Dataset, path: Path, frame_of_reference_uid: str | None
) -> tuple[np.ndarray, Grid]:
    units = str(dataset.get("DoseUnits", "GY")).upper()
    if units != "GY":
        raise InputError(f"RTDOSE {path.name} is in {units}, not Gy")
    summation = str(dataset.get("DoseSummationType", "PLAN") or "PLAN").upper()
    if summation != "PLAN":
        raise InputError(
            f"RTDOSE {path.name} holds a {summation} dose, not the whole plan's; give the plan dose"
        )
    frame = str(dataset.get("FrameOfReferenceUID", "") or "")
    if frame_of_reference_uid and frame and frame != frame_of_reference_uid:
        raise InputError(
            f"RTDOSE {path.name} is in frame of reference {frame}, the CT in {frame_of_reference_uid}"
        )
    try:
        pixels = dataset.pixel_array
    except Exception as error:
        raise InputError(f"RTDOSE {path} has unreadable pixel data: {error}") from None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    if np.asarray(pixels).size != frames * rows * columns:
        raise InputError(
            f"RTDOSE {path.name}: its pixel data does not hold {frames} frames of {rows} × {columns}"
        )
    pixels = np.asarray(pixels).reshape(frames, rows, columns)
    scaling = float(dataset.get("DoseGridScaling", 1.0) or 1.0)
    dose = (pixels.astype(np.float64) * scaling).astype(np.float32)
    orientation = _orientation(dataset)
    row, column = orientation[:3], orientation[3:]
    if frames > 1:
        offsets = np.asarray(dataset.GridFrameOffsetVector, dtype=np.float64).ravel()
        if offsets.size != frames:
            raise InputError(f"RTDOSE {path.name}: {offsets.size} grid frame offsets for {frames} frames")
        steps = np.diff(offsets - offsets[0])  # relative (first 0) and absolute vectors alike
        if np.ptp(steps) > POSITION_TOLERANCE_MM or abs(steps[0]) < POSITION_TOLERANCE_MM:
            raise InputError(f"RTDOSE {path.name}: its frames are not evenly spaced")
        step = float(np.mean(steps))
    else:
        step = float(dataset.get("SliceThickness", 1.0) or 1.0)
    spacing = np.array(dataset.PixelSpacing, dtype=np.float64)
    if spacing.shape != (2,) or np.any(spacing <= 0):
        raise InputError(f"RTDOSE {path.name}: Pixel Spacing must be two positive values")
    row_spacing, column_spacing = spacing
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, 0] = row * column_spacing
    ijk_to_lps[:3, 1] = column * row_spacing
    ijk_to_lps[:3, 2] = np.cross(row, column) * step
    ijk_to_lps[:3, 3] = _position(dataset)
    return dose, Grid(dose.shape, lps_to_ras_matrix() @ ijk_to_lps)
