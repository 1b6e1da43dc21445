"""Beam geometry in the patient frame: IEC 61217 gantry angles and the beam's-eye-view axes.

IEC 61217, couch at 0°, written once here:

* The **fixed system** has its origin at the isocentre; seen from the foot of the couch looking at the
  gantry, +X points right, +Y towards the gantry, +Z up.
* **Gantry angle** θ: at 0° the source is straight above the isocentre (beam pointing down); it turns
  clockwise as seen from the foot of the couch, so at 90° the source is at +X.
* For a **head-first supine** (HFS) patient +X is the patient's left, +Y superior and +Z anterior, so a
  90° beam enters from the patient's left. Other positions (HFP, FFS, FFP) change only the IEC→RAS map.
* The **beam's-eye view** (BEV) axes at the isocentre plane are the collimator's X and Y axes (collimator
  at 0°): ``u`` = IEC X turned with the gantry, ``v`` = IEC Y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_BEAMS",
    "PATIENT_POSITIONS",
    "BeamGeometry",
    "equispaced_angles",
    "iec_to_ras_matrix",
    "parse_angles",
]

SOURCE_AXIS_DISTANCE_MM = 1000.0
DEFAULT_BEAMS = 7  # coplanar beams of a plan, unless the user or an agent chooses otherwise (METHOD §5)

# Columns: the IEC fixed X, Y, Z axes expressed in RAS, for each patient position.
_IEC_AXES_IN_RAS = {
    "HFS": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "HFP": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),
    "FFS": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "FFP": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
}
PATIENT_POSITIONS = tuple(_IEC_AXES_IN_RAS)


def iec_to_ras_matrix(patient_position: str = "HFS") -> np.ndarray:
    """3×3 rotation taking IEC 61217 fixed-system vectors to patient RAS vectors."""
    try:
        axes = _IEC_AXES_IN_RAS[patient_position.upper()]
    except KeyError:
        raise ValueError(
            f"unknown patient position {patient_position!r}; use one of {', '.join(PATIENT_POSITIONS)}"
        ) from None
    return np.array(axes, dtype=np.float64).T


@dataclass(frozen=True)
class BeamGeometry:
    """One coplanar photon beam: gantry angle (IEC 61217, degrees), isocentre (RAS mm), SAD."""

    gantry_deg: float
    isocenter_ras: tuple[float, float, float]
    patient_position: str = "HFS"
    sad_mm: float = SOURCE_AXIS_DISTANCE_MM

    def __post_init__(self) -> None:
        angle = float(self.gantry_deg)
        if not np.isfinite(angle) or not 0.0 <= angle < 360.0:
            raise ValueError(f"gantry angle must be in [0, 360) degrees, got {self.gantry_deg}")
        iso = tuple(float(v) for v in self.isocenter_ras)
        if len(iso) != 3 or not np.all(np.isfinite(iso)):
            raise ValueError(f"isocentre must be three finite RAS coordinates, got {self.isocenter_ras}")
        if not self.sad_mm > 0:
            raise ValueError(f"source-axis distance must be positive, got {self.sad_mm}")
        object.__setattr__(self, "gantry_deg", angle)
        object.__setattr__(self, "isocenter_ras", iso)
        object.__setattr__(self, "patient_position", self.patient_position.upper())
        iec_to_ras_matrix(self.patient_position)  # validates the position

    def _iec(self, vector: tuple[float, float, float]) -> np.ndarray:
        return iec_to_ras_matrix(self.patient_position) @ np.asarray(vector, dtype=np.float64)

    @property
    def direction_ras(self) -> np.ndarray:
        """Unit vector of the central axis, from the source towards the isocentre."""
        theta = np.deg2rad(self.gantry_deg)
        return self._iec((-np.sin(theta), 0.0, -np.cos(theta)))

    @property
    def u_axis_ras(self) -> np.ndarray:
        """Unit BEV axis u (collimator X) in RAS."""
        theta = np.deg2rad(self.gantry_deg)
        return self._iec((np.cos(theta), 0.0, -np.sin(theta)))

    @property
    def v_axis_ras(self) -> np.ndarray:
        """Unit BEV axis v (collimator Y, along the gantry rotation axis) in RAS."""
        return self._iec((0.0, 1.0, 0.0))

    @property
    def source_ras(self) -> np.ndarray:
        """RAS position of the (point) source, ``sad_mm`` upstream of the isocentre."""
        return np.asarray(self.isocenter_ras) - self.sad_mm * self.direction_ras

    def to_beam_frame(self, points_ras: np.ndarray) -> np.ndarray:
        """Map (N, 3) RAS points to beam coordinates (u, v, w) in mm.

        ``w`` is the distance from the source along the central axis; (u, v) are lateral offsets in
        the plane through the point, not projected to the isocentre plane.
        """
        relative = np.asarray(points_ras, dtype=np.float64) - self.source_ras
        axes = np.stack([self.u_axis_ras, self.v_axis_ras, self.direction_ras])
        return relative @ axes.T

    def project_to_isocenter_plane(self, points_ras: np.ndarray) -> np.ndarray:
        """(N, 2) BEV coordinates (u, v) in mm of the points' divergent projection to the iso plane."""
        uvw = self.to_beam_frame(points_ras)
        if np.any(uvw[:, 2] <= 0):
            raise ValueError("points behind the source cannot be projected to the isocentre plane")
        return uvw[:, :2] * (self.sad_mm / uvw[:, 2:3])


def equispaced_angles(count: int, start_deg: float = 0.0) -> tuple[float, ...]:
    """``count`` gantry angles spaced 360/count apart, starting at ``start_deg``."""
    if count < 1:
        raise ValueError(f"number of beams must be at least 1, got {count}")
    return tuple(round((start_deg + 360.0 * n / count) % 360.0, 6) for n in range(count))


def parse_angles(text: str) -> tuple[float, ...]:
    """Parse a comma-separated list of gantry angles (degrees), validating range and duplicates."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError("no gantry angles given")
    angles = []
    for part in parts:
        try:
            angle = float(part)
        except ValueError:
            raise ValueError(f"gantry angle {part!r} is not a number") from None
        if not np.isfinite(angle) or not 0.0 <= angle < 360.0:
            raise ValueError(f"gantry angle {part} is out of range [0, 360)")
        angles.append(angle)
    if len(set(angles)) != len(angles):
        raise ValueError(f"duplicate gantry angles in {text!r}")
    return tuple(angles)
