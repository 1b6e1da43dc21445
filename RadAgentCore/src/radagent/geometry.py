"""Voxel grids, the IJK↔RAS frame and resampling between grids.

Conventions, written once for the whole package:

* **Array axes.** Every volume is a numpy array indexed ``[k, j, i]`` (slice, row, column), the order
  Slicer's ``arrayFromVolume`` returns. ``Grid.shape`` is therefore ``(nk, nj, ni)``.
* **Patient frame.** World coordinates are Slicer **RAS** in millimetres: +x towards the patient's
  right, +y anterior, +z superior. DICOM's LPS is ``diag(-1, -1, 1)`` times RAS; readers convert at
  the file boundary (see :func:`lps_to_ras_matrix`).
* **IJK→RAS.** A 4×4 homogeneous matrix maps the column vector ``(i, j, k, 1)`` to ``(x, y, z, 1)``.
  Its upper-left 3×3 is ``direction @ diag(spacing_mm)``; the direction's columns are the unit vectors
  of the i, j and k axes in RAS and may be oblique (any rotation, proper or improper).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from scipy import ndimage

__all__ = [
    "Grid",
    "lps_to_ras_matrix",
    "resample",
    "resample_mask",
]


def lps_to_ras_matrix() -> np.ndarray:
    """The 4×4 matrix that turns DICOM LPS coordinates into Slicer RAS (it is its own inverse)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Grid:
    """A regular voxel lattice: array shape ``(nk, nj, ni)`` and the 4×4 IJK→RAS matrix (mm)."""

    shape: tuple[int, int, int]
    ijk_to_ras: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"grid shape must be three positive sizes (k, j, i), got {self.shape}")
        matrix = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise ValueError(f"IJK→RAS must be a 4×4 matrix, got shape {matrix.shape}")
        if not np.all(np.isfinite(matrix)):
            raise ValueError("IJK→RAS matrix contains NaN or infinite values")
        if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError("IJK→RAS matrix must be affine (last row 0, 0, 0, 1)")
        if abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
            raise ValueError("IJK→RAS matrix is singular (zero spacing or degenerate direction)")
        matrix.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "ijk_to_ras", matrix)

    @classmethod
    def from_spacing(
        cls,
        shape: tuple[int, int, int],
        spacing_mm: tuple[float, float, float],
        origin_ras: tuple[float, float, float] = (0.0, 0.0, 0.0),
        direction: np.ndarray | None = None,
    ) -> Grid:
        """Build a grid from spacing (i, j, k order, mm), origin (RAS of voxel 0,0,0) and direction."""
        direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
        spacing = np.asarray(spacing_mm, dtype=np.float64)
        if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise ValueError(f"voxel spacing must be three positive finite values, got {spacing_mm}")
        matrix = np.eye(4)
        matrix[:3, :3] = direction @ np.diag(spacing)
        matrix[:3, 3] = origin_ras
        return cls(tuple(shape), matrix)

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size along i, j, k in millimetres."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def axis_skew_deg(self) -> float:
        """How far (degrees) the most skewed pair of voxel axes is from perpendicular: 0 for every grid
        but a sheared one."""
        direction = self.direction
        cosines = [abs(float(direction[:, a] @ direction[:, b])) for a, b in ((0, 1), (0, 2), (1, 2))]
        return float(np.degrees(np.arcsin(min(max(cosines), 1.0))))

    @property
    def direction(self) -> np.ndarray:
        """3×3 matrix whose columns are the unit i, j, k axes in RAS."""
        return self.ijk_to_ras[:3, :3] / self.spacing_mm

    @property
    def origin_ras(self) -> np.ndarray:
        """RAS position (mm) of the centre of voxel (i, j, k) = (0, 0, 0)."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def ras_to_ijk(self) -> np.ndarray:
        """Inverse of :attr:`ijk_to_ras`."""
        return np.linalg.inv(self.ijk_to_ras)

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel in cm³."""
        return float(abs(np.linalg.det(self.ijk_to_ras[:3, :3])) / 1000.0)

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.shape))

    def same_as(self, other: Grid, tol_mm: float = 1e-4) -> bool:
        """True when both grids have the same shape and (within ``tol_mm``) the same geometry."""
        return self.shape == other.shape and bool(np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=tol_mm))

    def ijk_to_ras_points(self, ijk: np.ndarray) -> np.ndarray:
        """Map an (N, 3) array of (i, j, k) indices (may be fractional) to RAS mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def ras_to_ijk_points(self, ras: np.ndarray) -> np.ndarray:
        """Map an (N, 3) array of RAS points (mm) to fractional (i, j, k) indices."""
        inverse = self.ras_to_ijk
        return np.asarray(ras, dtype=np.float64) @ inverse[:3, :3].T + inverse[:3, 3]

    def voxel_centers_ras(self, flat_indices: np.ndarray | None = None) -> np.ndarray:
        """RAS centres (N, 3) of the voxels with the given flat ``[k, j, i]`` indices (all if None)."""
        if flat_indices is None:
            flat_indices = np.arange(self.size)
        k, j, i = np.unravel_index(np.asarray(flat_indices), self.shape)
        return self.ijk_to_ras_points(np.stack([i, j, k], axis=1))

    def corners_ras(self) -> np.ndarray:
        """RAS positions (8, 3) of the outer corners of the grid's voxel boxes."""
        nk, nj, ni = self.shape
        corners = np.array(
            [[i, j, k] for i in (-0.5, ni - 0.5) for j in (-0.5, nj - 0.5) for k in (-0.5, nk - 0.5)]
        )
        return self.ijk_to_ras_points(corners)

    def with_spacing(self, spacing_mm: float | tuple[float, float, float]) -> Grid:
        """A grid on the same lattice axes (direction) covering the same box, at a new spacing.

        This is how the dose grid is made: aligned with the CT's voxel lattice, at its own resolution.
        """
        new_spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
        if not np.all(np.isfinite(new_spacing)) or np.any(new_spacing <= 0):
            raise ValueError(f"grid spacing must be positive, got {spacing_mm}")
        old_spacing = self.spacing_mm
        extent_mm = np.array(self.shape[::-1], dtype=np.float64) * old_spacing  # i, j, k
        counts = np.maximum(1, np.ceil(extent_mm / new_spacing - 1e-6)).astype(int)
        # Centre the new lattice on the old box so both cover the same region.
        box_start = -0.5 * old_spacing
        box_centre = box_start + 0.5 * extent_mm
        first_centre = box_centre - 0.5 * (counts - 1) * new_spacing  # in the grid's own axes, mm
        direction = self.direction
        origin = self.ijk_to_ras[:3, 3] + direction @ first_centre
        return Grid.from_spacing(tuple(counts[::-1]), tuple(new_spacing), tuple(origin), direction)


def _affine_kji(source: Grid, target: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset mapping target [k, j, i] indices to source [k, j, i] indices."""
    ijk_map = source.ras_to_ijk @ target.ijk_to_ras  # target ijk -> source ijk
    flip = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float64)  # ijk <-> kji
    matrix = flip @ ijk_map[:3, :3] @ flip
    offset = flip @ ijk_map[:3, 3]
    return matrix, offset


def resample(
    values: np.ndarray,
    source: Grid,
    target: Grid,
    order: int = 1,
    fill_value: float = 0.0,
) -> np.ndarray:
    """Resample a volume from one grid onto another (order 0 = nearest, 1 = trilinear).

    Points of ``target`` outside ``source`` get ``fill_value``. Used to bring masks onto the CT grid
    and the dose onto the CT grid for evaluation. When both grids lie on one lattice (the same axes and
    spacing, shifted by whole voxels: a cropped dose on its CT), the values are copied, not interpolated,
    so rounding in a file's geometry cannot push an edge voxel outside.
    """
    values = np.asarray(values)
    if values.shape != source.shape:
        raise ValueError(f"array shape {values.shape} does not match its grid {source.shape}")
    if source.same_as(target):
        return values.copy()
    matrix, offset = _affine_kji(source, target)
    if np.allclose(matrix, np.eye(3), atol=1e-6) and np.allclose(offset, np.round(offset), atol=1e-3):
        return _shifted_copy(values, np.round(offset).astype(np.int64), target.shape, fill_value)
    work = values.astype(np.float32 if values.dtype != np.float64 else np.float64, copy=False)
    if order == 1 and not np.any(matrix - np.diag(np.diag(matrix))):
        return _separable_linear(work, np.diag(matrix), offset, target.shape, fill_value)
    return ndimage.affine_transform(
        work,
        matrix,
        offset=offset,
        output_shape=target.shape,
        order=order,
        mode="constant",
        cval=fill_value,
        prefilter=False,
    )


def _shifted_copy(
    values: np.ndarray, shift: np.ndarray, shape: tuple[int, int, int], fill_value: float
) -> np.ndarray:
    """``out[t] = values[t + shift]`` where that index exists, else ``fill_value`` (indices [k, j, i])."""
    out = np.full(shape, fill_value, dtype=np.result_type(values.dtype, np.float32))
    target_slices, source_slices = [], []
    for n in range(3):
        start, stop = max(0, -shift[n]), min(shape[n], values.shape[n] - shift[n])
        if start >= stop:
            return out
        target_slices.append(slice(start, stop))
        source_slices.append(slice(start + shift[n], stop + shift[n]))
    out[tuple(target_slices)] = values[tuple(source_slices)]
    return out


def _axis_weights(scale: float, offset: float, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For output indices 0…count−1 along one axis, the lower source index (−1 where the coordinate
    ``scale·n + offset`` lies outside [0, size − 1], as ndimage's ``constant`` mode) and the fraction."""
    coordinates = scale * np.arange(count, dtype=np.float64) + offset
    inside = (coordinates >= 0.0) & (coordinates <= size - 1)
    low = np.where(inside, np.floor(np.where(inside, coordinates, 0.0)), -1).astype(np.int64)
    low = np.where(low == size - 1, size - 2, low) if size > 1 else low  # the last voxel: fraction 1
    fraction = np.where(inside, coordinates - low, 0.0)
    return low, fraction


@njit(cache=True, parallel=True)
def _trilinear_kernel(values, low_k, frac_k, low_j, frac_j, low_i, frac_i, fill, out):  # pragma: no cover
    """out[a, b, c] = trilinear interpolation of ``values`` (or ``fill`` where any axis is outside)."""
    nk, nj, ni = values.shape
    for a in prange(out.shape[0]):
        k0 = low_k[a]
        for b in range(out.shape[1]):
            j0 = low_j[b]
            for c in range(out.shape[2]):
                i0 = low_i[c]
                if k0 < 0 or j0 < 0 or i0 < 0:
                    out[a, b, c] = fill
                    continue
                k1, j1, i1 = min(k0 + 1, nk - 1), min(j0 + 1, nj - 1), min(i0 + 1, ni - 1)
                tk, tj, ti = frac_k[a], frac_j[b], frac_i[c]
                total = 0.0
                total += (1.0 - tk) * (1.0 - tj) * (1.0 - ti) * values[k0, j0, i0]
                total += (1.0 - tk) * (1.0 - tj) * ti * values[k0, j0, i1]
                total += (1.0 - tk) * tj * (1.0 - ti) * values[k0, j1, i0]
                total += (1.0 - tk) * tj * ti * values[k0, j1, i1]
                total += tk * (1.0 - tj) * (1.0 - ti) * values[k1, j0, i0]
                total += tk * (1.0 - tj) * ti * values[k1, j0, i1]
                total += tk * tj * (1.0 - ti) * values[k1, j1, i0]
                total += tk * tj * ti * values[k1, j1, i1]
                out[a, b, c] = total


def _separable_linear(
    values: np.ndarray, scales: np.ndarray, offset: np.ndarray, shape: tuple[int, int, int], fill_value: float
) -> np.ndarray:
    """Trilinear resampling when the index map is axis-aligned (a scale and shift per axis): the same
    interpolation and ``constant``-mode edges (outside → ``fill_value``) as ndimage's affine transform,
    without its per-voxel coordinate transform (to within the output's float rounding)."""
    axes = [_axis_weights(scales[n], offset[n], shape[n], values.shape[n]) for n in range(3)]
    out = np.empty(shape, dtype=values.dtype)
    _trilinear_kernel(np.ascontiguousarray(values), *axes[0], *axes[1], *axes[2], float(fill_value), out)
    return out


def resample_mask(mask: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """Resample a boolean mask: a target voxel is inside when its centre is ≥ half inside (trilinear)."""
    if source.same_as(target):
        return np.asarray(mask, dtype=bool).copy()
    fraction = resample(np.asarray(mask, dtype=np.float32), source, target, order=1)
    return fraction >= 0.5
