"""The patient model: CT, structures with roles, and the protocol (prescription, fractions, score card).

A :class:`Case` is validated once at construction, so every later stage can trust it: the CT is finite
HU on a grid with perpendicular axes, every structure is a non-empty boolean mask on the CT grid, there
is at least one target and exactly one body, the targets lie inside the body, and no target's dose level
exceeds the prescription.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from scipy import ndimage

from radagent.beams import iec_to_ras_matrix
from radagent.density import DensityCalibration
from radagent.errors import InputError
from radagent.evaluate.scorecard import ScoreCard
from radagent.geometry import Grid, resample_mask

__all__ = ["Case", "DicomOrigin", "Protocol", "Role", "Structure", "body_from_ct", "structure_on_grid"]

# How far from perpendicular the CT's axes may be (the ray tracer and the dose grid assume orthogonal
# axes; a gantry-tilted CT shears them).
MAX_AXIS_SKEW_DEG = 0.01


class Role(StrEnum):
    """What a structure is for in planning."""

    TARGET = "target"
    OAR = "oar"
    BODY = "body"


@dataclass(frozen=True, eq=False)
class Structure:
    """A named boolean mask on the CT grid with a planning role; a target may carry its own dose level
    (``dose_gy``, a simultaneous integrated boost), else it is prescribed the case's prescription."""

    name: str
    role: Role
    mask: np.ndarray
    dose_gy: float | None = None

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.dtype != bool:
            mask = mask != 0
        object.__setattr__(self, "role", Role(self.role))
        object.__setattr__(self, "mask", mask)
        if self.dose_gy is not None:
            if self.role is not Role.TARGET:
                raise InputError(f"structure '{self.name}' is not a target, so it takes no dose level")
            if not np.isfinite(self.dose_gy) or self.dose_gy <= 0:
                raise InputError(
                    f"dose level of target '{self.name}' must be a positive dose, got {self.dose_gy}"
                )
            object.__setattr__(self, "dose_gy", float(self.dose_gy))

    @property
    def voxel_count(self) -> int:
        """Number of voxels inside the structure."""
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True)
class Protocol:
    """The prescription for the targets and the score card that judges the plan."""

    prescription_gy: float
    fractions: int = 1
    scorecard: ScoreCard | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.prescription_gy) or self.prescription_gy <= 0:
            raise InputError(f"prescription must be a positive dose in Gy, got {self.prescription_gy}")
        if int(self.fractions) != self.fractions or self.fractions < 1:
            raise InputError(f"number of fractions must be a positive integer, got {self.fractions}")


def structure_on_grid(
    name: str, role: Role | str, mask: np.ndarray, mask_grid: Grid, ct_grid: Grid
) -> Structure:
    """Resample a mask given on its own grid onto the CT grid, rejecting one that misses the CT."""
    mask = np.asarray(mask)
    if mask.shape != mask_grid.shape:
        raise InputError(
            f"structure '{name}': mask shape {mask.shape} does not match its geometry {mask_grid.shape}"
        )
    if not np.any(mask):
        raise InputError(f"structure '{name}' is empty")
    resampled = resample_mask(mask, mask_grid, ct_grid)
    if not np.any(resampled):
        raise InputError(f"structure '{name}' does not overlap the CT volume")
    return Structure(name, Role(role), resampled)


def body_from_ct(ct_hu: np.ndarray, threshold_hu: float = -400.0) -> np.ndarray:
    """External contour from the CT: the largest connected region above ``threshold_hu``, holes filled.

    Used when the input has no body structure (a planner always has one; phantoms may not).
    """
    above = np.asarray(ct_hu) > threshold_hu
    labels, count = ndimage.label(above)
    if count == 0:
        raise InputError(f"the CT has no voxel above {threshold_hu:g} HU, so no body can be found")
    sizes = ndimage.sum_labels(above, labels, index=np.arange(1, count + 1))
    body = labels == (int(np.argmax(sizes)) + 1)
    for k in range(body.shape[0]):  # fill holes slice by slice (air in bowel stays inside the body)
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


@dataclass(frozen=True)
class DicomOrigin:
    """Where a case read from DICOM came from: the patient's identifiers and the UIDs an export reuses so
    that its RTPLAN and RTDOSE join the patient's study, CT series and structure set."""

    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    study_instance_uid: str
    study_id: str
    study_date: str
    study_time: str
    study_description: str
    frame_of_reference_uid: str
    ct_series_instance_uid: str
    structure_set_uid: str  # SOP instance UID of the RTSTRUCT the structures came from
    roi_numbers: Mapping[str, int] = field(default_factory=dict)  # structure name → its ROI Number
    accession_number: str = ""
    referring_physician_name: str = ""
    notes: tuple[str, ...] = ()  # what the import left out or assumed, for the front end to show


@dataclass(eq=False)
class Case:
    """A patient (or phantom) ready to plan: CT in HU on ``grid``, structures on the same grid, protocol."""

    name: str
    ct_hu: np.ndarray
    grid: Grid
    structures: tuple[Structure, ...]
    protocol: Protocol
    patient_position: str = "HFS"
    calibration: DensityCalibration = field(default_factory=DensityCalibration)
    description: str = ""
    dicom: DicomOrigin | None = None  # set for a case read from DICOM (radagent.io.dicom_read)

    def __post_init__(self) -> None:
        self.ct_hu = np.asarray(self.ct_hu, dtype=np.float32)
        self.structures = tuple(self.structures)
        self.patient_position = self.patient_position.upper()
        try:
            iec_to_ras_matrix(self.patient_position)
        except ValueError as error:
            raise InputError(str(error)) from None
        self._validate()

    def _validate(self) -> None:
        if self.ct_hu.shape != self.grid.shape:
            raise InputError(
                f"CT array shape {self.ct_hu.shape} does not match its geometry {self.grid.shape}"
            )
        skew = self.grid.axis_skew_deg
        if skew > MAX_AXIS_SKEW_DEG:
            raise InputError(
                f"the CT's axes are {skew:.2f}° from perpendicular (a sheared direction matrix, e.g. a "
                "gantry-tilted scan); resample it onto an orthogonal grid first"
            )
        if not np.all(np.isfinite(self.ct_hu)):
            raise InputError(f"CT of case '{self.name}' contains NaN or infinite values")
        names = [s.name for s in self.structures]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InputError(f"duplicate structure names: {', '.join(duplicates)}")
        for structure in self.structures:
            if structure.mask.shape != self.grid.shape:
                raise InputError(
                    f"structure '{structure.name}' has shape {structure.mask.shape}, "
                    f"the CT has {self.grid.shape}"
                )
            if structure.voxel_count == 0:
                raise InputError(f"structure '{structure.name}' is empty")
        if not self.targets:
            raise InputError(f"case '{self.name}' has no target structure")
        bodies = [s for s in self.structures if s.role is Role.BODY]
        if len(bodies) != 1:
            raise InputError(f"case '{self.name}' needs exactly one body structure, has {len(bodies)}")
        body = bodies[0].mask
        for target in self.targets:
            outside = np.count_nonzero(target.mask & ~body)
            if outside == target.voxel_count:
                raise InputError(
                    f"target '{target.name}' lies entirely outside the body '{bodies[0].name}'; "
                    "the structures do not belong to this CT or body"
                )
            if outside:
                raise InputError(
                    f"target '{target.name}' lies partly outside the body '{bodies[0].name}' "
                    f"({outside * self.grid.voxel_volume_cc:.2f} cc, {outside / target.voxel_count:.1%}); "
                    "crop it to the body or choose the body that contains it"
                )
        for target in self.targets:
            if target.dose_gy is not None and target.dose_gy > self.prescription_gy * (1 + 1e-9):
                raise InputError(
                    f"target '{target.name}' is prescribed {target.dose_gy:g} Gy, above the prescription "
                    f"{self.prescription_gy:g} Gy; the prescription is the highest dose level"
                )
        highest = max(self.target_level_gy(t.name) for t in self.targets)
        if highest < self.prescription_gy * (1 - 1e-9):
            raise InputError(
                f"the highest target dose level is {highest:g} Gy, below the prescription "
                f"{self.prescription_gy:g} Gy; the prescription is the highest dose level"
            )
        card = self.protocol.scorecard
        if card is not None:
            missing = [n for n in card.structures() if n not in names]
            if missing:
                raise InputError(
                    f"score card '{card.name}' refers to structures not in the case: {', '.join(missing)}"
                )

    @property
    def targets(self) -> tuple[Structure, ...]:
        """Target structures (PTVs), in input order."""
        return tuple(s for s in self.structures if s.role is Role.TARGET)

    def target_level_gy(self, name: str) -> float:
        """The dose prescribed to target ``name``: its own level, else the prescription."""
        target = self.structure(name)
        return target.dose_gy if target.dose_gy is not None else self.prescription_gy

    @property
    def primary_target(self) -> Structure:
        """The target of the highest dose level (the first of equals): what the plan is normalized to and
        what score cards, HI, CI and the reward call "the PTV"."""
        return max(self.targets, key=lambda t: self.target_level_gy(t.name))

    @property
    def oars(self) -> tuple[Structure, ...]:
        """Organs at risk, in input order (the score card's order for built-in cases)."""
        return tuple(s for s in self.structures if s.role is Role.OAR)

    @property
    def body(self) -> Structure:
        """The external contour."""
        return next(s for s in self.structures if s.role is Role.BODY)

    @property
    def prescription_gy(self) -> float:
        """Prescribed dose to the targets (Gy)."""
        return float(self.protocol.prescription_gy)

    def structure(self, name: str) -> Structure:
        """The structure called ``name`` (exact match first, then case-insensitive)."""
        for structure in self.structures:
            if structure.name == name:
                return structure
        lowered = [s for s in self.structures if s.name.lower() == name.lower()]
        if len(lowered) == 1:
            return lowered[0]
        known = ", ".join(s.name for s in self.structures)
        raise InputError(f"no structure named '{name}' (known: {known})")

    def target_mask(self) -> np.ndarray:
        """Union of all target masks."""
        return np.logical_or.reduce([t.mask for t in self.targets])

    @property
    def isocenter_ras(self) -> tuple[float, float, float]:
        """Default isocentre: the centroid of the targets' union, in RAS mm."""
        k, j, i = np.nonzero(self.target_mask())
        centroid_ijk = np.array([[i.mean(), j.mean(), k.mean()]])
        return tuple(float(v) for v in self.grid.ijk_to_ras_points(centroid_ijk)[0])

    def relative_electron_density(self) -> np.ndarray:
        """RED on the CT grid; outside the body it is set to 0 (air), so couch and noise do not attenuate."""
        density = self.calibration(self.ct_hu)
        density[~self.body.mask] = 0.0
        return density
