"""Hounsfield units → relative electron density (RED, water = 1), a replaceable piecewise-linear table.

The default table is a generic CT calibration of the kind measured with a Gammex/CIRS electron-density
phantom at 120 kVp (air, lung, adipose, water, soft tissue, trabecular and cortical bone). Values lie
within a few percent of published scanner calibrations (e.g. the Gammex 467 insert table; Schneider
et al., Phys Med Biol 41 (1996) 111); a clinic replaces it with its own scanner's curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["DEFAULT_HU_TO_RED", "DensityCalibration"]

DEFAULT_HU_TO_RED: tuple[tuple[float, float], ...] = (
    (-1024.0, 0.001),
    (-1000.0, 0.001),
    (-800.0, 0.19),  # inhale lung
    (-500.0, 0.49),  # exhale lung
    (-100.0, 0.93),  # adipose
    (0.0, 1.00),  # water
    (60.0, 1.06),  # muscle / soft tissue
    (240.0, 1.13),  # trabecular bone
    (1000.0, 1.53),
    (1500.0, 1.82),  # cortical bone
    (3071.0, 2.61),
)


@dataclass(frozen=True)
class DensityCalibration:
    """Piecewise-linear HU→RED curve; HU outside the table are clamped to its end points."""

    points: tuple[tuple[float, float], ...] = field(default=DEFAULT_HU_TO_RED)

    def __post_init__(self) -> None:
        table = np.asarray(self.points, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != 2 or len(table) < 2:
            raise ValueError("HU→RED calibration needs at least two (HU, RED) pairs")
        if not np.all(np.isfinite(table)):
            raise ValueError("HU→RED calibration contains non-finite values")
        if np.any(np.diff(table[:, 0]) <= 0):
            raise ValueError("HU values of the HU→RED calibration must increase strictly")
        if np.any(table[:, 1] < 0):
            raise ValueError("relative electron densities must be non-negative")

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        """Relative electron density (float32) for an array of Hounsfield units."""
        table = np.asarray(self.points, dtype=np.float64)
        return np.interp(np.asarray(hu, dtype=np.float64), table[:, 0], table[:, 1]).astype(np.float32)
