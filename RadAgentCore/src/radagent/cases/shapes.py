"""Geometric building blocks for the built-in phantoms: a voxel frame and solids drawn on it (RAS mm).

Phantom grids are axis-aligned like a head-first-supine DICOM CT: i runs towards the patient's left,
j towards posterior, k towards superior (direction ``diag(-1, -1, 1)`` in RAS), so the arrays look
like an ordinary CT slice stack. Every solid returns a boolean mask of the frame's shape.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from radagent.geometry import Grid

__all__ = ["HU", "Frame", "dilate_mm", "ellipsoid", "rim", "superellipse_prism", "swept_ellipse", "tube"]


@dataclass(frozen=True)
class TissueHU:
    """Hounsfield units of the tissues the phantoms are painted with (typical 120 kVp values)."""

    air: float = -1000.0
    lung: float = -800.0
    fat: float = -100.0
    water: float = 0.0
    urine: float = 10.0
    csf: float = 15.0
    bowel_content: float = 25.0
    soft_tissue: float = 40.0
    muscle: float = 50.0
    liver: float = 60.0
    cartilage: float = 120.0
    cancellous_bone: float = 300.0
    cortical_bone: float = 900.0


HU = TissueHU()


@dataclass(frozen=True)
class Frame:
    """A phantom grid with the RAS coordinates (mm) of its voxel centres, as broadcastable axes."""

    grid: Grid
    x: np.ndarray  # shape (1, 1, ni): RAS x of each column
    y: np.ndarray  # shape (1, nj, 1): RAS y of each row
    z: np.ndarray  # shape (nk, 1, 1): RAS z of each slice

    @classmethod
    def box(
        cls,
        size_mm: tuple[float, float, float],
        spacing_mm: float,
        center_ras: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> Frame:
        """A grid centred on ``center_ras`` covering ``size_mm`` (LR, AP, SI) with cubic voxels."""
        counts = [max(1, round(s / spacing_mm)) for s in size_mm]
        half = [(n - 1) * spacing_mm / 2.0 for n in counts]
        cx, cy, cz = center_ras
        direction = np.diag([-1.0, -1.0, 1.0])  # i → patient's left, j → posterior, k → superior
        origin = (cx + half[0], cy + half[1], cz - half[2])
        grid = Grid.from_spacing((counts[2], counts[1], counts[0]), (spacing_mm,) * 3, origin, direction)
        x = origin[0] - spacing_mm * np.arange(counts[0])
        y = origin[1] - spacing_mm * np.arange(counts[1])
        z = origin[2] + spacing_mm * np.arange(counts[2])
        return cls(grid, x[None, None, :], y[None, :, None], z[:, None, None])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (nk, nj, ni)."""
        return self.grid.shape

    @property
    def spacing_mm(self) -> float:
        """The (cubic) voxel size in mm."""
        return float(self.grid.spacing_mm[0])

    def full(self, mask: np.ndarray) -> np.ndarray:
        """Broadcast a mask computed from the coordinate axes to the full frame shape."""
        return np.broadcast_to(mask, self.shape).copy()


def ellipsoid(
    frame: Frame,
    center: tuple[float, float, float],
    semi_axes: tuple[float, float, float],
    tilt_deg: float = 0.0,
) -> np.ndarray:
    """Solid ellipsoid (semi-axes along x, y, z in mm), optionally tilted about the LR axis.

    A positive tilt turns the superior end towards posterior (as the prostate's base leans back).
    """
    angle = np.radians(tilt_deg)
    dx, dy, dz = frame.x - center[0], frame.y - center[1], frame.z - center[2]
    u = dy * np.cos(angle) + dz * np.sin(angle)
    v = -dy * np.sin(angle) + dz * np.cos(angle)
    a, b, c = semi_axes
    return frame.full((dx / a) ** 2 + (u / b) ** 2 + (v / c) ** 2 <= 1.0)


def superellipse_prism(
    frame: Frame,
    semi_axes: tuple[float, float],
    exponent: float,
    z_range: tuple[float, float] | None = None,
    center: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """A cross-section |x/a|^p + |y/b|^p ≤ 1 extruded along z (the whole grid when z_range is None)."""
    a, b = semi_axes
    inside = np.abs((frame.x - center[0]) / a) ** exponent + np.abs((frame.y - center[1]) / b) ** exponent
    mask = inside <= 1.0
    if z_range is not None:
        mask = mask & (frame.z >= z_range[0]) & (frame.z <= z_range[1])
    return frame.full(mask)


def swept_ellipse(
    frame: Frame,
    center_x: np.ndarray,
    center_y: np.ndarray,
    semi_x: np.ndarray,
    semi_y: np.ndarray,
) -> np.ndarray:
    """A tube along z whose elliptic cross-section (centre and semi-axes per slice, mm) varies with z.

    The four arrays have one value per slice; a slice with a non-positive semi-axis is empty.
    """
    shape = (-1, 1, 1)
    a = np.asarray(semi_x, dtype=np.float64).reshape(shape)
    b = np.asarray(semi_y, dtype=np.float64).reshape(shape)
    valid = (a > 0) & (b > 0)
    a, b = np.where(valid, a, 1.0), np.where(valid, b, 1.0)
    dx = (frame.x - np.asarray(center_x, dtype=np.float64).reshape(shape)) / a
    dy = (frame.y - np.asarray(center_y, dtype=np.float64).reshape(shape)) / b
    return frame.full((dx**2 + dy**2 <= 1.0) & valid)


def tube(frame: Frame, points_ras: np.ndarray, radius_mm: float) -> np.ndarray:
    """Voxels within ``radius_mm`` of a polyline through ``points_ras`` (N × 3, RAS mm)."""
    points = np.asarray(points_ras, dtype=np.float64)
    mask = np.zeros(frame.shape, dtype=bool)
    lo, hi = points.min(axis=0) - radius_mm, points.max(axis=0) + radius_mm
    window = _window(frame, lo, hi)
    if window is None:
        return mask
    ks, js, is_ = window
    x, y, z = frame.x[..., is_], frame.y[:, js, :], frame.z[ks]
    nearest_sq = np.full((z.shape[0], y.shape[1], x.shape[2]), np.inf)
    for start, end in itertools.pairwise(points):
        segment = end - start
        length_sq = max(float(segment @ segment), 1e-12)
        t = (x - start[0]) * segment[0] + (y - start[1]) * segment[1] + (z - start[2]) * segment[2]
        t = np.clip(t / length_sq, 0.0, 1.0)
        distance_sq = (
            (x - start[0] - t * segment[0]) ** 2
            + (y - start[1] - t * segment[1]) ** 2
            + (z - start[2] - t * segment[2]) ** 2
        )
        np.minimum(nearest_sq, distance_sq, out=nearest_sq)
    mask[ks, js, is_] = nearest_sq <= radius_mm**2
    return mask


def dilate_mm(frame: Frame, mask: np.ndarray, margin_mm: float) -> np.ndarray:
    """Isotropic expansion by ``margin_mm`` (Euclidean distance from the mask, as a PTV margin)."""
    if margin_mm <= 0 or not mask.any():
        return mask.copy()
    pad = int(np.ceil(margin_mm / frame.spacing_mm)) + 1
    box = tuple(
        slice(max(0, int(lo) - pad), min(n, int(hi) + 1 + pad))
        for lo, hi, n in zip(
            np.argwhere(mask).min(axis=0), np.argwhere(mask).max(axis=0), mask.shape, strict=True
        )
    )
    distance = ndimage.distance_transform_edt(~mask[box], sampling=frame.spacing_mm)
    expanded = mask.copy()
    expanded[box] = distance <= margin_mm + 1e-6
    return expanded


def rim(mask: np.ndarray, thickness_voxels: int = 1) -> np.ndarray:
    """The outer shell of a mask (voxels removed by an erosion), e.g. cortical bone around cancellous."""
    return mask & ~ndimage.binary_erosion(mask, iterations=thickness_voxels)


def _window(frame: Frame, lo_ras: np.ndarray, hi_ras: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Index slices (k, j, i) of the voxels whose centres lie in the RAS box [lo, hi]; None if empty."""
    slices = []
    for axis_values, lo, hi in (
        (frame.z.ravel(), lo_ras[2], hi_ras[2]),
        (frame.y.ravel(), lo_ras[1], hi_ras[1]),
        (frame.x.ravel(), lo_ras[0], hi_ras[0]),
    ):
        inside = np.nonzero((axis_values >= lo) & (axis_values <= hi))[0]
        if inside.size == 0:
            return None
        slices.append(slice(int(inside[0]), int(inside[-1]) + 1))
    return slices[0], slices[1], slices[2]
